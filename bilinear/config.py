"""Configuration of a bilinear / linear-attention transformer (one dataclass, nanoGPT style)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["BilinearConfig"]

NORMALISERS = ("none", "position")


@dataclass(frozen=True)
class BilinearConfig:
    """Shape of a :class:`~slt_interp.bilinear.model.BilinearTransformer`.

    Raises:
        ValueError: a field out of range (non-positive sizes, an unknown or data-dependent normaliser,
            init_std ≤ 0).

    Attributes:
        vocab_size: number of tokens V.
        n_ctx: maximum context length T.
        d_model: residual stream width d.
        n_layers: number of blocks L (attention, then MLP, each with a residual connection).
        n_heads: heads H per attention layer.
        d_head: query/key/value width per head.
        d_mlp: hidden width of each bilinear MLP; 0 for an attention-only model.
        positional: learned positional embedding added to the token embedding.
        normaliser: fixed attention normaliser: "none" (z_t = Σ_{s≤t} ...) or "position"
            (z_t = (1/(t+1))·Σ_{s≤t} ..., t counted from 0). Never data dependent (no softmax).
        init_std: norm of the initial embeddings and scale of the fan-in initialisation of the
            query, key and MLP input weights.
    """

    vocab_size: int = 16
    n_ctx: int = 8
    d_model: int = 32
    n_layers: int = 1  # blocks L
    n_heads: int = 2  # heads per attention layer
    d_head: int = 8
    d_mlp: int = 64  # 0: attention only
    positional: bool = True
    normaliser: str = "position"  # "none" | "position"
    init_std: float = 1.0  # ‖embedding‖ at initialisation

    def __post_init__(self):
        """Validate the fields (each message names the field and the allowed values)."""
        for name in ("vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "d_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BilinearConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.d_mlp, int) or self.d_mlp < 0:
            raise ValueError(f"BilinearConfig.d_mlp must be an int >= 0 (0 = no MLP), got {self.d_mlp!r}")
        if self.normaliser not in NORMALISERS:
            raise ValueError(
                f"BilinearConfig.normaliser must be one of {NORMALISERS}, got {self.normaliser!r}; "
                "a data-dependent normaliser (softmax) would make the model non-polynomial"
            )
        if not self.init_std > 0:
            raise ValueError(f"BilinearConfig.init_std must be > 0, got {self.init_std!r}")

    def to_dict(self) -> dict:
        """The fields as a plain dict (inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BilinearConfig":
        """Build a config from a dict, rejecting unknown keys (so typos do not pass silently).

        Args:
            data: field name -> value.

        Returns:
            The config.

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown BilinearConfig key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)
