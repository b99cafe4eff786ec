"""The report machinery on tiny fake sections: summary rows, --only keeping the other sections, unknown
--only names, resume stamps, and the figure checks of ``Context.savefig``."""
import json
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from experiments import __main__ as cli  # noqa: E402
from experiments import report  # noqa: E402


def _section(name: str, order: int, value: float, calls: list, fail: bool = False):
    """A fake section module that answers one question from a 'measured' value and counts its runs."""
    mod = types.ModuleType(f"experiments.sections.{name}")
    mod.TITLE = f"Fake section {name}"
    mod.ORDER = order

    def run(ctx):
        calls.append((name, ctx.quick))
        if fail:
            raise RuntimeError("boom")
        ctx.answer(f"What is the value of {name}?", f"{value + len(calls):.2f} ± 0.01")
        return f"Body of {name}, run {len(calls)}."

    mod.run = run
    return mod


@pytest.fixture
def fakes(monkeypatch):
    calls: list = []
    mods = [_section("beta", 20, 2.0, calls), _section("alpha", 10, 1.0, calls)]
    mods = sorted(mods, key=lambda m: m.ORDER)
    monkeypatch.setattr(report, "discover", lambda: mods)
    return mods, calls


def _sections_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_summary_rows_and_metadata(tmp_path, fakes):
    mods, calls = fakes
    path = report.build_report(tmp_path, quick=True, seed=3)
    text = path.read_text()
    assert _sections_of(text) == ["## Summary", "## Fake section alpha", "## Fake section beta"]  # ORDER, not name
    summary = text.split("## Summary", 1)[1].split("## Fake section alpha", 1)[0]
    assert "| Fake section alpha | What is the value of alpha? | 2.00 ± 0.01 | this run (quick) |" in summary
    assert "| Fake section beta | What is the value of beta? | 4.00 ± 0.01 | this run (quick) |" in summary
    meta = json.loads((tmp_path / "sections" / "alpha.json").read_text())
    assert {k: meta[k] for k in ("title", "order", "mode", "seed", "status")} == {
        "title": "Fake section alpha", "order": 10, "mode": "quick", "seed": 3, "status": "ok"}
    assert meta["summary"] == [{"question": "What is the value of alpha?", "answer": "2.00 ± 0.01"}]
    assert meta["run_id"] and meta["started"] and meta["seconds"] >= 0
    assert "Every number below was measured in this run." in text


def test_answer_rejects_empty_text(tmp_path):
    ctx = report.Context(out_dir=tmp_path, name="demo")
    with pytest.raises(ValueError, match="section 'demo'.*non-empty string answer"):
        ctx.answer("What?", "  ")


def test_only_keeps_the_other_sections_and_their_stamps(tmp_path, fakes):
    mods, calls = fakes
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0
    first = json.loads((tmp_path / "sections" / "beta.json").read_text())
    assert cli.main(["--quick", "--out", str(tmp_path), "--only", "alpha"]) == 0
    assert [c[0] for c in calls] == ["alpha", "beta", "alpha"]
    text = (tmp_path / "report.md").read_text()
    assert _sections_of(text) == ["## Summary", "## Fake section alpha", "## Fake section beta"]
    alpha = json.loads((tmp_path / "sections" / "alpha.json").read_text())
    beta = json.loads((tmp_path / "sections" / "beta.json").read_text())
    assert beta == first and alpha["run_id"] != beta["run_id"]
    assert "Body of alpha, run 3." in text and "Body of beta, run 2." in text
    assert "Every number below was measured in this run" not in text
    header = text.split("## Summary", 1)[0]
    assert "Measured in this run: `alpha`." in header
    assert f"Kept from earlier runs (not measured in this run): `beta` ({beta['started'][:16]}, quick mode" in header
    assert f"| earlier run, {beta['started'][:16]} (quick) |" in text
    assert f"_Section `alpha`: measured in this run (run `{alpha['run_id']}`" in text
    assert f"_Section `beta`: kept from an earlier run (run `{beta['run_id']}`" in text
    assert "not selected by --only" in text


