"""The ``compute`` section: where per-model work runs (local processes or a Dask cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import StrictInt, StrictStr, field_validator

from deepmouse.config.base import Section, invalid


@dataclass(frozen=True)
class ComputeConfig(Section):
    """Where per-model work runs (``deepmouse/compute.py``); never what it computes.

    ``workers: 1`` (default) runs the models one after another in the stage's process;
    more starts a local Dask cluster of that many worker processes, each with
    ``threads_per_worker`` threads (default: the process's threads, ``OMP_NUM_THREADS`` or
    the cores, shared out). ``scheduler``
    is the address of a running Dask scheduler (``tcp://host:8786``, a SLURM or PBS cluster
    from dask-jobqueue, GPU workers), which then replaces the local cluster. The results
    are byte-identical whatever these settings.
    """

    workers: StrictInt = 1
    threads_per_worker: StrictInt | None = None
    scheduler: StrictStr | None = None

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, workers: int) -> int:
        if workers < 1:
            raise invalid(f"must be at least 1, got {workers}")
        return workers

    @field_validator("threads_per_worker")
    @classmethod
    def _check_threads(cls, threads: int | None) -> int | None:
        if threads is not None and threads < 1:
            raise invalid(f"must be at least 1 or null, got {threads}")
        return threads

    @field_validator("scheduler")
    @classmethod
    def _check_scheduler(cls, scheduler: str | None) -> str | None:
        if scheduler is not None and "://" not in scheduler:
            raise invalid(f"must be a Dask scheduler address such as tcp://host:8786, got {scheduler!r}")
        return scheduler
