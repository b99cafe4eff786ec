"""The SLQ bracket check of the transformer study: on a small LM checkpoint, brackets nest as steps grow."""
from experiments import slq_bracket_check, transformer_study
from experiments.lm import Language, TrainConfig, train


def test_brackets_nest_and_contain_longer_counts_on_a_small_lm(tmp_path):
    s = transformer_study.quick_settings()
    train_data, heldout = Language(s.language).splits(256, 32, seed=0)
    train(s.model, train_data, heldout, TrainConfig(num_steps=20, batch_size=16, eval_every=20, num_probe_sequences=4),
          out_dir=tmp_path / "checkpoints")
    lines = []
    res = slq_bracket_check.check(tmp_path, "quick", 20, [5, 10, 20], log=lines.append)
    assert res["nested"] and res["contained"] and len(lines) == 3
    for m, row in res["rows"].items():
        lo, hi = row["hessian"]["bracket"]
        assert lo <= row["hessian"]["count"] <= hi
    widths = [res["rows"][m]["hessian"]["bracket"][1] - res["rows"][m]["hessian"]["bracket"][0] for m in (5, 10, 20)]
    assert widths[0] >= widths[1] >= widths[2]
