"""Section: how degenerate is a trained transformer language model? (issue 13, CPU-quick version)."""
from __future__ import annotations

from dataclasses import replace

from experiments import transformer_study as study

TITLE = "How degenerate is a trained transformer LM? Bounds, LLC and behavioral LLC along training"
ORDER = 35


def settings(quick: bool) -> study.StudySettings:
    """The default report runs :func:`~experiments.transformer_study.quick_settings`; ``--quick`` is a smoke
    run of the same pipeline: 1000 training steps, L_n over 32 sequences, SLQ 3 × 15, two chains of 8
    sequences per gradient with a 3 s budget and 50-step calibration pilots, no refined LLCs (a sampler step and its calibration pilots
    cost in proportion to chains × batch, so this is about 4× cheaper per estimate)."""
    s = study.quick_settings()
    if quick:
        s = replace(s, num_measure=32, slq_probes=3, slq_steps=15, llc_max_seconds=3.0, llc_chains=2, llc_batch=8,
                    pilot_steps=50, refine=(), train=replace(s.train, num_steps=1000))
    return s


def run(ctx) -> str:
    s = settings(ctx.quick)
    res = study.run_study(s, ctx.out_dir / "transformer_run" / ("quick" if ctx.quick else "default"),
                          log=None, progress=lambda it, **kw: ctx.progress(it, **kw))
    for question, answer in study.summary_rows(res):
        ctx.answer(question, answer)
    intro = ("A 2-layer softmax-attention transformer with LayerNorm and GELU MLPs is trained on a synthetic "
             "language with long-range copies (`experiments.lm`), and measured at checkpoints before and after its "
             "induction heads form. The full study (0.1M and 1M parameters, every head at every checkpoint, "
             "resumable) is `python -m experiments.transformer_study`.")
    return intro + "\n\n" + study.markdown(res, ctx.savefig)
