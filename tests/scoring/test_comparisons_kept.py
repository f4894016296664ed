"""Comparisons kept from run to run: reused pairs give the table a full recomputation gives."""

import json

import numpy as np
import pandas as pd
import pytest

from deepmouse.scoring import comparisons, score_model
from deepmouse.scoring.comparisons import (COLUMNS, compare_models, comparisons_key, reusable_comparisons,
                                           write_comparisons)
from deepmouse.scoring.run import COMPARISONS_FILE, COMPARISONS_RECORD, _write_model_folder, compare_scored_models
from tests.scoring.conftest import neural_from_trials, random_layers, scoring_cfg, statistics_of
from tests.scoring.test_comparisons_vectorised import assert_same, loop_reference, seeded_tables


def test_reused_pairs_give_the_full_table_and_changed_models_are_computed_again():
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(n_models=6, seed=7)
    before = ~replicates["model_id"].eq("m5")
    previous = compare_models(model_scores[model_scores["model_id"] != "m5"], replicates[before], cfg)
    # m1's replicates change after the previous table: its pairs must not be reused.
    changed = replicates["model_id"].eq("m1")
    replicates.loc[changed, "value"] += np.random.default_rng(0).normal(0, 0.05, changed.sum())
    unchanged = {"m0", "m2", "m3", "m4"}
    table = compare_models(model_scores, replicates, cfg, previous=previous, unchanged=unchanged)
    assert_same(table, loop_reference(model_scores, replicates, cfg))

    # The reused statistics are read from the previous table, never recomputed: a planted value shows.
    planted = previous.copy()
    at = (planted["model_a"] == "m0") & (planted["model_b"] == "m2")
    planted.loc[at, "ci_low"] = -7.0
    at_changed = (planted["model_a"] == "m0") & (planted["model_b"] == "m1")
    planted.loc[at_changed, "ci_low"] = -7.0
    table = compare_models(model_scores, replicates, cfg, previous=planted, unchanged=unchanged)
    assert (table.loc[(table["model_a"] == "m0") & (table["model_b"] == "m2"), "ci_low"] == -7.0).all()
    assert (table.loc[(table["model_a"] == "m0") & (table["model_b"] == "m1"), "ci_low"] > -1).all()


def test_the_record_says_what_can_be_reused_and_why_not(tmp_path):
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(n_models=4, seed=8)
    table = compare_models(model_scores, replicates, cfg)
    table_path, record_path = tmp_path / "model_comparisons.parquet", tmp_path / "model_comparisons.json"
    key = comparisons_key(cfg)
    inputs = {f"m{i}": f"digest{i}" for i in range(4)}

    previous, unchanged, note = reusable_comparisons(table_path, record_path, key, inputs)
    assert previous is None and unchanged == set() and "every pair compared" in note and "no entry yet" in note

    write_comparisons(table, table_path, record_path, key, inputs)
    previous, unchanged, note = reusable_comparisons(table_path, record_path, key, {**inputs, "m1": "new", "m9": "x"})
    # read with its string columns dictionary-encoded
    pd.testing.assert_frame_equal(previous.astype(table[COLUMNS].dtypes.to_dict()), table[COLUMNS])
    assert unchanged == {"m0", "m2", "m3"} and "pairs of 3 of 5 models" in note

    other_level = comparisons_key(scoring_cfg(bootstrap={"n": 150, "level": 0.9}))
    previous, unchanged, note = reusable_comparisons(table_path, record_path, other_level, inputs)
    assert previous is None and not unchanged and "level" in note

    table.assign(ci_low=table["ci_low"] - 1).to_parquet(table_path, index=False)  # edited behind the record's back
    previous, unchanged, note = reusable_comparisons(table_path, record_path, key, inputs)
    assert previous is None and not unchanged and f"{table_path} is not the table {record_path} describes" in note

    record = json.loads(record_path.read_text())
    record["value"]["models"]["m0"] = "forged"
    record_path.write_text(json.dumps(record))  # the record is sealed: an edit is seen
    previous, unchanged, note = reusable_comparisons(table_path, record_path, key, inputs)
    assert previous is None and "every pair compared" in note

    table_path.unlink()
    write_comparisons(table, table_path, record_path, key, inputs)
    table_path.unlink()
    previous, unchanged, note = reusable_comparisons(table_path, record_path, key, inputs)
    assert previous is None and f"{table_path} is missing" in note


