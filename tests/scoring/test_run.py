"""The scores stage reads only feature entries made for the model, stimuli and settings scored."""

import re

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


# ------------------------------------------------------------ the per-model score folders
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import pandas as pd  # noqa: E402

from deepmouse.keyed import key_digest  # noqa: E402
from deepmouse.scoring.run import MODEL_TABLES, input_digests, model_folder, read_model_tables, score_models, \
    scores_key  # noqa: E402
from tests.scoring.conftest import TINY_MODELS, tiny_project, tiny_scoring_cfg  # noqa: E402


def _score(project, out_dir, cfg=None, models=TINY_MODELS):
    lines = []
    arguments = {name: value for name, value in project.items() if name not in ("raw_dir", "params_json")}
    tables = score_models(models, features=FeaturesConfig(), cfg=cfg or tiny_scoring_cfg(), out_dir=out_dir,
                          progress=lines.append, **arguments)
    return tables, lines


def _verdict(lines, model_id):
    """``scored (<why>)`` or ``reused`` from a model's line."""
    line = next(line for line in lines if f"] {model_id}: " in line)
    return line.split(f"] {model_id}: ", 1)[1]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny project scored once, and the tables of that clean computation."""
    root = tmp_path_factory.mktemp("scored")
    project = tiny_project(root)
    tables, _ = _score(project, root / "scores")
    clean = {model_id: {name: pd.read_parquet(model_folder(root / "scores", model_id) / f"{name}.parquet")
                        for name in MODEL_TABLES} for model_id in TINY_MODELS}
    return root, project, tables, clean


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize("damage, said", [
    (_flip_byte, r"sha256 differs from key.json \(corrupted\)"),
    (_truncate, r"\d+ bytes, expected \d+ \(truncated\?\)"),
    (lambda path: path.unlink(), r"missing \(listed in key.json\)"),
])
@pytest.mark.parametrize("table", ["rsa_scores", "bootstrap_replicates"])
def test_a_damaged_score_file_is_rescored_not_read(scored, tmp_path, damage, said, table):
    root, project, _, clean = scored
    out_dir = tmp_path / "scores"
    shutil.copytree(root / "scores", out_dir)
    path = model_folder(out_dir, "alexnet_random") / f"{table}.parquet"
    damage(path)
    tables, lines = _score(project, out_dir)
    assert re.fullmatch(rf"scored \({re.escape(str(path))}: {said}\), 3 layers in .* s",
                        _verdict(lines, "alexnet_random")), lines
    assert _verdict(lines, "squeezenet1_1_random").startswith("reused")
    for name in MODEL_TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(path.parent / f"{name}.parquet"), clean["alexnet_random"][name])


def test_a_damaged_record_is_rescored(scored, tmp_path):
    root, project, _, clean = scored
    out_dir = tmp_path / "scores"
    shutil.copytree(root / "scores", out_dir)
    record = model_folder(out_dir, "squeezenet1_1_random") / "key.json"
    edited = json.loads(record.read_text())
    edited["files"]["rsa_scores.parquet"]["rows"] += 1
    record.write_text(json.dumps(edited))
    _, lines = _score(project, out_dir)
    assert _verdict(lines, "squeezenet1_1_random").startswith(
        f"scored ({record}: its content does not match its record_sha256 (corrupted or edited))")
    pd.testing.assert_frame_equal(read_model_tables(out_dir, ["squeezenet1_1_random"], "rsa_scores"),
                                  clean["squeezenet1_1_random"]["rsa_scores"])


def test_a_key_change_names_the_changed_part(scored, tmp_path):
    root, project, _, _ = scored
    out_dir = tmp_path / "scores"
    shutil.copytree(root / "scores", out_dir)
    cfg = tiny_scoring_cfg()
    _, lines = _score(project, out_dir, dataclasses.replace(cfg, ceiling="cc_max"))
    assert _verdict(lines, "alexnet_random").startswith(
        "scored (key changed: scoring.ceiling 'split_half' → 'cc_max'), ")
    means = project["responses_dir"] / "means.parquet"
    saved = means.read_bytes()
    try:
        frame = pd.read_parquet(means)
        frame["mean_response"] += 1e-9
        frame.to_parquet(means, index=False)
        _, lines = _score(project, out_dir, dataclasses.replace(cfg, ceiling="cc_max"))
    finally:
        means.write_bytes(saved)
    assert _verdict(lines, "alexnet_random").startswith(
        "scored (key changed: input means: data/responses/means.parquet content changed), ")


def test_a_score_file_damaged_after_scoring_is_not_read(scored, tmp_path):
    root, _, _, _ = scored
    out_dir = tmp_path / "scores"
    shutil.copytree(root / "scores", out_dir)
    path = model_folder(out_dir, "alexnet_random") / "model_scores.parquet"
    _flip_byte(path)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: sha256 differs from key.json \(corrupted\); "
                                        r"re-run `dvc repro scores` to score alexnet_random again"):
        read_model_tables(out_dir, TINY_MODELS, "model_scores")


def test_same_named_inputs_in_other_folders_key_differently(scored, tmp_path):
    root, project, _, _ = scored
    inputs = input_digests(project["stimuli_dir"], project["neurons_path"], project["responses_dir"])
    moved = root / "data" / "elsewhere"
    moved.mkdir(exist_ok=True)
    shutil.copyfile(project["neurons_path"], moved / "neurons.parquet")
    elsewhere = input_digests(project["stimuli_dir"], moved / "neurons.parquet", project["responses_dir"])
    assert elsewhere["neurons"]["sha256"] == inputs["neurons"]["sha256"]
    assert (inputs["neurons"]["path"], elsewhere["neurons"]["path"]) == ("data/neurons/neurons.parquet",
                                                                        "data/elsewhere/neurons.parquet")
    keys = [scores_key("alexnet_random", "f" * 64, given, FeaturesConfig(), tiny_scoring_cfg())
            for given in (inputs, elsewhere)]
    assert key_digest(keys[0]) != key_digest(keys[1])
