"""The reader of a ``table`` pull: the user's own recordings, normalised by the pull.

Tables give metadata per neuron, not per session, so the responses folder holds
``neuron_metadata.parquet`` in place of ``experiments.parquet``, and ``responses.*`` do not
apply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_dir
from deepmouse.data.sources.base import Progress, Reader

NEURON_METADATA = "neuron_metadata.parquet"
"""Per-neuron metadata in the responses folder of a table source (instead of ``experiments.parquet``)."""


class TableReader(Reader):
    """Mean responses (and optionally trials) per neuron and image, with per-neuron metadata."""

    responses_metadata = NEURON_METADATA

    def pulled_files(self, raw_dir: Path, manifest: dict) -> list[Path]:
        # The normalised tables: no file per experiment.
        return [raw_dir / name for name in manifest["files"]]

    def stimuli(self, raw_dir: Path, manifest: dict, paths: list[Path]) -> tuple[np.ndarray, str]:
        from deepmouse.data.stimuli import with_blank
        from deepmouse.data.table import RAW_IMAGES

        images = manifest["inputs"]["images"]
        origin = (f"from {images['folder']}" if "folder" in images
                  else f"Brain Observatory scenes from {images['brain_observatory']}")
        return with_blank(np.load(raw_dir / RAW_IMAGES, allow_pickle=False)), origin

    def responses(self, params, raw_dir: Path, manifest: dict, paths: list[Path], out_dir: Path,
                  progress: Progress) -> str:
        """The responses of a table pull, in the layout of the NWB sources' (``responses.*`` do not apply).

        ``trials.parquet`` holds the given trials (none: no rows), ``means.parquet`` the trial
        means where there are trials (the given means agree with them, as the pull checked),
        else the given means with ``n_trials`` 0, and ``neuron_metadata.parquet`` takes the
        place of ``experiments.parquet``.
        """
        from deepmouse.data.responses import TRIAL_COLUMNS, mean_responses
        from deepmouse.data.table import read_pulled_table

        _, recordings = read_pulled_table(raw_dir)
        neurons = recordings.neurons
        experiment = neurons.set_index("neuron_id")["experiment_id"]
        if recordings.trials is not None:
            trials = recordings.trials
            means = mean_responses(trials)
        else:
            trials = pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in zip(
                TRIAL_COLUMNS, ("int64", "int64", "int16", "int16", "int32", "float32", "float32"))})
            means = recordings.means.assign(experiment_id=lambda m: experiment.reindex(m["neuron_id"]).to_numpy(),
                                            n_trials=np.int32(0))
            means = means.sort_values(["experiment_id", "neuron_id", "stimulus_index"], kind="stable")
            means = means.loc[:, ["experiment_id", "neuron_id", "stimulus_index", "mean_response", "n_trials"]]
        # A new folder: no file of an earlier run of another source (experiments.parquet) is kept.
        with atomic_dir(out_dir) as staging:
            trials.assign(modality="calcium").to_parquet(staging / "trials.parquet", index=False)
            means.reset_index(drop=True).assign(modality="calcium").to_parquet(staging / "means.parquet", index=False)
            neurons.to_parquet(staging / NEURON_METADATA, index=False)
        if len(trials):
            return (f"responses: {len(neurons)} neurons x {len(trials) // len(neurons)} trials, from tables "
                    "(responses.* do not apply to data.source: table)")
        progress("no trial responses: reliability, CC_max and noise ceilings will not be computed, "
                 "nor normalised scores")
        return f"responses: {len(neurons)} neurons, mean responses only, from tables (responses.* do not apply)"

    def neurons(self, params, responses_dir: Path) -> pd.DataFrame:
        from deepmouse.data.selection import annotate_listed_neurons

        trials = pd.read_parquet(responses_dir / "trials.parquet")
        # Recordings given as tables are scored as the two-photon ones are (one modality).
        return annotate_listed_neurons(pd.read_parquet(responses_dir / NEURON_METADATA),
                                       trials if len(trials) else None,
                                       pd.read_parquet(responses_dir / "means.parquet"),
                                       params.neurons).assign(modality="calcium")
