"""The ``responses`` section: how a presentation's response is measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import StrictBool, StrictFloat, field_validator, model_validator

from deepmouse.config.base import Section, invalid


MAX_RESPONSE_SPAN_S = 2.0
"""``responses.window`` and ``baseline`` lie within this many seconds of stimulus onset."""


def _ordered(span: tuple[float, float]) -> tuple[float, float]:
    """``span`` as (start, stop), start before stop."""
    start, stop = span
    if not start < stop:
        raise invalid(f"start must be before stop, got {[start, stop]}")
    return start, stop


@dataclass(frozen=True)
class UnitFiltersConfig(Section):
    """Quality filters of Neuropixels units (``responses.neuropixels.units``; ``deepmouse.data.units``).

    The three thresholds default to the release's own (allensdk's ``EcephysSession``
    defaults, ``UNIT_FILTER_DEFAULTS``): ``amplitude_cutoff <= 0.1``, ``presence_ratio >=
    0.95``, ``isi_violations <= 0.5``. ``snr_minimum`` and ``firing_rate_minimum`` are off
    (null) by default: the release applies neither. null turns any filter off.
    ``require_good_quality``: keep only units sorted as ``good`` whose peak channel holds valid
    data (allensdk's ``filter_by_validity``).
    """

    amplitude_cutoff_maximum: StrictFloat | None = 0.1
    presence_ratio_minimum: StrictFloat | None = 0.95
    isi_violations_maximum: StrictFloat | None = 0.5
    snr_minimum: StrictFloat | None = None
    firing_rate_minimum: StrictFloat | None = None
    require_good_quality: StrictBool = True

    @field_validator("amplitude_cutoff_maximum", "presence_ratio_minimum")
    @classmethod
    def _check_fraction(cls, value: float | None) -> float | None:
        # Both metrics are fractions (amplitude cutoff: of spikes missed, at most 0.5 by construction).
        if value is not None and not 0 <= value <= 1:
            raise invalid(f"must lie in [0, 1] (the metric is a fraction) or be null, got {value}")
        return value

    @field_validator("isi_violations_maximum", "snr_minimum", "firing_rate_minimum")
    @classmethod
    def _check_non_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise invalid(f"must be non-negative (the metric is) or null, got {value}")
        return value


@dataclass(frozen=True)
class NeuropixelsResponsesConfig(Section):
    """Spike-count responses of Neuropixels units (``deepmouse.data.spikes``).

    ``window``: seconds after onset over which spikes are counted (a rate, spikes/s); the
    default, the presentation's 0.25 s, is the window of the release's own natural scenes
    analysis. ``units``: the unit quality filters.
    """

    window: tuple[StrictFloat, StrictFloat] = (0.0, 0.25)
    units: UnitFiltersConfig = field(default_factory=UnitFiltersConfig)

    @field_validator("window")
    @classmethod
    def _check_window(cls, window: tuple[float, float]) -> tuple[float, float]:
        start, stop = _ordered(window)
        if not 0 <= start < stop <= MAX_RESPONSE_SPAN_S:
            raise invalid(f"must lie within the {MAX_RESPONSE_SPAN_S:g} s after onset "
                           f"(0 <= start < stop <= {MAX_RESPONSE_SPAN_S:g}), got {[start, stop]}")
        return window


@dataclass(frozen=True)
class ResponsesConfig(Section):
    """How a presentation's response is measured.

    ``definition: window``: the mean of ``signal`` over ``window`` minus its mean over
    ``baseline``, in seconds relative to stimulus onset. ``signal`` is the trace averaged:
    ``dff`` (dF/F, in every Brain Observatory NWB file) or ``events`` (the L0-deconvolved
    event traces Allen publishes beside the NWB files, used where the pulled source has them).
    ``definition: allen_sweep``: the AllenSDK's mean sweep response, the reference study's
    (percent change of the corrected fluorescence; fixed frame counts, so ``window``,
    ``baseline`` and ``signal`` do not apply and ``signal`` must stay ``dff``).
    ``max_dropped_fraction``: the stage stops if a session loses more of its presentations
    than this (outside the recording, no frame in a window; ``deepmouse.data.responses``).
    """

    definition: Literal["window", "allen_sweep"] = "window"
    window: tuple[StrictFloat, StrictFloat] = (0.0, 0.25)
    baseline: tuple[StrictFloat, StrictFloat] = (-0.1, 0.0)
    signal: Literal["dff", "events"] = "dff"
    # A Brain Observatory session B shows 5,950 natural scenes presentations between other stimuli,
    # so a window or baseline reaches past its recording for a handful at most; 1% (about 60) is
    # well above that and well below what a recording cut short or a misplaced window loses.
    max_dropped_fraction: StrictFloat = 0.01
    neuropixels: NeuropixelsResponsesConfig = field(default_factory=NeuropixelsResponsesConfig)

    @field_validator("max_dropped_fraction")
    @classmethod
    def _check_max_dropped_fraction(cls, fraction: float) -> float:
        if not 0 <= fraction <= 1:
            raise invalid(f"must lie in [0, 1] (a fraction of each session's presentations), got {fraction}")
        return fraction

    # The scenes follow each other every 0.25 s: a window reaching further averages the
    # responses to the next scenes, and the presentations it pushes past the end of the
    # recording cannot be measured at all. 2 s leaves room for slow indicators and for
    # the AllenSDK's own sweep response (0.47 s after onset, 0.93 s of baseline before).
    @field_validator("window")
    @classmethod
    def _check_window(cls, window: tuple[float, float]) -> tuple[float, float]:
        start, stop = _ordered(window)
        if not 0 <= start < stop <= MAX_RESPONSE_SPAN_S:
            raise invalid(f"must lie within the {MAX_RESPONSE_SPAN_S:g} s after onset "
                           f"(0 <= start < stop <= {MAX_RESPONSE_SPAN_S:g}; each scene shows for 0.25 s), "
                           f"got {[start, stop]}")
        return window

    @field_validator("baseline")
    @classmethod
    def _check_baseline(cls, baseline: tuple[float, float]) -> tuple[float, float]:
        start, stop = _ordered(baseline)
        if not -MAX_RESPONSE_SPAN_S <= start < stop <= 0:
            raise invalid(f"must lie within the {MAX_RESPONSE_SPAN_S:g} s before onset "
                           f"(-{MAX_RESPONSE_SPAN_S:g} <= start < stop <= 0), got {[start, stop]}")
        return baseline

    @model_validator(mode="after")
    def _check_signal(self) -> ResponsesConfig:
        if self.definition == "allen_sweep" and self.signal != "dff":
            raise invalid(f"{self.signal!r} applies to definition 'window' only; "
                           "'allen_sweep' takes the corrected fluorescence (leave signal: dff)", key="signal")
        return self
