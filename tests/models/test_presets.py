"""Zoo presets: named sets of model ids, their expansion in zoo.models, and `zoo use`."""

import shutil

import pytest
import yaml

from deepmouse.config import load_params, parse_params, set_zoo_models
from deepmouse.errors import ConfigError, UnknownModelError
from deepmouse.models.presets import REFERENCE_TRAINED, expand_models, load_presets
from deepmouse.models.registry import FAMILIES, Zoo, ZooEntry, load_zoo
from tests.conftest import REPO

ZOO = load_zoo()
PRESETS = load_presets()

RULES = {
    "all": lambda entry: True,
    "trained": lambda entry: entry.training != "random",
    "untrained": lambda entry: entry.training == "random",
    "supervised": lambda entry: entry.training == "supervised-imagenet",
    "self-supervised": lambda entry: entry.training.startswith("self-supervised:"),
    "taskonomy": lambda entry: entry.source == "taskonomy",
    **{family: (lambda entry, family=family: entry.family == family) for family in FAMILIES},
}


def test_every_preset_is_non_empty_in_registry_order_and_no_model_id():
    assert list(PRESETS)[:7] == ["reference", "all", "trained", "untrained", "supervised", "self-supervised",
                                 "taskonomy"]
    for name, preset in PRESETS.items():
        assert preset.model_ids, name
        assert name not in ZOO and preset.description
        assert list(preset.model_ids) == [i for i in ZOO.ids if i in set(preset.model_ids)], name


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_rule_preset_is_exactly_the_rows_its_columns_select(name):
    selected = tuple(entry.model_id for entry in ZOO if RULES[name](entry))
    if not selected:  # a family without models is no preset
        assert name not in PRESETS
    else:
        assert PRESETS[name].model_ids == selected


def test_reference_zoo_is_the_studys_trained_models_and_their_untrained_twins():
    reference = PRESETS["reference"].model_ids
    assert len(REFERENCE_TRAINED) == len(set(REFERENCE_TRAINED)) == 137
    for model_id in REFERENCE_TRAINED:  # a renamed or dropped registry row must be renamed here too
        assert model_id in ZOO and not ZOO.get(model_id).is_random, model_id
    trained = [ZOO.get(i) for i in reference if not ZOO.get(i).is_random]
    untrained = [ZOO.get(i) for i in reference if ZOO.get(i).is_random]
    assert {e.model_id for e in trained} == set(REFERENCE_TRAINED)
    assert sum(e.training == "supervised-imagenet" for e in trained) == 91
    assert sum(e.source == "taskonomy" for e in trained) == 24
    assert sum(e.source == "vissl" for e in trained) == 13 and sum(e.source == "dino" for e in trained) == 9
    twins = {(e.source, e.architecture) for e in trained}
    assert all((e.source, e.architecture) in twins for e in untrained)
    assert len(untrained) == 92  # the 91 ImageNet architectures and the Taskonomy encoder
    assert len(reference) == 229
    assert "xcit_small_12_p16_224_random" not in reference and "taskonomy_random" in reference


def test_expansion_keeps_first_appearance_and_registry_order_within_a_preset():
    taskonomy = list(PRESETS["taskonomy"].model_ids)
    names = ["resnet18_random", "taskonomy", "taskonomy_normal", "alexnet_random", "resnet18_random"]
    assert expand_models(names) == ["resnet18_random", *taskonomy, "alexnet_random"]
    assert expand_models(["taskonomy_normal", "taskonomy"]) == \
        ["taskonomy_normal", *[i for i in taskonomy if i != "taskonomy_normal"]]
    assert expand_models(["trained", "untrained"]) == list(PRESETS["trained"].model_ids + PRESETS["untrained"].model_ids)
    assert expand_models(["vit_small_patch16_224_random", "alexnet_random"]) == \
        ["vit_small_patch16_224_random", "alexnet_random"]  # ids alone keep their order


