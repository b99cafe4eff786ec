"""Smoke test of the main job: ``python -m experiments --quick`` writes a complete report."""
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
    for mod in discover():
        assert f"## {mod.TITLE}" in report, section_name(mod)
        assert "FAILED" not in report
    for line in report.splitlines():
        if line.startswith("![") and "](" in line:
            rel = line.split("](", 1)[1].rstrip(")")
            assert (tmp_path / rel).exists(), rel
    print(f"quick report took {elapsed:.1f} s")
