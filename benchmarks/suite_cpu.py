"""Where the test suite's CPU goes: each test's CPU time, its own and its child processes'.

On a 2-core machine `make test` is CPU-bound: its wall time is about its CPU time over two,
so a test's cost is its CPU, not the wall time ``--durations`` shows (under pytest-xdist a
test waits for the cores the other worker and the default run's build hold). A whole-pipeline
test spends most of its CPU in `dvc` and the stages it starts; they count once they have
been waited for, which is how ``subprocess.run`` leaves them.

As a pytest plugin it appends one JSON line per test phase (setup, call, teardown) to
``<folder>/<xdist worker>.jsonl``::

    CI=true SUITE_CPU_DIR=/tmp/suite-cpu PYTHONPATH=benchmarks \\
        python -m pytest -p suite_cpu -n auto --maxprocesses=4 --dist loadfile

and as a script it sums them by file and by test, most CPU first::

    python benchmarks/suite_cpu.py /tmp/suite-cpu --top 30

Each log starts with a line naming the machine (CPU model and usable cores): the same suite
took 14 minutes on the Intel machines and 21 on an AMD EPYC of the same 2 cores
(docs/architecture.md), so runs compare only on the same kind of CPU.

The default run is built by a background process (tests/runs.py) of the worker that collects
first. Its CPU, all of it, counts when the process is reaped: on whichever test of that worker
runs then (``subprocess`` reaps finished children when it starts the next one), not on the
tests that read the run. The largest "children" entry of a session is that build.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

_OUT: dict[str, object] = {}


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _log_file():
    if "file" not in _OUT:
        folder = Path(os.environ.get("SUITE_CPU_DIR", "suite-cpu"))
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", "a")  # noqa: SIM115
        log.write(json.dumps({"machine": cpu_model(), "cores": len(os.sched_getaffinity(0))}) + "\n")
        _OUT["file"] = log
    return _OUT["file"]


def _timed(phase: str):
    @pytest.hookimpl(hookwrapper=True)
    def hook(item):
        before, started = os.times(), time.perf_counter()
        yield
        after = os.times()
        record = {"test": item.nodeid, "phase": phase, "wall": time.perf_counter() - started,
                  "own": after.user - before.user + after.system - before.system,
                  "children": (after.children_user - before.children_user
                               + after.children_system - before.children_system)}
        log = _log_file()
        log.write(json.dumps(record) + "\n")
        log.flush()
    return hook


pytest_runtest_setup = _timed("setup")
pytest_runtest_call = _timed("call")
pytest_runtest_teardown = _timed("teardown")


def summarise(folder: Path, top: int) -> str:
    """The CPU seconds of every file and test in ``folder``'s logs, most first, as text."""
    by_test: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    machines: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "machine" in record:
                machines.add(f"{record['machine']}, {record['cores']} cores")
                continue
            by_test[record["test"]][0] += record["own"] + record["children"]
            by_test[record["test"]][1] += record["wall"]
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for test, (cpu, wall) in by_test.items():
        totals = by_file[test.split("::", 1)[0]]
        totals[0] += cpu
        totals[1] += wall
        totals[2] += 1
    lines = [f"{len(by_test)} tests, {sum(cpu for cpu, _ in by_test.values()):.0f} CPU s",
             "on " + ("; ".join(sorted(machines)) or "an unrecorded machine"),
             "", "by file:"]
    lines += [f"{cpu:8.1f} CPU s {wall:8.1f} wall s {n:5d} tests  {name}"
              for name, (cpu, wall, n) in sorted(by_file.items(), key=lambda kv: -kv[1][0])[:top]]
    lines += ["", "by test:"]
    lines += [f"{cpu:8.1f} CPU s {wall:8.1f} wall s  {name}"
              for name, (cpu, wall) in sorted(by_test.items(), key=lambda kv: -kv[1][0])[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the SUITE_CPU_DIR of a run")
    parser.add_argument("--top", type=int, default=25, help="files and tests to list (default 25)")
    args = parser.parse_args()
    print(summarise(args.folder, args.top))


if __name__ == "__main__":
    main()