@pytest.mark.parametrize("name, pattern", [
    ("refrence", r"zoo\.models: unknown model id 'refrence', and no preset has that name; did you mean 'reference'"),
    ("alexnett", r"unknown model id 'alexnett'.*did you mean 'alexnet'"),
    ("nothing_like_it", r"'nothing_like_it', and no preset has that name \(presets: reference, all, trained, "
                        r"untrained, supervised, self-supervised, taskonomy, convolutional.*zoo list --presets"),
])
def test_an_unknown_name_is_named_with_the_presets(name, pattern):
    with pytest.raises(UnknownModelError, match=pattern):
        expand_models(["alexnet_random", name])


def test_a_registry_of_ones_own_gets_the_presets_it_can_fill():
    def entry(model_id, family="convolutional", training="random", weights=""):
        return ZooEntry(model_id, model_id, family, "torchvision", "alexnet", training, "", weights, "")

    zoo = Zoo([entry("alexnet", training="supervised-imagenet", weights="torchvision:W"), entry("alexnet_random")])
    presets = load_presets(zoo)
    assert presets["reference"].model_ids == ("alexnet", "alexnet_random")
    assert "transformer" not in presets and "self-supervised" not in presets
    with pytest.raises(ConfigError, match="model id 'taskonomy' is also the name of a preset"):
        load_presets(Zoo([entry("taskonomy")]))


def test_zoo_models_accepts_presets_and_ids_together():
    params = parse_params({"zoo": {"models": ["alexnet_random", "taskonomy", "taskonomy_normal"]}})
    assert params.zoo.models == ("alexnet_random", *PRESETS["taskonomy"].model_ids)
    with pytest.raises(UnknownModelError, match=r"zoo\.models: unknown model id 'tasknomy'.*'taskonomy'"):
        parse_params({"zoo": {"models": ["tasknomy"]}})


# ------------------------------------------------------------------ writing zoo.models into a params file
def _block(text: str) -> tuple[str, str]:
    """The text before the zoo.models list's items and after them."""
    start = text.index("zoo:\n  models:\n") + len("zoo:\n  models:\n")
    lines = text[start:].splitlines(keepends=True)
    items = 0
    while items < len(lines) and lines[items].startswith("    - "):
        items += 1
    return text[:start], "".join(lines[items:])


def test_set_zoo_models_rewrites_only_the_list_and_round_trips(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    original = params.read_bytes()
    default = yaml.safe_load(original)["zoo"]["models"]

    written = set_zoo_models(params, ["reference"])
    assert written == PRESETS["reference"].model_ids
    assert load_params(params).zoo.models == written
    assert yaml.safe_load(params.read_text())["zoo"]["models"] == list(written)  # ids, not the preset's name
    assert _block(params.read_text()) == _block(original.decode())  # every other byte, comments included

    set_zoo_models(params, default)
    assert params.read_bytes() == original


@pytest.mark.parametrize("before, after", [
    ("checks: {}  # note\nzoo:\n  models: [alexnet_random]  # mine\nfeatures:\n  init_seed: 0\n",
     "checks: {}  # note\nzoo:\n  models:  # mine\n    - taskonomy_random\nfeatures:\n  init_seed: 0\n"),
    ("zoo:\n    models:\n    - alexnet_random\n    # between\n    - resnet18_random\n\n# next\nfeatures: {}\n",
     "zoo:\n    models:\n    - taskonomy_random\n\n# next\nfeatures: {}\n"),
    ("features:\n  init_seed: 0\n", "features:\n  init_seed: 0\nzoo:\n  models:\n    - taskonomy_random\n"),
    ("zoo:\n  # which models\n", "zoo:\n  models:\n    - taskonomy_random\n  # which models\n"),
])
def test_set_zoo_models_handles_each_layout(tmp_path, before, after):
    params = tmp_path / "params.yaml"
    params.write_text(before)
    set_zoo_models(params, ["taskonomy_random"])
    assert params.read_text() == after


def test_set_zoo_models_leaves_the_file_alone_on_an_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("zoo:\n  models: [alexnet_random]\n")
    with pytest.raises(UnknownModelError, match="'nope'"):
        set_zoo_models(params, ["nope"])
    params.write_text("zoo: {models: [alexnet_random]}\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: zoo: write it as a block mapping"):
        set_zoo_models(params, ["taskonomy_random"])
    assert params.read_text() == "zoo: {models: [alexnet_random]}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such params file"):
        set_zoo_models(tmp_path / "missing.yaml", ["taskonomy_random"])
