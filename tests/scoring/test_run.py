"""The scores stage reads only feature entries made for the model, stimuli and settings scored."""

import numpy as np
import pytest

from deepmouse.config import FeaturesConfig
from deepmouse.errors import DataError
from deepmouse.features.cache import feature_cache_key, hash_stimuli, write_feature_entry
from deepmouse.models.registry import load_zoo
from deepmouse.scoring.run import load_model_statistics
from tests.scoring.conftest import random_layers, statistics_of


@pytest.fixture
def entries(tmp_path):
    stimuli = np.random.default_rng(0).integers(0, 255, size=(12, 8, 8), dtype=np.uint8)
    digest = hash_stimuli(stimuli)
    zoo = load_zoo()
    for i, model_id in enumerate(["alexnet_random", "squeezenet1_1_random"]):
        key = feature_cache_key(zoo.get(model_id), init_seed=0, weights_sha256=None, preprocessing="paper",
                                stimuli_sha256=digest)
        stats = statistics_of(random_layers(np.random.default_rng(i), 12, sizes=(5, 9)))
        write_feature_entry(tmp_path / model_id, stats, key, {"n_params": 1})
    return tmp_path, digest


def test_an_entry_of_another_model_is_not_scored_under_this_name(entries):
    root, digest = entries
    stats, key = load_model_statistics(root, "alexnet_random", FeaturesConfig(), digest)
    assert key["model_id"] == "alexnet_random" and stats.n_layers == 2
    for path in (root / "squeezenet1_1_random").iterdir():  # the copy of issue 9: every file of another model
        (root / "alexnet_random" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DataError, match=r"alexnet_random: feature entry made for model_id 'squeezenet1_1_random', "
                                        r"not 'alexnet_random'; recompute it with `dvc repro features@alexnet_random`"):
        load_model_statistics(root, "alexnet_random", FeaturesConfig(), digest)


@pytest.mark.parametrize("change, message", [
    ({"stimuli": "0" * 64}, r"made for stimuli_sha256 '[0-9a-f]+', not '0{64}'"),
    ({"preprocessing": "native"}, r"made for preprocessing 'paper', not 'native'"),
    ({"init_seed": 3}, r"made for init_seed 0, not 3"),
])
def test_an_entry_from_other_stimuli_or_settings_is_refused(entries, change, message):
    root, digest = entries
    cfg = FeaturesConfig(**{k: v for k, v in change.items() if k != "stimuli"})
    with pytest.raises(DataError, match=message):
        load_model_statistics(root, "alexnet_random", cfg, change.get("stimuli", digest))
