"""Exceptions raised by deepmouse.

Every error names what was wrong and where (file, params key, row), so that a
failed stage tells the researcher what to fix without a traceback.
"""


class DeepmouseError(Exception):
    """Base class for every error deepmouse raises on purpose."""


class ConfigError(DeepmouseError):
    """A params.yaml key is missing, of the wrong type or out of range."""


class UnknownModelError(ConfigError):
    """A model id is not in the zoo registry."""


class NwbLayoutError(DeepmouseError):
    """An NWB file lacks a dataset the pipeline needs, or holds a malformed one."""


class DataError(DeepmouseError):
    """Input data are unusable: NaN or constant responses, mismatched stimuli, empty areas."""


class CacheError(DeepmouseError):
    """A feature-cache entry is incomplete, corrupted or was written for another key."""


class SourceError(DeepmouseError):
    """A data source cannot be reached or does not hold what was asked for."""


class StoreError(DeepmouseError):
    """The DuckDB store cannot be built or opened (for example, locked by another process)."""


class QualityGateError(DeepmouseError):
    """A data-quality expectation or SQL check failed."""


class CodeDepsError(DeepmouseError):
    """The code's dependencies cannot be derived, or dvc.yaml does not list the ones derived."""


class RemoteError(DeepmouseError):
    """A DVC remote is not configured, or pulled files are not those ``dvc.lock`` lists."""
