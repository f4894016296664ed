"""Per-model work in parallel: in-process, on a local Dask cluster, or on a running scheduler.

A stage hands :func:`run_tasks` one task per model. Each task writes its own results
(atomically, see ``deepmouse/scoring/run.py``) and returns a short summary, so what a
task finished is kept whatever happens to the others, and the stage's outputs are the
same bytes whether one process or many computed them. Scheduling is Dask's
(``distributed``): a ``LocalCluster`` of worker processes, or any scheduler by address —
dask-jobqueue's SLURM and PBS clusters, GPU workers — never one of our own.

Threads. Every task runs torch with ``threads_per_worker`` threads (by default the
threads this process was given shared out among the workers), so the workers do not
oversubscribe the cores, and numpy's BLAS on one thread: BLAS results change in the last bits with its
thread count, torch's ridge products do not, so the score files are the same bytes
whatever the number of workers (``tests/e2e/test_incremental.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from deepmouse.config import ComputeConfig
from deepmouse.errors import DeepmouseError


class TaskError(DeepmouseError):
    """A task failed; the message names its item. The other tasks ran to their end."""


@dataclass(frozen=True)
class TaskResult:
    """What one task returned, with the item it was given."""

    item: str
    value: Any


def worker_threads(cfg: ComputeConfig, n_cores: int | None = None) -> int:
    """Torch threads per worker: ``threads_per_worker``, or ``n_cores`` shared out (at least 1).

    ``n_cores`` defaults to this process's torch threads (``OMP_NUM_THREADS`` where set, else
    the cores), not the machine's: a process told to use fewer threads (one of several
    sharing a machine) runs its in-process task on that many, as it computes everything else.
    Features computed on another thread count can differ in the last bits.
    """
    if cfg.threads_per_worker is not None:
        return cfg.threads_per_worker
    if n_cores is None:
        import torch

        n_cores = torch.get_num_threads()
    return max(1, n_cores // cfg.workers)


def run_tasks(function: Callable[..., Any], items: Sequence[str], compute: ComputeConfig,
              arguments: dict[str, Any], *, progress: Callable[[str], None] = print) -> Iterator[TaskResult]:
    """Run ``function(item, **arguments)`` for every item; yield each result as it finishes.

    Parameters
    ----------
    function : callable
        A module-level function (it is pickled to the workers). It must write its own
        results; what it returns comes back as :attr:`TaskResult.value`.
    items : sequence of str
        One task per item (model ids).
    compute : ComputeConfig
        ``workers`` 1 and no ``scheduler``: in this process, in order. Otherwise on Dask.
    arguments : dict
        Keyword arguments of every task.
    progress : callable
        Told which cluster runs the tasks.

    Yields
    ------
    TaskResult
        In the order the tasks finish (items order in-process).

    Raises
    ------
    Exception
        In-process, the first task's error as it is (the tasks before it are done and kept).
    TaskError
        On Dask, after every task has ended, if any failed: naming each failed item and its
        error.
    """
    items = list(items)
    if not items:
        return
    threads = worker_threads(compute)
    if compute.workers == 1 and compute.scheduler is None:
        for item in items:
            yield TaskResult(item, _run_one(function, item, threads, arguments))
        return
    yield from _run_on_dask(function, items, compute, threads, progress, arguments)


def _run_one(function: Callable[..., Any], item: str, threads: int, arguments: dict[str, Any]) -> Any:
    import torch
    from threadpoolctl import threadpool_limits

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # numpy's BLAS sums in another order on 1 and on 2 threads (scores differ in the last
        # bits), torch's products here do not: BLAS stays on one thread so that the bytes
        # written never depend on how many workers share the machine.
        with threadpool_limits(limits=1, user_api="blas"):
            return function(item, **arguments)
    finally:
        torch.set_num_threads(saved)


def _run_on_dask(function: Callable[..., Any], items: list[str], cfg: ComputeConfig, threads: int,
                 progress: Callable[[str], None], arguments: dict[str, Any]) -> Iterator[TaskResult]:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if cfg.scheduler is None:
        # Processes, one thread each as Dask sees them: a task's own torch threads do the work.
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"OMP_NUM_THREADS": str(threads),
                                                            "MKL_NUM_THREADS": str(threads)})
        client = Client(cluster)
        progress(f"compute: local Dask cluster, {cfg.workers} workers x {threads} threads")
    else:
        client = Client(cfg.scheduler)
        progress(f"compute: Dask scheduler {cfg.scheduler}, {len(client.scheduler_info()['workers'])} workers")
    failures: list[str] = []
    try:
        futures = {client.submit(_run_one, function, item, threads, arguments, key=f"deepmouse-{item}", pure=False):
                   item for item in items}
        for future in as_completed(futures):
            item = futures[future]
            if future.status == "error":
                failures.append(f"{item}: {future.exception()}")
                continue
            yield TaskResult(item, future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if failures:
        raise TaskError(f"{len(failures)} of {len(items)} tasks failed (the others' results are kept): "
                        + "; ".join(failures))
