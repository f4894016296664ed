"""Shared whole-pipeline runs for the e2e tests (built by :mod:`tests.runs`).

Each distinct configuration runs `dvc repro` once per test session; tests read the finished
folder, and a test that changes a project works on its own copy. The fixtures:

``default_run`` (session, tests/conftest.py)
    The repository's params as they are. Read only.
``small_run`` (session)
    ``small_params(SMALL_MODELS)`` (two untrained models, a small simulated source): the
    project fault, store, scale and remote tests break and restore. Read only.
``small_project`` (function)
    A fresh copy of ``small_run`` for one test to change as it likes.

A module whose tests change one project in turn (break a file, assert, restore it) takes one
copy for the module::

    @pytest.fixture(scope="module")
    def project(small_run, tmp_path_factory) -> Path:
        return copy_run(small_run, tmp_path_factory.mktemp("faults") / "project")

A copy is up to date for DVC (`dvc status` names only ``fingerprint``, which always runs);
copying takes about a second, a `dvc repro` of the small project a minute or more. Keep a run
of its own only where sharing would change what a test proves (a byte-identity test of a
fresh run, a configuration no other test uses). A test that changes a shared run fails the
session at teardown (:func:`tests.runs.check_unchanged`).

Under pytest-xdist (``make test``: ``--dist loadfile``) a file's tests stay on one worker, so a
module fixture is built once; the first worker to ask for a shared run builds it while the
others wait on a file lock, and all of them read the one folder.

Runs of their own, and why: test_null.py (null tuning, read from an `nwb_dir`), test_table_source.py,
test_source_changes.py and test_params_stage.py (a source, model or partial run no other file
uses). test_codedeps.py edits the package in a copy of ``small_run`` and runs its stages with that
copy's package on PYTHONPATH.
"""

from pathlib import Path

import pytest

from tests.runs import SMALL_MODELS, check_unchanged, copy_run, shared_run, small_params


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    run = shared_run(tmp_path_factory, "small", small_params(SMALL_MODELS))
    yield run
    check_unchanged(run)


@pytest.fixture
def small_project(small_run, tmp_path) -> Path:
    return copy_run(small_run, tmp_path / "project")
