"""The report's table of the two ceilings of each area: split-half reliability and inter-animal consistency."""

from __future__ import annotations

import pandas as pd

CAPTION = (
    "Per area and method: the split-half noise ceiling (how much of the responses repeats across trials; "
    "RSA: the area RDM's Spearman-Brown reliability, regression: the mean neuron reliability), and the "
    "inter-animal consistency (the other animals' neurons scored as if they were a model, with the models' "
    "mapping, folds and bootstrap; its 95 % interval, and its split-half corrected form). The best model "
    "({selection} layer selection) is shown against both: normalised by the split-half ceiling "
    "(r / √ceiling) and by the consistency (r / consistency; above 1 = better than another mouse). "
    "An area with fewer than 2 animals has no consistency (—)."
)


def ceilings_table(ceilings: pd.DataFrame, ranking: pd.DataFrame, selection: str) -> pd.DataFrame:
    """One row per area and method: both ceilings and the best model against each.

    Parameters
    ----------
    ceilings : the store's ``ceilings`` view.
    ranking : ``model_ranking`` at area sites.
    selection : the layer selection of the best model (``cv`` or ``max``).
    """
    best = ranking[(ranking["layer_selection"] == selection) & (ranking["rank"] == 1)]
    best = best.drop_duplicates(["method", "site"]).rename(columns={"site": "area"})
    rows = ceilings.drop_duplicates(["area", "method"]).merge(
        best[["method", "area", "display_name", "score", "normalized_score", "normalized_interanimal"]],
        on=["method", "area"], how="left")
    return pd.DataFrame({
        "area": rows["area"], "method": rows["method"], "split-half ceiling": rows["split_half_ceiling"],
        "inter-animal consistency": rows["interanimal_consistency"],
        "consistency CI low": rows["interanimal_ci_low"], "consistency CI high": rows["interanimal_ci_high"],
        "consistency (corrected)": rows["interanimal_corrected"], "animals": rows["n_animals"],
        "best model": rows["display_name"], "best score": rows["score"],
        "best / √split-half": rows["normalized_score"], "best / consistency": rows["normalized_interanimal"],
    })