def test_unknown_only_name_is_a_usage_error(tmp_path, fakes, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--out", str(tmp_path), "--only", "alpha", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: unknown section 'nope'; available: alpha, beta" in err
    assert err.startswith("usage:") and "Traceback" not in err
    assert not (tmp_path / "report.md").exists()
    with pytest.raises(report.UnknownSectionError, match="unknown sections 'x', 'y'; available: alpha, beta"):
        report.build_report(tmp_path, only=["x", "y"])


def test_resume_stamps_earlier_sections_as_earlier(tmp_path, fakes):
    mods, calls = fakes
    report.build_report(tmp_path, quick=False, only=["alpha"])  # default mode, alpha only
    kept = json.loads((tmp_path / "sections" / "alpha.json").read_text())
    text = report.build_report(tmp_path, quick=True, resume=True).read_text()
    assert calls == [("alpha", False), ("beta", True)]  # alpha kept, beta measured now
    header = text.split("## Summary", 1)[0]
    assert "Measured in this run: `beta`." in header
    assert f"`alpha` ({kept['started'][:16]}, default mode, seed 0)" in header
    assert "**Mixed settings:** `alpha`" in header
    assert "Every number below was measured in this run" not in text
    assert f"| What is the value of alpha? | 2.00 ± 0.01 | earlier run, {kept['started'][:16]} (default) |" in text
    footer = next(line for line in text.splitlines() if line.startswith("_Section `alpha`"))
    assert "kept from an earlier run" in footer and "kept by --resume" in footer
    assert "Measured in default mode with seed 0, while this run is quick mode" in footer
    assert "measured in this run (" in next(line for line in text.splitlines() if line.startswith("_Section `beta`"))


def test_resume_reruns_a_failed_section(tmp_path, monkeypatch):
    calls: list = []
    bad = _section("gamma", 10, 0.0, calls, fail=True)
    with pytest.raises(RuntimeError, match="gamma"):
        report.build_report(tmp_path, modules=[bad])
    meta = json.loads((tmp_path / "sections" / "gamma.json").read_text())
    assert meta["status"] == "failed" and "FAILED" in meta["summary"][0]["answer"]
    assert "FAILED" in (tmp_path / "report.md").read_text()
    good = _section("gamma", 10, 5.0, calls)
    text = report.build_report(tmp_path, resume=True, modules=[good]).read_text()
    assert len(calls) == 2 and "FAILED" not in text and "7.00 ± 0.01" in text


def test_sections_without_metadata_are_kept_and_marked(tmp_path, fakes):
    (tmp_path / "sections").mkdir(parents=True)
    (tmp_path / "sections" / "old.md").write_text("## An old section\n\nold body\n\n_Section `old` ran in 1.0 s._\n")
    text = report.build_report(tmp_path, quick=True).read_text()
    assert "## An old section" in text
    assert "| An old section | — | (no summary rows recorded) | earlier run (date and mode unknown) |" in text
    assert "recorded no metadata" in text and "no section module of that name exists any more" in text


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def _labelled(ax, title="panel"):
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (s)")
    ax.set_title(title)


def test_savefig_refuses_missing_labels_and_titles(tmp_path):
    ctx = report.Context(out_dir=tmp_path, name="demo")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("a title")
    with pytest.raises(ValueError, match=r"section 'demo', figure 'bad': axes 1 of 1 \('a title'\) has no xlabel "
                                         r"and no ylabel"):
        ctx.savefig(fig, "bad")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    with pytest.raises(ValueError, match="figure 'untitled': axes 1 of 1 has no title"):
        ctx.savefig(fig, "untitled")
    assert not (tmp_path / "figures").exists()


def test_savefig_accepts_shared_labels_twins_and_suptitle(tmp_path):
    ctx = report.Context(out_dir=tmp_path, name="demo")
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True)
    top.plot([0, 1], [0, 1])
    top.set_ylabel("y")
    bottom.plot([0, 1], [1, 0])
    bottom.set_ylabel("residual")
    bottom.set_xlabel("x")  # shared with the top panel
    twin = bottom.twinx()
    twin.plot([0, 1], [2, 3])
    twin.set_ylabel("other")
    fig.suptitle("one title for all")
    rel = ctx.savefig(fig, "ok")
    assert (tmp_path / rel).exists() and ctx.figures == [rel]
    fig, (left, right) = plt.subplots(1, 2)
    left.plot([0, 1], [0, 1])
    right.twinx().plot([0, 1], [0, 1])
    right.set_title("t")
    _labelled(left)
    with pytest.raises(ValueError, match="axes 3 of 3 has no xlabel and no ylabel"):  # the twin's y needs a label
        ctx.savefig(fig, "twin")


