"""How degenerate is a trained transformer language model? (issue 13)

The seed questions, asked of causal transformer LMs (softmax attention, LayerNorm, GELU MLPs;
:mod:`experiments.lm.model`) trained on a synthetic language with long-range copying
(:mod:`experiments.lm.language`), at checkpoints along training chosen around the formation of
induction heads (:func:`experiments.lm.train.find_transition`):

(a) is the Hessian-rank lower bound on the LLC large — is the trained network far from degenerate —
    and how much does the next Taylor term (order 4) move it?
(b) how much larger is the behavioral LLC (of the KL from the reference network's predictions) than
    the LLC of the training loss?

Measured at each checkpoint (:mod:`experiments.lm.measure`): the Hessian and Gauss–Newton spectra by
SLQ and the numerical rank as a curve in τ and at τ(n) = γ/(nβ); the rank bounds rank/2 ≤ · ≤ d/2 at
the n the LLC is estimated at; the order-4 analysis where the null space is small enough; the LLC and
the behavioral LLC with standard errors and their ratio; the weight-refined LLC of every layer and
every attention head (Wang et al. 2024, arXiv 2410.02984); the time and memory of each.

    python -m experiments.transformer_study [--sizes 0.1M 1M] [--out runs/transformer] [--quick]

The run is resumable: training continues from its checkpoints, every finished measurement is stored
in ``<out>/<size>/measurements.json`` as soon as it is done and is not recomputed, and SGLD chains
checkpoint their state. The figures and ``<out>/report.md`` are rewritten from the stored numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.lm import (Language, LanguageConfig, LMConfig, TrainConfig, config_for_size, count_parameters,  # noqa: E402
                            find_transition, load_checkpoint, train)
from experiments.lm import measure  # noqa: E402
from experiments.lm.problem import NextTokenLM  # noqa: E402
from slt_interp.estimators.slq import SpectralQuadrature  # noqa: E402

__all__ = ["StudySettings", "quick_settings", "full_settings", "run_study", "StudyResult", "figures", "conclusions",
           "summary_rows", "markdown"]


@dataclass(frozen=True)
class StudySettings:
    """One model size of the study.

    Attributes:
        name: label (e.g. "0.1M").
        model: the LM.
        language: the synthetic language.
        num_train, num_heldout: training and held-out sequences.
        num_measure: training sequences L_n is taken over for every measurement (the first ones);
            n = num_measure·(T − 1) tokens.
        train: the training run; checkpoints every ``train.eval_every`` steps are kept.
        num_checkpoints: checkpoints measured: the ones bracketing the in-context loss drop, the last,
            and evenly spaced others (see :func:`choose_steps`).
        slq_probes, slq_steps: SLQ probes and Lanczos steps per operator.
        curvature_batch: sequences per batch in a curvature product.
        llc_batch: sequences per SGLD gradient.
        llc_chains: SGLD chains.
        llc_max_seconds: budget of each adaptive SGLD run (None: the package's step budget only).
        refine_max_seconds: budget of each weight-refined run (None: ``llc_max_seconds``).
        pilot_steps: steps of the calibration pilots, run once per checkpoint and loss
            (:func:`experiments.lm.measure.calibrate`; the package's default is 200).
        refine: weight-refined LLCs: "layers", "heads" or both; ``refine_at`` "all" checkpoints or
            only "transition" (the two bracketing the drop, or the first and last without one).
        localization: γ of the SGLD localization, and of τ(n) = γ/(nβ). 100, not the package's default 1: a
            trained transformer has directions held only by the localization (LayerNorm scale
            symmetries, dead units), which relax over ~2/(εγ) SGLD steps — measured at γ = 1 on a 184-
            parameter LM: 20 000 steps, still drifting (z = −21). The finite-n target and the rank bounds
            at τ(n) are both about this γ.
        dtype: the measurements' dtype (training is float32).
        seed: initialisation and data seed.
    """

    name: str
    model: LMConfig
    language: LanguageConfig
    num_train: int = 16384
    num_heldout: int = 512
    num_measure: int = 1024
    train: TrainConfig = field(default_factory=lambda: TrainConfig(num_steps=4000))
    num_checkpoints: int = 4
    slq_probes: int = 8
    slq_steps: int = 40
    curvature_batch: int = 256
    llc_batch: int = 64
    llc_chains: int = 4
    llc_max_seconds: float | None = None
    refine_max_seconds: float | None = None
    refine: tuple[str, ...] = ("layers", "heads")
    refine_at: str = "all"
    pilot_steps: int = 200
    localization: float = 100.0
    dtype: str = "float64"
    seed: int = 0


def _language(vocab_size: int, seq_len: int, copy_len=(8, 16)) -> LanguageConfig:
    # a high-entropy source (every token reachable, so copying is the only way to predict a copied
    # token) with frequent copies at random offsets: induction heads pay off
    return LanguageConfig(vocab_size=vocab_size, seq_len=seq_len, branching=vocab_size, copy_rate=0.3,
                          min_copy_len=copy_len[0], max_copy_len=copy_len[1], min_offset=3)


def quick_settings() -> StudySettings:
    """The report's CPU-quick study: a 7k-parameter, 2-layer, 2-head LM (section ``transformer``).

    Measured here (2 cores): its in-context loss falls from 2.8 to 0.7 nats and the best head's
    prefix-matching score rises from 0.14 to 0.66 within the first 1250 steps (about 20 s of training).
    """
    V, T = 16, 16
    model = LMConfig(vocab_size=V, seq_len=T, num_layers=2, num_heads=2, d_model=16)
    return StudySettings(name="quick", model=model, language=_language(V, T, (4, 8)), num_train=16384, num_measure=64,
                         train=TrainConfig(num_steps=2000, batch_size=64, lr=3e-3, warmup_steps=100, eval_every=100,
                                           num_probe_sequences=32),
                         num_checkpoints=2, slq_probes=6, slq_steps=40, curvature_batch=64, llc_batch=16,
                         llc_max_seconds=8.0, pilot_steps=100, refine=("heads",), refine_at="transition")


def full_settings(size: str) -> StudySettings:
    """The full study at ``size`` ("0.1M", "1M" or "10M"; the 10M only on a GPU).

    The CPU sizes are set by what one or two CPU cores can do (measured on the 0.1M model, V = T = 64,
    float64, one thread: a Hessian-vector product over 128 sequences costs about 2 s of CPU time, over
    512 sequences about 8 s; a training step of 64 sequences about 0.3 s): L_n over 128 sequences
    (n = 8,064 tokens), SLQ with 4 probes × 30 Lanczos steps per operator, three checkpoints (the two
    that bracket the formation of the induction heads, and the last), SGLD runs of at most 420 s each and
    weight-refined runs per layer and head of at most 90 s at the two bracketing checkpoints: about
    3 h of CPU time after 20 min of training, 1.5 h with ``--workers 2``. The 1M and 10M sizes keep the larger settings for a GPU (the 1M
    model's training step took 3.5 s on the shared 2-core CPU).
    """
    from experiments.lm.model import SIZES

    V, T = 64, 64
    model = config_for_size(SIZES[size], vocab_size=V, seq_len=T)
    if size == "0.1M":
        # checkpoints every 50 steps: the in-context loss drops within the first few hundred steps
        return StudySettings(name=size, model=model, language=_language(V, T), num_train=65536, num_measure=128,
                             train=TrainConfig(num_steps=3000, batch_size=64, lr=1e-3, warmup_steps=200,
                                               eval_every=50, num_probe_sequences=32),
                             num_checkpoints=3, slq_probes=4, slq_steps=30, curvature_batch=128, llc_batch=16,
                             llc_max_seconds=420.0, refine_max_seconds=90.0, pilot_steps=100,
                             refine=("layers", "heads"), refine_at="transition", dtype="float64")
    steps = {"1M": 12000, "10M": 20000}[size]
    return StudySettings(name=size, model=model, language=_language(V, T), num_train=65536, num_measure=512,
                         train=TrainConfig(num_steps=steps, batch_size=64, lr=1e-3, warmup_steps=200, eval_every=500,
                                           num_probe_sequences=32),
                         num_checkpoints=5, slq_probes=8, slq_steps=100, llc_max_seconds=600.0, dtype="float32")


@dataclass
class StudyResult:
    """What :func:`run_study` measured: settings, the training history, the transition and the numbers."""

    settings: StudySettings
    history: list
    transition: object
    steps: list[int]
    measurements: dict
    num_params: int
    out_dir: Path
    train_seconds: float


def choose_steps(checkpoints, transition, num: int) -> list[int]:
    """Checkpoints to measure: those bracketing the transition, the last, then evenly spaced fill-ins.

    Step 0 (the initialisation) is never measured: it is not a minimum of anything.
    """
    ckpts = [s for s in sorted(checkpoints) if s > 0]
    chosen = {ckpts[-1]}
    for s in (getattr(transition, "before_step", None), getattr(transition, "after_step", None)):
        if s:
            chosen.add(s)
    for q in np.linspace(0, 1, num + 2)[1:-1]:
        if len(chosen) >= num:
            break
        chosen.add(min(ckpts, key=lambda s: abs(s - q * ckpts[-1])))
    return sorted(chosen)


class _Store:
    """measurements.json: ``{"<step>": {"<key>": value}}``, written after every measurement.

    Several worker processes may share one store (``--workers``): a write takes an exclusive lock,
    merges what the others wrote since and replaces the file atomically.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def refresh(self) -> None:
        """Re-read what other workers stored."""
        self.data = self._read()

    def get(self, step, key):
        return self.data.get(str(step), {}).get(key)

    def put(self, step, key, value):
        import fcntl

        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.refresh()
            self.data.setdefault(str(step), {})[key] = value
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)


#: relative cost of each task group, from the 0.1M CPU run (seconds): what ``--workers`` balances
_COST = {"curvature": 1200.0, "calibration/training": 800.0, "calibration/behavioral": 420.0}


def _group_cost(group, s: StudySettings) -> float:
    key = group[0][1]
    if key.startswith("refined/"):
        return s.refine_max_seconds or s.llc_max_seconds or 600.0
    return _COST[key] + (s.llc_max_seconds or 600.0) * (key != "curvature")


def _partition(groups, s: StudySettings, count: int) -> list[list]:
    """Task groups split over ``count`` workers, largest first onto the least loaded (deterministic)."""
    parts, load = [[] for _ in range(count)], [0.0] * count
    for g in sorted(groups, key=lambda g: -_group_cost(g, s)):
        i = min(range(count), key=lambda j: (load[j], j))
        parts[i].append(g)
        load[i] += _group_cost(g, s)
    order = {id(g): n for n, g in enumerate(groups)}
    return [sorted(p, key=lambda g: (g[0][1].startswith("refined/"), order[id(g)])) for p in parts]


def _next_ready(todo, store: _Store, poll_s: float = 15.0):
    """The first task whose calibration is stored (a refined LLC needs its checkpoint's training step),
    waiting for another worker to store it when none is ready."""
    while True:
        for step, key in todo:
            if not key.startswith("refined/") or store.get(step, "calibration/training") is not None \
                    or (step, "calibration/training") in todo:
                return step, key
        time.sleep(poll_s)
        store.refresh()


def _refined_keys(s: StudySettings) -> list[str]:
    keys = []
    if "layers" in s.refine:
        keys += [f"layer{l}" for l in range(s.model.num_layers)]
    if "heads" in s.refine:
        keys += [f"head{l}.{h}" for l in range(s.model.num_layers) for h in range(s.model.num_heads)]
    return keys


def _step(store: _Store, step: int, kind: str) -> float | None:
    """The calibrated ε of this checkpoint and loss (None for a store written before calibrations were)."""
    cal = store.get(step, f"calibration/{kind}")
    return None if cal is None else cal["step_size"]


def data_splits(s: StudySettings):
    """The study's (training, held-out) samples of the synthetic language."""
    return Language(s.language).splits(s.num_train, s.num_heldout, seed=s.seed)


def measure_tokens(train_data, s: StudySettings):
    """The sequences L_n is taken over in every measurement: the first ``num_measure`` training ones."""
    return train_data.tokens[: s.num_measure]


def pending(groups, store: _Store, extend=()) -> list[tuple[int, str]]:
    """The tasks of ``groups`` still to run, in order: those not stored, and the unconverged LLC and
    behavioral LLC of the checkpoint steps in ``extend`` (continued from their saved chains)."""
    def wanted(step, key) -> bool:
        v = store.get(step, key)
        return v is None or (step in extend and key in ("llc", "behavioral_llc") and not v["converged"])
    return [t for g in groups for t in g if wanted(*t)]


def continued(before: dict | None, value: dict) -> dict:
    """The stored value of a measurement; for a continued SGLD run (``before`` stored) the seconds of
    every segment add up and ``segments`` counts them."""
    if before is None:
        return value
    return dict(value, seconds=value["seconds"] + before["seconds"], segments=before.get("segments", 1) + 1)


def run_study(s: StudySettings, out_dir, *, log=print, progress=None, device=None, measure_more: bool = True,
              worker: tuple[int, int] = (0, 1), extend: tuple[int, ...] = ()) -> StudyResult:
    """Train (or resume), choose the checkpoints and measure each one (module docstring).

    Args:
        s: the settings.
        out_dir: folder for checkpoints, measurements and SGLD chain states (created).
        log: called with one line per finished measurement.
        progress: ``progress(iterable, total=, desc=)`` wrapper (e.g. tqdm) for the measurement loop.
        device: where to train and measure (default: CUDA when available, else CPU).
        measure_more: False: only what is stored (a report of a study still running or cut short).
        worker: ``(i, k)``: measure only the i-th of k balanced shares of the task groups (one process per
            core; the processes share the store). The training must have finished, or run in one process first.
        extend: checkpoint steps whose stored LLC and behavioral LLC, where not converged, are continued
            from their saved chains for another ``s.llc_max_seconds`` (the stored seconds add up; the
            draws are those of one uninterrupted run).

    Returns:
        :class:`StudyResult`.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_data, heldout = data_splits(s)
    steps_all = tuple(range(0, s.train.num_steps + 1, s.train.eval_every))
    tcfg = replace(s.train, checkpoint_steps=steps_all)
    run = train(s.model, train_data, heldout, tcfg, out_dir=out / "checkpoints", init_seed=s.seed, device=device,
                metadata={"language": asdict(s.language)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transition = find_transition(run.history, run.checkpoint_steps)
    steps = choose_steps(run.checkpoint_steps, transition, s.num_checkpoints)
    store = _Store(out / "measurements.json")
    dtype = getattr(torch, s.dtype)
    tokens = measure_tokens(train_data, s).to(device)
    # "transition": the checkpoints bracketing the drop (choose_steps always measures them), else first and last
    refine_steps = steps if s.refine_at == "all" else {transition.before_step or steps[0], transition.after_step or steps[-1]}
    groups = []  # tasks in the order they must run; different groups may run in different workers
    for step in steps:
        groups += [[(step, "curvature"), (step, "order4")], [(step, "calibration/training"), (step, "llc")],
                   [(step, "calibration/behavioral"), (step, "behavioral_llc")]]
        if step in refine_steps:
            groups += [[(step, f"refined/{k}")] for k in _refined_keys(s)]
    index, count = worker
    groups = [g for g in _partition(groups, s, count)[index]] if count > 1 else groups
    todo = pending(groups, store, extend) if measure_more else []
    desc = f"transformer {s.name}" + (f" worker {index + 1}/{count}" if count > 1 else "")
    ticks = iter(progress(range(len(todo)), total=len(todo), desc=desc)) if progress else None
    if ticks is not None:
        next(ticks, None)  # the bar ticks when the next item is asked for: once now, once per finished task
    models = {}
    while todo:
        step, key = _next_ready(todo, store)
        todo.remove((step, key))
        if step not in models:
            models.clear()
            lm, _ = load_checkpoint(out / "checkpoints", step, device=device, dtype=dtype)
            models[step] = NextTokenLM(lm).eval()
        model = models[step]
        chain = out / "chains" / f"step{step}_{key.replace('/', '_')}.pt"
        chain.parent.mkdir(exist_ok=True)
        llc_kw = dict(localization=s.localization, batch_size=s.llc_batch, num_chains=s.llc_chains, max_seconds=s.llc_max_seconds,
                      seed=s.seed + step, checkpoint_path=str(chain))
        if key == "curvature":
            value = measure.curvature(model, tokens, num_probes=s.slq_probes, num_steps=s.slq_steps,
                                      batch_size=s.curvature_batch, seed=s.seed,
                                      localization=s.localization)
        elif key == "order4":
            value = measure.order4(model, tokens, store.get(step, "curvature"), batch_size=s.curvature_batch)
        elif key.startswith("calibration/"):
            value = measure.calibrate(model, tokens, kind=key.split("/", 1)[1], batch_size=s.llc_batch,
                                      localization=s.localization, pilot_steps=s.pilot_steps, seed=s.seed + step)
        elif key == "llc":
            value = measure.llc(model, tokens, kind="training", step_size=_step(store, step, "training"), **llc_kw)
        elif key == "behavioral_llc":
            value = measure.llc(model, tokens, kind="behavioral", step_size=_step(store, step, "behavioral"), **llc_kw)
        else:
            value = measure.llc(model, tokens, kind="training", selection=key.split("/", 1)[1],
                                step_size=_step(store, step, "training"),
                                **{**llc_kw, "max_seconds": s.refine_max_seconds or s.llc_max_seconds})
        store.put(step, key, continued(store.get(step, key), value))
        if ticks is not None:
            next(ticks, None)
        if log:
            log(f"[{s.name}] step {step} {key}: {_brief(key, value)}")
    store.refresh()
    return StudyResult(settings=s, history=list(run.history), transition=transition, steps=steps,
                       measurements=store.data, num_params=count_parameters(s.model), out_dir=out,
                       train_seconds=run.history[-1].wall_time_s)


def _brief(key, v) -> str:
    if key == "curvature":
        h = v["hessian"]
        br = (f", quadrature bracket [{h['rank_bracket'][0]:.0f}, {h['rank_bracket'][1]:.0f}]"
              if "rank_bracket" in h else "")
        return (f"rank(τ(n)) = {h['rank_at_tau_n']:.0f} ± {h['rank_se']:.0f}{br} of d = {v['dim']} "
                f"({h['seconds'] + v['gauss_newton']['seconds']:.1f} s)")
    if key == "order4":
        return "computed" if v["computed"] else "not computed: " + v["reason"]
    if key.startswith("calibration/"):
        return f"ε = {v['step_size']:.3g} ({v['seconds']:.0f} s)"
    return f"{v['mean']:.2f} ± {v['std_err']:.2f} ({'converged' if v['converged'] else 'NOT converged'}, {v['seconds']:.0f} s)"


# ---------------------------------------------------------------------------------------------- analysis

def _brackets(c: dict, key: str, taus) -> list[tuple[float, float]]:
    """The quadrature brackets of the count above each τ, recomputed from the stored per-probe rules (so that
    measurements stored before a sharper bracket existed get it too)."""
    q = c[key]["quadrature"]
    sq = SpectralQuadrature(torch.tensor(q["nodes"], dtype=torch.float64), torch.tensor(q["weights"], dtype=torch.float64),
                            c["dim"], c[key]["num_steps"], 0)
    return [sq.count_bracket(float(t)) for t in taus]


def _unconverged_note(converged) -> str:
    bad = sum(not c for c in converged)
    if not bad:
        return ""
    return (f" Caveat: {bad} of the {len(converged)} SGLD runs behind this statement stopped on their time budget "
            "before their convergence targets, so the SEs do not contain the bias of an unconverged chain.")


def _ratio(a, sa, b, sb):
    """a/b with the first-order propagated standard error."""
    r = a / b
    return r, abs(r) * math.sqrt((sa / a) ** 2 + (sb / b) ** 2) if a and b else math.nan


def _diff_z(x, y):
    d = y["mean"] - x["mean"]
    se = math.hypot(x["std_err"], y["std_err"])
    return d, se, d / se if se > 0 else math.inf


def table_rows(res: StudyResult) -> list[dict]:
    """One row per measured checkpoint with the headline numbers."""
    hist = {r.step: r for r in res.history}
    rows = []
    for step in res.steps:
        m = res.measurements.get(str(step), {})
        c, l, b = m.get("curvature"), m.get("llc"), m.get("behavioral_llc")
        row = {"step": step, "heldout_loss": hist[step].heldout_loss, "in_context_loss": hist[step].heldout_copy_loss,
               "prefix_matching": hist[step].max_prefix_matching}
        if c:
            row.update(dim=c["dim"], n=c["n"], rank=c["hessian"]["rank_at_tau_n"], rank_se=c["hessian"]["rank_se"],
                       gn_rank=c["gauss_newton"]["rank_at_tau_n"], gn_rank_se=c["gauss_newton"]["rank_se"],
                       lower=c["hessian"]["lower"], lower_se=c["hessian"]["lower_se"],
                       quadratic=c["hessian"]["quadratic_llc"], gn_quadratic=c["gauss_newton"]["quadratic_llc"],
                       negative=c["hessian"]["negative_below_tau_n"], negative_se=c["hessian"]["negative_se"],
                       grad_norm=c["grad_norm"])
            lo, hi = _brackets(c, "hessian", [c["tau_n"]])[0] if "quadrature" in c["hessian"] else (math.nan, math.nan)
            row.update(rank_lo=lo, rank_hi=hi)
        if l:
            row.update(llc=l["mean"], llc_se=l["std_err"], llc_converged=l["converged"])
        if b:
            row.update(bllc=b["mean"], bllc_se=b["std_err"], bllc_converged=b["converged"])
        if l and b:
            row["ratio"], row["ratio_se"] = _ratio(b["mean"], b["std_err"], l["mean"], l["std_err"])
        rows.append(row)
    return rows


def conclusions(res: StudyResult) -> list[str]:
    """Statements computed from the run's numbers; each names its uncertainty or says it cannot tell."""
    rows = [r for r in table_rows(res) if "llc" in r and "rank" in r]
    if not rows:
        return ["No checkpoint has both the curvature and the LLC measured yet; rerun to finish the study."]
    last = rows[-1]
    out = []
    d = last["dim"]
    frac, frac_se = last["rank"] / d, last["rank_se"] / d
    lo, hi = last["rank_lo"], last["rank_hi"]
    known = math.isfinite(lo)  # the bracket is missing from measurements made before it existed
    lo, hi = (lo, hi) if known else (last["rank"], last["rank"])
    se = last["rank_se"]
    out.append(
        f"(a) At the last checkpoint (step {last['step']}, d = {d:,}, n = {last['n']:,} tokens), the Hessian has "
        f"rank {last['rank']:.0f} ± {se:.0f} at τ(n) = γ/(nβ), {100 * frac:.1f} ± {100 * frac_se:.1f}% of d"
        + (f"; with {res.measurements[str(last['step'])]['curvature']['hessian']['num_steps']} Lanczos steps the "
           f"quadrature places it only within [{lo:,.0f}, {hi:,.0f}] (Chebyshev–Markov–Stieltjes bracket, which the "
           "SE does not contain)" if known else " (quadrature resolution not measured)")
        + f": the rank lower bound r/2 is {lo / 2:,.0f}–{hi / 2:,.0f} against the regular value d/2 = {d / 2:,.0f}. "
        + ("The trained network is highly degenerate at this n: most directions are flatter than γ/(nβ)."
           if hi + 2 * se < d / 2 else
           "Most directions are curved at this n: by the rank bound the network is far from degenerate."
           if lo - 2 * se > d / 2 else
           "Whether most directions are curved at this n cannot be told from this SLQ count (its bracket ± 2 SE "
           "contains d/2)."))
    if last.get("negative", 0) - 2 * last.get("negative_se", 0) > 0:
        out.append(f"The checkpoint is not a minimum of L_n: the Hessian has {last['negative']:.0f} ± "
                   f"{last['negative_se']:.0f} eigenvalues below −τ(n) (‖∇L_n‖ = {last['grad_norm']:.2e}); the rank "
                   "bounds describe the positive part only and hold for the LLC only at a minimum.")
    l, se = last["llc"], last["llc_se"]
    b_lo, b_hi = lo / 2 - 2 * last["lower_se"], hi / 2 + 2 * last["lower_se"]
    rel = "above" if l - 2 * se > b_hi else ("below" if l + 2 * se < b_lo else "within the 2-SE bracket of")
    out.append(f"The SGLD LLC there is {l:.1f} ± {se:.1f}, {rel} the rank lower bound {lo / 2:,.0f}–{hi / 2:,.0f} and "
               f"{'below' if l < last['quadratic'] else 'above'} the quadratic prediction ½·Σh/(h+τ(n)) = "
               f"{last['quadratic']:.1f}" + ("" if last["llc_converged"] else " (the SGLD run did not converge)") + ".")
    o4 = [res.measurements[str(r["step"])].get("order4") for r in rows]
    if any(o and o["computed"] for o in o4):
        for r, o in zip(rows, o4):
            if o and o["computed"]:
                out.append(f"Order 4 at step {r['step']}: g₄ is {o['quartic']}; the lower bound moves from "
                           f"{o['order2_lower']:.2f} to {o['lower']:.2f}.")
    else:
        k = [o["nullity"] for o in o4 if o] + [r["dim"] - r[e] for r in rows for e in ("rank_lo", "rank_hi")
                                                  if math.isfinite(r.get(e, math.nan))]
        out.append(f"(a′) Order 4: we cannot tell at this size. The numerical null space at τ(n) has dimension "
                   f"{min(k):,.0f}–{max(k):,.0f} over the checkpoints (SLQ estimates and quadrature brackets), against at most {measure.ORDER4_MAX_NULLITY} "
                   "variables for the quartic analysis; the order-4 term could at most add k/4 (if g₄ were positive "
                   "definite on the whole null space, which cannot be certified at this k) and adds at least 1/4 "
                   "once g₄ ≢ 0 is witnessed.")
    rr = [r for r in rows if "ratio" in r]
    if rr:
        r = rr[-1]
        verdict = ("larger than" if r["ratio"] - 2 * r["ratio_se"] > 1 else
                   "smaller than" if r["ratio"] + 2 * r["ratio_se"] < 1 else "indistinguishable (2 SE) from")
        out.append(f"(b) The behavioral LLC (KL) at step {r['step']} is {r['bllc']:.1f} ± {r['bllc_se']:.1f}, "
                   f"{r['ratio']:.2f} ± {r['ratio_se']:.2f} times the LLC: {verdict} the LLC. Over the checkpoints the "
                   "ratio is " + ", ".join(f"{x['ratio']:.2f} ± {x['ratio_se']:.2f} (step {x['step']})" for x in rr) + "."
                   + _unconverged_note([x[k] for x in rr for k in ("llc_converged", "bllc_converged")]))
    t = res.transition
    if getattr(t, "found", False) and t.before_step in res.steps and t.after_step in res.steps:
        mb, ma = res.measurements.get(str(t.before_step), {}), res.measurements.get(str(t.after_step), {})
        if "llc" in mb and "llc" in ma:
            dl, dse, z = _diff_z(mb["llc"], ma["llc"])
            out.append(f"Across the induction-head transition (steps {t.before_step} → {t.after_step}, in-context loss "
                       f"{t.copy_loss_before:.2f} → {t.copy_loss_after:.2f} nats) the LLC changes by {dl:+.1f} ± {dse:.1f} "
                       + ("(significant at 2 SE)." if abs(z) > 2 else "(not significant at 2 SE).")
                       + _unconverged_note([mb["llc"]["converged"], ma["llc"]["converged"]]))
        heads = [k for k in mb if k.startswith("refined/head") and k in ma]
        if heads:
            changes = {k: _diff_z(mb[k], ma[k]) for k in heads}
            top = max(changes, key=lambda k: changes[k][2])
            layer, head = (int(x) for x in top[len("refined/head"):].split("."))
            pm = {r.step: r for r in res.history}[t.after_step].prefix_matching
            best = max(((l_, h_) for l_ in range(len(pm)) for h_ in range(len(pm[l_]))), key=lambda lh: pm[lh[0]][lh[1]])
            dl, dse, z = changes[top]
            out.append(f"The head whose refined LLC {'rises most' if dl > 0 else 'falls least (none rises)'} "
                       f"across the transition is L{layer}H{head} "
                       f"({dl:+.1f} ± {dse:.1f}, z = {z:.1f}); the head with the highest prefix-matching score after it is "
                       f"L{best[0]}H{best[1]} ({pm[best[0]][best[1]]:.2f})" +
                       (": the same head." if (layer, head) == best else ": a different head.") +
                       (" The rise is not significant at 2 SE." if z < 2 else "")
                       + _unconverged_note([mb[top]["converged"], ma[top]["converged"]]))
    elif not getattr(t, "found", False):
        out.append(f"No induction-head transition was detected in this run ({t}); the checkpoints are evenly spaced.")
    return out


def summary_rows(res: StudyResult) -> list[tuple[str, str]]:
    """(question, one-line answer with its number and error bar) for the report's summary table."""
    rows = [r for r in table_rows(res) if "llc" in r and "rank" in r]
    if not rows:
        return []
    last = rows[-1]
    out = [(f"Transformer LM ({res.num_params:,} params): Hessian rank bound vs d/2 at the last checkpoint",
            f"r/2 = {last['lower']:.0f} ± {last['lower_se']:.0f}"
            + (f" (quadrature bracket {last['rank_lo'] / 2:,.0f}–{last['rank_hi'] / 2:,.0f})"
               if math.isfinite(last.get("rank_lo", math.nan)) else "")
            + f" of d/2 = {last['dim'] / 2:,.0f}; "
            f"LLC {last['llc']:.1f} ± {last['llc_se']:.1f}")]
    if "ratio" in last:
        out.append(("Transformer LM: behavioral LLC (KL) / LLC", f"{last['ratio']:.2f} ± {last['ratio_se']:.2f} "
                    f"(step {last['step']})"))
    return out


# ---------------------------------------------------------------------------------------------- figures

def figures(res: StudyResult, savefig) -> dict[str, str]:
    """The study's plots; ``savefig(fig, name) -> path``. Returns {name: path}."""
    paths = {}
    rows = table_rows(res)
    hist = res.history
    t = res.transition
    # 1. along training: losses, and LLC / behavioral LLC / bounds
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(9.5, 7), sharex=True)
    st = [r.step for r in hist]
    ax0.plot(st, [r.train_loss for r in hist], label="training loss")
    ax0.plot(st, [r.heldout_loss for r in hist], label="held-out loss")
    ax0.plot(st, [r.heldout_copy_loss for r in hist], label="held-out in-context (copy-position) loss")
    ax0.plot(st, [r.heldout_markov_loss for r in hist], label="held-out Markov-position loss")
    ax0.set_ylabel("loss (nats / token)")
    fig.suptitle(f"Transformer LM, {res.num_params:,} parameters: loss and LLC along training")
    ax0.set_title("losses")
    for r_key, se_key, label in (("llc", "llc_se", "LLC (SGLD)"), ("bllc", "bllc_se", "behavioral LLC, KL (SGLD)"),
                                 ("lower", "lower_se", "rank bound r(τ(n))/2\n(bars: quadrature bracket ± 2 SE)"),
                                 ("quadratic", None, "quadratic prediction ½Σh/(h+τ(n))")):
        pts = [r for r in rows if r_key in r]
        if not pts:
            continue
        yerr = [2 * r[se_key] for r in pts] if se_key else None
        if r_key == "lower" and all(math.isfinite(r.get("rank_lo", math.nan)) for r in pts):
            yerr = [[max(0.0, r["lower"] - r["rank_lo"] / 2 + 2 * r["lower_se"]) for r in pts],
                    [max(0.0, r["rank_hi"] / 2 - r["lower"] + 2 * r["lower_se"]) for r in pts]]
        ax1.errorbar([r["step"] for r in pts], [r[r_key] for r in pts], yerr=yerr, marker="o", capsize=3, label=label)
    ax1.set_yscale("log")
    ax1.set_xlabel("training step")
    ax1.set_ylabel("learning coefficient (±2 SE)")
    ax1.set_title("LLC, behavioral LLC and the Hessian-rank bound at τ(n)")
    ax1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    for ax in (ax0, ax1):
        if getattr(t, "found", False) and t.before_step is not None and t.after_step is not None:
            ax.axvspan(t.before_step, t.after_step, color="0.85", zorder=0,
                       label="induction heads form" if ax is ax0 else None)
    ax0.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    paths["along_training"] = savefig(fig, "along_training")
    # 2. rank curves vs τ
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(res.steps)))
    for color, step in zip(colors, res.steps):
        c = res.measurements.get(str(step), {}).get("curvature")
        if not c:
            continue
        for key, style in (("hessian", "-"), ("gauss_newton", "--")):
            h = c[key]
            ax.plot(h["taus"], np.array(h["ranks"]) / c["dim"], style, color=color,
                    label=f"step {step}, {'Hessian' if key == 'hessian' else 'Gauss–Newton'}")
            if key == "hessian" and "quadrature" in h:
                br = np.array(_brackets(c, key, h["taus"])) / c["dim"]
                ax.fill_between(h["taus"], br[:, 0], br[:, 1], color=color, alpha=0.15, lw=0)
        ax.axvline(c["tau_n"], color="0.4", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("threshold τ (eigenvalue units of L_n, nats/token)")
    ax.set_ylabel("numerical rank / d")
    ax.set_title("Numerical rank vs threshold (SLQ; shaded: quadrature bracket); dotted: τ(n) = γ/(nβ)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    paths["rank_curve"] = savefig(fig, "rank_curve")
    # 3. SLQ density at the last checkpoint
    c = res.measurements.get(str(res.steps[-1]), {}).get("curvature")
    if c:
        fig, ax = plt.subplots(figsize=(8, 4))
        for key, label in (("hessian", "Hessian"), ("gauss_newton", "Gauss–Newton")):
            dens = c[key]["density"]
            edges = np.array(dens["log10_edges"])
            mid = (edges[:-1] + edges[1:]) / 2
            ax.step(mid, dens["positive"], where="mid", label=f"{label}, λ > 0")
            if key == "hessian":
                ax.step(mid, dens["negative"], where="mid", ls="--", label="Hessian, λ < 0 (by |λ|)")
        ax.axvline(math.log10(c["tau_n"]), color="0.4", ls=":", label="τ(n)")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("log10 |eigenvalue|")
        ax.set_ylabel("eigenvalues per bin (SLQ estimate)")
        ax.set_title(f"Spectral density at step {res.steps[-1]} (SLQ, {c['hessian']['num_probes']} probes)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
        paths["density"] = savefig(fig, "density")
    # 4. refined LLCs
    keys = _refined_keys(res.settings)
    measured = [s for s in res.steps if any(f"refined/{k}" in res.measurements.get(str(s), {}) for k in keys)]
    if measured:
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(measured)
        for i, step in enumerate(measured):
            m = res.measurements[str(step)]
            vals = [m.get(f"refined/{k}", {}).get("mean", np.nan) for k in keys]
            errs = [2 * m.get(f"refined/{k}", {}).get("std_err", np.nan) for k in keys]
            ax.bar(np.arange(len(keys)) + i * width, vals, width, yerr=errs, capsize=2, label=f"step {step}")
        ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [k.replace("head", "L").replace(".", "H") if k.startswith("head")
                                                             else k.replace("layer", "layer ") for k in keys],
                      rotation=45, fontsize=8)
        ax.set_xlabel("weights sampled (the rest fixed at w*)")
        ax.set_ylabel("weight-refined LLC (±2 SE)")
        ax.set_title("Weight-refined LLC per layer and per attention head")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
        paths["refined"] = savefig(fig, "refined")
    return paths


def _cost_table(res: StudyResult) -> str:
    lines = ["| step | measurement | seconds | peak memory growth (MB) | notes |", "|---|---|---|---|---|"]
    for step in res.steps:
        m = res.measurements.get(str(step), {})
        c = m.get("curvature")
        if c:
            for key in ("hessian", "gauss_newton"):
                h = c[key]
                lines.append(f"| {step} | SLQ {key.replace('_', '–')} | {h['seconds']:.1f} | {h['peak_memory_mb']:.0f} | "
                             f"{h['matvecs']} products ({h['num_probes']} probes × {h['num_steps']} steps) |")
        for kind in ("training", "behavioral"):
            v = m.get(f"calibration/{kind}")
            if v:
                lines.append(f"| {step} | step-size calibration ({kind}) | {v['seconds']:.1f} | {v['peak_memory_mb']:.0f} | "
                             f"{v['num_candidates']} pilot chains × {v['pilot_steps']} steps → ε = {v['step_size']:.2g} |")
        for key in ["llc", "behavioral_llc"] + sorted(k for k in m if k.startswith("refined/")):
            v = m.get(key)
            if v:
                lines.append(f"| {step} | {key} | {v['seconds']:.1f} | {v['peak_memory_mb']:.0f} | "
                             f"{v['num_burnin'] + v['num_draws']} steps × {res.settings.llc_chains} chains, ε = "
                             f"{v['step_size']:.2g}{'' if v['converged'] else ', not converged'}"
                             f"{', diverged at the calibrated ε: recalibrated' if v.get('recalibrated') else ''} |")
    return "\n".join(lines)


def markdown(res: StudyResult, savefig, *, heading_level: int = 3) -> str:
    """The study as Markdown (figures saved through ``savefig``)."""
    s = res.settings
    h = "#" * heading_level
    paths = figures(res, savefig)
    rows = table_rows(res)
    parts = [
        f"Model: {s.model.num_layers} layers × {s.model.num_heads} heads, d_model = {s.model.d_model}, "
        f"{res.num_params:,} parameters; language: V = {s.language.vocab_size}, T = {s.language.seq_len}, copy rate "
        f"{s.language.copy_rate}, copies of {s.language.min_copy_len}–{s.language.max_copy_len} tokens at random "
        f"offsets; {s.num_train:,} training sequences; trained {s.train.num_steps} AdamW steps in "
        f"{res.train_seconds:.0f} s. L_n over the first {s.num_measure} training sequences "
        f"(n = {s.num_measure * (s.language.seq_len - 1):,} tokens, nβ = n/log n, γ = {s.localization:g}). "
        f"Measurements in {s.dtype}.",
        f"Induction heads: {res.transition}.",
        f"{h} Conclusions (computed from this run)", "\n".join(f"- {c}" for c in conclusions(res)),
        f"{h} Checkpoints",
        "| step | held-out loss | in-context loss | max prefix-matching | rank(τ(n)) (SE) | quadrature bracket | "
        "GN rank (SE) | r/2 | ½Σh/(h+τ) | LLC (SE) | behavioral LLC (SE) | ratio (SE) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def f(key, se=None, fmt=".1f"):
            if key not in r:
                return "—"
            return f"{r[key]:{fmt}}" + (f" ({r[se]:{fmt}})" if se else "")
        parts[-1] += "\n" + (f"| {r['step']} | {r['heldout_loss']:.3f} | {r['in_context_loss']:.3f} | {r['prefix_matching']:.2f} | "
                             f"{f('rank', 'rank_se', '.0f')} | "
                             + (f"[{r['rank_lo']:,.0f}, {r['rank_hi']:,.0f}]" if math.isfinite(r.get("rank_lo", math.nan)) else "—")
                             + f" | {f('gn_rank', 'gn_rank_se', '.0f')} | {f('lower', None, '.0f')} | "
                             f"{f('quadratic')} | {f('llc', 'llc_se')}{'' if r.get('llc_converged', True) else '*'} | "
                             f"{f('bllc', 'bllc_se')}{'' if r.get('bllc_converged', True) else '*'} | {f('ratio', 'ratio_se', '.2f')} |")
    parts.append("`*`: the adaptive SGLD run stopped on its budget before its convergence targets (its warning is in "
                 "the measurements file). τ(n) = γ/(nβ).")
    for name in ("along_training", "rank_curve", "density", "refined"):
        if name in paths:
            parts.append(f"![{name}]({paths[name]})")
    parts += [f"{h} Cost of each measurement", _cost_table(res),
              "Memory: on a CPU, the growth of the resident set above its size at the start of the measurement "
              "(sampled every 10 ms); a measurement that reuses heap an earlier one in the same process left "
              "behind shows little or none (0). On CUDA, allocated memory above the start.",
              "Time and memory scale with d·n for the curvature products and with d·(batch tokens)·steps for SGLD; "
              "the next size up (10× d) costs about 10× per product on the same data."]
    return "\n\n".join(parts)


def _run_workers(args, size: str) -> None:
    """``args.workers`` processes of this module, one share of ``size``'s measurements each (one thread each)."""
    which = ["--quick"] if size == "quick" else ["--sizes", size]
    cmd = [sys.executable, "-m", "experiments.transformer_study", *which, "--out", str(args.out)]
    if args.llc_seconds is not None:
        cmd += ["--llc-seconds", str(args.llc_seconds)]
    if args.extend:
        cmd += ["--extend", *map(str, args.extend)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd + ["--worker", f"{i}/{args.workers}"], env=env) for i in range(args.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a measurement worker failed (exit codes {codes}); rerun the same command to resume")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.transformer_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["0.1M", "1M"], choices=["0.1M", "1M", "10M"])
    parser.add_argument("--quick", action="store_true", help="the report's quick settings instead of --sizes")
    parser.add_argument("--out", type=Path, default=Path("runs/transformer"))
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the stored numbers without measuring more (the training "
                             "must have finished)")
    parser.add_argument("--workers", type=int, default=1,
                        help="measure in this many processes (one per core), sharing the store; the training "
                             "runs first in this one")
    parser.add_argument("--llc-seconds", type=float,
                        help="wall-clock budget of each (full-network) SGLD run instead of the size's default")
    parser.add_argument("--extend", type=int, nargs="+", default=[], metavar="STEP",
                        help="continue the unconverged LLC and behavioral LLC of these checkpoints from their "
                             "saved chains for another --llc-seconds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # "i/k": one share (set by --workers)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be ≥ 1, got {args.workers}")
    if args.llc_seconds is not None and not args.llc_seconds > 0:
        parser.error(f"--llc-seconds must be a positive number of seconds, got {args.llc_seconds}")
    from tqdm.auto import tqdm

    settings = [quick_settings()] if args.quick else [full_settings(s) for s in args.sizes]
    if args.llc_seconds is not None:  # the weight-refined runs keep their own budget
        settings = [replace(s, llc_max_seconds=args.llc_seconds,
                            refine_max_seconds=s.refine_max_seconds or s.llc_max_seconds) for s in settings]
    if any(s.name == "10M" for s in settings) and not torch.cuda.is_available():
        parser.error("the 10M model is for a GPU (no CUDA device here); the CPU study stops at 1M")
    texts = ["# How degenerate is a trained transformer LM? (issue 13)\n"]
    worker = tuple(int(x) for x in args.worker.split("/")) if args.worker else (0, 1)
    for s in settings:
        if args.workers > 1 and not args.report_only:
            run_study(s, args.out / s.name, log=tqdm.write, measure_more=False)  # trains (or resumes)
            _run_workers(args, s.name)
        res = run_study(s, args.out / s.name, progress=lambda it, **kw: tqdm(it, **kw), log=tqdm.write,
                        measure_more=not args.report_only and not (args.workers > 1 and not args.worker),
                        worker=worker, extend=tuple(args.extend))
        if args.worker:
            continue
        fig_dir = args.out / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)

        def savefig(fig, name, _s=s):
            path = fig_dir / f"{_s.name}_{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            return f"figures/{path.name}"

        texts.append(f"## {s.name}\n\n" + markdown(res, savefig))
        (args.out / "report.md").write_text("\n\n".join(texts) + "\n")
    if not args.worker:
        print(f"written {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
