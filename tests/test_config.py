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
        ({"neurons": {"reliability_threshold": 3}}, r"neurons\.reliability_threshold: must be in \[0, 1\]"),
        ({"neurons": {"reliability_threshold": -0.5}},
         r"neurons\.reliability_threshold: must be in \[0, 1\] \(below 0 it selects neurons whose split halves "
         r"disagree\), got -0\.5"),
        ({"responses": {"window": [0, 99]}},
         r"responses\.window: must lie within the 2 s after onset \(0 <= start < stop <= 2; each scene shows for "
         r"0\.25 s\), got \[0\.0, 99\.0\]"),
        ({"responses": {"window": [-0.1, 0.25]}}, r"responses\.window: must lie within the 2 s after onset"),
        ({"responses": {"baseline": [-0.1, 0.05]}},
         r"responses\.baseline: must lie within the 2 s before onset \(-2 <= start < stop <= 0\), "
         r"got \[-0\.1, 0\.05\]"),
        ({"responses": {"baseline": [-5, -1]}}, r"responses\.baseline: must lie within the 2 s before onset"),
        ({"checks": {"min_selected_per_area": -1}}, r"checks\.min_selected_per_area: must be >= 0, got -1"),
        ({"checks": {"max_nan_fraction": -0.1}}, r"checks\.max_nan_fraction: must be in \[0, 1\], got -0\.1"),
        ({"checks": {"max_nan_fraction": 1.5}}, r"checks\.max_nan_fraction: must be in \[0, 1\], got 1\.5"),
        ({"checks": {"max_nan_fraction": "none"}}, r"checks\.max_nan_fraction: expected a number"),
        ({"scorring": {"bootstrap": {"n": 10}}},
         r"^scorring: unknown key; known keys here: checks, compute, data, features, neurons, responses, scoring, zoo$"),
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


def test_edges_of_the_ranges_are_accepted():
    params = parse_params({"responses": {"window": [0, 2], "baseline": [-2, 0]},
                           "neurons": {"reliability_threshold": 0},
                           "checks": {"min_selected_per_area": 0, "max_nan_fraction": 1}})
    assert params.responses.window == (0.0, 2.0) and params.responses.baseline == (-2.0, 0.0)
    assert params.neurons.reliability_threshold == 0.0 and params.checks.max_nan_fraction == 1.0


def test_nwb_dir_must_exist_when_it_is_the_source(tmp_path, monkeypatch):
    missing = tmp_path / "allen_nwb"
    with pytest.raises(ConfigError,
                       match=rf"^data\.nwb_dir: no such folder '{missing}' \(data\.source is 'nwb_dir'\)$"):
        parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(missing)}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"data\.nwb_dir: no such folder 'allen_nwb' in {tmp_path} "):
        parse_params({"data": {"source": "nwb_dir", "nwb_dir": "allen_nwb"}})
    missing.mkdir()
    assert parse_params({"data": {"source": "nwb_dir", "nwb_dir": "allen_nwb"}}).data.nwb_dir == "allen_nwb"
    # Only the source that reads it needs it.
    assert parse_params({"data": {"source": "simulated", "nwb_dir": "nowhere"}}).data.source == "simulated"


def test_max_nan_fraction_is_what_the_checks_allow(tmp_path, score_tables):
    """checks.max_nan_fraction bounds the NaN in the score tables' numeric columns (here 2 of 16 rows)."""
    import numpy as np

    from deepmouse.config import ChecksConfig
    from deepmouse.errors import QualityGateError
    from tests.quality.test_gate import _run

    score_tables["model_scores"].loc[[0, 1], "normalized_score"] = np.nan
    (tmp_path / "strict").mkdir()
    with pytest.raises(QualityGateError, match=r"model_scores: expect_column_values_to_not_be_null "
                                               r"\(column=normalized_score\): 2 violation\(s\)"):
        _run(tmp_path / "strict", score_tables)
    (tmp_path / "tolerant").mkdir()
    tolerant = ChecksConfig(min_selected_per_area=1, max_nan_fraction=0.125)
    assert _run(tmp_path / "tolerant", score_tables, cfg=tolerant)["passed"]
    (tmp_path / "too_few").mkdir()
    with pytest.raises(QualityGateError, match=r"column=normalized_score, mostly=0\.9"):
        _run(tmp_path / "too_few", score_tables, cfg=ChecksConfig(min_selected_per_area=1, max_nan_fraction=0.1))
