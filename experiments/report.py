"""The validation report: one Markdown file with PNG figures, one small module per section.

A section is a module in :mod:`experiments.sections` that defines

* ``TITLE: str`` — the section heading;
* ``ORDER: int`` — its place in the report (smaller first);
* ``run(ctx: Context) -> str`` — does the work and returns the section's Markdown body.

Inside ``run`` a section

* answers its research question(s) with ``ctx.answer(question, answer)``: one line each, the number and
  its error bar computed from what the section just measured; the rows open the report as its summary;
* saves figures with ``ctx.savefig(fig, "name")``, which returns the relative path to embed and refuses
  a figure without axis labels or title (legends that cover data are moved, tick labels enlarged to 8 pt);
* reads ``ctx.quick`` for the reduced settings of ``--quick`` (each section ≲ 15 s there) and ``ctx.seed``.

Sections are discovered automatically: adding a section is adding one file.

Every finished section is written as ``<out>/sections/<name>.md`` (heading and body) next to
``<out>/sections/<name>.json`` (title, order, mode, seed, run id, start time, seconds, status, summary rows,
figures). ``report.md`` is rebuilt after every run from *all* section files in ``<out>/sections/`` (ordered by
``ORDER``): ``--only NAME`` reruns those sections and keeps the others, ``--resume`` keeps every section
already written successfully (a section written in the other mode is kept too, and its footer and the header
say so). The header and each section's footer say whether it was measured in this run or kept from an
earlier one (with that run's date, mode and seed).
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import secrets
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

MIN_TICK_FONTSIZE = 8.0
_INSIDE_LOCATIONS = ("upper right", "upper left", "lower left", "lower right", "center right", "center left",
                     "upper center", "lower center", "right", "center")


class UnknownSectionError(ValueError):
    """``--only`` named a section that does not exist."""


@dataclass
class Context:
    """What a section gets: where to write, how thorough to be, a seed; it collects the summary rows."""

    out_dir: Path
    quick: bool = False
    seed: int = 0
    name: str = ""
    figures: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)

    def answer(self, question: str, answer: str) -> None:
        """Add a row to the report's summary table: the research question and its one-line answer.

        The answer must come from the numbers the section just measured (with their standard error or
        interval), never fixed prose.

        Raises:
            ValueError: an empty or non-string question or answer.
        """
        for what, text in (("question", question), ("answer", answer)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"section '{self.name}': ctx.answer needs a non-empty string {what}, got {text!r}")
        self.summary.append({"question": " ".join(question.split()), "answer": " ".join(answer.split())})

    def savefig(self, fig, name: str) -> str:
        """Check and save a matplotlib figure as ``figures/<section>_<name>.png``; return its relative path.

        Before saving: tick labels smaller than 8 pt are enlarged to 8 pt; every axes that holds data must
        have an x and a y label (its own, a shared axis's, or the figure's ``supxlabel``/``supylabel``) and a
        title (its own, a twin's, or the figure's ``suptitle``); a legend whose box covers a plotted point or
        line segment (of any axes) is moved to a free spot inside its axes, else outside to the right of the
        axes, else below the figure.

        Raises:
            ValueError: a missing label or title, naming the section, the figure and the axes.
        """
        fix_tick_labels(fig)
        problems = figure_problems(fig)
        if problems:
            plt.close(fig)
            raise ValueError(f"section '{self.name}', figure '{name}': " + "; ".join(problems)
                             + ". Fix: ax.set_xlabel(...), ax.set_ylabel(...) (with units) and ax.set_title(...) "
                               "or fig.suptitle(...).")
        place_legends(fig)
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


# ------------------------------------------------------------------------------------------------
# figure checks
# ------------------------------------------------------------------------------------------------
def _data_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.has_data() and not hasattr(ax, "_colorbar")]


def _describe_axes(fig, ax) -> str:
    i = fig.axes.index(ax)
    title = ax.get_title() or ax.get_title(loc="left") or ax.get_title(loc="right")
    return f"axes {i + 1} of {len(fig.axes)}" + (f" ('{title}')" if title else "")


def fix_tick_labels(fig) -> None:
    """Enlarge every tick label below ``MIN_TICK_FONTSIZE`` points to that size."""
    for ax in fig.axes:
        for axis, which in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            labels = axis.get_ticklabels(which="both")
            if any(lab.get_fontsize() < MIN_TICK_FONTSIZE for lab in labels):
                ax.tick_params(axis=which, which="both", labelsize=MIN_TICK_FONTSIZE)
                for lab in labels:  # labels set with explicit Text properties (set_yticks(..., fontsize=))
                    lab.set_fontsize(max(lab.get_fontsize(), MIN_TICK_FONTSIZE))


def figure_problems(fig) -> list[str]:
    """Missing axis labels and titles of the axes that hold data (an empty list when there are none)."""
    sup = {k: getattr(fig, f"_sup{k}", None) for k in ("title", "xlabel", "ylabel")}
    has_sup = {k: t is not None and t.get_text().strip() != "" for k, t in sup.items()}
    problems = []
    for ax in _data_axes(fig):
        missing = []
        if ax.axison:
            for k, shared in (("xlabel", ax.get_shared_x_axes()), ("ylabel", ax.get_shared_y_axes())):
                get = (lambda a: a.get_xlabel()) if k == "xlabel" else (lambda a: a.get_ylabel())
                if not (has_sup[k] or any(get(a).strip() for a in shared.get_siblings(ax))):
                    missing.append(k)
        titled = any((a.get_title() + a.get_title(loc="left") + a.get_title(loc="right")).strip()
                     for a in ax._twinned_axes.get_siblings(ax))
        if not (titled or has_sup["title"]):
            missing.append("title")
        if missing:
            problems.append(f"{_describe_axes(fig, ax)} has no {' and no '.join(missing)}")
    return problems


def _segments_hit(p: np.ndarray, q: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether any segment p[i] → q[i] (display coordinates) meets the closed box (x0, y0, x1, y1)
    (Liang–Barsky clipping, vectorised)."""
    x0, y0, x1, y1 = box
    lo, hi = np.zeros(len(p)), np.ones(len(p))
    ok = np.ones(len(p), dtype=bool)
    for k, (a, b) in enumerate(((x0, x1), (y0, y1))):
        start, delta = p[:, k], q[:, k] - p[:, k]
        flat = np.abs(delta) < 1e-12
        ok &= ~flat | ((start >= a) & (start <= b))
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (a - start) / delta, (b - start) / delta
        lo = np.where(flat, lo, np.maximum(lo, np.minimum(t1, t2)))
        hi = np.where(flat, hi, np.minimum(hi, np.maximum(t1, t2)))
    return bool(np.any(ok & (lo <= hi)))


