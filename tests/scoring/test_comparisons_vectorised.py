"""The site-at-once comparisons against an explicit loop over pairs of the per-pair function."""

import itertools

import numpy as np
import pandas as pd
import pytest

from deepmouse.errors import DataError
from deepmouse.metrics.bootstrap import benjamini_hochberg, paired_bootstrap_difference
from deepmouse.scoring import comparisons
from deepmouse.scoring.comparisons import COLUMNS, GROUP, compare_models, paired_differences
from tests.scoring.conftest import scoring_cfg

SITES = [("rsa", "max", "calcium", "area", "VISp"), ("rsa", "cv", "calcium", "area", "VISl"),
         ("cka", "cv", "calcium", "area", "VISp"), ("regression", "cv", "calcium", "area", "VISp"),
         ("regression", "cv", "neuropixels", "area", "VISp")]
"""Sites as :data:`GROUP` values; one area recorded both ways is two sites."""


def seeded_tables(n_models=6, n_boot=150, seed=0):
    """Replicates of ``n_models`` models at the :data:`SITES` (with a shared resample effect per site), and
    their observed scores; models listed out of order, so the result's sorting is exercised."""
    rng = np.random.default_rng(seed)
    models = [f"m{i}" for i in rng.permutation(n_models)]
    replicates, observed = [], []
    for s, site in enumerate(SITES):
        shared = rng.normal(size=n_boot)
        for m in models:
            quality = rng.uniform(0, 0.3)
            replicates.append(pd.DataFrame({
                "model_id": m, **dict(zip(GROUP, site)), "replicate": np.arange(n_boot, dtype=np.int32),
                "value": quality + 0.05 * shared + 0.05 * rng.normal(size=n_boot)}))
            observed.append({"model_id": m, **dict(zip(GROUP, site)), "score": quality + 0.01 * rng.normal()})
    return pd.DataFrame(observed), pd.concat(replicates, ignore_index=True)


def loop_reference(model_scores, replicates, cfg):
    """The computation the vectorised one replaces: each pair through ``paired_bootstrap_difference``."""
    observed = model_scores.set_index(GROUP + ["model_id"])["score"]
    rows = []
    for key, group in replicates.groupby(GROUP, sort=True):
        wide = group.pivot(index="replicate", columns="model_id", values="value").sort_index(axis=1)
        pairs = []
        for model_a, model_b in itertools.combinations(wide.columns, 2):
            pairs.append((*key, model_a, model_b, *paired_bootstrap_difference(
                observed[(*key, model_a)], observed[(*key, model_b)], wide[model_a].to_numpy(),
                wide[model_b].to_numpy(), cfg.bootstrap.level)))
        q_values = benjamini_hochberg(np.array([p[-1] for p in pairs]))
        rows.extend((*pair, q, bool(q < cfg.comparisons.fdr)) for pair, q in zip(pairs, q_values))
    return pd.DataFrame(rows, columns=COLUMNS)


def assert_same(table, reference):
    assert list(table.columns) == COLUMNS
    pd.testing.assert_frame_equal(table[GROUP + ["model_a", "model_b", "distinguishable"]],
                                  reference[GROUP + ["model_a", "model_b", "distinguishable"]])
    numbers = ["difference", "ci_low", "ci_high", "p_value", "q_value"]
    # Bit for bit: the same order statistics, interpolation and counts as the per-pair function.
    np.testing.assert_array_equal(table[numbers].to_numpy(), reference[numbers].to_numpy())


def test_equals_the_per_pair_loop_bit_for_bit():
    cfg = scoring_cfg(bootstrap={"n": 150, "level": 0.9})
    model_scores, replicates = seeded_tables()
    table = compare_models(model_scores, replicates, cfg)
    assert len(table) == len(SITES) * 15
    assert 0 < table["distinguishable"].sum() < len(table)  # both verdicts exercised
    assert_same(table, loop_reference(model_scores, replicates, cfg))


def test_blocks_of_pairs_give_the_same_table(monkeypatch):
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(n_models=7, seed=1)
    whole = compare_models(model_scores, replicates, cfg)
    monkeypatch.setattr(comparisons, "_DIFFERENCES_PER_BLOCK", 150 * 4)  # 4 pairs per block, 21 pairs per site
    pd.testing.assert_frame_equal(compare_models(model_scores, replicates, cfg), whole)
    assert_same(whole, loop_reference(model_scores, replicates, cfg))


