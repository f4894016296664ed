"""How the suite spreads over pytest-xdist workers: the hooks tests/conftest.py takes in.

Kept apart from the fixtures, with nothing heavier than pytest and :mod:`tests.runs` to import,
so that the tests of these hooks (tests/test_runs.py) start their pytest sessions and xdist
workers without importing torch and pandas in each.
"""

import os
import sys

import pytest

from tests.runs import build_in_background

# Spread test by test over the xdist workers: every test builds its own model (the whole zoo) or
# copies the default run for itself (the documentation's blocks); none shares a module fixture.
SPREAD = {"tests/models/test_whole_zoo.py", "tests/test_docs.py"}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker's share of the cores, for itself and the processes it starts.

    Torch and BLAS take every core by default; two workers that each do so on two cores run
    slower than one. The share goes through the environment because the `dvc repro` of a
    whole-pipeline test starts the stages in processes of their own. A count set by hand wins.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    threads = str(max(1, len(os.sched_getaffinity(0)) // int(workers)))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    if "torch" in sys.modules:  # it read OMP_NUM_THREADS when it was imported
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected: only the tests that will run count
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """The tests that read the default run go last, and the run starts building now, beside the others.

    The default run (`dvc repro` of the repository's params) is the longest fixture of the
    suite; built in a process of its own from the start (:func:`tests.runs.build_in_background`),
    it takes the core the other tests leave idle, and is done, or nearly, when its readers come.
    Under xdist every worker collects the same items in the same order, and the first to get
    here starts it.
    """
    readers = [item for item in items if "default_run" in getattr(item, "fixturenames", ())]
    if not readers or config.getoption("collectonly"):
        return
    items[:] = [item for item in items if "default_run" not in getattr(item, "fixturenames", ())] + readers
    owner = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
    build_in_background(config._tmp_path_factory, "default", owner_pid=owner)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile``: each file's tests on one worker, but the files in :data:`SPREAD` test by test.

    A file's tests share module fixtures (a project copied once, tests that run in order on
    it), so they stay together. (``--dist loadgroup`` with ``xdist_group`` marks would say the
    same, but pytest-xdist 3.8 names the group through an attribute pytest 9 no longer reads,
    and its groups are silently ignored.) Other ``--dist`` modes are xdist's own.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileOrTestScheduling(LoadScopeScheduling):
        # _split_scope is the extension point xdist's own LoadFileScheduling overrides.
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path in SPREAD else path

    return FileOrTestScheduling(config, log)
