"""Paired model comparisons: is model A better than model B at a site, and by how much?

For every method, layer selection and site, every pair of models is compared on the
same units — neurons for regression, stimuli for RSA — through the bootstrap replicates
that ``score_model`` draws with the same resamples for every model. The difference's
percentile interval and two-sided p-value come from the paired replicates; p-values are
adjusted with Benjamini-Hochberg across the pairs of each site, and a pair is
``distinguishable`` when its q-value is below ``scoring.comparisons.fdr``.

The statistics of one pair are those of
:func:`deepmouse.metrics.bootstrap.paired_bootstrap_difference`; at zoo scale (237 models:
27,966 pairs × 24 sites, 1,000 replicates each) calling it once per pair costs minutes, so
the pairs of a site are computed together from one matrix of the site's replicates
(replicate × model, :func:`site_replicates`, filled one model's rows at a time), a block of
pairs sharing model A at a time: the block's differences are one subtraction (A's
replicates minus a slice of the matrix), their percentiles one ``numpy.percentile`` along the
replicates (the same order statistics and interpolation as the per-pair call, so the same
numbers to the last bit), and the p-values' counts one comparison with 0. A pair with a
non-finite difference in some replicate (a replicate that could not be scored) is handed to
the per-pair function, which leaves those replicates out.

The scores stage compares the models on every run, and a run usually adds or rescores a few
models. So the table is written with a record beside it (:func:`write_comparisons`,
``model_comparisons.json``, a :class:`~deepmouse.keyed.KeyedFile`): under a key of this
code's digest and ``scoring.bootstrap.level``, the table's sha256 and, per model, the sha256
of its ``bootstrap_replicates`` and ``model_scores`` files. The next run
(:func:`reusable_comparisons`) takes from that table the difference, interval and p-value of
every pair whose two models' files are unchanged, and computes the others; the q-values and
verdicts are always computed again over all the pairs of each site (a new pair changes its
site's Benjamini-Hochberg adjustment). As the statistics are deterministic, the table is the
same bytes as a full recomputation. A record that does not match its table (edited, damaged,
left from another code or level) reuses nothing, and the log says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterable, Mapping

import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_file
from deepmouse.config import ScoringConfig
from deepmouse.errors import DataError
from deepmouse.hashing import file_sha256
from deepmouse.keyed import KeyedFile, make_key
from deepmouse.metrics.bootstrap import benjamini_hochberg, paired_bootstrap_difference

GROUP = ["method", "layer_selection", "modality", "site_kind", "site"]
"""Models are compared within one method, rule and site of one modality (never across recordings)."""
KEY_COLUMNS = [*GROUP, "model_id"]
"""The columns naming whose replicates a row of ``bootstrap_replicates`` holds, and where."""
STATISTICS = ["difference", "ci_low", "ci_high", "p_value"]
"""What a pair's two models' replicates and scores alone determine: reusable while they are unchanged."""
COLUMNS = GROUP + ["model_a", "model_b", "difference", "ci_low", "ci_high", "p_value", "q_value", "distinguishable"]

_DIFFERENCES_PER_BLOCK = 1 << 22
"""Replicate differences formed at once (32 MiB of float64): bounds memory whatever the number of pairs."""


def compare_models(model_scores: pd.DataFrame, replicates: pd.DataFrame, cfg: ScoringConfig, *,
                   previous: pd.DataFrame | None = None, unchanged: Collection[str] = ()) -> pd.DataFrame:
    """Every pair of models within each method × layer selection × site.

    Parameters
    ----------
    model_scores : the ``model_scores`` table (observed scores).
    replicates : the ``bootstrap_replicates`` table (model, group, replicate, value).
    previous : DataFrame with :data:`COLUMNS`, optional
        A table computed before, with the same ``scoring.bootstrap.level``: its
        :data:`STATISTICS` of a pair of two ``unchanged`` models are taken, not computed.
    unchanged : the models whose replicates and observed scores are those ``previous`` was computed from.

    Returns
    -------
    DataFrame with :data:`COLUMNS`, one row per unordered pair (``model_a`` < ``model_b``),
    sorted by :data:`GROUP`, then ``model_a``, then ``model_b``.

    Raises
    ------
    DataError
        If a model has replicates at a site but no observed score there, a replicate twice,
        or a pair has no finite replicate difference; naming the site and the models.
    """
    per_model = (rows for _, rows in replicates.groupby("model_id", sort=False))
    return compare_sites(model_scores, site_replicates(per_model), cfg, previous=previous, unchanged=unchanged)


def site_replicates(per_model: Iterable[pd.DataFrame]) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """Each site's replicates as one matrix, from the ``bootstrap_replicates`` rows of one model at a time.

    Parameters
    ----------
    per_model : DataFrames of ``bootstrap_replicates`` rows, each holding all the rows of the
        models it holds (as one model's file does).

    Returns
    -------
    dict, sorted by its keys (:data:`GROUP` values)
        ``(models, values)``: the site's models, sorted, and ``values`` of shape
        (n_replicates, n_models), the replicates in order of their number; a replicate a model
        lacks is NaN. Replicates no model has a finite value for are left out: every pair
        would leave them out anyway.

    Raises
    ------
    DataError
        If a model has the same replicate twice at a site, naming both.
    """
    collected: dict[tuple, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
    for frame in per_model:
        # Codes, not strings: read dictionary-encoded, a file's key columns cost no string per row.
        factorized = [pd.factorize(frame[column]) for column in KEY_COLUMNS]
        codes = np.column_stack([column_codes for column_codes, _ in factorized])
        missing = codes < 0
        if missing.any():
            row, column = np.argwhere(missing)[0]
            model = frame["model_id"].iloc[row]
            raise DataError(f"bootstrap_replicates: {KEY_COLUMNS[column]} missing in row {row} of the rows of {model!r}")
        replicate, value = frame["replicate"].to_numpy(), frame["value"].to_numpy(dtype=np.float64)
        # The scores stage writes each site's replicates as one run of rows: grouping by runs is
        # one comparison of neighbouring rows (any order works, in more runs).
        starts = np.r_[0, np.flatnonzero((codes[1:] != codes[:-1]).any(axis=1)) + 1]
        for start, stop in zip(starts, np.r_[starts[1:], len(codes)]):
            key = tuple(uniques[code] for (_, uniques), code in zip(factorized, codes[start]))
            collected.setdefault(key[:-1], {}).setdefault(key[-1], []).append(
                (replicate[start:stop], value[start:stop]))
    sites = {}
    for key in sorted(collected):
        models = sorted(collected[key])
        runs = {model: [np.concatenate(parts) for parts in zip(*collected[key][model])] for model in models}
        numbers = np.unique(np.concatenate([runs[m][0] for m in models]))
        values = np.full((numbers.size, len(models)), np.nan)
        for k, model in enumerate(models):
            replicate, value = runs[model]
            if np.unique(replicate).size != replicate.size:
                raise DataError(f"bootstrap_replicates: {model} has a replicate twice at {_describe(key)}")
            values[np.searchsorted(numbers, replicate), k] = value
        sites[key] = (np.array(models, dtype=object), values[~np.isnan(values).all(axis=1)])
    return sites


def compare_sites(model_scores: pd.DataFrame, sites: Mapping[tuple, tuple[np.ndarray, np.ndarray]],
                  cfg: ScoringConfig, *, previous: pd.DataFrame | None = None,
                  unchanged: Collection[str] = ()) -> pd.DataFrame:
    """:func:`compare_models` of the sites' replicate matrices of :func:`site_replicates`."""
    observed = model_scores.set_index(GROUP + ["model_id"])["score"]
    kept = _kept_pairs(previous, unchanged)
    parts = []
    for key, (models, values) in sites.items():
        if models.size < 2:
            continue
        site_keys = pd.MultiIndex.from_tuples([(*key, model) for model in models])
        absent = ~site_keys.isin(observed.index)
        if absent.any():
            raise DataError(f"model_scores: no score for {models[absent][0]} at {_describe(key)}, "
                            "which has bootstrap replicates")
        scores = observed.loc[site_keys].to_numpy(dtype=np.float64)
        first, second = np.triu_indices(models.size, k=1)  # itertools.combinations order
        statistics = np.empty((4, first.size))
        reuse = np.zeros(first.size, dtype=bool)
        if key in kept:
            rows, pair_values = _pair_rows(kept[key], models)
            statistics[:, rows] = pair_values.T
            reuse[rows] = True
        try:
            statistics[:, ~reuse] = paired_differences(scores, values, first[~reuse], second[~reuse],
                                                       cfg.bootstrap.level)
        except DataError as err:
            raise DataError(f"{_describe(key)}: {err}") from None
        difference, low, high, p_value = statistics
        q_value = benjamini_hochberg(p_value)
        parts.append(pd.DataFrame({
            **{column: value for column, value in zip(GROUP, key)},
            "model_a": models[first], "model_b": models[second], "difference": difference, "ci_low": low,
            "ci_high": high, "p_value": p_value, "q_value": q_value, "distinguishable": q_value < cfg.comparisons.fdr,
        }))
    if not parts:
        return pd.DataFrame({column: pd.Series(dtype=_EMPTY_DTYPES.get(column, object)) for column in COLUMNS})
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def paired_differences(observed: np.ndarray, replicates: np.ndarray, first: np.ndarray, second: np.ndarray,
                       level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~deepmouse.metrics.bootstrap.paired_bootstrap_difference` of many pairs of models at one site.

    Parameters
    ----------
    observed : ndarray of shape (n_models,)
        Each model's observed score.
    replicates : ndarray of shape (n_boot, n_models)
        Each model's bootstrap replicates, drawn from the same resamples (row ``i``: resample ``i``).
    first, second : ndarray of shape (n_pairs,)
        Column indices of the pairs' models A and B.
    level : float in (0, 1)

    Returns
    -------
    difference, ci_low, ci_high, p_value : ndarrays of shape (n_pairs,)
        Equal to the per-pair function's, pair by pair.

    Raises
    ------
    DataError
        If a pair has no finite replicate difference, naming its columns.
    """
    by_model = np.ascontiguousarray(np.asarray(replicates, dtype=np.float64).T)  # each model's replicates contiguous
    first, second = np.asarray(first, dtype=np.intp), np.asarray(second, dtype=np.intp)
    n_pairs, n_boot = first.size, by_model.shape[1]
    observed = np.asarray(observed, dtype=np.float64)
    difference = observed[first] - observed[second]
    low, high, p_value = np.empty(n_pairs), np.empty(n_pairs), np.empty(n_pairs)
    quantiles = [50 * (1 - level), 50 * (1 + level)]
    finite_model = np.isfinite(by_model).all(axis=1)
    step = max(1, _DIFFERENCES_PER_BLOCK // max(n_boot, 1))
    # Pairs that share model A in a run of consecutive pairs (as combinations list them) are one
    # broadcast subtraction, from a slice of rows when their B models are consecutive too.
    for start, stop in _blocks(first, second, step):
        a, b = first[start], second[start:stop]
        consecutive = b[-1] - b[0] == stop - start - 1 and np.all(np.diff(b) == 1)
        paired = by_model[a] - (by_model[b[0]:b[-1] + 1] if consecutive else by_model[b])  # (pairs, n_boot)
        finite = finite_model[b] & finite_model[a]
        if not finite.all():
            finite &= np.isfinite(paired).all(axis=1)  # a model's non-finite replicate may pair with a non-finite one
        whole = paired if finite.all() else paired[finite]
        block = slice(start, stop)
        if whole.size:
            low[block][finite], high[block][finite] = np.percentile(whole, quantiles, axis=1)
            below, above = np.sum(whole <= 0, axis=1), np.sum(whole >= 0, axis=1)
            p_value[block][finite] = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (n_boot + 1))
        for offset in np.flatnonzero(~finite):
            i = start + offset
            try:
                _, low[i], high[i], p_value[i] = paired_bootstrap_difference(
                    observed[first[i]], observed[second[i]], by_model[first[i]], by_model[second[i]], level)
            except DataError as err:
                raise DataError(f"models at columns {first[i]} and {second[i]}: {err}") from None
    return difference, low, high, p_value


def _blocks(first: np.ndarray, second: np.ndarray, step: int):
    """``(start, stop)`` of runs of pairs with the same model A, at most ``step`` pairs each."""
    if first.size == 0:
        return
    changes = np.flatnonzero(np.diff(first)) + 1
    for start, stop in zip(np.r_[0, changes], np.r_[changes, first.size]):
        for begin in range(int(start), int(stop), step):
            yield begin, min(begin + step, int(stop))


def _kept_pairs(previous: pd.DataFrame | None, unchanged: Collection[str]) -> dict[tuple, pd.DataFrame]:
    """Per site of ``previous``, its pairs of two ``unchanged`` models (the only ones that can be reused)."""
    if previous is None or not len(unchanged) or previous.empty:
        return {}
    unchanged = list(unchanged)
    previous = previous[previous["model_a"].isin(unchanged) & previous["model_b"].isin(unchanged)]
    return {key: rows for key, rows in previous.groupby(GROUP, sort=False, observed=True)}


def _pair_rows(kept: pd.DataFrame, models: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each kept pair falls among the pairs of ``models`` (sorted; ``np.triu_indices`` order), and its
    :data:`STATISTICS` of shape (n, 4); kept pairs of models not compared here are left out."""
    index = pd.Index(models)
    a, b = index.get_indexer(kept["model_a"]), index.get_indexer(kept["model_b"])
    present = (a >= 0) & (b > a)
    a, b, n = a[present], b[present], models.size
    # Row i of the upper triangle (without the diagonal) starts after i n - i (i + 1) / 2 pairs.
    return a * n - a * (a + 1) // 2 + (b - a - 1), kept[STATISTICS].to_numpy(dtype=np.float64)[present]


# ----------------------------------------------------------------------- kept from run to run
RECORD_FORMAT = 2
"""Raised whenever the record's layout or meaning changes, so no older record is trusted."""

COMPARISONS_CODE = "deepmouse.scoring.comparisons:compare_models"
"""The comparisons: the record key's code digest is over its import closure."""


def comparisons_key(cfg: ScoringConfig) -> dict:
    """What every pair's statistics depend on besides its two models' files: this code and the interval level."""
    from deepmouse.codedeps import code_digest

    return make_key(format_version=RECORD_FORMAT, code=code_digest(COMPARISONS_CODE), level=cfg.bootstrap.level)


def reusable_comparisons(table_path: str | Path, record_path: str | Path, key: Mapping,
                         inputs: Mapping[str, str]) -> tuple[pd.DataFrame | None, set[str], str]:
    """The last table, the models whose pairs in it still hold, and a line saying so.

    Parameters
    ----------
    table_path, record_path : the table and its record, as :func:`write_comparisons` wrote them.
    key : from :func:`comparisons_key`.
    inputs : each current model's digest of its ``bootstrap_replicates`` and ``model_scores`` files.

    Returns
    -------
    previous : DataFrame, or None when nothing can be reused
    unchanged : the models of ``inputs`` with the digest the record holds
    note : why nothing is reused, or how much is
    """
    table_path, kept = Path(table_path), KeyedFile(record_path)
    reason = kept.reason_to_recompute(key)
    if reason is None:
        value = kept.record()["value"]
        if not table_path.is_file():
            reason = f"{table_path} is missing"
        elif not isinstance(value, dict) or file_sha256(table_path) != value.get("table_sha256"):
            reason = f"{table_path} is not the table {kept.path} describes"
    if reason is not None:
        return None, set(), f"every pair compared ({kept.path}: {reason})"
    try:
        previous = pd.read_parquet(table_path, columns=COLUMNS, read_dictionary=[*GROUP, "model_a", "model_b"])
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        return None, set(), f"every pair compared ({table_path}: unreadable, {err})"
    models = value.get("models", {})
    unchanged = {model for model, digest in inputs.items() if models.get(model) == digest}
    return previous, unchanged, (f"pairs of {len(unchanged)} of {len(inputs)} models unchanged since the last "
                                 f"comparison reused from {table_path}")


def write_comparisons(table: pd.DataFrame, table_path: str | Path, record_path: str | Path, key: Mapping,
                      inputs: Mapping[str, str]) -> None:
    """Write the table, then its record, each atomically.

    A writer killed between the two leaves the new table with the old record, which holds the
    old table's sha256: the next run sees that they differ and reuses nothing.
    """
    table_path, record_path = Path(table_path), Path(record_path)
    with atomic_file(table_path) as staging:
        table.to_parquet(staging, index=False)
    KeyedFile(record_path).write(key, {"table_sha256": file_sha256(table_path), "models": dict(sorted(inputs.items()))})


_EMPTY_DTYPES = {"difference": np.float64, "ci_low": np.float64, "ci_high": np.float64, "p_value": np.float64,
                 "q_value": np.float64, "distinguishable": bool}


def _describe(key: tuple) -> str:
    return ", ".join(f"{column} {value}" for column, value in zip(GROUP, key))
