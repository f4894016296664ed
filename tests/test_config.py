"""params.yaml parsing: types, ranges, unknown keys and model ids are named in errors."""

from pathlib import Path

import pytest
import yaml

from deepmouse.config import Params, load_params, parse_params
from deepmouse.errors import ConfigError, UnknownModelError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "simulated"
    assert params.neurons.reliability_threshold == 0.75
    assert params.data.simulated.generator in params.zoo.models


def test_defaults_equal_an_empty_file():
    assert parse_params({}) == Params()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"neurons": {"n_splits": "many"}}, r"neurons\.n_splits: expected an integer, got 'many'"),
        ({"neurons": {"n_splits": 2.5}}, r"neurons\.n_splits: expected an integer"),
        ({"neurons": {"require_selective": "yes"}}, r"neurons\.require_selective: expected true or false"),
        ({"neurons": {"reliability_threshold": 3}}, r"neurons\.reliability_threshold: must be in \[-1, 1\]"),
        ({"responses": {"window": [0.25, 0.0]}}, r"responses\.window: start must be before stop"),
        ({"responses": {"window": [0.0]}}, r"responses\.window: expected a list of 2 values"),
        ({"scoring": {"rsa": {"comparison": "cosine"}}}, r"scoring\.rsa\.comparison: must be one of 'pearson'"),
        ({"scoring": {"layer_selection": ["best"]}}, r"scoring\.layer_selection\[0\]: must be one of 'max', 'cv'"),
        ({"scoring": {"layer_selection": []}}, r"scoring\.layer_selection: list at least one"),
        ({"scoring": {"layer_selection": ["cv", "cv"]}}, r"scoring\.layer_selection: duplicate"),
        ({"scoring": {"cv": {"n_folds": 60}}}, r"scoring\.cv\.n_folds: must be in \[2, 39\]"),
        ({"scoring": {"ceiling": "ncsnr"}}, r"scoring\.ceiling: must be one of 'split_half', 'cc_max'"),
        ({"scoring": {"comparisons": {"fdr": 1.5}}}, r"scoring\.comparisons\.fdr: must be in \(0, 1\)"),
        ({"neurons": {"n_split": 10}}, r"neurons\.n_split: unknown key; known keys here: .*n_splits"),
        ({"data": {"source": "nwb_dir"}}, r"data\.nwb_dir: required when data\.source is 'nwb_dir'"),
        ({"data": {"simulated": {"planted_depths": {"V1": 0.2}}}}, r"planted_depths: unknown area 'V1'"),
        ({"zoo": {"models": []}}, r"zoo\.models: list at least one model id"),
        ({"zoo": "alexnet"}, r"zoo: expected a mapping"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_unknown_model_id_is_named_with_suggestions():
    with pytest.raises(UnknownModelError, match=r"zoo\.models: unknown model id 'alexnett'.*alexnet"):
        parse_params({"zoo": {"models": ["alexnet_random", "alexnett"]}})


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"features": {"init_seed": "zero"}}))
    with pytest.raises(ConfigError, match=r"params\.yaml: features\.init_seed: expected an integer"):
        load_params(path)
    path.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")
