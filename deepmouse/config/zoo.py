"""The ``zoo`` section: the models to run, registry ids, presets and models of your own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import StrictInt, StrictStr, field_validator, model_validator

from deepmouse.config.base import Section, invalid, passed_on
from deepmouse.errors import ConfigError

if TYPE_CHECKING:
    from deepmouse.models.registry import Zoo, ZooEntry


@dataclass(frozen=True)
class CustomModelConfig(Section):
    """A model of your own (one item of ``zoo.custom``), run like any registry model.

    ``function`` is ``module:function``, imported from the project folder (or ``sys.path``),
    returning a ``torch.nn.Module``. Without ``weights`` the model keeps its initialisation,
    seeded by ``features.init_seed`` (``training`` is then ``random``); with a checkpoint file
    ``weights`` (relative to the project folder), its ``weights_sha256`` is required and
    ``training`` says how the weights were trained, as in the registry. ``input_size`` is
    the side of the input in ``native`` preprocessing (ImageNet normalisation); ``paper``
    preprocessing gives every model 224 pixels.
    """

    id: StrictStr = ""
    display_name: StrictStr = ""
    family: StrictStr = ""
    function: StrictStr = ""
    training: StrictStr | None = None
    input_size: StrictInt = 224
    weights: StrictStr | None = None
    weights_sha256: StrictStr | None = None

    @model_validator(mode="after")
    def _check_required(self) -> CustomModelConfig:
        # Checked after all fields, not per field, because a missing key never reaches a field
        # validator (defaults are not validated).
        for name in ("id", "display_name", "family", "function"):
            if not getattr(self, name):
                raise invalid("required for a custom model", key=name)
        return self

    def check_entry(self, where: str) -> None:
        """Raise ConfigError, naming ``where`` and the id, unless this entry makes a registry entry."""
        from deepmouse.models.custom import split_import_path

        try:
            split_import_path(self.function)
        except ConfigError as err:
            raise ConfigError(f"{where} ({self.id}): {err}") from None
        self.zoo_entry(where=f"{where} ({self.id})")

    def zoo_entry(self, where: str = "") -> ZooEntry:
        """This model as a :class:`~deepmouse.models.registry.ZooEntry` of source ``custom``.

        ``where`` names the entry in error messages (``zoo.custom <id>`` by default).
        """
        from deepmouse.models.registry import custom_zoo_entry

        return custom_zoo_entry(self.id, self.display_name, self.family, self.function,
                                training=self.training or "", input_size=self.input_size,
                                weights=self.weights or "", weights_sha256=self.weights_sha256 or "", where=where)


@dataclass(frozen=True)
class ZooConfig(Section):
    """The models to run: zoo ids and preset names (``deepmouse zoo list --presets``).

    Loading replaces each preset by its ids (registry order) and keeps every id once, where
    it first appears, so ``models`` holds ids only. DVC's ``features`` stages are expanded
    from params.yaml as written, so a preset there is written out as ids by
    ``deepmouse zoo use NAME`` (:func:`set_zoo_models`) before ``dvc repro``.

    ``custom`` adds models of your own to the registry (:class:`CustomModelConfig`); their
    ids are listed in ``models`` like any other and must not be registry ids.
    """

    models: tuple[StrictStr, ...] = ("alexnet_random",)
    custom: tuple[CustomModelConfig, ...] = ()

    @field_validator("models")
    @classmethod
    def _check_models(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        if not models:
            raise invalid("list at least one model id")
        return models

    @model_validator(mode="after")
    def _expand_presets(self) -> ZooConfig:
        # Imported here: the registry is data shipped with the package, read on demand.
        from deepmouse.models.presets import expand_models

        # The registry's checks name the key in full, and an unknown id is an UnknownModelError:
        # their errors are passed on whole, of their own class.
        try:
            for index, model in enumerate(self.custom):
                model.check_entry(f"zoo.custom[{index}]")
            # Frozen: the ids replace the names once, as the file is loaded.
            object.__setattr__(self, "models", tuple(expand_models(self.models, self.registry(), key="zoo.models")))
        except ConfigError as err:
            raise passed_on(err) from None
        return self

    def registry(self) -> Zoo:
        """The zoo these params run on: the packaged registry, then the ``custom`` models.

        Returns
        -------
        deepmouse.models.registry.Zoo

        Raises
        ------
        ConfigError
            When a custom id is a registry id or is listed twice.
        """
        from deepmouse.models.registry import load_zoo

        return load_zoo(custom=tuple(model.zoo_entry() for model in self.custom))
