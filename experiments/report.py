"""The validation report: one Markdown file with PNG figures, one small module per section.

A section is a module in :mod:`experiments.sections` that defines

* ``TITLE: str`` — the section heading;
* ``ORDER: int`` — its place in the report (smaller first);
* ``run(ctx: Context) -> str`` — does the work and returns the section's Markdown body.

Figures are saved with ``ctx.savefig(fig, "name")`` which returns the relative path to embed.
``ctx.quick`` selects the reduced settings of ``--quick`` (each section ≲ 15 s there).
Sections are discovered automatically: adding a section is adding one file.

Finished sections are written to ``<out>/sections/<name>.md`` as they complete, so an interrupted run
resumed with ``--resume`` keeps the work already done.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402


@dataclass
class Context:
    """What a section gets: where to write, how thorough to be, and a seed."""

    out_dir: Path
    quick: bool = False
    seed: int = 0
    name: str = ""
    figures: list[str] = field(default_factory=list)

    def savefig(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``figures/<section>_<name>.png``; return its relative path."""
        rel = f"figures/{self.name}_{name}.png"
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(rel)
        return rel

    def progress(self, iterable=None, **kwargs):
        """A tqdm progress bar for long loops inside a section."""
        kwargs.setdefault("leave", False)
        kwargs.setdefault("desc", self.name)
        return tqdm(iterable, **kwargs)


def discover() -> list[ModuleType]:
    """All section modules, sorted by ``ORDER``."""
    from . import sections

    modules = []
    for info in pkgutil.iter_modules(sections.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{sections.__name__}.{info.name}")
        if hasattr(mod, "run") and hasattr(mod, "TITLE"):
            modules.append(mod)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def section_name(mod: ModuleType) -> str:
    return mod.__name__.rsplit(".", 1)[-1]


def build_report(
    out_dir: Path, *, quick: bool = False, only: list[str] | None = None, resume: bool = False, seed: int = 0
) -> Path:
    """Run the sections and write ``<out_dir>/report.md``. Returns its path.

    A section that raises is reported as failed in the report (with its traceback) and makes the
    run exit non-zero; the others still run.
    """
    out_dir = Path(out_dir)
    (out_dir / "sections").mkdir(parents=True, exist_ok=True)
    modules = discover()
    if only:
        known = {section_name(m) for m in modules}
        unknown = set(only) - known
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}; available: {sorted(known)}")
        modules = [m for m in modules if section_name(m) in only]
    failures = []
    bar = tqdm(modules, desc="report", unit="section")
    for mod in bar:
        name = section_name(mod)
        bar.set_postfix_str(name)
        part = out_dir / "sections" / f"{name}.md"
        if resume and part.exists():
            continue
        ctx = Context(out_dir=out_dir, quick=quick, seed=seed, name=name)
        start = time.perf_counter()
        try:
            body = mod.run(ctx)
            status = ""
        except Exception:  # a failing section must not hide the others
            body = "```\n" + traceback.format_exc() + "```\n"
            status = " — FAILED"
            failures.append(name)
        seconds = time.perf_counter() - start
        text = f"## {mod.TITLE}{status}\n\n{body.strip()}\n\n_Section `{name}` ran in {seconds:.1f} s._\n"
        part.write_text(text)
        if status:
            part.rename(part.with_suffix(".failed.md"))
    parts = []
    for mod in modules:
        name = section_name(mod)
        for candidate in (out_dir / "sections" / f"{name}.md", out_dir / "sections" / f"{name}.failed.md"):
            if candidate.exists():
                parts.append(candidate.read_text())
                break
    mode = "quick" if quick else "default"
    header = (
        "# Validation report\n\n"
        f"Mode: {mode}; seed {seed}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}. "
        "Every number below was measured in this run.\n\n"
    )
    report = out_dir / "report.md"
    report.write_text(header + "\n".join(parts))
    if failures:
        raise RuntimeError(f"section(s) failed: {failures}; see {report}")
    return report
