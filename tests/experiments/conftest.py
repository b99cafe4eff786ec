"""Shared fixtures of the experiment tests."""
from __future__ import annotations

import pytest
import torch

from experiments.lm import Language, LanguageConfig, LMConfig, TrainConfig, train
from experiments.lm.problem import NextTokenLM


@pytest.fixture(scope="session")
def trained_tiny():
    """A 184-parameter LM (1 layer, 1 head, d_model 4) trained in float64 on a 4-token copying language,
    and its 256 training sequences."""
    cfg = LMConfig(vocab_size=4, seq_len=6, num_layers=1, num_heads=1, d_model=4, mlp_ratio=1)
    lang = Language(LanguageConfig(vocab_size=4, seq_len=6, branching=2, logit_scale=2.0, min_copy_len=2,
                                   max_copy_len=3, min_offset=2, copy_rate=0.3))
    tr, ho = lang.splits(256, 64, seed=0)
    run = train(cfg, tr, ho, TrainConfig(num_steps=600, batch_size=64, lr=2e-2, warmup_steps=20, eval_every=600,
                                         num_eval_sequences=64, num_probe_sequences=2), dtype=torch.float64)
    return NextTokenLM(run.model), tr.tokens
