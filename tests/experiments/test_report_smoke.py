"""Smoke test of the main job: ``python -m experiments --quick`` writes a complete report."""
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_report(tmp_path):
    from experiments.report import discover, section_name

    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-4000:]
    report = (tmp_path / "report.md").read_text()
    assert "Every number below was measured in this run." in report and "## Summary" in report
    run_ids = set()
    for mod in discover():
        assert f"## {mod.TITLE}" in report, section_name(mod)
        assert "FAILED" not in report
        meta = json.loads((tmp_path / "sections" / f"{section_name(mod)}.json").read_text())
        assert meta["status"] == "ok" and meta["mode"] == "quick", section_name(mod)
        assert meta["summary"], f"section {section_name(mod)} gives no ctx.answer(...) row for the summary"
        for row in meta["summary"]:
            assert f"| {row['question'].replace('|', chr(92) + '|')} |" in report
        run_ids.add(meta["run_id"])
    assert len(run_ids) == 1
    for line in report.splitlines():
        if line.startswith("![") and "](" in line:
            rel = line.split("](", 1)[1].rstrip(")")
            assert (tmp_path / rel).exists(), rel
    print(f"quick report took {elapsed:.1f} s")
