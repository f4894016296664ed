"""What a stage was doing when it failed, and the one line it then prints (DESIGN §11).

Whatever goes wrong, a stage ends in one line on stderr that names the stage, and exit
status 1 (:func:`deepmouse.stage.run_stage`)::

    [scores] error: <a DeepmouseError's message, which names the file, key or row at fault>
    [scores] error while scoring resnet18_random: ValueError: <message> (traceback in logs/scores-....log)
    [scores] error while scoring resnet18_random: no space left on device (ENOSPC): <file>; nothing
        already computed was lost: <what is kept> (traceback in logs/scores-....log)

(the last is one line). A :class:`~deepmouse.errors.DeepmouseError` was raised on purpose and
says all there is to say. Any other exception is a fault of the code or of the machine: its
traceback goes to a log file under :data:`LOG_DIR` (ignored by git and DVC) that the line
names. An :class:`OSError` — a full disk, a quota, a read-only or forbidden folder — is named
by its reason and the file it concerns, and says what was kept where the code that failed
has declared it.

Library code says what it is doing with :func:`doing` (and which file it is writing with
:func:`writing`): context managers that cost nothing while their block runs. When an
exception leaves the block, the step is recorded on the exception itself — no global state,
and the record travels with the exception wherever it goes, through the pickling of a Dask
worker's error too. The same words are added as a note, so the logged traceback shows them.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from deepmouse.errors import DeepmouseError

LOG_DIR = Path("logs")
"""Where tracebacks go, relative to the folder the stage runs in (the project's, under ``dvc repro``)."""

MAX_MESSAGE_CHARS = 500
"""A longer exception message is cut in the line (it is whole in the log)."""

_STEPS = "deepmouse_steps"
"""The attribute of an exception that holds its :class:`Step` records, innermost first."""

_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large",
}
"""How the errors of a full or closed filesystem read in the line (others: the system's words)."""


@dataclass(frozen=True)
class Step:
    """One step of what a stage was doing when an exception left it.

    Attributes
    ----------
    what : str or None
        In words, as it follows "while": ``"scoring resnet18_random"``.
    path : str or None
        The file or folder being written, named for an :class:`OSError` that names none
        (pyarrow's, or a ``write`` that found the disk full).
    kept : str or None
        What a failure inside the step keeps, said only where it is true: ``"models scored
        before are kept in data/scores/models; a rerun resumes from them"``.
    """

    what: str | None = None
    path: str | None = None
    kept: str | None = None


@contextmanager
def doing(what: str, *, kept: str | None = None) -> Iterator[None]:
    """Say what the block does, for the line a stage prints if an exception leaves it.

    Parameters
    ----------
    what : str
        Words that follow "while": ``"scoring resnet18_random"``.
    kept : str, optional
        What is kept when the block fails, e.g. the models finished before it. Give it only
        where the code makes it true: the line says "nothing already computed was lost" with it.
    """
    with _recording(Step(what=what, kept=kept)):
        yield


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` as what the block writes, for an :class:`OSError` from it that names no file."""
    with _recording(Step(path=str(path))):
        yield


@contextmanager
def _recording(step: Step) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        recorded = err.__dict__.setdefault(_STEPS, [])
        recorded.append(step)
        if step.what:
            err.add_note(f"(while {step.what})")
        raise


def steps_of(err: BaseException) -> list[Step]:
    """The steps ``err`` left, outermost first (none for an exception raised outside any)."""
    return list(reversed(getattr(err, _STEPS, [])))


def failure_line(stage: str, err: Exception, log: str | None = None) -> str:
    """The one line a stage prints for ``err``.

    Parameters
    ----------
    stage : str
        The stage's name: ``scores``.
    err : Exception
    log : str, optional
        Where the traceback was written, or why it could not be (``"not saved: ..."``); None
        for a :class:`DeepmouseError`, which needs none.
    """
    if isinstance(err, DeepmouseError):
        return f"[{stage}] error: {err}"
    steps = steps_of(err)
    doings = [step.what for step in steps if step.what]
    line = f"[{stage}] error" + (f" while {', '.join(doings)}" if doings else "") + ": "
    if isinstance(err, OSError):
        paths = [step.path for step in steps if step.path]
        line += describe_os_error(err, paths[-1] if paths else None)
        kept = [step.kept for step in steps if step.kept]
        if kept:
            line += f"; nothing already computed was lost: {kept[-1]}"
    else:
        message = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + " [...]"
        line += type(err).__name__ + (f": {message}" if message else "")
    return line + (f" (traceback {log})" if log else "")


def describe_os_error(err: OSError, path: str | None = None) -> str:
    """``<reason> (<ERRNO>): <file>``, the file being ``err.filename`` or else ``path``.

    pyarrow's write errors carry no ``errno`` attribute but say ``[errno 28]`` in their
    message; the number is read from there.
    """
    number = err.errno
    if number is None:
        found = re.search(r"\[errno (\d+)\]", str(err), flags=re.IGNORECASE)
        number = int(found.group(1)) if found else None
    if number in errno.errorcode:  # the system's words: pyarrow's strerror is its whole message
        reason = f"{_REASONS.get(number) or os.strerror(number)} ({errno.errorcode[number]})"
    else:
        reason = err.strerror or str(err) or type(err).__name__
    filename = err.filename if err.filename is not None else path
    if filename is None:
        return f"{reason} (no file named)"
    target = f" -> {os.fsdecode(err.filename2)}" if err.filename2 is not None else ""
    return f"{reason}: {os.fsdecode(filename)}{target}"


def save_traceback(stage: str, err: BaseException, log_dir: Path = LOG_DIR) -> Path:
    """Write ``err``'s traceback, with the command that raised it, to a new file in ``log_dir``.

    Returns
    -------
    Path
        ``<log_dir>/<stage>-<UTC time>-<pid>.log``.

    Raises
    ------
    OSError
        When the folder or file cannot be written (a full disk, for one).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{stage}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    path.write_text(f"stage: {stage}\ncommand: {' '.join(sys.argv)}\nfolder: {Path.cwd()}\n\n"
                    + "".join(traceback.format_exception(err)))
    return path


def report_failure(stage: str, err: Exception, log_dir: Path = LOG_DIR) -> str:
    """Save the traceback of an unexpected ``err`` and return the line that names it.

    A traceback that cannot be saved is printed to stderr before the line, so the line stays
    last — except for an :class:`OSError`, whose line alone says what happened and where (a
    full disk is the likely reason the log could not be written).
    """
    if isinstance(err, DeepmouseError):
        return failure_line(stage, err)
    try:
        log = f"in {save_traceback(stage, err, log_dir)}"
    except OSError as log_err:
        log = f"not saved: {describe_os_error(log_err)}"
        if not isinstance(err, OSError):
            traceback.print_exception(err, file=sys.stderr)
    return failure_line(stage, err, log)
