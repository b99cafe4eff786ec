"""Fit candidate prior families to observed activations and derive the penalty of the best one.

Each family is fitted by maximum likelihood (scipy.stats, location fixed at 0) on a training split;
exact zeros are a point mass whose weight π₀ is its maximum-likelihood estimate (the fraction of
zeros), so the likelihood is π₀ at 0 and (1 − π₀)·f(a) elsewhere, w.r.t. δ₀ + Lebesgue. Families are
ranked by the mean held-out log-likelihood per sample, with its standard error and the paired standard
error of the gap to the most likely family. The chosen family is the simplest one *nested* in the most
likely (a special or limiting case of it, :data:`NESTED`) whose held-out gap is within its paired
standard error: a parsimony rule, so that a two-parameter family that only matches its one-parameter
special case is not preferred on noise. The chosen family's penalty is derived symbolically (with the
point mass, an L0 term: spike-and-slab, docs/theory.md §4) and handed to torch.

Degenerate fits are warned about (``warnings.warn``, also listed in :attr:`PriorFit.warnings`):
constant non-zero samples (every family's scale or shape runs off), and a Lomax whose α runs to ∞
(its limit, the exponential, fits as well: the data show no power-law tail).

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_cauchy(20000)
    >>> fit = fit_prior(x, families=("laplace", "gaussian", "cauchy"), seed=0)
    >>> fit.best.family
    'cauchy'
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import sympy as sp
from scipy import stats
from torch import Tensor

from .prior_catalogue import ALPHA as _ALPHA, NU as _NU, P as _P, PI0 as _PI0, S as _S, A as _A, X as _X
from .priors import PriorPenalty, penalty_from_prior

__all__ = ["FamilyFit", "PriorFit", "fit_prior", "FAMILIES", "NESTED"]



@dataclass(frozen=True)
class _Family:
    support: str
    dist: stats.rv_continuous
    density: sp.Expr  # normalised (as scipy's pdf, so that the L0 weight of a point mass is right), in _A or _X
    parameters: tuple[sp.Symbol, ...]
    to_values: Callable[[tuple], dict]  # scipy fit (shape..., loc, scale) → {symbol name: value}
    logpdf: Callable | None = None  # overrides dist.logpdf where scipy's underflows to −inf


def _laplace_logpdf(x, loc, scale):
    return -np.abs(x - loc) / scale - np.log(2 * scale)  # scipy's laplace.logpdf is log(pdf): −inf far out


FAMILIES: dict[str, _Family] = {
    "laplace": _Family("real", stats.laplace, sp.exp(-sp.Abs(_A) / _S) / (2 * _S), (_S,),
                       lambda p: {"s": p[-1]}, _laplace_logpdf),
    "gaussian": _Family("real", stats.norm, sp.exp(-_A**2 / (2 * _S**2)) / sp.sqrt(2 * sp.pi * _S**2), (_S,),
                        lambda p: {"s": p[-1]}),
    "cauchy": _Family("real", stats.cauchy, 1 / (sp.pi * _S * (1 + _A**2 / _S**2)), (_S,), lambda p: {"s": p[-1]}),
    "student_t": _Family("real", stats.t, sp.gamma((_NU + 1) / 2) / (sp.sqrt(_NU * sp.pi) * _S * sp.gamma(_NU / 2))
                         * (1 + _A**2 / (_NU * _S**2)) ** (-(_NU + 1) / 2), (_NU, _S),
                         lambda p: {"nu": p[0], "s": p[-1]}),
    "generalized_gaussian": _Family("real", stats.gennorm,
                                    _P / (2 * _S * sp.gamma(1 / _P)) * sp.exp(-(sp.Abs(_A) / _S) ** _P), (_P, _S),
                                    lambda p: {"p": p[0], "s": p[-1]}),
    "exponential": _Family("nonnegative", stats.expon, sp.exp(-_X / _S) / _S, (_S,), lambda p: {"s": p[-1]}),
    "half_normal": _Family("nonnegative", stats.halfnorm, sp.sqrt(2 / sp.pi) / _S * sp.exp(-_X**2 / (2 * _S**2)),
                           (_S,), lambda p: {"s": p[-1]}),
    "lomax": _Family("nonnegative", stats.lomax, _ALPHA / _S * (1 + _X / _S) ** (-(_ALPHA + 1)), (_ALPHA, _S),
                     lambda p: {"alpha": p[0], "s": p[-1]}),
    "half_generalized_gaussian": _Family("nonnegative", stats.halfgennorm,
                                         _P / (_S * sp.gamma(1 / _P)) * sp.exp(-(_X / _S) ** _P), (_P, _S),
                                         lambda p: {"p": p[0], "s": p[-1]}),
    "half_cauchy": _Family("nonnegative", stats.halfcauchy, 2 / (sp.pi * _S * (1 + _X**2 / _S**2)), (_S,),
                           lambda p: {"s": p[-1]}),
}

#: family → the simpler families it contains as a special case (a fixed shape) or a limit: the
#: parsimony rule of :func:`fit_prior` chooses among these.
NESTED: dict[str, tuple[str, ...]] = {
    "generalized_gaussian": ("laplace", "gaussian"),  # p = 1, p = 2
    "student_t": ("cauchy", "gaussian"),  # ν = 1, ν → ∞
    "half_generalized_gaussian": ("exponential", "half_normal"),  # p = 1, p = 2
    "lomax": ("exponential",),  # α → ∞ with s/α fixed
}


@functools.lru_cache(maxsize=None)
def _family_prior(name: str, point_mass: bool) -> PriorPenalty:
    fam = FAMILIES[name]
    var = _A if fam.support == "real" else _X
    if point_mass:
        return penalty_from_prior(_PI0 * sp.DiracDelta(var) + (1 - _PI0) * fam.density, [var],
                                  parameters=(_PI0, *fam.parameters), source=f"{name} slab + point mass at 0")
    return penalty_from_prior(fam.density, [var], parameters=fam.parameters, source=name)


@dataclass(frozen=True)
class FamilyFit:
    """One family's maximum-likelihood fit.

    Attributes:
        family: the family's name (a key of :data:`FAMILIES`).
        values: the fitted parameters by name (``pi_0`` is the point-mass weight when there is one).
        train_loglik: mean log-likelihood per training sample at the fit.
        heldout_loglik: mean log-likelihood per held-out sample.
        heldout_std_err: its standard error (per-sample spread / √num_test_samples).
        gap: heldout_loglik of the best family minus this one (≥ 0).
        gap_std_err: the paired standard error of ``gap``.
    """

    family: str
    values: dict
    train_loglik: float
    heldout_loglik: float
    heldout_std_err: float
    gap: float
    gap_std_err: float


@dataclass(frozen=True)
class PriorFit:
    """Families ranked by held-out likelihood; the chosen one's prior and penalty.

    Attributes:
        ranking: the fits, highest held-out log-likelihood first.
        zero_fraction: the fraction of exact zeros (the point-mass weight π₀ fitted on train).
        num_train_samples: the training split's size.
        num_test_samples: the held-out split's size.
        seed: the split's seed.
        skipped: families that could not be fitted, with the reason.
        choice: the chosen family's name (the parsimony rule, see :func:`fit_prior`).
        choice_reason: why it was chosen, with the numbers.
        warnings: degenerate fits found (each was also issued with ``warnings.warn``).
    """

    ranking: tuple[FamilyFit, ...]
    zero_fraction: float
    num_train_samples: int
    num_test_samples: int
    seed: int
    skipped: tuple[tuple[str, str], ...] = ()
    _point_mass: bool = field(default=False, repr=False)
    choice: str = ""
    choice_reason: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def best(self) -> FamilyFit:
        """The chosen family (the parsimony rule of :func:`fit_prior`; see :attr:`choice_reason`)."""
        name = self.choice or self.ranking[0].family
        return next(f for f in self.ranking if f.family == name)

    @property
    def most_likely(self) -> FamilyFit:
        """The family with the highest held-out log-likelihood."""
        return self.ranking[0]

    def __str__(self) -> str:
        lines = [f"fit_prior: chose {self.best.family} {self.best.values} ({self.choice_reason})"]
        lines += [f"  {f.family}: held-out {f.heldout_loglik:.4f} ± {f.heldout_std_err:.4f}, gap "
                  f"{f.gap:.4f} ± {f.gap_std_err:.4f}" for f in self.ranking]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    @property
    def prior(self) -> PriorPenalty:
        """The best family's symbolic prior and penalty (parameters bound by :meth:`to_torch`)."""
        return _family_prior(self.best.family, self._point_mass)

    @property
    def penalty(self) -> sp.Expr:
        """The derived penalty with the fitted values substituted."""
        prior = self.prior
        return prior.penalty.subs({p: self.best.values[str(p)] for p in prior.parameters})

    def to_torch(self) -> Callable[[Tensor], Tensor]:
        """The derived penalty with the fitted values, as a torch function.

        Returns:
            ``f(a)`` as in :meth:`PriorPenalty.to_torch`.
        """
        return self.prior.to_torch(**self.best.values)


