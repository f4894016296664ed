"""`data.source: table`: recordings of your own as tables, read, checked and pulled.

Every bad input stops the pull with a message naming the file and the row, neuron,
condition or image at fault, before anything is written. The science: tables written
from a simulated Brain Observatory dataset give the NWB route's stimuli, responses,
reliabilities and flags exactly.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepmouse.config import NeuronsConfig, SimulatedConfig, parse_params
from deepmouse.data.selection import annotate_listed_neurons
from deepmouse.data.simulated import simulate_dataset, simulated_scenes
from deepmouse.data.table import read_recordings, read_scene_images
from deepmouse.data.table_columns import condition_index
from deepmouse.errors import ConfigError, DataError, SourceError
from deepmouse.pipeline import run_fingerprint, run_neurons, run_pull, run_responses, run_stimuli

N_NEURONS, N_TRIALS = 6, 3
IDS = 1000 + np.arange(N_NEURONS)
CONDITIONS = [str(i) for i in range(118)] + ["blank"]
QUIET = {"progress": lambda _: None}


def make_frames(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Wide means with inline areas, and long trials whose means they are (float32 trials)."""
    rng = np.random.default_rng(seed)
    tuning = rng.normal(size=(N_NEURONS, 119))
    trials = (tuning[:, :, None] + 0.5 * rng.normal(size=(N_NEURONS, 119, N_TRIALS))).astype(np.float32)
    means = trials.astype(np.float64).mean(axis=2)
    responses = pd.DataFrame(means, columns=CONDITIONS)
    responses.insert(0, "neuron_id", IDS)
    responses["area"] = ["VISp"] * 3 + ["VISl"] * 3
    neuron, stimulus, repeat = np.meshgrid(np.arange(N_NEURONS), np.arange(119), np.arange(N_TRIALS), indexing="ij")
    long_trials = pd.DataFrame({
        "neuron_id": IDS[neuron.ravel()],
        "condition": [CONDITIONS[s] for s in stimulus.ravel()],
        "trial": repeat.ravel(),
        "response": trials.ravel(),
    })
    return {"responses": responses, "trials": long_trials}


def write_table(frame: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return str(path)


def write_images(folder: Path, n: int = 118, shape=(8, 10), seed: int = 0, name="{}.png") -> str:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name.format(i))
    return str(folder)


