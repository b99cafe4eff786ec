"""The LLC accuracy benchmark's mechanics: per-(network, method) rows, resume, report and figure."""
import functools
import json

import pytest

from experiments.benchmarks import llc_accuracy as bench
from slt_interp.theory import zoo


def test_random_networks_lie_in_the_size_range_and_have_aoyagi_lambda():
    for i in range(5):
        widths, rank = bench.random_network(i, min_params=1_000, max_params=100_000)
        size = sum(a * b for a, b in zip(widths, widths[1:]))
        assert 1_000 <= size <= 100_000 and 0 <= rank <= min(widths)
        assert zoo.deep_linear_model(widths, rank, seed=i).llc.value > 0


def test_run_resume_and_report(tmp_path, monkeypatch):
    pytest.importorskip("devinterp")
    # the mechanics, not the accuracy: shorter adaptive runs than the default budget
    monkeypatch.setattr(bench, "estimate_llc", functools.partial(bench.estimate_llc, max_steps=1500))
    args = ["--num-networks", "2", "--min-params", "20", "--max-params", "60", "--num-samples", "400",
            "--methods", "default", "devinterp-defaults", "--out", str(tmp_path)]
    text = bench.main(args)
    rows = [json.loads(line) for line in (tmp_path / "llc_accuracy.jsonl").read_text().splitlines()]
    assert sorted((r["index"], r["method"]) for r in rows) == [(0, "default"), (0, "devinterp-defaults"),
                                                               (1, "default"), (1, "devinterp-defaults")]
    ours = [r for r in rows if r["method"] == "default"]
    assert all(r["seconds"] > 0 and r["steps"] > 0 and r["llc"] > 0 for r in ours)
    assert "| ours (default: SGLD, adaptive) | 2 |" in text and "| devinterp (its defaults) | 2 |" in text
    assert (tmp_path / "llc_accuracy.png").stat().st_size > 0

    def must_not_run(*a, **k):
        raise AssertionError("--resume reran a finished estimate")

    monkeypatch.setattr(bench, "run_method", must_not_run)
    again = bench.main(args + ["--resume"])
    assert again.count("| 2 |") == 2  # both methods still report both networks


def test_figure_axis_spans_finite_errors_with_runaways_on_the_edge(tmp_path):
    row = {"params": 2000, "llc": 100.0}
    rows = [{**row, "index": 0, "method": "default", "mean": 80.0},
            {**row, "index": 0, "method": "devinterp-defaults", "mean": 1e36},  # ran away
            {**row, "index": 1, "method": "rmsprop", "mean": 130.0}]
    lo, hi = bench.figure(rows, tmp_path / "f.png")
    assert -40 < lo < -20 and 30 < hi < 50  # −20% and +30% with margins, not stretched to 1e36 %
    assert (tmp_path / "f.png").stat().st_size > 0
