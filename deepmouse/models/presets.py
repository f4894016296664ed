"""Named sets of zoo models (presets), computed from the registry.

A preset names a set of model ids by what the models are, so a run over the reference
study's whole zoo, or over every transformer, is one name rather than a list kept by hand.
Each preset but ``reference`` is a rule over the registry's columns (``training``,
``source``, ``family``), evaluated on the registry that is loaded, so a row added to
``zoo.csv`` joins every preset it belongs to.

reference
    The reference study's zoo: its 137 trained models (:data:`REFERENCE_TRAINED`: 91
    supervised ImageNet classifiers, the 24 Taskonomy encoders, 13 VISSL and 9 DINO
    self-supervised models) and the untrained twin of each, i.e. a ``random`` row with
    the ``source`` and ``architecture`` of one of them. No registry column says which rows
    the study had, so its trained models are listed here; the registry's other rows (the
    untrained DINO architectures, models added since) are left out.
all, trained, untrained, supervised, self-supervised, taskonomy
    Every model; those with trained weights; the randomly initialised ones; supervised
    ImageNet classification; self-supervised methods; the Taskonomy encoders with their
    randomly initialised encoder.
convolutional, transformer, mlp-mixer, hybrid
    Every model of one architecture family (families with no model are not presets).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Iterable

from deepmouse.errors import ConfigError, UnknownModelError
from deepmouse.models.registry import FAMILIES, Zoo, ZooEntry, load_zoo


@dataclass(frozen=True)
class Preset:
    """A named set of zoo models.

    Attributes
    ----------
    name : str
        What ``zoo.models`` and ``deepmouse zoo use`` accept in place of the ids.
    description : str
        One line: which models, by which registry columns.
    model_ids : tuple of str
        In registry order.
    """

    name: str
    description: str
    model_ids: tuple[str, ...]


REFERENCE_TRAINED = tuple("""
    alexnet vgg11 vgg13 vgg16 vgg19 vgg11_bn vgg13_bn vgg16_bn vgg19_bn resnet18 resnet34 resnet50 resnet101
    resnet152 squeezenet1_0 squeezenet1_1 densenet121 densenet161 densenet169 densenet201 googlenet
    shufflenet_v2_x0_5 shufflenet_v2_x1_0 mobilenet_v2 resnext50_32x4d resnext101_32x8d wide_resnet50_2
    wide_resnet101_2 mnasnet0_5 mnasnet1_0 inception_v3 cait_s24_224 coat_lite_mini convit_base convit_small
    cspdarknet53 cspresnet50 dla34 dla169 eca_nfnet_l0 eca_nfnet_l1 ecaresnet50d ecaresnet101d
    efficientnetv2_rw_s fbnetc_100 gernet_l gernet_s ghostnet_100 hardcorenas_a hardcorenas_f levit_128
    levit_256 inception_resnet_v2 inception_v4 mixer_b16_224 mixer_l16_224 mixnet_l mixnet_s mnasnet_100
    mobilenetv3_rw nasnetalarge nf_resnet50 nfnet_l0 pnasnet5large regnetx_064 regnety_064 repvgg_b3 repvgg_b3g4
    res2net50_26w_4s resnest50d resnetrs50 rexnet_100 semnasnet_100 seresnet152d seresnext50_32x4d skresnet18
    skresnext50_32x4d spnasnet_100 swin_base_patch4_window7_224 swin_large_patch4_window7_224
    swin_small_patch4_window7_224 tf_efficientnet_b1 tf_efficientnet_b3 tf_efficientnet_b5 tf_efficientnet_b7
    visformer_small vit_large_patch16_224 vit_small_patch16_224 vit_base_patch16_224 xception xception65
    taskonomy_autoencoding taskonomy_class_object taskonomy_class_scene taskonomy_curvature taskonomy_denoising
    taskonomy_depth_euclidean taskonomy_depth_zbuffer taskonomy_edge_occlusion taskonomy_edge_texture
    taskonomy_egomotion taskonomy_fixated_pose taskonomy_inpainting taskonomy_jigsaw taskonomy_keypoints2d
    taskonomy_keypoints3d taskonomy_nonfixated_pose taskonomy_normal taskonomy_point_matching
    taskonomy_reshading taskonomy_room_layout taskonomy_segment_semantic taskonomy_segment_unsup25d
    taskonomy_segment_unsup2d taskonomy_vanishing_point vit_small_patch16_224_dino vit_small_patch8_224_dino
    vit_base_patch16_224_dino vit_base_patch8_224_dino resnet50_dino xcit_small_12_p16_224_dino
    xcit_small_12_p8_224_dino xcit_medium_24_p16_224_dino xcit_medium_24_p8_224_dino resnet50_jigsaw_p100
    resnet50_jigsaw_goyal19 resnet50_rotnet resnet50_clusterfit_16k_rotnet resnet50_npid_4k_negatives
    resnet50_pirl resnet50_simclr resnet50_deepclusterv2_2x224 resnet50_deepclusterv2_2x224_6x96
    resnet50_swav_bs4096_2x224 resnet50_swav_bs4096_2x224_6x96 resnet50_mocov2_bs256 resnet50_barlowtwins_bs2048
