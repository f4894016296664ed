"""Content-keyed folders and files: keys by path and content, records written last, damage never read."""

import hashlib
import json
import re

import pytest

from deepmouse.errors import CacheError
from deepmouse.keyed import KeyedFile, KeyedFolder, describe_key_change, input_record, key_digest, make_key


@pytest.fixture
def project(tmp_path):
    """A project root (it holds dvc.yaml) with two files of the same name and content in different folders."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "table.parquet").write_bytes(b"the same bytes")
    return tmp_path


def _key(project, folder="a", **settings):
    return make_key(format_version=1, code="c" * 64,
                    inputs={"table": input_record(project / folder / "table.parquet")}, **settings)


def _fill(staging):
    (staging / "values.bin").write_bytes(bytes(range(200)))
    (staging / "sub").mkdir()
    (staging / "sub" / "notes.txt").write_text("computed\n")
    return {"values.bin": {"rows": 200}}


def test_an_input_is_named_by_its_path_from_the_project_root(project, tmp_path_factory):
    record = input_record(project / "a" / "table.parquet")
    assert record == {"path": "a/table.parquet", "sha256": hashlib.sha256(b"the same bytes").hexdigest()}
    outside = tmp_path_factory.mktemp("outside") / "table.parquet"
    outside.write_bytes(b"the same bytes")
    assert input_record(outside) == {"path": outside.resolve().as_posix(), "sha256": record["sha256"]}


def test_same_named_files_in_different_folders_key_differently(project):
    a, b = _key(project, "a"), _key(project, "b")
    assert a["inputs"]["table"]["sha256"] == b["inputs"]["table"]["sha256"]
    assert key_digest(a) != key_digest(b)
    assert describe_key_change(a, b) == "input table: a/table.parquet → b/table.parquet"


def test_an_unreadable_input_is_named(project):
    with pytest.raises(CacheError, match=rf"{re.escape(str(project / 'c.parquet'))}: cannot be read to key a cache"):
        input_record(project / "c.parquet")


def test_make_key_refuses_settings_named_as_common_parts_and_malformed_inputs(project):
    with pytest.raises(ValueError, match=r"key settings \['format'\] take the names of the common parts"):
        make_key(format_version=1, code="x", **{"format": 2})
    with pytest.raises(ValueError, match=r"input 'table': expected \{'path', 'sha256'\}"):
        make_key(format_version=1, code="x", inputs={"table": {"path": "a"}})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        make_key(format_version=1, code="x", alpha=float("nan"))


def test_the_key_change_names_each_changed_part(project):
    stored = _key(project, model_id="m", params={"alphas": [1, 10], "folds": 5}, versions={"torch": "2.1"})
    (project / "a" / "table.parquet").write_bytes(b"other bytes")
    inputs = {"table": input_record(project / "a" / "table.parquet"),
              "extra": input_record(project / "b" / "table.parquet")}
    current = make_key(format_version=2, code="d" * 64, inputs=inputs, model_id="m",
                       params={"alphas": [1, 100], "folds": 5}, versions={"torch": "2.2"}, new=True)
    assert describe_key_change(stored, current) == (
        "format 1 → 2; code changed; input extra added; input table: a/table.parquet content changed; "
        "new (none) → True; params.alphas [1, 10] → [1, 100]; versions.torch '2.1' → '2.2'")
    assert describe_key_change(stored, stored) is None
    assert describe_key_change(stored, current, labels={"code": "the code changed"}, ignore=("format", "inputs",
                                                                                           "versions", "new")) == (
        "the code changed; params.alphas [1, 10] → [1, 100]")
    long = dict(stored, model_id="x" * 80)
    assert describe_key_change(stored, long) == "model_id changed"


# ------------------------------------------------------------------------------- folders
def test_a_folder_is_written_with_its_record_last_and_read_back(project):
    key = _key(project, model_id="m")
    folder = KeyedFolder(project / "entry", "entry.json")
    assert folder.reason_to_recompute(key) == "no entry yet"
    folder.write(key, _fill, extra={"model": {"n_params": 3}})
    record = folder.read(key_digest(key))
    assert record["key"] == key and record["digest"] == key_digest(key) and record["model"] == {"n_params": 3}
    assert sorted(record["files"]) == ["sub/notes.txt", "values.bin"]
    assert record["files"]["values.bin"]["rows"] == 200 and record["files"]["values.bin"]["bytes"] == 200
    assert folder.reason_to_recompute(key) is None and folder.is_current(key_digest(key))
    assert sorted(p.name for p in project.iterdir()) == ["a", "b", "dvc.yaml", "entry"]


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, said", [
    ("values.bin", _flip, r"sha256 differs from entry.json \(corrupted\)"),
    ("values.bin", lambda p: p.write_bytes(p.read_bytes()[:50]), r"50 bytes, expected 200 \(truncated\?\)"),
    ("sub/notes.txt", lambda p: p.unlink(), r"missing \(listed in entry.json\)"),
    ("entry.json", _flip, r"(not valid JSON .*|its content does not match its record_sha256 \(corrupted or edited\))"),
    ("entry.json", lambda p: p.write_bytes(p.read_bytes()[:-30]), r"not valid JSON \(.*; truncated or corrupted\)"),
    ("entry.json", lambda p: p.write_bytes(b"\xff\xfe"), r"not UTF-8 text \(corrupted\)"),
])
def test_a_damaged_file_is_a_reason_to_recompute_and_is_never_read(project, name, damage, said):
    key = _key(project)
    folder = KeyedFolder(project / "entry", "entry.json")
    folder.write(key, _fill)
    path = project / "entry" / name
    damage(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: {said}", folder.reason_to_recompute(key))
    with pytest.raises(CacheError, match=rf"{re.escape(str(path))}: {said}"):
        folder.read(key_digest(key))
    assert not folder.is_current(key_digest(key))


def test_a_missing_record_and_a_record_without_its_seal(project):
    key = _key(project)
    folder = KeyedFolder(project / "entry", "entry.json")
    folder.write(key, _fill)
    record = json.loads(folder.record_path.read_text())
    del record["record_sha256"]
    folder.record_path.write_text(json.dumps(record))
    assert folder.reason_to_recompute(key).endswith("entry.json: not a cache record (no record_sha256; written by an "
                                                    "older format or another program)")
    folder.record_path.unlink()
    with pytest.raises(CacheError, match=rf"{re.escape(str(folder.folder))}: no entry.json; the entry is incomplete"):
        folder.record()


def test_reading_only_some_files_checks_only_those(project):
    key = _key(project)
    folder = KeyedFolder(project / "entry", "entry.json")
    folder.write(key, _fill)
    (project / "entry" / "values.bin").write_bytes(b"garbage")
    assert folder.read(key_digest(key), names=["sub/notes.txt"])["digest"] == key_digest(key)
    with pytest.raises(CacheError, match=r"values.bin: 7 bytes, expected 200"):
        folder.read(key_digest(key), names=["values.bin"])
    with pytest.raises(CacheError, match=r"other.bin: not listed in"):
        folder.read(names=["other.bin"])


def test_an_entry_for_another_key_is_refused_and_its_change_named(project):
    key = _key(project, seed=0)
    folder = KeyedFolder(project / "entry", "entry.json")
    folder.write(key, _fill)
    other = _key(project, seed=1)
    assert folder.reason_to_recompute(other) == "key changed: seed 0 → 1"
    assert folder.reason_to_recompute(other, ignore=("seed",)) is None
    with pytest.raises(CacheError, match=rf"entry: cache entry is for key {key_digest(key)}, "
                                         rf"expected {key_digest(other)}; it was computed with other settings"):
        folder.read(key_digest(other))


def test_a_failed_fill_keeps_the_old_entry_and_leaves_nothing_beside_it(project):
    key = _key(project)
    folder = KeyedFolder(project / "entry", "entry.json")
    folder.write(key, _fill)
    before = {p.name: p.read_bytes() for p in (project / "entry").iterdir() if p.is_file()}

    def fail(staging):
        (staging / "values.bin").write_bytes(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        folder.write(_key(project, seed=5), fail)
    assert {p.name: p.read_bytes() for p in (project / "entry").iterdir() if p.is_file()} == before
    assert sorted(p.name for p in project.iterdir()) == ["a", "b", "dvc.yaml", "entry"]


def test_write_refuses_reserved_names(project):
    folder = KeyedFolder(project / "entry", "entry.json")
    with pytest.raises(ValueError, match=r"extra record fields \['digest'\] take reserved names"):
        folder.write(_key(project), _fill, extra={"digest": "x"})
    with pytest.raises(ValueError, match="entry.json: written by fill"):
        folder.write(_key(project), lambda staging: (staging / "entry.json").write_text("{}") and None)
    with pytest.raises(ValueError, match=r"facts given for files not written: \['absent.bin'\]"):
        folder.write(_key(project), lambda staging: {"absent.bin": {"rows": 1}})
    assert not (project / "entry").exists()


def test_copy_checks_the_source_and_the_copy(project):
    key = _key(project)
    source = KeyedFolder(project / "store" / key_digest(key), "entry.json")
    source.write(key, _fill)
    target = KeyedFolder(project / "entry", "entry.json")
    target.copy_from(source, key_digest(key))
    assert target.reason_to_recompute(key) is None
    assert (project / "entry" / "entry.json").read_bytes() == source.record_path.read_bytes()
    _flip(source.folder / "values.bin")
    with pytest.raises(CacheError, match=r"values.bin: sha256 differs from entry.json \(corrupted\)"):
        KeyedFolder(project / "entry2", "entry.json").copy_from(source, key_digest(key))
    assert not (project / "entry2").exists()
    with pytest.raises(ValueError, match="records named differently"):
        KeyedFolder(project / "entry3", "key.json").copy_from(source, key_digest(key))


# --------------------------------------------------------------------------------- files
def test_a_keyed_file_round_trips_and_names_what_changed(project):
    key = _key(project, params={"max_nan": 0.0})
    kept = KeyedFile(project / "verdicts" / "m.json")
    assert kept.reason_to_recompute(key) == "no entry yet"
    kept.write(key, {"passed": True, "rows": 3})
    assert kept.reason_to_recompute(key) is None and kept.read(key) == {"passed": True, "rows": 3}
    other = _key(project, "b", params={"max_nan": 0.1})
    assert kept.reason_to_recompute(other) == ("key changed: input table: a/table.parquet → b/table.parquet; "
                                               "params.max_nan 0.0 → 0.1")
    with pytest.raises(CacheError, match=r"m.json: kept for another key \(input table: a/table.parquet → "):
        kept.read(other)


@pytest.mark.parametrize("damage, said", [
    (lambda p: p.write_text(p.read_text().replace('"rows": 3', '"rows": 4')),
     r"its content does not match its record_sha256 \(corrupted or edited\)"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]), r"not valid JSON \(.*; truncated or corrupted\)"),
    (lambda p: p.write_text(json.dumps({"value": 1})), r"not a cache record \(no record_sha256.*\)"),
])
def test_a_damaged_keyed_file_is_a_reason_to_recompute_and_is_never_read(project, damage, said):
    key = _key(project)
    kept = KeyedFile(project / "m.json")
    kept.write(key, {"passed": True, "rows": 3})
    damage(kept.path)
    assert re.fullmatch(rf"{re.escape(str(kept.path))}: {said}", kept.reason_to_recompute(key))
    with pytest.raises(CacheError, match=rf"{re.escape(str(kept.path))}: {said}"):
        kept.read(key)
    kept.path.unlink()
    with pytest.raises(CacheError, match=r"m.json: missing"):
        kept.read(key)
