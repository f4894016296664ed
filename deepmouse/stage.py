"""What every stage script shares: argument parsing, the summary line, readable failures."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from deepmouse.errors import DeepmouseError


def run_stage(name: str, body: Callable[[argparse.Namespace], str], *arguments: str) -> None:
    """Parse ``--params`` plus ``arguments`` (all required paths), run ``body``, print its summary.

    A :class:`DeepmouseError` ends the process with status 1 and its message alone: the
    message names the file, key or row at fault, and a traceback would only bury it.
    """
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py")
    parser.add_argument("--params", default="params.yaml")
    for argument in arguments:
        parser.add_argument(f"--{argument}", required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        summary = body(args)
    except DeepmouseError as err:
        print(f"[{name}] error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"[{name}] {summary} ({time.perf_counter() - started:.1f} s)", flush=True)