def fit_prior(samples, families: Sequence[str] | None = None, *, test_fraction: float = 0.3, seed: int = 0) -> PriorFit:
    """Fit ``families`` to ``samples`` by maximum likelihood and rank them on held-out likelihood.

    Each family's log-likelihood is ℓ(a) = log π₀ at a = 0 and log(1 − π₀) + log f(a) elsewhere (with
    π₀ the training fraction of zeros, when there are zeros), w.r.t. δ₀ + Lebesgue; families are
    ranked by the mean held-out ℓ per sample (docs/theory.md §4). Parsimony rule: with B the most
    likely family, the chosen family is the one with the fewest parameters among B and the families
    nested in B (:data:`NESTED`) whose gap to B is at most its paired standard error (ties: the more
    likely).

    Args:
        samples: array-like of activations (any shape; flattened). Exact zeros are a point mass.
        families: a sequence of names from :data:`FAMILIES`; default (None): those whose support
            contains the samples.
        test_fraction: the held-out share (0 < f < 1).
        seed: seeds the train/test split.

    Returns:
        The :class:`PriorFit`, most likely family first; ``.best`` is the chosen one.

    Raises:
        ValueError: too few non-zero samples, non-finite samples, an empty or unknown family list (or
            one name given as a string), no family whose support holds the samples.

    Warns:
        UserWarning: the non-zero samples are constant (every continuous family degenerates), or a
            Lomax fit has α → ∞ (its limit, the exponential, fits as well).
    """
    x = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or inf; remove them before fitting a prior")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    nonneg = bool(np.all(x >= 0))
    if families is None:
        families = [n for n, f in FAMILIES.items() if nonneg or f.support == "real"]
    if isinstance(families, str):
        raise ValueError(f"families must be a sequence of names, got the string {families!r}; "
                         f"pass families=({families!r},)")
    families = list(families)
    if not families:
        raise ValueError(f"families is empty: pass at least one of {sorted(FAMILIES)}, or families=None for "
                         "every family whose support holds the samples")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown famil(ies) {unknown}; choose from {sorted(FAMILIES)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(x.size)
    n_test = int(round(test_fraction * x.size))
    test, train = x[perm[:n_test]], x[perm[n_test:]]
    if np.count_nonzero(train) < 20 or n_test < 10:
        raise ValueError(f"need at least 20 non-zero training samples and 10 test samples, got "
                         f"{np.count_nonzero(train)} and {n_test}; pass more samples")
    zero_fraction = float(np.mean(train == 0))
    point_mass = bool(np.any(x == 0))
    if point_mass and zero_fraction == 0:
        zero_fraction = 0.5 / (train.size + 1)  # zeros only in test: smallest non-zero weight
    nz_train = train[train != 0]
    notes = []
    spread = float(np.ptp(nz_train))
    if spread <= 1e-12 * float(np.max(np.abs(nz_train))):
        notes.append(f"all non-zero training samples equal {nz_train[0]:.6g}: every continuous family degenerates "
                     "(a scale → 0 or a shape → ∞) and the ranking is meaningless; check the activations (a "
                     "constant or saturated latent, or quantised values) and fit only latents whose values vary")
    fits, skipped = [], []
    per_sample = {}
    for name in families:
        fam = FAMILIES[name]
        if fam.support == "nonnegative" and not nonneg:
            skipped.append((name, "negative samples outside the support a ≥ 0"))
            continue
        with np.errstate(all="ignore"):
            params = fam.dist.fit(nz_train, floc=0)
        logpdf = fam.logpdf or fam.dist.logpdf
        ll_train = _loglik(train, logpdf, params, zero_fraction, point_mass)
        ll_test = _loglik(test, logpdf, params, zero_fraction, point_mass)
        if not np.all(np.isfinite(ll_test)):
            skipped.append((name, "held-out log-likelihood is −inf for some samples (outside the support)"))
            continue
        values = {k: float(v) for k, v in fam.to_values(params).items()}
        if name == "lomax" and not notes:
            note = _lomax_degenerate(nz_train, values)
            if note:
                notes.append(note)
        if point_mass:
            values["pi_0"] = zero_fraction
        per_sample[name] = ll_test
        fits.append((name, values, float(np.mean(ll_train)), float(np.mean(ll_test)),
                     float(np.std(ll_test, ddof=1) / np.sqrt(ll_test.size))))
    if not fits:
        raise ValueError(f"no family could be fitted: {skipped}")
    fits.sort(key=lambda f: -f[3])
    best = per_sample[fits[0][0]]
    ranking = []
    for name, values, tr, te, std_err in fits:
        diff = best - per_sample[name]
        ranking.append(FamilyFit(name, values, tr, te, std_err, float(np.mean(diff)),
                                 float(np.std(diff, ddof=1) / np.sqrt(diff.size))))
    choice, reason = _parsimony(ranking)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return PriorFit(tuple(ranking), zero_fraction, train.size, test.size, seed, tuple(skipped), point_mass,
                    choice, reason, tuple(notes))


def _parsimony(ranking: list[FamilyFit]) -> tuple[str, str]:
    """The simplest family nested in the most likely one within one paired standard error of it."""
    top = ranking[0]
    nested = set(NESTED.get(top.family, ()))
    adequate = [f for f in ranking[1:] if f.family in nested and f.gap <= f.gap_std_err]
    if not adequate:
        return top.family, "the highest held-out log-likelihood"
    simplest = min([top] + adequate, key=lambda f: (len(FAMILIES[f.family].parameters), f.gap))
    if simplest is top:
        return top.family, "the highest held-out log-likelihood"
    return simplest.family, (f"parsimony: nested in {top.family} and within one standard error of it on held-out "
                             f"data (gap {simplest.gap:.3g} ≤ {simplest.gap_std_err:.3g} nats/sample)")


def _lomax_degenerate(nz_train, values) -> str:
    """A note when the Lomax MLE runs to α → ∞: its training fit is no better than its limit, the exponential."""
    alpha, s = values["alpha"], values["s"]
    exp_ll = -np.log(np.mean(nz_train)) - 1.0  # the exponential's maximised mean log-likelihood
    lomax_ll = float(np.mean(stats.lomax.logpdf(nz_train, alpha, loc=0, scale=s)))
    if alpha > 1e6 or lomax_ll <= exp_ll + 1e-9 * max(1.0, abs(exp_ll)):
        return (f"the Lomax fit degenerates: α = {alpha:.3g} → ∞ and s = {s:.3g} → ∞ (s/α = {s / alpha:.3g}), "
                "so it "
                "is the exponential with that scale and the data show no power-law tail; use the 'exponential' "
                "family (the parsimony rule chooses it when it is among the families)")
    return ""


def _loglik(x, logpdf, params, zero_fraction, point_mass):
    out = np.empty_like(x)
    zero = x == 0
    with np.errstate(all="ignore"):
        if point_mass:
            out[zero] = np.log(zero_fraction)
            out[~zero] = np.log1p(-zero_fraction) + logpdf(x[~zero], *params)
        else:
            out[:] = logpdf(x, *params)
    return out