def write_inputs(folder: Path, frames: dict[str, pd.DataFrame], images: bool = True) -> dict:
    """``data.table`` for ``frames`` written as CSV into ``folder`` (``metadata`` and ``trials`` if there)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = {"responses": write_table(frames["responses"], folder / "responses.csv")}
    for name in ("metadata", "trials"):
        if frames.get(name) is not None:
            table[name] = write_table(frames[name], folder / f"{name}.csv")
    if images:
        table["images"] = write_images(folder / "images")
    return table


def params_for(table: dict, **sections):
    return parse_params({"data": {"source": "table", "table": table}, **sections})


def assert_refused(tmp_path: Path, table: dict, match: str, error=DataError, **sections) -> None:
    """The pull stops with ``error`` matching ``match``, and leaves nothing where it writes."""
    project = tmp_path / "project"
    with pytest.raises(error, match=match):
        run_pull(params_for(table, **sections), project / "data" / "raw" / "table", **QUIET)
    assert not project.exists()


# ------------------------------------------------------------------------------- reading
def test_condition_labels():
    assert [condition_index(x) for x in ("0", "007", 117, "117.0", "blank", "BLANK", "-1", -1)] == \
        [0, 7, 117, 117, 118, 118, 118, 118]
    assert [condition_index(x) for x in ("118", "scene_3", "7.5", "", None)] == [None] * 5


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_wide_and_long_layouts_read_the_same(tmp_path, suffix):
    frames = make_frames()
    wide = write_inputs(tmp_path / "wide", frames, images=False)
    expected = read_recordings(params_for(wide).data.table, **QUIET)

    responses = frames["responses"]
    long = responses.melt(id_vars=["neuron_id"], value_vars=CONDITIONS, var_name="condition", value_name="response")
    long["condition"] = long["condition"].replace("blank", "-1").astype(int)  # the NWB files' code for the blank
    folder = tmp_path / "long"
    folder.mkdir()
    table = {"responses": write_table(long.sample(frac=1, random_state=1), folder / f"responses{suffix}"),
             "metadata": write_table(responses[["neuron_id", "area"]].iloc[::-1], folder / f"metadata{suffix}"),
             "trials": write_table(frames["trials"].sample(frac=1, random_state=2), folder / f"trials{suffix}")}
    got = read_recordings(params_for(table).data.table, **QUIET)

    pd.testing.assert_frame_equal(got.neurons.set_index("neuron_id").loc[IDS],
                                  expected.neurons.set_index("neuron_id").loc[IDS])
    for name, keys in (("means", ["neuron_id", "stimulus_index"]), ("trials", ["neuron_id", "stimulus_index", "trial"])):
        pd.testing.assert_frame_equal(getattr(got, name).sort_values(keys).reset_index(drop=True),
                                      getattr(expected, name).sort_values(keys).reset_index(drop=True))


def test_reference_layout_cell_specimen_id_and_metadata_defaults(tmp_path):
    frames = make_frames()
    responses = frames["responses"].rename(columns={"neuron_id": "cell_specimen_id"})
    responses["area"] = ["VISp", "VISp", "VISl", "VISl", "VISal", "VISal"]
    responses["cre_line"] = ["Rbp4-Cre_KL100", None, "Cux2-CreERT2", None, "Sst-IRES-Cre", None]
    responses["imaging_depth"] = [375, 175, None, 375.0, 550, None]
    responses["p_ns"] = 0.01  # a column of the reference study's metadata: left out
    table = {"responses": write_table(responses, tmp_path / "cell_response_average.csv")}
    neurons = read_recordings(params_for(table).data.table, **QUIET).neurons
    assert neurons["experiment_id"].tolist() == [0] * 6 and neurons["container_id"].tolist() == [0] * 6
    assert neurons["cre_line"].tolist() == ["Rbp4-Cre_KL100", "unknown", "Cux2-CreERT2", "unknown", "Sst-IRES-Cre",
                                            "unknown"]
    # Rbp4 says L5 whatever the depth; otherwise the depth, where given, else unknown.
    assert neurons["cortical_layer"].tolist() == ["L5", "L2/3", "unknown", "L5", "L6", "unknown"]
    assert neurons["imaging_depth"].isna().tolist() == [False, False, True, False, False, True]
    assert "p_ns" not in neurons.columns
    assert neurons["animal"].tolist() == ["container-0"] * 6  # without the column: one animal per container


def test_the_animal_column_names_each_neurons_mouse_through_to_the_neurons_table(tmp_path):
    frames = make_frames()
    frames["metadata"] = pd.DataFrame({"neuron_id": IDS, "animal": ["m1", "m2", "m3", 4, 4, " m1 "]})
    table = write_inputs(tmp_path / "inputs", frames)
    params = params_for(table)
    run_pull(params, tmp_path / "raw", **QUIET)
    run_responses(params, tmp_path / "raw", tmp_path / "responses", **QUIET)
    run_neurons(params, tmp_path / "responses", tmp_path / "neurons.parquet", tmp_path / "counts.json")
    neurons = pd.read_parquet(tmp_path / "neurons.parquet").set_index("neuron_id")
    assert neurons.loc[IDS, "animal"].tolist() == ["m1", "m2", "m3", "4", "4", "m1"]


def test_pull_writes_normalised_recordings_and_a_manifest(tmp_path):
    frames = make_frames()
    frames["metadata"] = pd.DataFrame({"neuron_id": IDS, "experiment_id": [7] * 3 + [8] * 3,
                                       "cre_line": "Cux2-CreERT2", "imaging_depth": 175})
    table = write_inputs(tmp_path / "inputs", frames)
    out = tmp_path / "raw" / "table"
    summary = run_pull(params_for(table), out, **QUIET)
    assert summary.startswith(f"pull: {N_NEURONS} neurons in 2 experiments (VISp, VISl), with trials")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "table" and manifest["trial_responses"] is True
    assert sorted(manifest["files"]) == ["images.npy", "means.parquet", "neurons.parquet", "trials.parquet"]
    assert [e["experiment_id"] for e in manifest["experiments"]] == [7, 8]
    assert manifest["inputs"]["responses"]["path"] == table["responses"]
    assert sorted(path.name for path in out.parent.iterdir()) == ["table"]  # no staging folder left
    images = np.load(out / "images.npy")
    assert images.shape == (118, 8, 10) and images.dtype == np.uint8
    assert np.array_equal(images[5], np.asarray(Image.open(Path(table["images"]) / "5.png")))


def test_fingerprint_describes_the_tables_and_every_image(tmp_path, monkeypatch):
    table = write_inputs(tmp_path / "inputs", make_frames())
    monkeypatch.chdir(tmp_path)
    params = params_for(table)
    run_fingerprint(params, tmp_path / "fp" / "source.json", tmp_path / "fp" / "weights")
    first = json.loads((tmp_path / "fp" / "source.json").read_text())
    assert first["table"]["responses"] == table["responses"]
    names = {record["path"] for record in first["files"]}
    assert {"inputs/responses.csv", "inputs/trials.csv", "inputs/images/0.png", "inputs/images/117.png"} <= names
    assert len(names) == 2 + 118
    os.utime(Path(table["images"]) / "3.png", ns=(1, 1))
    run_fingerprint(params, tmp_path / "fp" / "source.json", tmp_path / "fp" / "weights")
    assert json.loads((tmp_path / "fp" / "source.json").read_text()) != first


# ------------------------------------------------------------------------------- bad responses
def _drop(name):
    return lambda f: f["responses"].drop(columns=[name], inplace=True)


def _set(row, column, value):
    def change(frames):
        frame = frames["responses"]
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    return change


BAD_RESPONSES = {
    "117 scenes": (_drop("117"), r"responses\.csv: no column for scene 117 \(118 of 119 conditions found\); "
                                 r"conditions are named 0 \.\.\. 117"),
    "no blank": (_drop("blank"), r"no column for the blank"),
    "blank as 118": (lambda f: f["responses"].rename(columns={"blank": "118"}, inplace=True),
                     r"responses\.csv: column '118' names no condition; conditions are named 0 \.\.\. 117 .*'blank'"),
    "scene twice": (lambda f: f["responses"].insert(5, "007", 0.0),
                    r"columns '(7|007)' and '(7|007)' both hold scene 7"),
    "NaN response": (_set(1, "5", np.nan),
                     r"responses\.csv: row 2 \(neuron 1001\): the response to scene 5 is NaN"),
    "infinite response": (_set(4, "blank", np.inf),
                          r"row 5 \(neuron 1004\): the response to the blank is infinite"),
    "text response": (_set(2, "9", "high"), r"row 3 \(neuron 1002\): column '9' holds 'high', not a number"),
    "duplicate id": (_set(2, "neuron_id", 1000),
                     r"responses\.csv: neuron 1000 appears in rows 1, 3; neuron ids must be unique"),
    "id not an integer": (_set(3, "neuron_id", "cell-4"), r"row 4: neuron_id 'cell-4' is not an integer id"),
    "no id column": (lambda f: f["responses"].rename(columns={"neuron_id": "id"}, inplace=True),
                     r"no id column; name it neuron_id or cell_specimen_id"),
    "unknown area": (_set(3, "area", "V1"),
                     r"responses\.csv: row 4 \(neuron 1003\): unknown area 'V1' \(1 row\(s\).*allowed: the Brain "
                     r"Observatory areas VISp, VISl, VISal, VISpm, VISrl, VISam\. To accept another area, list it in "
                     r"data\.table\.extra_areas"),
    "missing area": (_set(0, "area", None), r"row 1 \(neuron 1000\): area is missing"),
    "no area column": (lambda f: f["responses"].drop(columns=["area"], inplace=True), r"no 'area' column"),
    "experiment id not whole": (lambda f: f["responses"].insert(1, "experiment_id", [1, 1, 1.5, 2, 2, 2]),
                                r"row 3 \(neuron 1002\): experiment_id 1\.5 is not a whole number"),
}


@pytest.mark.parametrize("case", BAD_RESPONSES)
def test_bad_responses_are_named_and_nothing_is_written(tmp_path, case):
    change, match = BAD_RESPONSES[case]
    frames = make_frames()
    change(frames)
    assert_refused(tmp_path, write_inputs(tmp_path / "inputs", frames), match)


def _long(frames):
    responses = frames["responses"]
    long = responses.melt(id_vars=["neuron_id", "area"], var_name="condition", value_name="response")
    return long.sort_values(["neuron_id"], kind="stable").reset_index(drop=True)


BAD_LONG = {
    "missing condition": (lambda t: t.drop(index=t.index[(t["neuron_id"] == 1002) & (t["condition"] == "blank")]),
                          r"responses\.csv: neuron 1002 has no row for the blank \(1 of its 119 conditions missing\)"),
    "repeated condition": (lambda t: pd.concat([t, t.iloc[[3]]], ignore_index=True),
                           r"rows 4 and 715 both hold neuron 1000's response to scene 3"),
    "unknown condition": (lambda t: t.assign(condition=t["condition"].replace("blank", "gray")),
                          r"row 119 \(neuron 1000\): condition 'gray' names no condition"),
    "two areas for a neuron": (lambda t: t.assign(area=np.where(t.index == 5, "VISl", t["area"])),
                               r"neuron 1000 has several values of 'area' \(VISl, VISp\)"),
    "NaN response": (lambda t: t.assign(response=np.where(t.index == 200, np.nan, t["response"])),
                     r"row 201 \(neuron 1001, scene 81\): response is NaN"),
}


@pytest.mark.parametrize("case", BAD_LONG)
def test_bad_long_responses_are_named(tmp_path, case):
    change, match = BAD_LONG[case]
    frames = make_frames()
    frames["responses"] = change(_long(frames))
    assert_refused(tmp_path, write_inputs(tmp_path / "inputs", frames), match)


# ------------------------------------------------------------------------------- bad metadata
def _metadata(frames):
    frames["metadata"] = frames["responses"][["neuron_id", "area"]].copy()
    frames["responses"] = frames["responses"].drop(columns=["area"])
    return frames["metadata"]


BAD_METADATA = {
    "extra neuron": (lambda m: pd.concat([m, pd.DataFrame({"neuron_id": [9999], "area": ["VISp"]})]),
                     r"metadata\.csv: row 7: neuron 9999 is not in .*responses\.csv"),
    "missing neuron": (lambda m: m[m["neuron_id"] != 1002],
                       r"metadata\.csv: no row for neuron 1002 of .*responses\.csv \(1 neuron\(s\) without metadata\)"),
    "duplicate neuron": (lambda m: pd.concat([m, m.iloc[[1]]]), r"metadata\.csv: neuron 1001 appears in rows 2, 7"),
    "unknown area": (lambda m: m.assign(area=["VISp", "VISp", "VISp", "VISl", "LM", "VISl"]),
                     r"metadata\.csv: row 5 \(neuron 1004\): unknown area 'LM'"),
    "blank animal": (lambda m: m.assign(animal=["a", "a", " ", "b", "b", "b"]),
                     r"metadata\.csv: row 3 \(neuron 1002\): animal is missing; give it for every neuron or leave "
                     r"the column out"),
}


@pytest.mark.parametrize("case", BAD_METADATA)
def test_metadata_rows_must_match_the_responses(tmp_path, case):
    change, match = BAD_METADATA[case]
    frames = make_frames()
    frames["metadata"] = change(_metadata(frames))
    assert_refused(tmp_path, write_inputs(tmp_path / "inputs", frames), match)


def test_a_metadata_column_in_both_files_is_refused(tmp_path):
    frames = make_frames()
    frames["metadata"] = frames["responses"][["neuron_id", "area"]]
    assert_refused(tmp_path, write_inputs(tmp_path / "inputs", frames),
                   r"metadata\.csv: column 'area' is also in .*responses\.csv")


def test_extra_areas_are_accepted_only_when_listed(tmp_path):
    frames = make_frames()
    frames["responses"]["area"] = ["VISp", "VISp", "RSPagl", "RSPagl", "LI", "LI"]
    table = write_inputs(tmp_path / "inputs", frames)
    assert_refused(tmp_path, {**table, "extra_areas": ["RSPagl"]},
                   r"row 5 \(neuron 1004\): unknown area 'LI' .* and data\.table\.extra_areas \(RSPagl\)")
    run_pull(params_for({**table, "extra_areas": ["RSPagl", "LI"]}), tmp_path / "raw", **QUIET)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["areas"] == ["VISp", "LI", "RSPagl"] and manifest["extra_areas"] == ["RSPagl", "LI"]


# ------------------------------------------------------------------------------- bad trials
def _trial_change(column, row, value):
    def change(t):
        t[column] = t[column].astype(object)
        t.loc[row, column] = value
        return t
    return change


BAD_TRIALS = {
    "unknown neuron": (_trial_change("neuron_id", 10, 4242),
                       r"trials\.csv: row 11: neuron 4242 is not in the responses table"),
    "unknown condition": (_trial_change("condition", 20, "118"),
                          r"trials\.csv: row 21 \(neuron 1000\): condition '118' names no condition"),
    "NaN response": (_trial_change("response", 30, np.nan),
                     r"trials\.csv: row 31 \(neuron 1000, scene 10\): response is NaN"),
    "infinite response": (_trial_change("response", 30, np.inf), r"row 31 \(neuron 1000, scene 10\): response is infinite"),
    "trial twice": (_trial_change("trial", 1, 0),
                    r"trials\.csv: row 2: neuron 1000, scene 0, trial 0 appears twice"),
    "neuron without trials": (lambda t: t[t["neuron_id"] != 1003],
                              r"trials\.csv: no trials for neuron 1003 of the responses"),
    "one trial": (lambda t: t[~((t["neuron_id"] == 1001) & (t["condition"] == "4") & (t["trial"] > 0))],
                  r"trials\.csv: neuron 1001 has 1 trial\(s\) of scene 4; reliability and noise ceilings need at least 2"),
    "unequal trials": (lambda t: t[~((t["neuron_id"] == 1002) & (t["condition"] == "blank") & (t["trial"] == 2))],
                       r"neuron 1002 has 2 trials of the blank, neuron 1000 of the same experiment 0 has 3; .*"
                       r"own experiment_id"),
    "means disagree": (lambda t: t.assign(response=np.where(t.index < 3, t["response"] + 1.0, t["response"])),
                       r"responses\.csv: neuron 1000: the mean response to scene 0 is .*, but its trials in "
                       r".*trials\.csv average"),
    "running speed differs": (lambda t: t.assign(running_speed=np.where(t.index == 3 * 119 * N_TRIALS + 4, 9.0, 1.0)),
                              r"experiment 0, scene 1, repeat 1: the neurons give different running_speed values"),
    "no response column": (lambda t: t.rename(columns={"response": "dff"}),
                           r"trials\.csv: column 'response': expected present, got missing; a trials table has"),
}


@pytest.mark.parametrize("case", BAD_TRIALS)
def test_bad_trials_are_named_and_nothing_is_written(tmp_path, case):
    change, match = BAD_TRIALS[case]
    frames = make_frames()
    frames["trials"] = change(frames["trials"])
    assert_refused(tmp_path, write_inputs(tmp_path / "inputs", frames), match)


def test_neurons_of_separate_experiments_may_have_different_trials(tmp_path):
    frames = make_frames()
    trials = frames["trials"]
    frames["trials"] = trials[~((trials["neuron_id"] >= 1003) & (trials["trial"] == 2))]
    frames["responses"][CONDITIONS] = frames["trials"].groupby(["neuron_id", "condition"])["response"].mean() \
        .astype(np.float64).unstack().loc[IDS, CONDITIONS].to_numpy()
    frames["responses"] = frames["responses"].assign(experiment_id=[1, 1, 1, 2, 2, 2])
    table = write_inputs(tmp_path / "inputs", frames)
    got = read_recordings(params_for(table).data.table, **QUIET)
    assert got.trials.groupby("experiment_id")["trial"].max().tolist() == [2, 1]


def test_trials_without_labels_are_numbered_by_row_order(tmp_path):
    frames = make_frames()
    labelled = read_recordings(params_for(write_inputs(tmp_path / "a", frames, images=False)).data.table, **QUIET)
    frames["trials"] = frames["trials"].drop(columns=["trial"])
    unlabelled = read_recordings(params_for(write_inputs(tmp_path / "b", frames, images=False)).data.table, **QUIET)
    pd.testing.assert_frame_equal(labelled.trials, unlabelled.trials)


def test_an_earlier_pull_is_kept_when_a_new_one_is_refused(tmp_path):
    frames = make_frames()
    table = write_inputs(tmp_path / "inputs", frames)
    out = tmp_path / "raw" / "table"
    run_pull(params_for(table), out, **QUIET)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    frames["responses"].loc[2, "area"] = "V1"
    write_table(frames["responses"], Path(table["responses"]))
    with pytest.raises(DataError, match="unknown area 'V1'"):
        run_pull(params_for(table), out, **QUIET)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in out.parent.iterdir()) == ["table"]


def test_unknown_table_format_names_the_key(tmp_path):
    path = tmp_path / "responses.xlsx"
    path.write_bytes(b"not a table")
    assert_refused(tmp_path, {"responses": str(path)}, r"data\.table\.responses: .*responses\.xlsx: unknown table "
                                                       r"format '\.xlsx'", error=ConfigError)


# ------------------------------------------------------------------------------- images
def _image_case(tmp_path, change) -> str:
    folder = Path(write_images(tmp_path / "images"))
    change(folder)
    return str(folder)


BAD_IMAGES = {
    "117 images": (lambda d: (d / "117.png").unlink(), r"images: 117 of the 118 scenes; none for scene\(s\) 117"),
    "118 named": (lambda d: (d / "117.png").rename(d / "118.png"), r"118\.png: not a scene image"),
    "other file": (lambda d: (d / "notes.txt").write_text("x"), r"notes\.txt: not a scene image"),
    "one scene twice": (lambda d: write_images(d, n=1, name="00{}.jpg"), r"images: 0\.png and 000\.jpg are both scene 0"),
    "unreadable": (lambda d: (d / "12.png").write_bytes(b"\x89PNG broken"), r"12\.png: cannot be read as an image"),
    "another size": (lambda d: Image.fromarray(np.zeros((9, 10), np.uint8)).save(d / "40.png"),
                     r"40\.png: 10x9 px, but scene 0 \(0\.png\) is 10x8"),
    "16 bit": (lambda d: Image.fromarray(np.zeros((8, 10), np.uint16)).save(d / "7.png"),
               r"7\.png: image mode '(I;16|I)' has more than 8 bits per channel"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_image_folders_are_named_and_nothing_is_written(tmp_path, case):
    change, match = BAD_IMAGES[case]
    table = write_inputs(tmp_path / "inputs", make_frames(), images=False)
    assert_refused(tmp_path, {**table, "images": _image_case(tmp_path, change)}, match)


def test_images_in_colour_and_padded_names_are_read_as_grayscale(tmp_path):
    folder = tmp_path / "images"
    write_images(folder, name="{:03d}.png")
    colour = np.zeros((8, 10, 3), np.uint8)
    colour[..., 1] = 200
    (folder / "005.png").unlink()
    Image.fromarray(colour).save(folder / "005.jpeg", quality=100)
    (folder / ".DS_Store").write_bytes(b"hidden files are left out")
    images = read_scene_images(folder)
    assert images.shape == (118, 8, 10)
    assert abs(int(images[5].mean()) - round(200 * 0.587)) <= 2  # ITU-R 601 luma of pure green


# ------------------------------------------------------------------------------- Brain Observatory scenes
def test_null_images_take_the_scenes_of_a_session_in_the_allen_cache(tmp_path):
    from tests.data.conftest import write_simulated_session

    cache = tmp_path / "allen_cache"
    (cache / "ophys_experiment_data").mkdir(parents=True)
    session = write_simulated_session(cache / "ophys_experiment_data" / "601.nwb", seed=1)
    (cache / "ophys_experiment_data" / "600.nwb").write_bytes(b"an unfinished download")
    table = write_inputs(tmp_path / "inputs", make_frames(), images=False)
    params = parse_params({"data": {"source": "table", "table": table, "allen": {"cache_dir": str(cache)}}})
    run_pull(params, tmp_path / "raw", **QUIET)
    from deepmouse.data.nwb import read_stimulus_templates

    assert np.array_equal(np.load(tmp_path / "raw" / "images.npy"), read_stimulus_templates(session))
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["inputs"]["images"] == {"brain_observatory": str(session)}


def test_null_images_offline_say_how_to_give_images(tmp_path, monkeypatch):
    def offline(url):
        raise URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr("allensdk.core.json_utilities.read_url_get", offline)
    table = write_inputs(tmp_path / "inputs", make_frames(), images=False)
    cache = tmp_path / "cache"
    project = tmp_path / "project"
    params = parse_params({"data": {"source": "table", "table": table, "allen": {"cache_dir": str(cache)}}})
    with pytest.raises(SourceError) as caught:
        run_pull(params, project / "raw", **QUIET)
    message = str(caught.value)
    assert "data.table.images is null" in message and "could not reach api.brain-map.org" in message
    assert "give your own 118 scenes as a folder in data.table.images" in message
    assert "data.source: nwb_dir" not in message
    assert not project.exists()


# ------------------------------------------------------------------------------- neurons without trials
def test_without_trials_nothing_is_made_up(tmp_path):
    frames = make_frames()
    frames["trials"] = None
    frames["responses"].loc[5, CONDITIONS] = 0.25  # a neuron that never varies: not responsive
    table = write_inputs(tmp_path / "inputs", frames)
    params = params_for(table, neurons={"reliability_threshold": 0.99})
    run_pull(params, tmp_path / "raw", **QUIET)
    lines = []
    run_responses(params, tmp_path / "raw", tmp_path / "responses", progress=lines.append)
    assert any("reliability, CC_max and noise ceilings will not be computed" in line for line in lines)
    assert pd.read_parquet(tmp_path / "responses" / "trials.parquet").empty
    means = pd.read_parquet(tmp_path / "responses" / "means.parquet")
    assert len(means) == N_NEURONS * 119 and (means["n_trials"] == 0).all()
    summary = run_neurons(params, tmp_path / "responses", tmp_path / "neurons.parquet", tmp_path / "counts.json")
    assert "no trials, so no reliability threshold" in summary
    neurons = pd.read_parquet(tmp_path / "neurons.parquet")
    for column in ("reliability", "cc_max", "anova_p", "running_r", "image_selective", "running_modulated"):
        assert neurons[column].isna().all(), column
    assert neurons["selected"].tolist() == [True] * 5 + [False]
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["areas"]["VISp"]["median_reliability"] is None

    metadata = pd.read_parquet(tmp_path / "responses" / "neuron_metadata.parquet")
    for refused, key in (({"require_selective": True}, "require_selective"), ({"max_per_area": 2}, "max_per_area")):
        with pytest.raises(ConfigError, match=rf"neurons\.{key}: .*data\.table\.trials"):
            annotate_listed_neurons(metadata, None, means, NeuronsConfig(**refused))


# ------------------------------------------------------------------------------- the science
@pytest.fixture(scope="module")
def nwb_route(tmp_path_factory):
    """A simulated Brain Observatory dataset through the NWB route: raw, stimuli, responses, neurons."""
    root = tmp_path_factory.mktemp("nwb_route")
    cfg = SimulatedConfig(tuning="random", experiments_per_area=1, neurons_per_experiment=6, n_repeats=6,
                          image_height=24, image_width=30)
    simulate_dataset(root / "raw", cfg, scenes=simulated_scenes(cfg))
    params = parse_params({"neurons": {"n_splits": 20}})
    run_stimuli(root / "raw", root / "stimuli")
    run_responses(params, root / "raw", root / "responses", **QUIET)
    run_neurons(params, root / "responses", root / "neurons.parquet", root / "counts.json")
    return root


def test_tables_of_a_simulated_dataset_give_the_nwb_routes_numbers(tmp_path, nwb_route):
    neurons = pd.read_parquet(nwb_route / "neurons.parquet")
    means = pd.read_parquet(nwb_route / "responses" / "means.parquet")
    trials = pd.read_parquet(nwb_route / "responses" / "trials.parquet")
    ids = neurons["neuron_id"].to_numpy()

    # What a researcher with these recordings writes: the reference study's wide means, metadata
    # apart, trials long (shuffled rows, trial labels), and the scenes as PNG files.
    wide = means.pivot(index="neuron_id", columns="stimulus_index", values="mean_response").loc[ids]
    wide.columns = CONDITIONS
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    table = {
        "responses": write_table(wide.reset_index().rename(columns={"neuron_id": "cell_specimen_id"}),
                                 inputs / "cell_response_average.csv"),
        "metadata": write_table(neurons[["neuron_id", "experiment_id", "container_id", "animal", "area", "cre_line",
                                         "imaging_depth"]], inputs / "metadata.csv"),
        "trials": write_table(trials.assign(condition=np.where(trials["stimulus_index"] == 118, -1,
                                                               trials["stimulus_index"]))
                              [["neuron_id", "condition", "trial", "response", "running_speed"]]
                              .sample(frac=1, random_state=0), inputs / "trials.parquet"),
    }
    stimuli = np.load(nwb_route / "stimuli" / "stimuli.npy")
    (inputs / "images").mkdir()
    for i in range(118):
        Image.fromarray(stimuli[i]).save(inputs / "images" / f"{i}.png")
    table["images"] = str(inputs / "images")

    params = params_for(table, neurons={"n_splits": 20})
    run_pull(params, tmp_path / "raw", **QUIET)
    run_stimuli(tmp_path / "raw", tmp_path / "stimuli")
    run_responses(params, tmp_path / "raw", tmp_path / "responses", **QUIET)
    run_neurons(params, tmp_path / "responses", tmp_path / "neurons.parquet", tmp_path / "counts.json")

    assert np.array_equal(np.load(tmp_path / "stimuli" / "stimuli.npy"), stimuli)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "responses" / "means.parquet"), means)
    keys = ["neuron_id", "stimulus_index", "trial"]
    got_trials = pd.read_parquet(tmp_path / "responses" / "trials.parquet").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got_trials.drop(columns="presentation"),
                                  trials.sort_values(keys).reset_index(drop=True).drop(columns="presentation"))
    got = pd.read_parquet(tmp_path / "neurons.parquet")
    pd.testing.assert_frame_equal(got, neurons)  # reliability, CC_max, flags and selection, exactly
    assert got["selected"].any() and not got["selected"].all()