def _covered(fig, legend) -> bool:
    if not hasattr(fig.canvas, "get_renderer"):  # plt.close (in savefig) detaches the Agg canvas
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return report._covers_data(fig, legend.get_window_extent(renderer), renderer)


def test_savefig_moves_a_legend_that_covers_data(tmp_path):
    ctx = report.Context(out_dir=tmp_path, name="demo")
    fig, ax = plt.subplots()
    rng = np.random.default_rng(0)
    ax.scatter(rng.random(500), rng.random(500), s=4, label="points everywhere")
    ax.plot([0, 1], [0.5, 0.5], label="a line")
    _labelled(ax)
    legend = ax.legend(loc="upper right")
    assert _covered(fig, legend)  # the precondition: the legend sits on data
    ctx.savefig(fig, "moved")
    legend = ax.get_legend()
    assert not _covered(fig, legend)
    box, axes_box = legend.get_window_extent(fig.canvas.get_renderer()), ax.bbox  # canvas restored by _covered
    assert box.x0 >= axes_box.x1 or box.y1 <= axes_box.y0  # outside the axes: no free spot inside


def test_savefig_keeps_a_legend_that_covers_nothing_and_uses_a_free_corner(tmp_path):
    ctx = report.Context(out_dir=tmp_path, name="demo")
    fig, ax = plt.subplots()
    x = np.linspace(0, 1, 100)
    ax.plot(x, x, label="diagonal")
    _labelled(ax)
    ax.legend(loc="upper left")
    ctx.savefig(fig, "kept")
    assert ax.get_legend()._loc == 2  # upper left, where nothing is plotted: untouched
    fig, ax = plt.subplots()
    ax.plot(x, x, label="diagonal")
    _labelled(ax)
    ax.plot(x, 1 - x)  # the two diagonals pass through all four corners; the middle of each side is free
    legend = ax.legend(loc="lower right")
    assert _covered(fig, legend)
    ctx.savefig(fig, "corner")
    legend = ax.get_legend()
    assert not _covered(fig, legend)
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert ax.bbox.x0 <= box.x0 and box.x1 <= ax.bbox.x1 and ax.bbox.y0 <= box.y0 and box.y1 <= ax.bbox.y1


def test_savefig_enlarges_small_tick_labels(tmp_path):
    ctx = report.Context(out_dir=tmp_path, name="demo")
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 1, 4])
    ax.set_yticks([0, 2, 4], ["zero", "two", "four"], fontsize=5)
    ax.tick_params(axis="x", labelsize=6)
    _labelled(ax)
    ctx.savefig(fig, "ticks")
    sizes = [t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert sizes and min(sizes) >= report.MIN_TICK_FONTSIZE


def test_segment_test_sees_a_line_crossing_a_box_without_a_vertex_inside():
    box = (0.0, 0.0, 1.0, 1.0)
    assert report._polyline_hit(np.array([[-1.0, 0.5], [2.0, 0.5]]), box, joined=True)
    assert not report._polyline_hit(np.array([[-1.0, 0.5], [2.0, 0.5]]), box, joined=False)
    assert not report._polyline_hit(np.array([[-1.0, 2.0], [2.0, 1.5]]), box, joined=True)
    assert report._polyline_hit(np.array([[-1.0, -1.0], [2.0, 2.0]]), box, joined=True)