@pytest.fixture(scope="module")
def scored_tables():
    rng = np.random.default_rng(12)
    trials = {area: rng.normal(size=(40, 6))[:, :, None] + rng.normal(size=(40, 6, 4)) for area in ("VISp", "VISl")}
    neural = neural_from_trials(trials)
    cfg = scoring_cfg(bootstrap={"n": 60}, cv={"n_folds": 5})
    tables = {f"m{i}": score_model(f"m{i}", statistics_of(random_layers(np.random.default_rng(i), 40, sizes=(10, 30))),
                                   neural, cfg, progress=lambda _: None) for i in range(5)}
    return cfg, tables


def test_the_stage_keeps_unchanged_pairs_and_writes_what_a_full_comparison_writes(tmp_path, scored_tables,
                                                                                   monkeypatch):
    cfg, tables = scored_tables
    computed = []
    counted = comparisons.paired_differences

    def counting(observed, values, first, second, level):
        computed.append(first.size)
        return counted(observed, values, first, second, level)

    monkeypatch.setattr(comparisons, "paired_differences", counting)
    out = tmp_path / "scores"
    key = {"synthetic": True}

    def full(models):
        return compare_models(pd.concat([tables[m]["model_scores"] for m in models]),
                              pd.concat([tables[m]["bootstrap_replicates"] for m in models]), cfg)

    for m in ("m0", "m1", "m2", "m3"):
        _write_model_folder(out / "models" / m, tables[m], key)
    notes = []
    _, first = compare_scored_models(out, ["m0", "m1", "m2", "m3"], cfg, progress=notes.append)
    assert "every pair compared" in notes[-1]
    n_sites = first.groupby(["method", "layer_selection", "site_kind", "site"]).ngroups
    assert sum(computed) == n_sites * 6
    assert_same(first, full(["m0", "m1", "m2", "m3"]))

    _write_model_folder(out / "models" / "m4", tables["m4"], key)  # a model added
    computed.clear()
    _, added = compare_scored_models(out, ["m0", "m1", "m2", "m3", "m4"], cfg, progress=notes.append)
    assert "pairs of 4 of 5 models unchanged" in notes[-1]
    assert sum(computed) == n_sites * 4  # m4 with each of the others; the 6 pairs of the others kept
    assert_same(added, full(["m0", "m1", "m2", "m3", "m4"]))
    written = (out / COMPARISONS_FILE).read_bytes()

    computed.clear()
    _, again = compare_scored_models(out, ["m0", "m1", "m2", "m3", "m4"], cfg, progress=notes.append)
    assert "pairs of 5 of 5 models unchanged" in notes[-1]
    assert sum(computed) == 0
    assert (out / COMPARISONS_FILE).read_bytes() == written

    # m2 rescored with other numbers, m0 removed from the zoo
    rescored = {name: frame.copy() for name, frame in tables["m2"].items()}
    rescored["bootstrap_replicates"]["value"] *= 0.5
    _write_model_folder(out / "models" / "m2", rescored, key)
    computed.clear()
    _, changed = compare_scored_models(out, ["m1", "m2", "m3", "m4"], cfg, progress=notes.append)
    assert "pairs of 3 of 4 models unchanged" in notes[-1]
    assert sum(computed) == n_sites * 3  # m2 with each of the others
    tables_now = {**tables, "m2": rescored}
    reference = compare_models(pd.concat([tables_now[m]["model_scores"] for m in ("m1", "m2", "m3", "m4")]),
                               pd.concat([tables_now[m]["bootstrap_replicates"] for m in ("m1", "m2", "m3", "m4")]),
                               cfg)
    assert_same(changed, reference)
    assert (out / COMPARISONS_RECORD).is_file()
