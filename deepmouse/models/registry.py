"""The model zoo: a registry read from ``zoo.csv``, one row per model.

The registry is data. Each row names a model id, how to construct its
architecture, how it was trained and where its weights come from; trained and
untrained variants of an architecture are separate rows (``alexnet`` and
``alexnet_random``). Columns:

model_id
    Stable id used in params, cache folders and the results store. Letters,
    digits, ``_``, ``-`` and ``.`` only, because it names a folder.
display_name
    Name for tables and plots (untrained rows end in ``(random)``).
family
    ``convolutional``, ``transformer``, ``mlp-mixer`` or ``hybrid``.
source
    Who publishes the model: ``torchvision``, ``timm``, ``taskonomy``,
    ``vissl`` or ``dino`` (``custom`` for the models of params.yaml's
    ``zoo.custom``, which are no rows of the file: see :func:`custom_zoo_entry`).
architecture
    Constructor id: a torchvision ``get_model`` name, a timm ``create_model``
    name (with its pretrained tag, which fixes the head and the data config),
    or ``taskonomy_encoder``.
training
    ``supervised-imagenet``, ``self-supervised:<method>``,
    ``taskonomy:<task>`` or ``random``.
task_cluster
    Taskonomy task cluster (2D, 3D, Geometric, Semantic, Other); may be empty.
weights
    Where the publisher serves the weights: ``torchvision:<WeightsEnum>``,
    ``timm:<architecture>.<tag>``, a URL, or
    ``package:<distribution>/<path>``, a file that an installed Python
    distribution (a dependency in ``requirements.lock``) ships, at ``<path>``
    inside its installation folder. Empty for random rows.
weights_sha256
    sha256 of the weights file, checked when present; may be empty, except for
    a ``package:`` location (a file on every machine has its digest pinned).
sha256_prefix
    The first hex digits (8 or more) of the weights file's sha256, checked when
    present and no full sha256 is listed: publishers that serve files under
    ``name-<prefix>.pth`` (torchvision; torch hub checks the same prefix on
    download) state that much of the digest. May be empty.
input_size
    Side of the model's native square input in pixels (224 when empty).
imagenet_top1
    ImageNet-1k validation top-1 accuracy in percent, as the weights' publisher
    states it; empty where no installed source states it (and for random rows).
imagenet_top1_source
    Where that number is read, citable offline: for torchvision weights
    ``torchvision <version> <WeightsEnum> acc@1``, the enum's
    ``meta["_metrics"]["ImageNet-1K"]["acc@1"]``. Given exactly when
    ``imagenet_top1`` is.

The parameter count is not a column: it is counted on the built model
(:func:`deepmouse.models.build.count_parameters`) when its features are
computed, so it cannot disagree with the model that was run, and it reaches the
results store's ``models.n_params`` from there.
"""

from __future__ import annotations

import collections
import csv
import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from deepmouse.errors import ConfigError, UnknownModelError

ZOO_CSV = Path(__file__).with_name("zoo.csv")
"""The registry shipped with the package."""

