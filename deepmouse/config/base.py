"""What every params section shares: the checks' building blocks and the wording of errors.

Each section of ``params.yaml`` is a frozen dataclass deriving from :class:`Section`, in a
module of its own beside this one; :mod:`deepmouse.config` puts them together into
:class:`~deepmouse.config.Params` and reads the file. Here are the rules that several
sections use (:func:`positive`, :func:`at_least`, the seed ranges, :func:`known_areas`),
:func:`validated`, which runs pydantic on a section, and the translation of pydantic's
errors into :class:`~deepmouse.errors.ConfigError` messages naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Mapping, Sequence

from pydantic import ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from deepmouse.errors import ConfigError

AREAS = ("VISp", "VISl", "VISal", "VISpm", "VISrl", "VISam")
"""The six Brain Observatory areas, in the order used for tables and plots."""

_RELATIVE = "deepmouse_params"
_WHOLE = "deepmouse_params_whole"


def invalid(reason: str, key: str = "") -> PydanticCustomError:
    """A rule broken at ``key`` of the value being validated ("": the value itself).

    pydantic records where the value sits (``scoring.cv``); :func:`_config_error` adds ``key``.
    """
    return PydanticCustomError(_RELATIVE, "{reason}", {"reason": reason, "key": key})


def passed_on(err: ConfigError) -> PydanticCustomError:
    """A ConfigError from a helper that was given the full key: kept whole, and of its class."""
    return PydanticCustomError(_WHOLE, "{reason}", {"reason": str(err), "error": type(err)})


def positive(value: float) -> float:
    if value <= 0:
        raise invalid(f"must be positive, got {value}")
    return value


def at_least(low: int, why: str = ""):
    """A field validator: an integer ``>= low`` (``why``: what needs that many, for the message)."""
    def check(value: int) -> int:
        if value < low:
            raise invalid(f"must be at least {low}{f' ({why})' if why else ''}, got {value}")
        return value
    return check


NUMPY_SEED = at_least(0, "numpy takes non-negative seeds")
TORCH_SEED_MAX = 2**64 - 1  # torch.manual_seed's largest
SKLEARN_SEED_MAX = 2**32 - 1  # scikit-learn's random_state (numpy's RandomState)


def seed_up_to(high: int, generator: str):
    """A field validator: a seed in ``[0, high]``, the range ``generator`` accepts."""
    def check(seed: int) -> int:
        if not 0 <= seed <= high:
            raise invalid(f"must be in [0, {high}] ({generator}), got {seed}")
        return seed
    return check


def in_unit_interval(value: float) -> float:
    """``value`` in (0, 1): an alpha, a false discovery rate, a confidence level."""
    if not 0 < value < 1:
        raise invalid(f"must be in (0, 1), got {value}")
    return value


def known_areas(areas: Sequence[str] | None) -> Sequence[str] | None:
    for area in areas or ():
        if area not in AREAS:
            raise invalid(f"unknown area {area!r}; known: {', '.join(AREAS)}")
    return areas


class Section:
    """What every section shares: no unknown keys, an empty section (``null``) is all
    defaults, and a list is a list."""

    # allow_inf_nan applies to every float of the section, inside tuples and mappings as well.
    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _check_raw(cls, raw: Any) -> Any:
        # `neurons:` with every key commented out reads as null: the defaults, as when absent.
        if raw is None:
            return {}
        if isinstance(raw, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            for key, value in raw.items():
                # pydantic would take a set for a tuple; YAML's `!!set` has no order (nor has its
                # JSON in data/params.json, nor the keys hashed from it), so it is refused.
                if key in names and isinstance(value, (set, frozenset)):
                    raise invalid(f"expected a list, got {value!r}", key=key)
        return raw


def validated(cls: type, raw: Any, where: str) -> Any:
    """``raw`` validated as ``cls``, found at key ``where`` of params.yaml ("" for the whole file).

    Raises
    ------
    ConfigError
        Of the first error pydantic found, naming its key.
    """
    try:
        return _adapter(cls).validate_python(raw)
    except ValidationError as err:
        raise _config_error(err.errors(include_url=False)[0], cls, where) from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    # Built on first use: the schema of Params takes a moment, and most imports never parse params.
    return TypeAdapter(cls)


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "tuple_type": "a list", "dict_type": "a mapping"}
"""What a pydantic error type says was expected, for the types params declare (all strict)."""


def _config_error(error: ErrorDetails, cls: type, where: str) -> ConfigError:
    """One pydantic error as a ConfigError: ``<dotted key>: <reason>``, with the reasons of
    the hand-written checks this module had before pydantic (and the same wording)."""
    kind, loc, value, context = error["type"], error["loc"], error["input"], error.get("ctx", {})
    if kind == _WHOLE:
        return context["error"](context["reason"])
    if loc[-1:] == ("[key]",):  # a mapping's key is named by the mapping
        loc = loc[:-2]
    if kind == "missing":  # an item short of a fixed-length tuple: the tuple's error
        loc = loc[:-1]
    if kind in ("unexpected_keyword_argument", "invalid_key"):
        known = ", ".join(sorted(f.name for f in dataclasses.fields(_declared_type(cls, loc[:-1]))))
        return ConfigError(f"{_dotted(where, loc[:-1], str(loc[-1]))}: unknown key; known keys here: {known}")
    key = _dotted(where, loc)
    if kind == _RELATIVE:
        return ConfigError(f"{_dotted(where, loc, context['key'])}: {context['reason']}")
    if kind == "finite_number":
        return ConfigError(f"{key}: must be finite, got {value!r}")
    if kind in _EXPECTED:
        return ConfigError(f"{key}: expected {_EXPECTED[kind]}, got {value!r}")
    if kind == "dataclass_type":
        return ConfigError(f"{key or 'params'}: expected a mapping, got {type(value).__name__}")
    if kind == "literal_error":
        choices = ", ".join(map(repr, typing.get_args(_declared_type(cls, loc))))
        return ConfigError(f"{key}: must be one of {choices}, got {value!r}")
    if kind in ("missing", "too_long"):
        return ConfigError(f"{key}: expected a list of {len(typing.get_args(_declared_type(cls, loc)))} values, "
                           f"got {value!r}")
    return ConfigError(f"{key or 'params'}: {error['msg']}, got {value!r}")


def _declared_type(cls: type, loc: Sequence[str | int]) -> Any:
    """The type declared at ``loc`` (keys, item indices) inside the dataclass ``cls``, ``None`` dropped."""
    hint = cls
    for part in loc:
        if dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint)[part]
        elif typing.get_origin(hint) is tuple:
            items = typing.get_args(hint)
            hint = items[0] if items[-1] is Ellipsis else items[part]
        else:  # a mapping: its values
            hint = typing.get_args(hint)[-1]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _dotted(where: str, loc: Sequence[str | int], key: str = "") -> str:
    """``where`` + ``loc`` + ``key`` as params.yaml keys: ``scoring.regression.relative_alphas[2]``."""
    dotted = where
    for part in [*loc, key]:
        if isinstance(part, int):
            dotted += f"[{part}]"
        elif part:
            dotted = f"{dotted}.{part}" if dotted else part
    return dotted