""".split())
"""The trained models of the reference study's table (its repeated rows counted once), by zoo id.

A registry without some of them (a registry of one's own) gets the reference preset of those it has."""


def _reference(zoo: Zoo) -> list[ZooEntry]:
    listed = set(REFERENCE_TRAINED)
    twins = {(entry.source, entry.architecture) for entry in zoo if entry.model_id in listed}
    return [entry for entry in zoo
            if entry.model_id in listed or (entry.is_random and (entry.source, entry.architecture) in twins)]


def _trained(zoo: Zoo) -> list[ZooEntry]:
    return [entry for entry in zoo if not entry.is_random]


# name -> (description, the registry's entries it selects, in registry order).
_RULES: dict[str, tuple[str, Callable[[Zoo], Iterable[ZooEntry]]]] = {
    "reference": ("the reference study's zoo: its trained models and the untrained twin of each", _reference),
    "all": ("every model in the registry", lambda zoo: zoo),
    "trained": ("every model with trained weights (supervised, self-supervised, Taskonomy)", _trained),
    "untrained": ("every randomly initialised model (training: random)", lambda zoo: zoo.filter(training="random")),
    "supervised": ("supervised ImageNet classification (training: supervised-imagenet)",
                   lambda zoo: zoo.filter(training="supervised-imagenet")),
    "self-supervised": ("self-supervised models, VISSL and DINO (training: self-supervised:<method>)",
                        lambda zoo: zoo.filter(training="self-supervised")),
    "taskonomy": ("the Taskonomy encoders and their randomly initialised encoder (source: taskonomy)",
                  lambda zoo: zoo.filter(source="taskonomy")),
    **{family: (f"every {family} model, trained and untrained (family: {family})",
                lambda zoo, family=family: zoo.filter(family=family))
       for family in FAMILIES},
}


def load_presets(zoo: Zoo | None = None) -> dict[str, Preset]:
    """Every non-empty preset of ``zoo``, by name, in a fixed order.

    Parameters
    ----------
    zoo : Zoo, optional
        The packaged registry by default.

    Raises
    ------
    ConfigError
        If a model id in the registry is also a preset's name (a list naming it would be
        ambiguous).
    """
    zoo = zoo if zoo is not None else load_zoo()
    presets = {}
    for name, (description, select) in _RULES.items():
        if name in zoo:
            raise ConfigError(f"zoo: model id {name!r} is also the name of a preset; rename the model")
        model_ids = tuple(entry.model_id for entry in select(zoo))
        if model_ids:
            presets[name] = Preset(name, description, model_ids)
    return presets


def expand_models(names: Iterable[str], zoo: Zoo | None = None, *, key: str = "zoo.models") -> list[str]:
    """Model ids for a list of model ids and preset names.

    Each preset is replaced by its ids in registry order; an id that appears more than
    once (listed twice, or both listed and in a preset) is kept where it first appears,
    so a list of ids alone comes back in its own order.

    Parameters
    ----------
    names : iterable of str
        Model ids and preset names, mixed.
    zoo : Zoo, optional
        The packaged registry by default.
    key : str
        Where the names came from (a params key or a command), named in errors.

    Returns
    -------
    list of str
        Model ids, each once.

    Raises
    ------
    UnknownModelError
        Naming ``key`` and the first name that is neither a model id nor a preset, with
        the closest known names and the list of presets.
    """
    zoo = zoo if zoo is not None else load_zoo()
    presets = load_presets(zoo)
    expanded: dict[str, None] = {}
    for name in names:
        if name in presets:
            expanded.update(dict.fromkeys(presets[name].model_ids))
        elif name in zoo:
            expanded[name] = None
        else:
            raise UnknownModelError(_unknown(name, zoo, presets, key))
    return list(expanded)


def _unknown(name: object, zoo: Zoo, presets: dict[str, Preset], key: str) -> str:
    suggestions = difflib.get_close_matches(str(name), (*zoo.ids, *presets), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
    return (f"{key}: unknown model id {name!r}, and no preset has that name{hint} (presets: {', '.join(presets)}; "
            "`deepmouse zoo list` shows the models, `deepmouse zoo list --presets` the presets)")
