"""The study's bookkeeping: which measurements still run, and how a continued SGLD run is stored."""
import pytest

from experiments import transformer_study as ts


def _store(tmp_path, data):
    store = ts._Store(tmp_path / "measurements.json")
    for (step, key), value in data.items():
        store.put(step, key, value)
    return store


def test_pending_runs_what_is_missing_and_continues_only_unconverged_llcs_of_extended_steps(tmp_path):
    groups = [[(450, "curvature"), (450, "order4")], [(450, "calibration/training"), (450, "llc")],
              [(450, "calibration/behavioral"), (450, "behavioral_llc")], [(3000, "calibration/training"), (3000, "llc")],
              [(3000, "refined/head0.0")]]
    store = _store(tmp_path, {(450, "curvature"): {}, (450, "calibration/training"): {},
                              (450, "llc"): {"converged": False}, (450, "calibration/behavioral"): {},
                              (450, "behavioral_llc"): {"converged": True}, (3000, "calibration/training"): {},
                              (3000, "llc"): {"converged": False}, (3000, "refined/head0.0"): {"converged": False}})
    assert ts.pending(groups, store) == [(450, "order4")]
    assert ts.pending(groups, store, extend=(450,)) == [(450, "order4"), (450, "llc")]
    assert ts.pending(groups, store, extend=(450, 3000)) == [(450, "order4"), (450, "llc"), (3000, "llc")]


def test_a_continued_run_adds_up_the_seconds_of_its_segments():
    first = {"mean": 1.0, "seconds": 420.0}
    second = ts.continued(first, {"mean": 2.0, "seconds": 3000.0})
    assert second == {"mean": 2.0, "seconds": 3420.0, "segments": 2}
    assert ts.continued(second, {"mean": 3.0, "seconds": 10.0})["segments"] == 3
    assert ts.continued(None, first) is first


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_llc_seconds_must_be_positive(bad, capsys):
    with pytest.raises(SystemExit):
        ts.main(["--sizes", "0.1M", "--llc-seconds", bad, "--report-only"])
    assert "--llc-seconds must be a positive number" in capsys.readouterr().err
