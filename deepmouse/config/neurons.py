"""The ``neurons`` section: which neurons are scored (reliability, selectivity, running).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import StrictBool, StrictFloat, StrictInt, field_validator

from deepmouse.config.base import NUMPY_SEED, Section, in_unit_interval, invalid, positive


@dataclass(frozen=True)
class NeuronsConfig(Section):
    seed: StrictInt = 0
    n_splits: StrictInt = 100
    reliability_threshold: StrictFloat = 0.75
    selectivity_alpha: StrictFloat = 0.05
    require_selective: StrictBool = False
    running_alpha: StrictFloat = 0.05
    exclude_running_modulated: StrictBool = True
    max_per_area: StrictInt | None = None

    _check_n_splits = field_validator("n_splits")(positive)
    _check_seed = field_validator("seed")(NUMPY_SEED)
    _check_alphas = field_validator("selectivity_alpha", "running_alpha")(in_unit_interval)

    @field_validator("reliability_threshold")
    @classmethod
    def _check_threshold(cls, threshold: float) -> float:
        # Split-half reliabilities range over [-1, 1], but one at or below 0 says the halves
        # share nothing: a threshold below 0 would select noise, and -1 every neuron.
        if not 0 <= threshold <= 1:
            raise invalid("must be in [0, 1] (below 0 it selects neurons whose split halves disagree), "
                           f"got {threshold}")
        return threshold

    @field_validator("max_per_area")
    @classmethod
    def _check_max_per_area(cls, max_per_area: int | None) -> int | None:
        if max_per_area is not None and max_per_area <= 0:
            raise invalid(f"must be positive or null, got {max_per_area}")
        return max_per_area
