"""Per-model tasks in-process and on Dask: same results, failures named, finished work kept."""

import os
from pathlib import Path

import pytest

from deepmouse.compute import TaskError, run_tasks, worker_threads
from deepmouse.config import ComputeConfig, parse_params
from deepmouse.errors import ConfigError


def _write_square(item: str, out: str) -> int:
    """A task as the stages write them: its own file, atomically, and a summary back."""
    import torch

    value = int(item) ** 2
    path = Path(out) / f"{item}.txt"
    path.with_suffix(".tmp").write_text(f"{value} {torch.get_num_threads()} {os.getpid()}\n")
    path.with_suffix(".tmp").rename(path)
    return value


def _fail_on_three(item: str, out: str) -> int:
    if item == "3":
        raise ValueError(f"item {item} is bad")
    return _write_square(item, out)


def _results(tmp_path, cfg, function=_write_square):
    out = tmp_path / f"out-{cfg.workers}"
    out.mkdir()
    returned = {r.item: r.value for r in run_tasks(function, ["1", "2", "3", "4"], cfg, {"out": str(out)},
                                                    progress=lambda _: None)}
    return returned, out


def test_in_process_runs_in_order_with_the_threads_asked_for(tmp_path):
    returned, out = _results(tmp_path, ComputeConfig(workers=1, threads_per_worker=1))
    assert returned == {"1": 1, "2": 4, "3": 9, "4": 16}
    lines = [(out / f"{i}.txt").read_text().split() for i in "1234"]
    assert {line[1] for line in lines} == {"1"} and {line[2] for line in lines} == {str(os.getpid())}


@pytest.mark.slow
def test_a_local_cluster_gives_the_same_results_from_other_processes(tmp_path):
    one, out_one = _results(tmp_path, ComputeConfig(workers=1))
    two, out_two = _results(tmp_path, ComputeConfig(workers=2, threads_per_worker=1))
    assert one == two
    pids = {(out_two / f"{i}.txt").read_text().split()[2] for i in "1234"}
    assert str(os.getpid()) not in pids
    assert [(out_one / f"{i}.txt").read_text().split()[0] for i in "1234"] == \
           [(out_two / f"{i}.txt").read_text().split()[0] for i in "1234"]


@pytest.mark.slow
def test_a_failed_task_is_named_after_the_others_finished(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TaskError, match=r"1 of 4 tasks failed \(the others' results are kept\): 3: item 3 is bad"):
        list(run_tasks(_fail_on_three, ["1", "2", "3", "4"], ComputeConfig(workers=2, threads_per_worker=1),
                       {"out": str(out)}, progress=lambda _: None))
    assert sorted(p.name for p in out.glob("*.txt")) == ["1.txt", "2.txt", "4.txt"]


@pytest.mark.slow
def test_an_existing_scheduler_is_used_by_address(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        messages = []
        out = tmp_path / "out"
        out.mkdir()
        returned = [r.value for r in run_tasks(_write_square, ["5"], ComputeConfig(scheduler=cluster.scheduler_address),
                                               {"out": str(out)}, progress=messages.append)]
    assert returned == [25] and messages == [f"compute: Dask scheduler {cluster.scheduler_address}, 1 workers"]


def test_in_process_a_failure_stops_with_the_task_error_and_keeps_what_finished(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="item 3 is bad"):
        list(run_tasks(_fail_on_three, ["1", "2", "3", "4"], ComputeConfig(), {"out": str(out)},
                       progress=lambda _: None))
    assert sorted(p.name for p in out.glob("*.txt")) == ["1.txt", "2.txt"]


def test_threads_share_out_the_cores_unless_given():
    assert worker_threads(ComputeConfig(workers=2), n_cores=16) == 8
    assert worker_threads(ComputeConfig(workers=32), n_cores=16) == 1
    assert worker_threads(ComputeConfig(workers=2, threads_per_worker=3), n_cores=16) == 3


def test_an_in_process_task_runs_on_the_threads_this_process_was_given(tmp_path):
    import torch

    saved = torch.get_num_threads()
    # As under OMP_NUM_THREADS=1 on a machine of more cores (one of several test processes).
    torch.set_num_threads(1)
    try:
        assert worker_threads(ComputeConfig()) == 1
        assert worker_threads(ComputeConfig(workers=2)) == 1
        out = tmp_path / "out"
        out.mkdir()
        list(run_tasks(_write_square, ["2"], ComputeConfig(), {"out": str(out)}, progress=lambda _: None))
        assert (out / "2.txt").read_text().split()[:2] == ["4", "1"]
    finally:
        torch.set_num_threads(saved)
    assert worker_threads(ComputeConfig()) == saved


@pytest.mark.parametrize("compute, message", [
    ({"workers": 0}, r"compute.workers: must be at least 1, got 0"),
    ({"threads_per_worker": 0}, r"compute.threads_per_worker: must be at least 1 or null, got 0"),
    ({"scheduler": "localhost"}, r"compute.scheduler: must be a Dask scheduler address such as tcp://host:8786"),
    ({"cores": 4}, r"compute.cores: unknown key"),
])
def test_compute_params_are_validated(compute, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"compute": compute})