def test_pairs_with_unscored_replicates_leave_those_replicates_out_as_the_per_pair_function_does():
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(seed=2)
    at = replicates.index[(replicates["model_id"] == "m2") & (replicates["site"] == "VISl")]
    replicates.loc[at[[3, 40, 41]], "value"] = np.nan
    replicates.loc[at[[7]], "value"] = np.inf
    missing = replicates.index[(replicates["model_id"] == "m4") & (replicates["site"] == "VISp")][:5]
    replicates = replicates.drop(missing)  # absent replicates: NaN in the site's matrix
    table = compare_models(model_scores, replicates, cfg)
    assert_same(table, loop_reference(model_scores, replicates, cfg))


def test_paired_differences_matches_the_per_pair_function_on_any_pairs():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(99, 5))
    values[10, 1] = np.nan
    observed = rng.normal(size=5)
    first, second = np.array([0, 1, 4, 3]), np.array([1, 0, 2, 3])  # either order, and a model with itself
    got = np.column_stack(paired_differences(observed, values, first, second, 0.8))
    expected = [paired_bootstrap_difference(observed[a], observed[b], values[:, a], values[:, b], 0.8)
                for a, b in zip(first, second)]
    np.testing.assert_array_equal(got, np.array(expected))


def test_a_site_with_one_model_has_no_pairs_and_an_empty_input_gives_an_empty_table():
    cfg = scoring_cfg()
    model_scores, replicates = seeded_tables(n_models=1)
    assert compare_models(model_scores, replicates, cfg).empty
    empty = compare_models(model_scores.iloc[:0], replicates.iloc[:0], cfg)
    assert empty.empty and list(empty.columns) == COLUMNS


def test_replicates_without_an_observed_score_name_the_model_and_site():
    cfg = scoring_cfg()
    model_scores, replicates = seeded_tables(seed=4)
    model_scores = model_scores.drop(model_scores.index[(model_scores["model_id"] == "m3")
                                                        & (model_scores["site"] == "VISl")])
    with pytest.raises(DataError, match=r"model_scores: no score for m3 at .*layer_selection cv.*site VISl"):
        compare_models(model_scores, replicates, cfg)


def test_a_pair_without_any_finite_difference_names_the_site():
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(seed=5)
    replicates.loc[(replicates["model_id"] == "m1") & (replicates["method"] == "regression"), "value"] = np.nan
    with pytest.raises(DataError, match=r"method regression, layer_selection cv, modality calcium, site_kind area, site VISp: "
                                        r"models at columns \d and \d: paired bootstrap: no finite"):
        compare_models(model_scores, replicates, cfg)


def test_a_replicate_no_model_could_score_is_left_out_as_every_pair_would_leave_it_out():
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(seed=6)
    replicates.loc[(replicates["site"] == "VISl") & (replicates["replicate"] == 17), "value"] = np.nan
    assert_same(compare_models(model_scores, replicates, cfg), loop_reference(model_scores, replicates, cfg))


def test_a_replicate_given_twice_names_the_model_and_site():
    cfg = scoring_cfg()
    model_scores, replicates = seeded_tables(seed=9)
    twice = replicates[(replicates["model_id"] == "m0") & (replicates["site"] == "VISl")].head(1)
    with pytest.raises(DataError, match=r"bootstrap_replicates: m0 has a replicate twice at method rsa, "
                                        r"layer_selection cv, modality calcium, site_kind area, site VISl"):
        compare_models(model_scores, pd.concat([replicates, twice]), cfg)


def test_rows_in_any_order_give_the_same_table():
    cfg = scoring_cfg(bootstrap={"n": 150})
    model_scores, replicates = seeded_tables(seed=10)
    shuffled = replicates.sample(frac=1.0, random_state=1)  # every site's replicates in many runs
    pd.testing.assert_frame_equal(compare_models(model_scores, shuffled, cfg), compare_models(model_scores, replicates, cfg))


def test_a_replicate_row_without_its_site_names_the_column():
    cfg = scoring_cfg()
    model_scores, replicates = seeded_tables(seed=11)
    replicates.loc[replicates.index[5], "site"] = None
    with pytest.raises(DataError, match=r"bootstrap_replicates: site missing in row \d+ of the rows of 'm\d'"):
        compare_models(model_scores, replicates, cfg)
