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
    ``vissl`` or ``dino``.
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
    ``timm:<architecture>.<tag>`` or a URL. Empty for random rows.
weights_sha256
    sha256 of the weights file, checked when present; may be empty.
sha256_prefix
    The first hex digits (8 or more) of the weights file's sha256, checked when
    present and no full sha256 is listed: publishers that serve files under
    ``name-<prefix>.pth`` (torchvision; torch hub checks the same prefix on
    download) state that much of the digest. May be empty.
input_size
    Side of the model's native square input in pixels (224 when empty).
"""

from __future__ import annotations

import collections
import csv
import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from deepmouse.errors import ConfigError, UnknownModelError

ZOO_CSV = Path(__file__).with_name("zoo.csv")
"""The registry shipped with the package."""

COLUMNS = (
    "model_id", "display_name", "family", "source", "architecture", "training",
    "task_cluster", "weights", "weights_sha256", "sha256_prefix", "input_size",
)
FAMILIES = ("convolutional", "transformer", "mlp-mixer", "hybrid")
SOURCES = ("torchvision", "timm", "taskonomy", "vissl", "dino")
DEFAULT_INPUT_SIZE = 224

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_TRAINING = re.compile(r"supervised-imagenet|random|self-supervised:[a-z0-9_\-]+|taskonomy:[a-z0-9_]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA256_PREFIX = re.compile(r"[0-9a-f]{8,63}")


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


def load_zoo(path: str | Path | None = None) -> Zoo:
    """Read and validate the registry (cached per resolved path).

    Parameters
    ----------
    path : str or Path, optional
        A registry CSV; the packaged ``zoo.csv`` by default.

    Raises
    ------
    ConfigError
        Naming the file and CSV line of the first invalid row.
    """
    return _load_zoo_cached(Path(path or ZOO_CSV).resolve())


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
    size_text = values["input_size"]
    try:
        input_size = int(size_text) if size_text else DEFAULT_INPUT_SIZE
    except ValueError:
        raise ConfigError(f"{where}: {model_id}: input_size {size_text!r} is not an integer") from None
    if input_size <= 0:
        raise ConfigError(f"{where}: {model_id}: input_size must be positive, got {input_size}")
    values.update(weights_sha256=sha, sha256_prefix=prefix, input_size=input_size)
    return ZooEntry(**values)
