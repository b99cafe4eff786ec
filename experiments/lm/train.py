"""Training a :class:`~experiments.lm.model.CausalLM` on the synthetic language (issue 13).

With checkpoints and induction-head detection:

* :func:`train` — AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) with linear warm-up then a constant
  rate and gradient-norm clipping; minibatch ``t`` is drawn from the training sequences by a generator
  seeded with ``(seed, t)``, so a run is a function of its settings and resumes exactly. It evaluates at
  chosen steps — training and held-out loss, the held-out loss on copy positions (the *in-context*
  loss) and on Markov positions, and the prefix-matching score of every head — and saves checkpoints
  (``torch.save`` of state dicts, configs, step and history) into a folder.
* :func:`prefix_matching_scores` — for each head, the attention from a token to the position right
  after the token's earlier occurrences (Olsson et al. 2022, "In-context learning and induction heads",
  arXiv 2209.11895): ≈1 for an induction head, ≈0 otherwise.
* :func:`find_transition` — the checkpoint steps just before and just after the in-context loss drop.

    >>> lang = Language(LanguageConfig())
    >>> train_data, heldout = lang.splits(2048, 256, seed=0)
    >>> run = train(config_for_size(100_000, vocab_size=64, seq_len=64), train_data, heldout,
    ...             TrainConfig(num_steps=1000, checkpoint_steps=(0, 250, 500, 750, 1000)), out_dir="runs/lm")
    >>> find_transition(run.history, run.checkpoint_steps)
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from slt_interp.estimators.threads import choose_num_threads, intra_op_threads

from .language import LanguageSample, repeated_tokens
from .model import CausalLM, LMConfig

__all__ = ["TrainConfig", "EvalRecord", "TrainResult", "InductionTransition", "train", "load_checkpoint",
           "checkpoint_path", "list_checkpoints", "next_token_losses", "evaluate", "prefix_matching_scores",
           "prefix_matching_score_of", "copy_attention_scores", "find_transition"]

_FORMAT = "experiments.lm.checkpoint/1"
# TrainConfig fields that change the trajectory; the others (how long, what is logged and saved) may
# change between a run and its resumption
_TRAJECTORY_FIELDS = ("batch_size", "lr", "betas", "weight_decay", "warmup_steps", "grad_clip", "seed")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        num_steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: sequences per minibatch (drawn with replacement).
        lr: peak AdamW learning rate, reached linearly over ``warmup_steps`` and then kept.
        betas: AdamW (β₁, β₂).
        weight_decay: AdamW decoupled weight decay (on every parameter).
        warmup_steps: steps of linear warm-up.
        grad_clip: maximal gradient 2-norm (``None``: no clipping).
        seed: seed of the minibatch order (the initialisation has its own seed, :func:`train`'s
            ``init_seed``).
        eval_every: evaluate every this many steps (and at step 0, the checkpoints and the end).
        checkpoint_steps: steps at which a checkpoint is saved; the last step is always saved.
        num_eval_sequences: sequences of the training and the held-out sample used for evaluation.
        num_probe_sequences: repeated-random-token sequences for the prefix-matching score.
        probe_seed: seed of those sequences.
    """

    num_steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 50
    checkpoint_steps: tuple[int, ...] = ()
    num_eval_sequences: int = 256
    num_probe_sequences: int = 16
    probe_seed: int = 12345

    def __post_init__(self):
        for name in ("num_steps", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a non-negative int, got {value!r}")
        for name in ("batch_size", "eval_every", "num_eval_sequences", "num_probe_sequences"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        bad = [s for s in self.checkpoint_steps if not isinstance(s, int) or not 0 <= s <= self.num_steps]
        if bad:
            raise ValueError(f"TrainConfig.checkpoint_steps {bad} are outside 0..num_steps={self.num_steps}; "
                             "drop them or raise num_steps")
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "checkpoint_steps", tuple(sorted(set(self.checkpoint_steps))))

    def learning_rate(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (1-based): ``lr · min(1, step / warmup_steps)``."""
        return self.lr * min(1.0, step / self.warmup_steps) if self.warmup_steps else self.lr


@dataclass(frozen=True)
class EvalRecord:
    """Losses (nats per token, float64 accumulation) and induction scores at one step.

    Attributes:
        step: optimizer steps taken.
        train_batch_loss: mean minibatch loss over the steps since the previous record or the resumption
            (nan at step 0).
        train_loss: loss on the first ``num_eval_sequences`` training sequences.
        heldout_loss: loss on the first ``num_eval_sequences`` held-out sequences, all positions.
        heldout_copy_loss: the in-context loss — held-out loss on copy positions (``copy_mask``).
        heldout_markov_loss: held-out loss on Markov positions (floor: the source's entropy rate).
        prefix_matching: per layer, per head, the prefix-matching score on repeated random tokens.
        copy_attention: per layer, per head, :func:`copy_attention_scores` on the held-out sequences
            used for evaluation (at most 64 of them).
        wall_time_s: seconds since the start of the run (summed over resumptions).
    """

    step: int
    train_batch_loss: float
    train_loss: float
    heldout_loss: float
    heldout_copy_loss: float
    heldout_markov_loss: float
    prefix_matching: tuple[tuple[float, ...], ...]
    copy_attention: tuple[tuple[float, ...], ...]
    wall_time_s: float

    @property
    def in_context_gap(self) -> float:
        """Markov-position minus copy-position held-out loss: rises when the model copies from context."""
        return self.heldout_markov_loss - self.heldout_copy_loss

    @property
    def max_prefix_matching(self) -> float:
        """The largest prefix-matching score over all heads."""
        return max(max(row) for row in self.prefix_matching)

    @property
    def max_copy_attention(self) -> float:
        """The largest copy-attention score over all heads."""
        return max(max(row) for row in self.copy_attention)


@dataclass(frozen=True)
class TrainResult:
    """A trained model and its run.

    Attributes:
        model: the model after ``config.num_steps`` steps.
        history: the :class:`EvalRecord` of every evaluation, in step order.
        checkpoint_steps: steps with a checkpoint in ``out_dir`` (empty without ``out_dir``).
        out_dir: the checkpoint folder, or None.
        config: the :class:`TrainConfig`.
        resumed_from: the step the run resumed from (None for a fresh run).
    """

    model: CausalLM = field(repr=False)
    history: tuple[EvalRecord, ...] = field(repr=False)
    checkpoint_steps: tuple[int, ...]
    out_dir: Path | None
    config: TrainConfig
    resumed_from: int | None

    def __repr__(self) -> str:
        last = self.history[-1]
        return (f"TrainResult(step {last.step}: held-out loss {last.heldout_loss:.4f}, in-context loss "
                f"{last.heldout_copy_loss:.4f}, Markov-position loss {last.heldout_markov_loss:.4f}, "
                f"max prefix-matching {last.max_prefix_matching:.3f}; checkpoints {list(self.checkpoint_steps)})")


def next_token_losses(logits: Tensor, tokens: Tensor) -> Tensor:
    """Per-target cross-entropy ``−log softmax(logits[:, k−1])[tokens[:, k]]`` for k = 1 … T−1.

    Args:
        logits: (B, T, V) from :class:`CausalLM`.
        tokens: (B, T) the input tokens.

    Returns:
        (B, T−1) losses in the logits' dtype; column ``k − 1`` is the loss of token k.
    """
    B, T, V = logits.shape
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1), reduction="none").view(B, T - 1)


@torch.no_grad()
def evaluate(model: CausalLM, sample: LanguageSample, *, batch_size: int = 256) -> tuple[float, float, float]:
    """Mean next-token loss of ``model`` on a sample: all positions, copy positions, Markov positions.

    Args:
        model: the LM (its device is used).
        sample: a :class:`~experiments.lm.language.LanguageSample`.
        batch_size: sequences per forward pass.

    Returns:
        ``(loss, copy_loss, markov_loss)`` in nats per token, accumulated in float64; a mean over an
        empty set is nan.
    """
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64)
    counts = torch.zeros(3, dtype=torch.float64)
    for i in range(0, sample.num_sequences, batch_size):
        part = sample[i: i + batch_size].to(device)
        losses = next_token_losses(model(part.tokens), part.tokens).double()       # (b, T−1)
        for j, mask in enumerate((torch.ones_like(part.copy_mask), part.copy_mask, part.markov_mask)):
            m = mask[:, 1:]
            sums[j] += losses[m].sum().cpu()
            counts[j] += m.sum().cpu()
    means = sums / counts
    return float(means[0]), float(means[1]), float(means[2])


def prefix_matching_scores(patterns: Tensor, tokens: Tensor) -> Tensor:
    """Prefix-matching score of every head (Olsson et al. 2022, arXiv 2209.11895).

    For a query position q, the *induction targets* are the keys k ≤ q right after an earlier occurrence
    of the current token: ``tokens[k − 1] = tokens[q]`` with ``k − 1 < q``. The score of a head is the
    attention it puts on the induction targets, averaged over the queries that have at least one:

        score_h = mean_{(b, q): targets non-empty} Σ_{k ∈ targets(b, q)} A_h[b, q, k].

    An induction head scores ≈1; a head attending uniformly over the causal window scores
    ``mean 1/(q+1)`` per target on repeated random tokens (≈0 for long sequences).

    Args:
        patterns: (..., B, H, T, T) attention patterns, rows the queries (e.g. (num_layers, B, H, T, T)
            from ``CausalLM(..., return_attention=True)``).
        tokens: (B, T) the tokens the patterns were computed on.

    Returns:
        (..., H) float64 scores, on the patterns' device.

    Raises:
        ValueError: on mismatched shapes, or if no query has an earlier occurrence of its token.
    """
    B, T = tokens.shape
    if patterns.dim() < 4 or patterns.shape[-4] != B or patterns.shape[-2:] != (T, T):
        raise ValueError(f"patterns must be (..., B={B}, H, T={T}, T={T}) for tokens of shape {(B, T)}, "
                         f"got {tuple(patterns.shape)}")
    tokens = tokens.to(patterns.device)
    q = torch.arange(T, device=tokens.device).view(T, 1)
    k = torch.arange(T, device=tokens.device).view(1, T)
    before = tokens[:, None, :-1] == tokens[:, :, None]                       # (B, T_q, T−1): tok[k−1] = tok[q]
    targets = torch.zeros(B, T, T, dtype=torch.bool, device=tokens.device)
    targets[:, :, 1:] = before
    targets &= (k - 1 < q)                                                     # (B, T_q, T_k)
    has = targets.any(dim=-1)                                                  # (B, T_q)
    if not has.any():
        raise ValueError("no query token occurs earlier in its sequence, so the prefix-matching score is "
                         "undefined; use sequences with repeats (e.g. experiments.lm.language.repeated_tokens)")
    mass = (patterns.double() * targets[:, None].double()).sum(-1)            # (..., B, H, T_q)
    mass = mass * has[:, None].double()
    return mass.sum(dim=(-3, -1)) / has.sum().double()


def copy_attention_scores(patterns: Tensor, sample: LanguageSample) -> Tensor:
    """In-distribution induction score of every head: attention from a copy position to its source.

    For every copy position k of the sample (``copy_mask``, offset d), the query is k − 1 (the logits
    predicting token k) and the induction target is the key k − d, the token after the earlier copy
    of the current token (``x_{k−1−d} = x_{k−1}``). The score is the mean attention on it:

        score_h = mean_{(b, k): copy_mask[b, k]} A_h[b, k − 1, k − d].

    Unlike :func:`prefix_matching_scores` on repeated random tokens, it uses the copy events the
    language actually has; an induction head scores ≈1, a head attending uniformly ≈ mean 1/k.

    Args:
        patterns: (..., B, H, T, T) attention patterns on ``sample.tokens``.
        sample: the sequences, with their copy masks and offsets.

    Returns:
        (..., H) float64 scores.

    Raises:
        ValueError: on mismatched shapes, or if the sample has no copy position.
    """
    B, T = sample.tokens.shape
    if patterns.dim() < 4 or patterns.shape[-4] != B or patterns.shape[-2:] != (T, T):
        raise ValueError(f"patterns must be (..., B={B}, H, T={T}, T={T}) for the sample's tokens, "
                         f"got {tuple(patterns.shape)}")
    b, k = sample.copy_mask.to(patterns.device).nonzero(as_tuple=True)
    if len(b) == 0:
        raise ValueError("the sample has no copy position; use more sequences or a larger copy_rate")
    d = sample.offsets.to(patterns.device)[b, k]
    picked = patterns.movedim(-3, -4)[..., b, k - 1, k - d]                   # (..., H, n)
    return picked.double().mean(dim=-1)


@torch.no_grad()
def prefix_matching_score_of(model: CausalLM, tokens: Tensor) -> Tensor:
    """:func:`prefix_matching_scores` of a model's heads on ``tokens``.

    Args:
        model: the LM.
        tokens: (B, T) tokens with repeats, e.g. :func:`~experiments.lm.language.repeated_tokens`.

    Returns:
        (num_layers, num_heads) float64 scores on the CPU.
    """
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    _, patterns = model(tokens, return_attention=True)
    return prefix_matching_scores(patterns, tokens).cpu()


def checkpoint_path(out_dir, step: int) -> Path:
    """The file of the checkpoint at ``step`` in ``out_dir``."""
    return Path(out_dir) / f"step_{step:07d}.pt"


def list_checkpoints(out_dir) -> tuple[int, ...]:
    """Steps of the checkpoints saved in ``out_dir`` (empty if it does not exist), ascending."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return ()
    return tuple(sorted(int(p.stem.split("_")[1]) for p in out_dir.glob("step_*.pt")))


def load_checkpoint(out_dir, step: int | None = None, *, device=None, dtype=None) -> tuple[CausalLM, dict]:
    """Load a saved checkpoint.

    Args:
        out_dir: the checkpoint folder of a :func:`train` run.
        step: which checkpoint (None: the latest).
        device: where to put the model (default: CPU).
        dtype: the model's dtype (default: the saved one, float32 unless trained otherwise).

    Returns:
        ``(model, checkpoint)``: the model with the saved weights, and the saved dict (keys ``step``,
        ``model_config``, ``train_config``, ``model_state``, ``optimizer_state``, ``history`` — a list of
        :class:`EvalRecord` fields as dicts — and ``metadata``).

    Raises:
        FileNotFoundError: if there is no such checkpoint (the message lists the saved steps).
        ValueError: if the file is not a checkpoint of this module.
    """
    steps = list_checkpoints(out_dir)
    if not steps or (step is not None and step not in steps):
        raise FileNotFoundError(f"no checkpoint {'at step ' + str(step) if step is not None else ''} in "
                                f"{out_dir}; saved steps: {list(steps)}")
    step = steps[-1] if step is None else step
    ckpt = torch.load(checkpoint_path(out_dir, step), map_location="cpu", weights_only=True)
    if ckpt.get("format") != _FORMAT:
        raise ValueError(f"{checkpoint_path(out_dir, step)} is not an experiments.lm checkpoint "
                         f"(format {ckpt.get('format')!r}, expected {_FORMAT!r})")
    model = CausalLM(LMConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    model.to(device=device, dtype=dtype)
    return model, ckpt


def _fingerprint(sample: LanguageSample) -> list[int]:
    t = sample.tokens.to("cpu", torch.int64)
    w = torch.arange(1, t.numel() + 1, dtype=torch.int64).view_as(t) % 1_000_003
    return [*t.shape, int((t * w).sum()), int(sample.copy_mask.sum())]


def _record_from_dict(d: dict) -> EvalRecord:
    d = dict(d)
    d["prefix_matching"] = tuple(tuple(row) for row in d["prefix_matching"])
    d["copy_attention"] = tuple(tuple(row) for row in d["copy_attention"])
    return EvalRecord(**d)


def train(model_config: LMConfig, train_data: LanguageSample, heldout_data: LanguageSample,
          config: TrainConfig, *, out_dir=None, resume: bool = True, init_seed: int = 0, device=None,
          dtype: torch.dtype = torch.float32, metadata: dict | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a :class:`CausalLM` with AdamW on next-token cross-entropy over all positions.

    The loss of a minibatch of sequences is ``mean_{b, k ≥ 1} −log p_θ(x_{b,k} | x_{b,<k})``; minibatch
    t ≥ 1 is ``torch.randint`` of the training sequences under a generator seeded ``(seed << 32) + t``.

    Args:
        model_config: the model.
        train_data: the training sequences (the first ``num_eval_sequences`` also give ``train_loss``).
        heldout_data: held-out sequences with their copy / Markov masks.
        config: the :class:`TrainConfig`.
        out_dir: checkpoint folder (created); None saves nothing.
        resume: continue from the latest checkpoint in ``out_dir`` at or before ``config.num_steps``,
            if any; its trajectory settings, model config and training data must match.
        init_seed: seed of the initialisation.
        device: where to train (default CPU).
        dtype: parameter dtype.
        metadata: a dict of plain values saved with every checkpoint (e.g. the language config).
        log: called with one line per evaluation (e.g. ``print``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: if the samples' sequence length or vocabulary do not fit the model, or a checkpoint
            to resume from was made with other settings.
    """
    T, V = model_config.seq_len, model_config.vocab_size
    for name, sample in (("train_data", train_data), ("heldout_data", heldout_data)):
        if sample.tokens.shape[1] > T or int(sample.tokens.max()) >= V:
            raise ValueError(f"{name} has sequences of length {sample.tokens.shape[1]} and tokens up to "
                             f"{int(sample.tokens.max())}, but the model takes T <= {T} and V = {V}; build the "
                             "model config from the language (vocab_size, seq_len)")
    device = torch.device("cpu" if device is None else device)
    model = CausalLM(model_config, seed=init_seed).to(device=device, dtype=dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    history: list[EvalRecord] = []
    start, resumed_from, elapsed_before = 0, None, 0.0
    fingerprint = _fingerprint(train_data)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        usable = [s for s in list_checkpoints(out_dir) if s <= config.num_steps]
        if resume and usable:
            _, ckpt = load_checkpoint(out_dir, usable[-1])
            _check_resumable(ckpt, model_config, config, fingerprint, out_dir)
            model.load_state_dict(ckpt["model_state"])
            optimizer.load_state_dict(ckpt["optimizer_state"])
            history = [_record_from_dict(d) for d in ckpt["history"]]
            start = resumed_from = ckpt["step"]
            elapsed_before = history[-1].wall_time_s if history else 0.0
    eval_steps = set(range(0, config.num_steps + 1, config.eval_every)) | set(config.checkpoint_steps)
    eval_steps.add(config.num_steps)
    save_steps = set(config.checkpoint_steps) | {config.num_steps}
    train_eval = train_data[: config.num_eval_sequences]
    heldout_eval = heldout_data[: config.num_eval_sequences]
    probe = repeated_tokens(V, T // 2, config.num_probe_sequences, seed=config.probe_seed)
    attn_sample = heldout_eval[:64]
    train_tokens = train_data.tokens.to(device)
    t0 = time.perf_counter()
    batch_losses: list[float] = []

    def record(step):
        model.eval()
        train_loss, _, _ = evaluate(model, train_eval)
        loss, copy_loss, markov_loss = evaluate(model, heldout_eval)
        scores = prefix_matching_score_of(model, probe)
        with torch.no_grad():
            _, patterns = model(attn_sample.tokens.to(device), return_attention=True)
        copy_scores = copy_attention_scores(patterns, attn_sample).cpu()
        model.train()
        rec = EvalRecord(step=step, train_batch_loss=float(sum(batch_losses) / len(batch_losses)) if batch_losses
                         else math.nan, train_loss=train_loss, heldout_loss=loss, heldout_copy_loss=copy_loss,
                         heldout_markov_loss=markov_loss, prefix_matching=tuple(tuple(r) for r in scores.tolist()),
                         copy_attention=tuple(tuple(r) for r in copy_scores.tolist()),
                         wall_time_s=elapsed_before + time.perf_counter() - t0)
        batch_losses.clear()
        history.append(rec)
        if log is not None:
            log(f"step {step:6d}  train {train_loss:.4f}  held-out {loss:.4f}  in-context {copy_loss:.4f}  "
                f"markov {markov_loss:.4f}  max prefix-matching {rec.max_prefix_matching:.3f}  "
                f"max copy-attention {rec.max_copy_attention:.3f}  "
                f"({rec.wall_time_s:.1f} s)")

    def save(step):
        torch.save({"format": _FORMAT, "step": step, "model_config": asdict(model_config),
                    "train_config": asdict(config), "data_fingerprint": fingerprint,
                    "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
                    "history": [asdict(r) for r in history], "metadata": metadata or {}},
                   checkpoint_path(out_dir, step))

    # small models train fastest on one intra-op thread (the estimators' rule, slt_interp.estimators.threads)
    work = config.batch_size * T * sum(p.numel() for p in model.parameters())
    with intra_op_threads(choose_num_threads(device, work)):
        _train_loop(model, optimizer, config, start, history, record, save, save_steps, eval_steps, train_tokens,
                    batch_losses, out_dir)
    model.eval()
    saved = list_checkpoints(out_dir) if out_dir is not None else ()
    return TrainResult(model=model, history=tuple(history), checkpoint_steps=tuple(saved), out_dir=out_dir,
                       config=config, resumed_from=resumed_from)


def _train_loop(model, optimizer, config, start, history, record, save, save_steps, eval_steps, train_tokens,
                batch_losses, out_dir):
    model.train()
    if start == 0 and not history:
        record(0)
        if out_dir is not None and 0 in save_steps:
            save(0)
    for step in range(start + 1, config.num_steps + 1):
        g = torch.Generator().manual_seed((config.seed << 32) + step)
        idx = torch.randint(train_tokens.shape[0], (config.batch_size,), generator=g).to(train_tokens.device)
        tokens = train_tokens[idx]                                             # (batch, T)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate(step)
        loss = next_token_losses(model(tokens), tokens).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        batch_losses.append(float(loss.detach()))
        if step in eval_steps:
            record(step)
        if out_dir is not None and step in save_steps:
            save(step)


def _check_resumable(ckpt: dict, model_config: LMConfig, config: TrainConfig, fingerprint, out_dir):
    fix = f"; use a new out_dir, delete {out_dir}, or pass resume=False"
    if ckpt["model_config"] != asdict(model_config):
        diff = {k: (ckpt["model_config"].get(k), v) for k, v in asdict(model_config).items()
                if ckpt["model_config"].get(k) != v}
        raise ValueError(f"the checkpoint in {out_dir} has another model config (saved, given): {diff}{fix}")
    saved = ckpt["train_config"]
    mine = asdict(config)
    diff = {k: (saved.get(k), mine[k]) for k in _TRAJECTORY_FIELDS
            if (tuple(saved.get(k)) if isinstance(saved.get(k), (list, tuple)) else saved.get(k))
            != (tuple(mine[k]) if isinstance(mine[k], (list, tuple)) else mine[k])}
    if diff:
        raise ValueError(f"the checkpoint in {out_dir} was trained with other settings (saved, given): {diff}{fix}")
    if list(ckpt["data_fingerprint"]) != list(fingerprint):
        raise ValueError(f"the checkpoint in {out_dir} was trained on other training data{fix}")


@dataclass(frozen=True)
class InductionTransition:
    """Where the in-context loss drops (induction heads form), from a run's history.

    The signal is the in-context gap g = (Markov-position − copy-position held-out loss). It falls to a
    minimum while the model learns bigram statistics (copy positions are harder for a bigram model),
    then rises by ``rise`` when the model starts copying. The drop is bracketed by the last evaluation
    at or below ``g_min + low·rise`` before g first crosses ``g_min + rise/2`` and the first evaluation
    at or above ``g_min + high·rise`` after it. A model can lower the copy-position loss without an
    induction head (tokens seen in the context are likelier), so the drop counts as induction heads
    forming only if some head's prefix-matching score reaches ``min_prefix_matching`` at its end or later
    (before the gap's maximum). The "after" point is the first evaluation where both hold; the "before"
    point is the later of the drop's start and the last evaluation whose score is within ``low`` of its
    rise to the "after" value (measured on the 0.1M study LM: the gap rises from step 0 while the best
    score stays ≈ 0.05 until step 400, then jumps to 0.39 by step 600, just after the drop's end at 550).

    Attributes:
        found: a rise of at least ``min_rise`` nats was seen and, at its end or later, a head prefix-matches.
        drop_start_step, drop_end_step: evaluation steps bracketing the largest rise of the gap (None if
            it is below ``min_rise``); filled also when no head prefix-matches.
        before_step, after_step: the latest checkpoint at or before the "before" point and the earliest
            at or after the "after" point (None if not found or no such checkpoint).
        gap_min, gap_max: the gap at its minimum and at its later maximum (nats).
        copy_loss_before, copy_loss_after: in-context loss at the "before" / "after" points.
        prefix_matching_before, prefix_matching_after: the largest head's prefix-matching score there.
        warnings: what limited the answer.
    """

    found: bool
    drop_start_step: int | None
    drop_end_step: int | None
    before_step: int | None
    after_step: int | None
    gap_min: float
    gap_max: float
    copy_loss_before: float | None
    copy_loss_after: float | None
    prefix_matching_before: float | None
    prefix_matching_after: float | None
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        if not self.found and self.drop_start_step is not None:
            return "no induction-head transition: " + "; ".join(self.warnings)
        if not self.found:
            return f"no in-context loss drop (gap {self.gap_min:.3f} → {self.gap_max:.3f} nats); " + "; ".join(self.warnings)
        return (f"in-context loss drop between steps {self.drop_start_step} and {self.drop_end_step}; checkpoints "
                f"before/after the induction heads form: {self.before_step} / {self.after_step} (in-context loss "
                f"{self.copy_loss_before:.3f} → {self.copy_loss_after:.3f} nats, max prefix-matching "
                f"{self.prefix_matching_before:.2f} → {self.prefix_matching_after:.2f})"
                + ("; " + "; ".join(self.warnings) if self.warnings else ""))


def find_transition(history, checkpoint_steps=None, *, low: float = 0.2, high: float = 0.8,
                    min_rise: float = 0.25, min_prefix_matching: float | None = 0.3) -> InductionTransition:
    """The checkpoint steps before and after the in-context loss drop (see :class:`InductionTransition`).

    Args:
        history: the run's :class:`EvalRecord` sequence (``TrainResult.history``).
        checkpoint_steps: steps with a checkpoint (``TrainResult.checkpoint_steps``); None uses every
            evaluation step.
        low: fraction of the rise below which the drop has not started, 0 ≤ low < 1/2.
        high: fraction of the rise above which it is over, 1/2 < high ≤ 1.
        min_rise: smallest rise of the gap (nats) that counts as a drop.
        min_prefix_matching: the largest head's prefix-matching score needed at the end of the drop
            (None: the loss alone decides).

    Returns:
        An :class:`InductionTransition`; without a drop, ``found`` is False and a warning is issued.

    Raises:
        ValueError: on an empty history or fractions out of range.
    """
    history = sorted(history, key=lambda r: r.step)
    if not history:
        raise ValueError("find_transition needs a non-empty history (TrainResult.history)")
    if not 0 <= low < 0.5 < high <= 1:
        raise ValueError(f"need 0 <= low < 0.5 < high <= 1, got low={low}, high={high}")
    steps = [r.step for r in history]
    gap = [r.in_context_gap for r in history]
    i_min = min(range(len(gap)), key=lambda i: gap[i])
    i_max = max(range(i_min, len(gap)), key=lambda i: gap[i])
    rise = gap[i_max] - gap[i_min]
    if rise < min_rise:
        msg = (f"the in-context gap rises by {rise:.3f} < min_rise={min_rise} nats after its minimum at step "
               f"{steps[i_min]}: no induction heads yet; train longer or check the language has copies")
        warnings.warn(msg, stacklevel=2)
        return InductionTransition(False, None, None, None, None, gap[i_min], gap[i_max], None, None, None, None, (msg,))
    i_cross = next(i for i in range(i_min, i_max + 1) if gap[i] >= gap[i_min] + 0.5 * rise)
    i_start = max(i for i in range(i_min, i_cross) if gap[i] <= gap[i_min] + low * rise)
    i_end = next(i for i in range(i_cross, i_max + 1) if gap[i] >= gap[i_min] + high * rise)
    s, e = history[i_start], history[i_end]
    i_before, i_after = i_start, i_end
    if min_prefix_matching is not None:
        pm = [r.max_prefix_matching for r in history]
        formed = [i for i in range(i_end, i_max + 1) if pm[i] >= min_prefix_matching]
        if not formed:
            msg = (f"the in-context gap rises by {rise:.3f} nats between steps {s.step} and {e.step}, but no head "
                   f"prefix-matches there (max score {max(pm[i_end:i_max + 1]):.3f} < min_prefix_matching="
                   f"{min_prefix_matching} up to the gap's maximum at step {steps[i_max]}): in-context learning "
                   "without induction heads; train longer")
            warnings.warn(msg, stacklevel=2)
            return InductionTransition(False, s.step, e.step, None, None, gap[i_min], gap[i_max], s.heldout_copy_loss,
                                       e.heldout_copy_loss, s.max_prefix_matching, e.max_prefix_matching, (msg,))
        # the heads may form after the loss drop is over: "after" waits for them; "before" is the latest
        # evaluation whose score is still within `low` of its rise to the "after" value (if later than the
        # drop's start: part of the drop is in-context learning without induction heads)
        i_after = formed[0]
        floor = min(pm[: i_after + 1])
        level = floor + low * (pm[i_after] - floor)
        i_before = max([i_start] + [i for i in range(i_after) if pm[i] <= level])
    s, e = history[i_before], history[i_after]
    ckpts = sorted(steps if checkpoint_steps is None else checkpoint_steps)
    before = [c for c in ckpts if c <= steps[i_before]]
    after = [c for c in ckpts if c >= steps[i_after]]
    notes = []
    if not before:
        notes.append(f"no checkpoint at or before step {steps[i_before]}; add one to checkpoint_steps")
    if not after:
        notes.append(f"no checkpoint at or after step {steps[i_after]}; add one to checkpoint_steps")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return InductionTransition(True, steps[i_start], steps[i_end], before[-1] if before else None, after[0] if after else None,
                               gap[i_min], gap[i_max], s.heldout_copy_loss, e.heldout_copy_loss,
                               s.max_prefix_matching, e.max_prefix_matching, tuple(notes))
