"""What every stage script shares: argument parsing, the summary line, readable failures."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from deepmouse.failures import report_failure


def run_stage(name: str, body: Callable[[argparse.Namespace], str], *arguments: str) -> None:
    """Parse ``--params`` plus ``arguments`` (all required paths), run ``body``, print its summary.

    Any exception ends the process with status 1 and one line on stderr that names the stage
    (:mod:`deepmouse.failures`): a :class:`~deepmouse.errors.DeepmouseError` by its message
    alone, which names the file, key or row at fault; anything else by what the stage was
    doing, the exception and the log file its traceback went to. A traceback on the terminal
    would bury the line, and only the log's reader needs it.
    """
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py")
    parser.add_argument("--params", default="params.yaml")
    for argument in arguments:
        parser.add_argument(f"--{argument}", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        summary = body(args)
    except Exception as err:  # noqa: BLE001 - every failure ends in its one line; KeyboardInterrupt stays as it is
        print(report_failure(name, err), file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"[{name}] {summary} ({time.perf_counter() - started:.1f} s)", flush=True)
