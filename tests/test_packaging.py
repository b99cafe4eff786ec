"""The install exposes one import name, ``slt_interp`` (issue 12): a regular wheel and the editable
install both provide ``slt_interp.theory`` / ``.estimators`` / ``.bilinear`` and nothing at top level
that could shadow (or be shadowed by) the index's ``theory``, ``estimators``, ``experiments``."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("theory", "estimators", "bilinear")
CHECK = """
import importlib, importlib.util, sys
prefix = sys.argv[1]
for name in ("theory", "estimators", "bilinear", "experiments"):
    assert importlib.util.find_spec(name) is None, f"top-level {name!r} is importable"
import slt_interp
for name in ("theory", "estimators", "bilinear"):
    mod = importlib.import_module(f"slt_interp.{name}")
    assert mod.__file__.startswith(prefix), (mod.__file__, prefix)
from slt_interp.theory import reduced_rank_regression
from slt_interp.estimators import estimate_llc, llc_bounds
from slt_interp.bilinear import BilinearConfig
print(reduced_rank_regression(4, 3, 4, 1).value)
"""


def _no_pip_network(env: dict) -> dict:
    env = {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    return env


def test_editable_install_declares_only_slt_interp():
    dist = importlib.metadata.distribution("slt-interp")
    assert (dist.read_text("top_level.txt") or "").split() == ["slt_interp"]
    requires = dist.requires or []
    core = [r for r in requires if "extra ==" not in r]
    assert not any(r.startswith("devinterp") for r in core), "devinterp belongs to the [experiments] extra"
    assert any(r.startswith("devinterp") and "experiments" in r for r in requires)


def test_wheel_installs_slt_interp_only_and_imports_in_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src,
        ignore=shutil.ignore_patterns(".git", "report", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    env = _no_pip_network(dict(os.environ))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        check=True, env=env, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("slt_interp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"slt_interp"}, top
    for sub in SUBPACKAGES:
        assert f"slt_interp/{sub}/__init__.py" in names

    venv = tmp_path / "venv"
    # --system-site-packages lends the venv torch, numpy, ... from this interpreter; the wheel itself goes
    # into the venv's own site-packages, which comes first on sys.path.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, env=env,
                   capture_output=True, timeout=300)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    run = subprocess.run([str(py), "-c", CHECK, site], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("6")


def test_repository_root_is_not_needed_for_the_editable_install(tmp_path):
    """From outside the checkout, the editable install finds slt_interp.* in the checkout's folders, and
    no top-level ``theory`` / ``estimators`` / ``bilinear``."""
    if importlib.util.find_spec("slt_interp") is None:
        pytest.skip("slt_interp is not installed")
    run = subprocess.run([sys.executable, "-c", CHECK, str(ROOT)], cwd=tmp_path,
                         env=_no_pip_network(dict(os.environ)), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    pip install")]
    assert len(commands) == 2, commands  # the main job and the tests
    main_job, tests = commands
    assert main_job.endswith("python -m experiments") and '".[experiments]"' in main_job
    assert tests.endswith("python -m pytest")
    assert tests in (ROOT / ".ci" / "run").read_text()
