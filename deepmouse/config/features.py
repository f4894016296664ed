"""The ``features`` section: how the models are run (preprocessing, seeds, device, weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import StrictBool, StrictInt, StrictStr, field_validator

from deepmouse.config.base import SKLEARN_SEED_MAX, TORCH_SEED_MAX, Section, seed_up_to


@dataclass(frozen=True)
class FeaturesConfig(Section):
    preprocessing: Literal["paper", "native"] = "paper"
    init_seed: StrictInt = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    weights_dir: StrictStr | None = None
    srp: StrictBool = False
    srp_seed: StrictInt = 0

    _check_init_seed = field_validator("init_seed")(seed_up_to(TORCH_SEED_MAX, "torch.manual_seed"))
    _check_srp_seed = field_validator("srp_seed")(seed_up_to(SKLEARN_SEED_MAX, "scikit-learn's random_state"))