COLUMNS = (
    "model_id", "display_name", "family", "source", "architecture", "training",
    "task_cluster", "weights", "weights_sha256", "sha256_prefix", "input_size",
    "imagenet_top1", "imagenet_top1_source",
)
FAMILIES = ("convolutional", "transformer", "mlp-mixer", "hybrid")
SOURCES = ("torchvision", "timm", "taskonomy", "vissl", "dino")
DEFAULT_INPUT_SIZE = 224
PACKAGE_SCHEME = "package:"
"""Prefix of a weights location inside an installed Python distribution."""
CUSTOM_SOURCE = "custom"
"""Source of the models that params.yaml brings (``zoo.custom``; see :mod:`deepmouse.models.custom`)."""

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_TRAINING = re.compile(r"supervised-imagenet|random|self-supervised:[a-z0-9_\-]+|taskonomy:[a-z0-9_]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA256_PREFIX = re.compile(r"[0-9a-f]{8,63}")
_DISTRIBUTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")  # a PyPI project name


@dataclass(frozen=True)
class ZooEntry:
    """One row of the registry (see the module docstring for the columns)."""

    model_id: str
    display_name: str
    family: str
    source: str
    architecture: str
    training: str
    task_cluster: str
    weights: str
    weights_sha256: str
    input_size: int = DEFAULT_INPUT_SIZE
    sha256_prefix: str = ""
    imagenet_top1: float | None = None
    imagenet_top1_source: str = ""

    @property
    def is_random(self) -> bool:
        """True for untrained (randomly initialised) models."""
        return self.training == "random"

    @property
    def verified(self) -> str:
        """How a trained model's checkpoint is checked before it is loaded.

        ``sha256`` (the full digest is pinned), ``prefix`` (a sha256 prefix is pinned)
        or ``no``; empty for untrained models, which have no checkpoint.
        """
        if self.is_random:
            return ""
        return "sha256" if self.weights_sha256 else "prefix" if self.sha256_prefix else "no"

    @property
    def package_location(self) -> tuple[str, str] | None:
        """``(distribution, path inside it)`` of a ``package:`` weights location, else None."""
        if not self.weights.startswith(PACKAGE_SCHEME):
            return None
        return parse_package_location(self.weights)


def parse_package_location(location: str) -> tuple[str, str]:
    """Split ``package:<distribution>/<path>`` into the distribution name and the relative path.

    Raises
    ------
    ConfigError
        If the distribution or the path is missing, or the path leaves the
        distribution's installation folder (absolute, or with ``..``).
    """
    distribution, _, relative = location.removeprefix(PACKAGE_SCHEME).partition("/")
    parts = relative.split("/")
    if not _DISTRIBUTION.fullmatch(distribution) or not relative or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(
            f"weights location {location!r} must be {PACKAGE_SCHEME}<distribution>/<relative path of the file>"
        )
    return distribution, relative


class Zoo:
    """The registry: entries in file order, looked up by model id.

    Parameters
    ----------
    entries : sequence of ZooEntry
        With unique model ids.
    """

    def __init__(self, entries: tuple[ZooEntry, ...] | list[ZooEntry]):
        self._entries = tuple(entries)
        self._by_id = {entry.model_id: entry for entry in self._entries}
        if len(self._by_id) != len(self._entries):
            counts = collections.Counter(entry.model_id for entry in self._entries)
            duplicates = sorted(model_id for model_id, count in counts.items() if count > 1)
            raise ConfigError(f"zoo: duplicate model ids {duplicates}")

    @property
    def entries(self) -> tuple[ZooEntry, ...]:
        return self._entries

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(entry.model_id for entry in self._entries)

    def __iter__(self) -> Iterator[ZooEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def get(self, model_id: str, key: str = "zoo.models") -> ZooEntry:
        """The entry for ``model_id``.

        Parameters
        ----------
        model_id : str
        key : str
            Where the id came from (a params key), named in the error message.

        Raises
        ------
        UnknownModelError
            Naming ``key``, the id, and the closest known ids.
        """
        try:
            return self._by_id[model_id]
        except KeyError:
            pass
        suggestions = difflib.get_close_matches(str(model_id), self.ids, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
        raise UnknownModelError(
            f"{key}: unknown model id {model_id!r}{hint} (`deepmouse zoo list` shows all)"
        )

    def filter(self, *, family: str | None = None, source: str | None = None,
               training: str | None = None) -> Zoo:
        """The entries matching every given criterion, in registry order.

        ``training`` matches exactly or by its kind before the colon, so
        ``training="taskonomy"`` selects every ``taskonomy:<task>`` row and
        ``training="self-supervised"`` every self-supervised method.
        """
        def matches(entry: ZooEntry) -> bool:
            if family is not None and entry.family != family:
                return False
            if source is not None and entry.source != source:
                return False
            if training is not None and entry.training != training \
                    and entry.training.split(":", 1)[0] != training:
                return False
            return True

        return Zoo(tuple(entry for entry in self._entries if matches(entry)))

    def __repr__(self) -> str:
        return f"Zoo({len(self)} models)"


def load_zoo(path: str | Path | None = None, custom: Sequence[ZooEntry] = ()) -> Zoo:
    """Read and validate the registry (cached per resolved path), with any custom models after it.

    Parameters
    ----------
    path : str or Path, optional
        A registry CSV; the packaged ``zoo.csv`` by default.
    custom : sequence of ZooEntry
        Entries of source ``custom`` (params.yaml's ``zoo.custom``, from
        :meth:`deepmouse.config.ZooConfig.registry`), appended in order.

    Raises
    ------
    ConfigError
        Naming the file and CSV line of the first invalid row, or a custom entry
        whose id is a registry id or another custom entry's.
    """
    zoo = _load_zoo_cached(Path(path or ZOO_CSV).resolve())
    if not custom:
        return zoo
    seen: set[str] = set()
    for entry in custom:
        if entry.model_id in zoo:
            raise ConfigError(f"zoo.custom {entry.model_id}: the id is already the registry's "
                              f"({zoo.get(entry.model_id).display_name}); give the custom model another id")
        if entry.model_id in seen:
            raise ConfigError(f"zoo.custom {entry.model_id}: the id is listed twice in zoo.custom")
        seen.add(entry.model_id)
    return Zoo(zoo.entries + tuple(custom))


def custom_zoo_entry(model_id: str, display_name: str, family: str, function: str, *, training: str = "",
                     input_size: int = DEFAULT_INPUT_SIZE, weights: str = "", weights_sha256: str = "",
                     where: str = "") -> ZooEntry:
    """The registry entry of a model that params.yaml brings (one item of ``zoo.custom``).

    Parameters
    ----------
    model_id, display_name, family
        As the registry's columns.
    function : str
        ``module:function`` returning the ``torch.nn.Module``; kept as ``architecture``.
    training : str
        As the registry's column, ``random`` exactly when no weights file is given;
        empty means ``random`` without a weights file, and is an error with one.
    input_size : int
        Side of the square input of ``native`` preprocessing.
    weights, weights_sha256 : str
        A checkpoint file (relative to the project folder, or absolute) and its sha256.
    where : str
        How messages name the entry; ``zoo.custom <model_id>`` by default.

    Raises
    ------
    ConfigError
        Naming the entry and the field that is invalid.
    """
    where = where or f"zoo.custom {model_id}"
    if not training and weights:
        raise ConfigError(f"{where}: training is required with a weights file (supervised-imagenet, "
                          "self-supervised:<method> or taskonomy:<task>)")
    training = training or "random"
    if not _MODEL_ID.fullmatch(model_id):
        raise ConfigError(f"{where}: id {model_id!r} must be letters, digits, '_', '-' or '.'")
    if not display_name:
        raise ConfigError(f"{where}: display_name is empty")
    if family not in FAMILIES:
        raise ConfigError(f"{where}: family {family!r} is not one of {', '.join(FAMILIES)}")
    if not _TRAINING.fullmatch(training):
        raise ConfigError(f"{where}: training {training!r} must be supervised-imagenet, "
                          "self-supervised:<method>, taskonomy:<task> or random")
    if (training == "random") != (not weights):
        raise ConfigError(f"{where}: training {training!r} " + (
            "lists no weights file" if training == "random" else "needs a weights file (random means none)"))
    sha = weights_sha256.lower()
    if weights and not _SHA256.fullmatch(sha):
        raise ConfigError(f"{where}: weights {weights!r} needs its weights_sha256 (64 hex digits), "
                          f"got {weights_sha256!r}")
    if sha and not weights:
        raise ConfigError(f"{where}: weights_sha256 is given without a weights file")
    if input_size <= 0:
        raise ConfigError(f"{where}: input_size must be positive, got {input_size}")
    return ZooEntry(model_id=model_id, display_name=display_name, family=family, source=CUSTOM_SOURCE,
                    architecture=function, training=training, task_cluster="", weights=weights,
                    weights_sha256=sha, input_size=input_size)


@functools.lru_cache(maxsize=8)
def _load_zoo_cached(path: Path) -> Zoo:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: model registry not found") from None
    reader = csv.DictReader(text.splitlines())
    header = tuple(reader.fieldnames or ())
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        unknown = [c for c in header if c not in COLUMNS]
        raise ConfigError(
            f"{path}: line 1: header must be {','.join(COLUMNS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    entries = []
    first_line_of: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        entry = _parse_row(row, where=f"{path}: line {line}")
        if entry.model_id in first_line_of:
            raise ConfigError(
                f"{path}: line {line}: duplicate model id {entry.model_id!r} "
                f"(first on line {first_line_of[entry.model_id]})"
            )
        first_line_of[entry.model_id] = line
        entries.append(entry)
    if not entries:
        raise ConfigError(f"{path}: the registry lists no models")
    return Zoo(tuple(entries))


def _parse_row(row: dict[str, str | None], where: str) -> ZooEntry:
    if None in row or any(row[column] is None for column in COLUMNS):
        raise ConfigError(f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)})")
    values = {column: (row[column] or "").strip() for column in COLUMNS}
    model_id = values["model_id"]
    if not _MODEL_ID.fullmatch(model_id):
        raise ConfigError(f"{where}: model_id {model_id!r} must be letters, digits, '_', '-' or '.'")
    for column in ("display_name", "architecture"):
        if not values[column]:
            raise ConfigError(f"{where}: {model_id}: {column} is empty")
    if values["family"] not in FAMILIES:
        raise ConfigError(f"{where}: {model_id}: family {values['family']!r} is not one of {', '.join(FAMILIES)}")
    if values["source"] not in SOURCES:
        raise ConfigError(f"{where}: {model_id}: source {values['source']!r} is not one of {', '.join(SOURCES)}")
    training = values["training"]
    if not _TRAINING.fullmatch(training):
        raise ConfigError(
            f"{where}: {model_id}: training {training!r} must be supervised-imagenet, "
            "self-supervised:<method>, taskonomy:<task> or random"
        )
    sha = values["weights_sha256"].lower()
    if sha and not _SHA256.fullmatch(sha):
        raise ConfigError(f"{where}: {model_id}: weights_sha256 {sha!r} is not 64 hex digits")
    prefix = values["sha256_prefix"].lower()
    if prefix and not _SHA256_PREFIX.fullmatch(prefix):
        raise ConfigError(f"{where}: {model_id}: sha256_prefix {prefix!r} is not 8 to 63 hex digits "
                          "(a full digest goes in weights_sha256)")
    if prefix and sha and not sha.startswith(prefix):
        raise ConfigError(f"{where}: {model_id}: weights_sha256 {sha} does not start with sha256_prefix {prefix}")
    if training == "random" and (values["weights"] or sha or prefix):
        raise ConfigError(f"{where}: {model_id}: a random model lists no weights")
    if training != "random" and not values["weights"]:
        raise ConfigError(f"{where}: {model_id}: a trained model needs its weights location")
    if values["weights"].startswith(PACKAGE_SCHEME):
        try:
            parse_package_location(values["weights"])
        except ConfigError as err:
            raise ConfigError(f"{where}: {model_id}: {err}") from None
        if not sha:
            raise ConfigError(f"{where}: {model_id}: a {PACKAGE_SCHEME} weights location needs its weights_sha256")
    size_text = values["input_size"]
    try:
        input_size = int(size_text) if size_text else DEFAULT_INPUT_SIZE
    except ValueError:
        raise ConfigError(f"{where}: {model_id}: input_size {size_text!r} is not an integer") from None
    if input_size <= 0:
        raise ConfigError(f"{where}: {model_id}: input_size must be positive, got {input_size}")
    imagenet_top1 = _parse_imagenet_top1(values, training, where)
    values.update(weights_sha256=sha, sha256_prefix=prefix, input_size=input_size, imagenet_top1=imagenet_top1)
    return ZooEntry(**values)


def _parse_imagenet_top1(values: dict[str, str], training: str, where: str) -> float | None:
    model_id, text, source = values["model_id"], values["imagenet_top1"], values["imagenet_top1_source"]
    if not text:
        if source:
            raise ConfigError(f"{where}: {model_id}: imagenet_top1_source {source!r} is given without imagenet_top1")
        return None
    if training == "random":
        raise ConfigError(f"{where}: {model_id}: a random model has no imagenet_top1")
    try:
        top1 = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {model_id}: imagenet_top1 {text!r} is not a number") from None
    if not 0.0 < top1 <= 100.0:
        raise ConfigError(f"{where}: {model_id}: imagenet_top1 must be a percentage in (0, 100], got {text}")
    if not source:
        raise ConfigError(f"{where}: {model_id}: imagenet_top1 {text} needs its imagenet_top1_source")
    return top1
