"""Small transformer language models on a synthetic language with long-range copying (issue 13).

* :mod:`.language` — the language: a Markov source with copy events, its entropy rate (the loss floor
  on Markov positions) and the masks of the positions predictable by copying.
* :mod:`.model` — a nanoGPT-style causal transformer LM and configs of about 0.1M, 1M and 10M parameters.
* :mod:`.train` — AdamW training with resumable checkpoints, the in-context loss, prefix-matching scores
  and the detection of the induction-head transition.
"""
from .language import Language, LanguageConfig, LanguageSample, MarkovSource, repeated_tokens
from .model import SIZES, CausalLM, LMConfig, config_for_size, count_parameters
from .train import (EvalRecord, copy_attention_scores, InductionTransition, TrainConfig, TrainResult, checkpoint_path, evaluate,
                    find_transition, list_checkpoints, load_checkpoint, next_token_losses,
                    prefix_matching_score_of, prefix_matching_scores, train)

__all__ = ["Language", "LanguageConfig", "LanguageSample", "MarkovSource", "repeated_tokens",
           "SIZES", "CausalLM", "LMConfig", "config_for_size", "count_parameters",
           "EvalRecord", "copy_attention_scores", "InductionTransition", "TrainConfig", "TrainResult", "checkpoint_path", "evaluate",
           "find_transition", "list_checkpoints", "load_checkpoint", "next_token_losses",
           "prefix_matching_score_of", "prefix_matching_scores", "train"]
