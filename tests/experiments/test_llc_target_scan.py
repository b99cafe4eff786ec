"""The λ̂-against-γ-and-n scan's mechanics: rows, computed conclusions, resume."""
import functools
import json

from experiments.benchmarks import llc_target_scan as scan


def test_scan_rows_conclusions_and_resume(tmp_path, monkeypatch):
    # the mechanics, not the values: shorter adaptive runs than the default budget
    monkeypatch.setattr(scan, "estimate_llc", functools.partial(scan.estimate_llc, max_steps=400))
    args = ["--networks", "0", "--localizations", "1", "30", "--num-samples", "300", "--min-params", "20",
            "--max-params", "60", "--out", str(tmp_path)]
    text = scan.main(args)
    rows = [json.loads(s) for s in (tmp_path / "llc_target_scan.jsonl").read_text().splitlines()]
    assert sorted(r["localization"] for r in rows) == [1.0, 30.0]
    assert all(r["steps"] > 0 and r["llc"] > 0 and r["num_samples"] == 300 for r in rows)
    lo, hi = sorted(rows, key=lambda r: r["mean"])
    assert f"network 0, n = 300: λ̂ ranges from {lo['mean']:.1f}" in text
    assert f"to {hi['mean']:.1f}" in text

    def must_not_run(*a, **k):
        raise AssertionError("--resume reran a finished estimate")

    monkeypatch.setattr(scan, "run_one", must_not_run)
    assert "network 0, n = 300" in scan.main(args + ["--resume"])
