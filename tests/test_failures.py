"""A failing stage ends in one line naming the stage, what it was doing and the file; the traceback goes to a log."""

import errno
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepmouse.errors import DataError
from deepmouse.failures import describe_os_error, doing, failure_line, report_failure, steps_of, writing

REPO = Path(__file__).resolve().parents[1]


def _raised(error: Exception, *contexts) -> Exception:
    """``error`` as it leaves ``contexts`` (outermost first)."""
    def enter(remaining):
        if not remaining:
            raise error
        with remaining[0]:
            enter(remaining[1:])
    with pytest.raises(type(error)) as caught:
        enter(list(contexts))
    return caught.value


def test_steps_are_recorded_on_the_exception_outermost_first():
    err = _raised(ValueError("bad shape"), doing("scoring resnet18_random", kept="models before it"),
                  doing("fitting layer conv3"))
    assert [step.what for step in steps_of(err)] == ["scoring resnet18_random", "fitting layer conv3"]
    assert err.__notes__ == ["(while fitting layer conv3)", "(while scoring resnet18_random)"]
    assert failure_line("scores", err, "in logs/x.log") == (
        "[scores] error while scoring resnet18_random, fitting layer conv3: ValueError: bad shape "
        "(traceback in logs/x.log)")
    assert steps_of(ValueError("raised outside any step")) == []


def test_steps_survive_pickling_as_an_error_from_a_dask_worker_does():
    err = pickle.loads(pickle.dumps(_raised(KeyError("layer"), doing("scoring alexnet_random"))))
    assert failure_line("scores", err) == "[scores] error while scoring alexnet_random: KeyError: 'layer'"


def test_a_deepmouse_error_is_its_message_alone():
    err = _raised(DataError("data/x.parquet: row 3: NaN response"), doing("reading data/x.parquet"))
    assert failure_line("neurons", err) == "[neurons] error: data/x.parquet: row 3: NaN response"
    assert report_failure("neurons", err, log_dir=Path("/nonexistent/never/written")) == failure_line("neurons", err)


def test_an_error_outside_any_step_still_names_the_stage():
    assert failure_line("report", RuntimeError(), "in logs/r.log") == "[report] error: RuntimeError (traceback in logs/r.log)"


def test_a_long_or_multiline_message_stays_one_line():
    line = failure_line("scores", ValueError("first\n\n  second\n" + "x" * 2000))
    assert "\n" not in line and line.startswith("[scores] error: ValueError: first second xxx")
    assert line.endswith("x [...]") and len(line) < 600


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "data/scores/models/a/key.json"),
         "no space left on device (ENOSPC): data/scores/models/a/key.json"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "data/a"), "disk quota exceeded (EDQUOT): data/a"),
        (OSError(errno.EROFS, "Read-only file system", "data/a"), "read-only file system (EROFS): data/a"),
        (PermissionError(errno.EACCES, "Permission denied", "data/a"), "permission denied (EACCES): data/a"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"), "Invalid cross-device link (EXDEV): a -> b"),
        # pyarrow's: no errno attribute, the number in the message; the file from `writing`.
        (OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"),
         "no space left on device (ENOSPC): data/scores/models/b.tmp-1"),
        (OSError("something odd"), "something odd: data/scores/models/b.tmp-1"),
    ],
)
def test_an_os_error_is_named_by_its_reason_and_file(error, expected):
    err = _raised(error, doing("scoring b"), writing("data/scores/models/b.tmp-1"))
    assert failure_line("scores", err) == f"[scores] error while scoring b: {expected}"


def test_an_os_error_without_any_file_says_so():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == \
        "no space left on device (ENOSPC) (no file named)"


def test_what_is_kept_is_said_only_where_a_step_declares_it():
    kept = "models scored before are kept in data/scores/models; a rerun resumes from them"
    full = OSError(errno.ENOSPC, "No space left on device", "data/scores/models/b.tmp-1/key.json")
    assert failure_line("scores", _raised(full, doing("scoring b", kept=kept))) == (
        "[scores] error while scoring b: no space left on device (ENOSPC): data/scores/models/b.tmp-1/key.json; "
        f"nothing already computed was lost: {kept}")
    full = OSError(errno.ENOSPC, "No space left on device", "data/responses/trials.parquet")
    assert "lost" not in failure_line("responses", _raised(full, doing("writing the responses")))
    # The innermost claim applies: it is the one made about the code that failed.
    err = _raised(OSError(errno.ENOSPC, "No space left", "f"), doing("a", kept="outer"), doing("b", kept="inner"))
    assert failure_line("s", err).endswith("lost: inner")


def test_a_real_pyarrow_write_error_is_named_by_the_file_being_written(tmp_path):
    target = tmp_path / "removed_folder" / "t.parquet"
    with pytest.raises(OSError) as caught, writing(target):
        pq.write_table(pa.table({"a": [1]}), str(target))
    assert failure_line("scores", caught.value) == f"[scores] error: No such file or directory (ENOENT): {target}"


def test_the_traceback_goes_to_a_log_file_the_line_names(tmp_path):
    err = _raised(ValueError("bad"), doing("scoring m"))
    line = report_failure("scores", err, log_dir=tmp_path / "logs")
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and logs[0].name.startswith("scores-") and logs[0].suffix == ".log"
    assert line == f"[scores] error while scoring m: ValueError: bad (traceback in {logs[0]})"
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "ValueError: bad" in text and "(while scoring m)" in text


def test_a_traceback_that_cannot_be_saved_is_printed_before_the_line(tmp_path, capsys):
    blocked = tmp_path / "logs"
    blocked.write_text("a file where the folder should be")
    line = report_failure("scores", _raised(ValueError("bad"), doing("scoring m")), log_dir=blocked)
    assert line.startswith("[scores] error while scoring m: ValueError: bad (traceback not saved: ")
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    full = OSError(errno.ENOSPC, "No space left on device", "data/x")
    line = report_failure("scores", full, log_dir=blocked)
    assert line.startswith("[scores] error: no space left on device (ENOSPC): data/x (traceback not saved: ")
    assert capsys.readouterr().err == ""  # the line says it all; the disk is likely full


STAGE = """
import errno, sys
from deepmouse.failures import doing, writing
from deepmouse.stage import run_stage

def body(args):
    with doing(f"scoring {args.model}", kept="models scored before are kept"):
        if args.fault == "value":
            raise ValueError("operands could not be broadcast together")
        with writing("out/" + args.model):
            raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

run_stage("scores", body, "model", "fault")
"""


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("value", r"\[scores\] error while scoring m1: ValueError: operands could not be broadcast together "
                  r"\(traceback in (logs/scores-\S+\.log)\)"),
        ("disk", r"\[scores\] error while scoring m1: no space left on device \(ENOSPC\): out/m1; nothing already "
                 r"computed was lost: models scored before are kept \(traceback in (logs/scores-\S+\.log)\)"),
    ],
)
def test_a_stage_process_ends_in_the_one_line_and_status_1(tmp_path, fault, expected):
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(STAGE))
    result = subprocess.run([sys.executable, str(script), "--model", "m1", "--fault", fault], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    found = re.fullmatch(expected, result.stderr.strip())
    assert found, result.stderr
    assert "Traceback (most recent call last)" in (tmp_path / found.group(1)).read_text()
