"""The ``scoring`` section: RSA, ridge regression, splits, bootstrap and comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictInt, field_validator

from deepmouse.config.base import NUMPY_SEED, Section, in_unit_interval, invalid, positive


@dataclass(frozen=True)
class RsaConfig(Section):
    sites: tuple[Literal["area", "area_layer", "area_cre"], ...] = ("area",)
    comparison: Literal["pearson", "spearman", "kendall_tau_a"] = "pearson"


@dataclass(frozen=True)
class RegressionConfig(Section):
    """Ridge regression per neuron (DESIGN §6).

    ``alpha_mode: loo`` (default): outer folds over the stimuli; in each training part
    every neuron's alpha is chosen by exact LOO error over ``relative_alphas`` (times
    trace(K)/n of that part); the score is Pearson r within each held-out fold, averaged.
    ``paper``: the reference study's recipe for comparison — fixed alpha 1.0 on
    standardised features, Pearson r of the LOO predictions.
    """

    alpha_mode: Literal["loo", "paper"] = "loo"
    relative_alphas: tuple[StrictFloat, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0, 100.0)

    @field_validator("relative_alphas")
    @classmethod
    def _check_alphas(cls, alphas: tuple[float, ...]) -> tuple[float, ...]:
        if not alphas or min(alphas) <= 0:
            raise invalid("need at least one positive alpha")
        return alphas


@dataclass(frozen=True)
class PlsConfig(Section):
    """PLS2 regression per site (DESIGN §6): one fit per layer for all of a site's neurons.

    Outer folds and the score as for ridge (``scoring.cv``); in each training part the
    number of components is chosen from ``components`` (each capped at the inner training
    size minus one) by ``inner_folds``-fold CV on that part. Every component of every layer ×
    area × outer fold × (inner folds + 1) costs the top eigenpair of an r × r matrix (r at
    most the area's neurons and the training stimuli minus one), several times ridge's time
    per layer. Off unless ``enabled`` (the repository's ``params.yaml`` turns it on).
    """

    enabled: StrictBool = False
    components: tuple[StrictInt, ...] = (5, 10, 25, 50)
    inner_folds: StrictInt = 3

    @field_validator("components")
    @classmethod
    def _check_components(cls, components: tuple[int, ...]) -> tuple[int, ...]:
        if not components or min(components) < 1:
            raise invalid(f"need at least one positive number of components, got {list(components)}")
        return components

    @field_validator("inner_folds")
    @classmethod
    def _check_inner_folds(cls, inner_folds: int) -> int:
        if not 2 <= inner_folds <= 20:
            raise invalid(f"must be in [2, 20] so every inner part of a training fold holds at least 3 stimuli, "
                          f"got {inner_folds}")
        return inner_folds


@dataclass(frozen=True)
class CkaConfig(Section):
    """Linear CKA between a layer's features and a site's neurons (DESIGN §6).

    ``estimator``: ``unbiased`` (U-statistic HSIC, Song et al. 2012; the default, since the
    biased one is inflated with many features at 119 stimuli) or ``biased`` (the V-statistic).
    CKA uses the RSA sites (``scoring.rsa.sites``).
    """

    estimator: Literal["unbiased", "biased"] = "unbiased"


@dataclass(frozen=True)
class CrossValidationConfig(Section):
    """Seeded splits of the stimuli shared by every model and site.

    Regression: ``n_folds`` outer folds, repeated ``n_repeats`` times with fresh
    permutations. RSA ``cv`` layer selection: ``n_splits`` random halves, each used both
    ways (choose the layer on one half's stimulus pairs, score it on the other's).
    """

    n_folds: StrictInt = 10
    n_repeats: StrictInt = 1
    n_splits: StrictInt = 10
    seed: StrictInt = 0

    _check_positive = field_validator("n_repeats", "n_splits")(positive)
    _check_seed = field_validator("seed")(NUMPY_SEED)

    @field_validator("n_folds")
    @classmethod
    def _check_folds(cls, n_folds: int) -> int:
        if not 2 <= n_folds <= 39:
            raise invalid(f"must be in [2, 39] so every fold holds at least 3 of the 119 stimuli, got {n_folds}")
        return n_folds


@dataclass(frozen=True)
class BootstrapConfig(Section):
    n: StrictInt = 1000
    seed: StrictInt = 0
    level: StrictFloat = 0.95

    _check_n = field_validator("n")(positive)
    _check_seed = field_validator("seed")(NUMPY_SEED)
    _check_level = field_validator("level")(in_unit_interval)


@dataclass(frozen=True)
class ComparisonsConfig(Section):
    """Paired model comparisons: Benjamini-Hochberg false discovery rate per site."""

    fdr: StrictFloat = 0.05

    _check_fdr = field_validator("fdr")(in_unit_interval)


@dataclass(frozen=True)
class ScoringConfig(Section):
    """How models are scored (DESIGN §6).

    ``layer_selection``: ``max`` (the reference study's best layer, optimistic) and/or
    ``cv`` (the layer chosen on held-out-free data and scored on held-out data).
    ``ceiling``: which per-neuron ceiling normalises regression scores — ``split_half``
    (Spearman-Brown reliability) or ``cc_max`` (Schoppe et al. 2016, squared).
    ``min_ceiling``: a neuron's (regression) or site's (RSA, CKA) ceiling below it keeps its
    raw score but gets no normalised score and is flagged ``low_ceiling``: r / sqrt(ceiling)
    of a tiny ceiling is mostly noise.
    """

    layer_selection: tuple[Literal["max", "cv"], ...] = ("max", "cv")
    ceiling: Literal["split_half", "cc_max"] = "split_half"
    min_ceiling: StrictFloat = 0.3
    rsa: RsaConfig = field(default_factory=RsaConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    cka: CkaConfig = field(default_factory=CkaConfig)
    pls: PlsConfig = field(default_factory=PlsConfig)
    cv: CrossValidationConfig = field(default_factory=CrossValidationConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    comparisons: ComparisonsConfig = field(default_factory=ComparisonsConfig)

    @field_validator("layer_selection")
    @classmethod
    def _check_layer_selection(cls, layer_selection: tuple[str, ...]) -> tuple[str, ...]:
        if not layer_selection:
            raise invalid("list at least one of 'max', 'cv'")
        if len(set(layer_selection)) != len(layer_selection):
            raise invalid(f"duplicate entries in {list(layer_selection)}")
        return layer_selection

    @field_validator("min_ceiling")
    @classmethod
    def _check_min_ceiling(cls, min_ceiling: float) -> float:
        if not 0 <= min_ceiling < 1:
            raise invalid(f"must be in [0, 1), got {min_ceiling}")
        return min_ceiling
