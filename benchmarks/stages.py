"""Where a whole run's time goes, stage by stage: wall, user and system time of each DVC stage.

A fresh project (the repository's pipeline files, as the tests copy them: ``tests/runs.py``)
is run one stage at a time, ``dvc repro --single-item <stage>`` for every stage in the order
``dvc stage list`` gives (``features@<model>`` once per model), so that each stage's cost
stands alone: its own process, its imports, and DVC's bookkeeping around it (hashing its
deps and outs, writing dvc.lock), which a plain ``dvc repro`` pays too. User and system
time are those of ``dvc`` and the stage process it waits for. Last, a ``dvc repro`` of the
finished project, which has nothing to run: DVC's fixed cost of checking an up-to-date run.

``--small`` runs the two-model project most whole-pipeline tests share (``small_params`` in
``tests/runs.py``) instead of the repository's params, the default run. Run::

    python benchmarks/stages.py --out benchmarks/results/stages_default.json
    python benchmarks/stages.py --small --out benchmarks/results/stages_small.json

The thread count is the environment's (``OMP_NUM_THREADS``; every core by default), with
waiting threads asleep (``OMP_WAIT_POLICY=PASSIVE``), as the suite builds the default run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from suite_cpu import cpu_model  # noqa: E402 (benchmarks/ is the script's folder)
from tests.runs import SMALL_MODELS, copy_project, dvc, small_params  # noqa: E402


def timed(project: Path, *args: str) -> dict:
    """``dvc *args`` in ``project``; its wall time and the user and system time of it and the stage it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = dvc(project, *args)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {project}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "user_s": round(after.ru_utime - before.ru_utime, 2),
            "system_s": round(after.ru_stime - before.ru_stime, 2)}


def measure(root: Path, params: dict | None) -> dict:
    """Every stage of a fresh project at ``root``, one at a time, then a ``dvc repro`` with nothing to run."""
    copy_project(root, params)
    listed = dvc(root, "stage", "list", "--name-only")
    if listed.returncode != 0:
        raise SystemExit(f"dvc stage list failed in {root}:\n{listed.stderr[-3000:]}")
    stages = []
    for name in listed.stdout.split():
        stages.append({"stage": name, **timed(root, "repro", "--single-item", name)})
        print(f"{name:42s} {stages[-1]['wall_s']:7.1f} s wall {stages[-1]['user_s']:7.1f} user "
              f"{stages[-1]['system_s']:6.1f} system", flush=True)
    nothing_to_run = timed(root, "repro")
    return {"stages": stages, "nothing_to_run": nothing_to_run,
            "total": {key: round(sum(stage[key] for stage in stages), 2) for key in ("wall_s", "user_s", "system_s")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A whole run's wall, user and system time per DVC stage.")
    parser.add_argument("--small", action="store_true", help="the tests' two-model project instead of the default run")
    parser.add_argument("--root", type=Path, default=None, help="an empty folder for the project (a temporary one by default)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    # Waiting threads asleep, as the suite builds the default run (tests/runs.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    params = small_params(SMALL_MODELS) if args.small else None
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root if args.root is not None else Path(scratch) / "project"
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise SystemExit(f"--root {root} is not empty")
        report = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
                  "threads": os.environ.get("OMP_NUM_THREADS", "every core"), "project": "small" if args.small else "default",
                  **measure(root, params)}
    total, idle = report["total"], report["nothing_to_run"]
    print(f"{'all stages':42s} {total['wall_s']:7.1f} s wall {total['user_s']:7.1f} user {total['system_s']:6.1f} system")
    print(f"{'dvc repro, nothing to run':42s} {idle['wall_s']:7.1f} s wall {idle['user_s']:7.1f} user "
          f"{idle['system_s']:6.1f} system")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
