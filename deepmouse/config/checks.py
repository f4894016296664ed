"""The ``checks`` section: the data-quality gates' thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import StrictFloat, StrictInt, field_validator

from deepmouse.config.base import Section, invalid


@dataclass(frozen=True)
class ChecksConfig(Section):
    """Data-quality gates (DESIGN §8).

    ``min_selected_per_area``: fewest selected neurons an area with recorded neurons may
    keep. ``max_nan_fraction``: the largest fraction of NaN (or missing) values allowed in
    any numeric column of the score tables beside the scores themselves, e.g.
    ``normalized_score`` where a ceiling is not positive; scores are never allowed NaN. The
    per-neuron tables are validated model by model, so there it bounds each model's rows.
    A run on mean responses without trials (``data.source: table`` without
    ``data.table.trials``) has no ceilings: its ``noise_ceiling`` and ``normalized_score``
    are missing in every row by construction and are left out of this check.
    """

    min_selected_per_area: StrictInt = 5
    max_nan_fraction: StrictFloat = 0.0

    @field_validator("min_selected_per_area")
    @classmethod
    def _check_min_selected(cls, min_selected: int) -> int:
        if min_selected < 0:
            raise invalid(f"must be >= 0, got {min_selected}")
        return min_selected

    @field_validator("max_nan_fraction")
    @classmethod
    def _check_nan_fraction(cls, fraction: float) -> float:
        if not 0 <= fraction <= 1:
            raise invalid(f"must be in [0, 1], got {fraction}")
        return fraction