def _finite(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return xy[np.isfinite(xy).all(1)]


def _polyline_hit(xy: np.ndarray, box, joined: bool) -> bool:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    x0, y0, x1, y1 = box
    fin = np.isfinite(xy).all(1)
    pts = xy[fin]
    if len(pts) and np.any((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)):
        return True
    if joined and len(xy) > 1:
        good = fin[:-1] & fin[1:]
        return _segments_hit(xy[:-1][good], xy[1:][good], box)
    return False


def _covers_data(fig, bbox, renderer, pad: float = 2.0) -> bool:
    """Whether the display-space box ``bbox`` covers a plotted point, line segment or bar of any axes of
    ``fig`` (data are clipped to their axes, so only the part of the box inside an axes counts there)."""
    for ax in _data_axes(fig):
        a = ax.bbox
        box = (max(bbox.x0 - pad, a.x0), max(bbox.y0 - pad, a.y0), min(bbox.x1 + pad, a.x1), min(bbox.y1 + pad, a.y1))
        if box[0] > box[2] or box[1] > box[3]:
            continue
        for line in ax.get_lines():
            if not line.get_visible() or len(line.get_xydata()) == 0:
                continue
            xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
            if _polyline_hit(xy, box, joined=line.get_linestyle() not in ("None", "", " ", "none")):
                return True
        for coll in ax.collections:
            if not coll.get_visible():
                continue
            if isinstance(coll, PathCollection):  # scatter: one marker per offset
                if _polyline_hit(coll.get_offset_transform().transform(_finite(coll.get_offsets())), box, False):
                    return True
                continue
            transform = coll.get_transform()
            for path in coll.get_paths():  # line collections (error bars), filled regions
                if len(path.vertices) and _polyline_hit(transform.transform(path.vertices), box, joined=True):
                    return True
        for container in ax.containers:
            if isinstance(container, BarContainer):
                for patch in container.patches:
                    e = patch.get_window_extent(renderer)
                    if patch.get_visible() and e.x0 <= box[2] and e.x1 >= box[0] and e.y0 <= box[3] and e.y1 >= box[1]:
                        return True
    return False


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and a.x1 > b.x0 and a.y0 < b.y1 and a.y1 > b.y0


def _axes_frame(ax, renderer):
    """An axes' extent with its tick labels, axis labels and title, without its legend."""
    return ax.get_tightbbox(renderer, bbox_extra_artists=[ax.patch])


def place_legends(fig) -> None:
    """Move every legend whose box covers data (see :func:`_covers_data`) to a spot where it covers none:
    first a free standard location inside its axes, else outside to the right of the axes (if that overlaps
    no other axes), else centred below the whole figure (titled with the axes' title)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None] + [(None, leg) for leg in fig.legends]

    def others(leg):
        return [o.get_window_extent(renderer) for _, o in legends if o is not leg]

    def fine(leg, frames) -> bool:
        e = leg.get_window_extent(renderer)
        return not _covers_data(fig, e, renderer) and not any(_overlaps(e, o) for o in others(leg) + frames)

    for ax, leg in legends:
        if not _covers_data(fig, leg.get_window_extent(renderer), renderer):
            continue
        twins = ax._twinned_axes.get_siblings(ax) if ax is not None else []
        frames = [_axes_frame(a, renderer) for a in fig.axes if a not in twins and a.get_visible()]
        placed = False
        if ax is not None:
            for loc in _INSIDE_LOCATIONS:
                leg.set_loc(loc)
                leg.set_bbox_to_anchor(None)
                if fine(leg, []):
                    placed = True
                    break
            if not placed:
                right = max(_axes_frame(a, renderer).x1 for a in twins)
                x = ax.transAxes.inverted().transform((right, 0))[0]
                leg.set_loc("upper left")
                leg.set_bbox_to_anchor((x + 0.02, 1.0), transform=ax.transAxes)
                placed = fine(leg, frames)
        if not placed:  # below every axes (and below the legends already moved there)
            fx = 0.5 if ax is None else fig.transFigure.inverted().transform((0.5 * (ax.bbox.x0 + ax.bbox.x1), 0))[0]
            bottom = min(f.y0 for f in frames) if frames else fig.bbox.y0
            leg.set_loc("upper center")
            for _ in range(len(legends) + 1):
                fy = fig.transFigure.inverted().transform((0, bottom))[1]
                leg.set_bbox_to_anchor((fx, fy - 0.02), transform=fig.transFigure)
                hit = [o for o in others(leg) if _overlaps(leg.get_window_extent(renderer), o)]
                if not hit:
                    break
                bottom = min(o.y0 for o in hit)
            title = next((a.get_title() for a in twins if a.get_title()), "")
            if title and leg.get_title().get_text() == "" and len(fig.axes) > len(twins):
                size = leg.get_texts()[0].get_fontsize() if leg.get_texts() else MIN_TICK_FONTSIZE
                leg.set_title(f"legend of '{title}'", prop={"size": size})
        fig.canvas.draw()


# ------------------------------------------------------------------------------------------------
# discovery
# ------------------------------------------------------------------------------------------------
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


def check_names(only: list[str], modules: list[ModuleType]) -> None:
    """Raise :class:`UnknownSectionError` when ``only`` names a section that ``modules`` lacks."""
    known = [section_name(m) for m in modules]
    unknown = [n for n in dict.fromkeys(only) if n not in known]
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        raise UnknownSectionError(f"unknown section{'s' if len(unknown) > 1 else ''} {names}; "
                                  f"available: {', '.join(known)}")


# ------------------------------------------------------------------------------------------------
# running and assembling
# ------------------------------------------------------------------------------------------------
def _mode(quick: bool) -> str:
    return "quick" if quick else "default"


def _run_section(mod: ModuleType, out_dir: Path, *, quick: bool, seed: int, run_id: str) -> dict:
    """Run one section; write ``sections/<name>.md`` and ``sections/<name>.json``; return the metadata."""
    name = section_name(mod)
    ctx = Context(out_dir=out_dir, quick=quick, seed=seed, name=name)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    start = time.perf_counter()
    try:
        body = mod.run(ctx)
        status, heading = "ok", f"## {mod.TITLE}"
        summary = list(ctx.summary)
    except Exception as err:  # a failing section must not hide the others
        body = "```\n" + traceback.format_exc() + "```\n"
        status, heading = "failed", f"## {mod.TITLE} — FAILED"
        summary = [{"question": "(section failed)", "answer": f"FAILED: {type(err).__name__}: {err}"}]
    meta = {
        "name": name, "title": mod.TITLE, "order": getattr(mod, "ORDER", 100), "mode": _mode(quick), "seed": seed,
        "run_id": run_id, "started": started, "seconds": round(time.perf_counter() - start, 3), "status": status,
        "summary": summary, "figures": ctx.figures,
    }
    folder = out_dir / "sections"
    (folder / f"{name}.failed.md").unlink(missing_ok=True)  # written by earlier versions of this module
    (folder / f"{name}.md").write_text(f"{heading}\n\n{body.strip()}\n")
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return meta


@dataclass(frozen=True)
class _Part:
    name: str
    order: float
    text: str
    meta: dict | None  # None: written before sections carried metadata


def _load_parts(out_dir: Path, modules: list[ModuleType]) -> list[_Part]:
    """Every section present in ``<out_dir>/sections/``, ordered by the module's ``ORDER`` (the stored one
    for a section whose module is gone)."""
    folder = out_dir / "sections"
    orders = {section_name(m): getattr(m, "ORDER", 100) for m in modules}
    files: dict[str, Path] = {}
    for path in sorted(folder.glob("*.md")):
        name = path.name[: -len(".failed.md")] if path.name.endswith(".failed.md") else path.stem
        if name not in files or path.stat().st_mtime > files[name].stat().st_mtime:
            files[name] = path
    parts = []
    for name, path in files.items():
        meta_path = folder / f"{name}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() and path.name == f"{name}.md" else None
        order = orders.get(name, (meta or {}).get("order", 100))
        parts.append(_Part(name, order, path.read_text(), meta))
    return sorted(parts, key=lambda p: (p.order, p.name))


def _when(meta: dict) -> str:
    return f"{meta['started'][:16]}, {meta['mode']} mode, seed {meta['seed']}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _title(part: _Part) -> str:
    if part.meta is not None:
        return part.meta["title"]
    first = part.text.splitlines()[0] if part.text else ""
    return first.removeprefix("## ").removesuffix(" — FAILED") or part.name


def _footer(part: _Part, run_id: str, mode: str, seed: int, why_kept: str) -> str:
    m = part.meta
    if m is None:
        return (f"_Section `{part.name}`: kept from an earlier run that recorded no metadata (date, mode and seed "
                f"unknown); {why_kept}._")
    ran = f"ran in {m['seconds']:.1f} s" + ("" if m["status"] == "ok" else ", FAILED")
    if m["run_id"] == run_id:
        return f"_Section `{part.name}`: measured in this run (run `{run_id}`, {_when(m)}); {ran}._"
    text = (f"_Section `{part.name}`: kept from an earlier run (run `{m['run_id']}`, {_when(m)}; {ran}), "
            f"not measured in this run: {why_kept}._")
    if m["mode"] != mode or m["seed"] != seed:
        text += (f" **Measured in {m['mode']} mode with seed {m['seed']}, while this run is {mode} mode with seed "
                 f"{seed}: its settings differ from those of the sections measured in this run.**")
    return text


def _assemble(out_dir: Path, modules: list[ModuleType], *, run_id: str, quick: bool, seed: int,
              only: list[str] | None, resume: bool) -> str:
    mode = _mode(quick)
    parts = _load_parts(out_dir, modules)
    known = {section_name(m) for m in modules}

    def why_kept(name: str) -> str:
        if name not in known:
            return "no section module of that name exists any more"
        if only and name not in only:
            return "not selected by --only"
        return "kept by --resume" if resume else "not rerun"

    fresh = [p for p in parts if p.meta is not None and p.meta["run_id"] == run_id]
    kept = [p for p in parts if p not in fresh]
    lines = ["# Validation report", "", f"Built {time.strftime('%Y-%m-%d %H:%M:%S')} by run `{run_id}` "
             f"({mode} mode, seed {seed})."]
    if not kept:
        lines[-1] += " Every number below was measured in this run."
    else:
        lines[-1] += (" Measured in this run: " + (", ".join(f"`{p.name}`" for p in fresh) if fresh else "no section")
                      + ". Kept from earlier runs (not measured in this run): "
                      + "; ".join(f"`{p.name}` ({'unknown date and mode' if p.meta is None else _when(p.meta)})"
                                  for p in kept) + ".")
        other = [p.name for p in kept if p.meta is not None and (p.meta["mode"] != mode or p.meta["seed"] != seed)]
        if other:
            lines[-1] += (f" **Mixed settings:** {', '.join(f'`{n}`' for n in other)} were measured in another mode "
                          "or with another seed than this run.")
    lines += ["", "## Summary", "", "| section | question | answer | measured |", "|---|---|---|---|"]
    for p in parts:
        rows = (p.meta or {}).get("summary") or [{"question": "—", "answer": "(no summary rows recorded)"}]
        if p.meta is None:
            stamp = "earlier run (date and mode unknown)"
        elif p.meta["run_id"] == run_id:
            stamp = f"this run ({p.meta['mode']})"
        else:
            stamp = f"earlier run, {p.meta['started'][:16]} ({p.meta['mode']})"
        for i, row in enumerate(rows):
            lines.append(f"| {_cell(_title(p)) if i == 0 else ''} | {_cell(row['question'])} | "
                         f"{_cell(row['answer'])} | {stamp} |")
    lines.append("")
    body = [p.text.rstrip() + "\n\n" + _footer(p, run_id, mode, seed, why_kept(p.name)) + "\n" for p in parts]
    return "\n".join(lines) + "\n" + "\n".join(body)


def build_report(
    out_dir: Path, *, quick: bool = False, only: list[str] | None = None, resume: bool = False, seed: int = 0,
    modules: list[ModuleType] | None = None,
) -> Path:
    """Run the sections and write ``<out_dir>/report.md``. Returns its path.

    Runs every discovered section (or those in ``only``; with ``resume``, only those without a successful
    ``sections/<name>.md`` + ``.json`` already in ``out_dir``), then rebuilds ``report.md`` from every section
    present in ``out_dir/sections/``. A section that raises is reported as failed (with its traceback) and
    makes the call raise ``RuntimeError`` after the report is written; the others still run.

    Raises:
        UnknownSectionError: ``only`` names a section that does not exist.
        RuntimeError: a section failed.
    """
    out_dir = Path(out_dir)
    (out_dir / "sections").mkdir(parents=True, exist_ok=True)
    modules = discover() if modules is None else modules
    selected = modules
    if only:
        check_names(only, modules)
        selected = [m for m in modules if section_name(m) in only]
    run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    failures = []
    bar = tqdm(selected, desc="report", unit="section")
    for mod in bar:
        name = section_name(mod)
        bar.set_postfix_str(name)
        if resume and _resumable(out_dir, name):
            continue
        meta = _run_section(mod, out_dir, quick=quick, seed=seed, run_id=run_id)
        if meta["status"] != "ok":
            failures.append(name)
    report = out_dir / "report.md"
    report.write_text(_assemble(out_dir, modules, run_id=run_id, quick=quick, seed=seed, only=only, resume=resume))
    if failures:
        raise RuntimeError(f"section(s) failed: {failures}; see {report}")
    return report


def _resumable(out_dir: Path, name: str) -> bool:
    """A section ``--resume`` keeps: written successfully (or by an earlier version without metadata)."""
    md, meta = out_dir / "sections" / f"{name}.md", out_dir / "sections" / f"{name}.json"
    if not md.exists():
        return False
    if not meta.exists():
        return True
    try:
        return json.loads(meta.read_text()).get("status") == "ok"
    except (json.JSONDecodeError, OSError):
        return False

