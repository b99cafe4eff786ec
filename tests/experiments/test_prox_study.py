"""The prox-encoder study's trainer: every arm trains, TopK hits its k, the controlled arms move their knob."""
import math

import torch

from experiments.prox_study import METHODS, sample_codes, settings, train, true_prior
from slt_interp.theory import ProxEncoder


def test_every_arm_trains_and_reports_finite_metrics():
    s = dict(settings(True), steps=20)
    gen = torch.Generator().manual_seed(0)
    D = torch.randn(s["d"], s["F"], generator=gen)
    D = D / D.norm(dim=0, keepdim=True)
    x = sample_codes("Lomax slab", 256, s["F"], s["p"], gen) @ D.T
    enc = ProxEncoder(true_prior("Lomax slab", s["p"]), s["m"], step=0.1, bandwidth=s["bandwidth"])
    for method in METHODS:
        r = train(x, s["m"], method, 3, s, seed=0, encoder=enc)
        assert all(math.isfinite(r[k]) for k in ("l0", "fvu", "dead")), method
        assert 0 <= r["fvu"] < 2 and 0 <= r["dead"] <= 1
        if method == "TopK":
            assert r["l0"] <= 3
        else:
            assert r["knob"] > 0 and r["knob"] != {"L1-ReLU": 0.5, "JumpReLU": 0.1}.get(method, 0.01)
