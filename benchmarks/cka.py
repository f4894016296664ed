"""CKA scoring of a model beside RSA and ridge, at the reference study's scale (DESIGN.md §10).

A synthetic model of ``--layers`` layers (default 60, resnet18's count) over 119 stimuli and
``--neurons`` neurons (default 6,619) in the six areas; the timings do not depend on the
values. Each method is timed as ``score_model`` runs it, with the default params (1,000
bootstrap replicates, 10 halvings for ``cv``, 10 outer folds and 11 alphas for ridge):

- CKA: the layers' stimulus-centred Grams from the statistics, then per area the neurons'
  Gram, every layer's CKA, and ``max`` and ``cv`` selection inside every bootstrap replicate
  (:func:`~deepmouse.scoring.selection.select_cka_sites`, every area at once);
- RSA: the layers' correlation RDMs, then per area the neural RDM and ``max`` and ``cv``
  selection (:func:`~deepmouse.scoring.selection.select_rsa`);
- ridge: :func:`~deepmouse.metrics.ridge.fit_ridge_folds` on every layer's kernel for every
  neuron.

Medians of ``--repeats`` runs; the table is printed, the numbers go to ``--out``. Run::

    python benchmarks/cka.py --threads 2 --out benchmarks/results/cka.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from deepmouse.config import AREAS, parse_params
from deepmouse.metrics.bootstrap import resample_counts
from deepmouse.metrics.cka import response_gram, stimulus_centred_grams
from deepmouse.metrics.folds import stimulus_folds, stimulus_halves
from deepmouse.metrics.rdm import rdm_from_centred_gram, rdm_from_responses, upper_triangle
from deepmouse.metrics.ridge import fit_ridge_folds
from deepmouse.scoring.selection import select_cka_sites, select_rsa

N_STIMULI = 119
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cka.json"


def synthetic_statistics(n_layers: int, rng: np.random.Generator, n_features: int = 512):
    """Centred Grams, row sums, feature counts and kernels of random layers (float64)."""
    centred, sums, kernels = [], [], []
    for _ in range(n_layers):
        x = rng.normal(size=(N_STIMULI, n_features)) + rng.normal(size=n_features)
        row_centred = x - x.mean(axis=1, keepdims=True)
        z = (x - x.mean(axis=0)) / x.std(axis=0)
        centred.append(row_centred @ row_centred.T)
        sums.append(x.sum(axis=1))
        kernels.append(z @ z.T)
    return np.stack(centred), np.stack(sums), np.full(n_layers, n_features), np.stack(kernels)


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=60)
    parser.add_argument("--neurons", type=int, default=6619)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-ridge", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = parse_params({}).scoring
    rng = np.random.default_rng(0)
    centred, sums, n_features, kernels = synthetic_statistics(args.layers, rng)
    responses = rng.normal(size=(N_STIMULI, args.neurons))
    areas = np.array_split(np.arange(args.neurons), len(AREAS))
    halves = stimulus_halves(N_STIMULI, cfg.cv.n_splits, np.random.default_rng(1))
    rules = tuple(cfg.layer_selection)

    def cka() -> None:
        grams = stimulus_centred_grams(centred, sums, n_features)
        counts = resample_counts(N_STIMULI, cfg.bootstrap.n, rng)  # one set for every area, as score_model
        select_cka_sites(grams, np.stack([response_gram(responses[:, columns]) for columns in areas]),
                         np.vstack([np.ones(N_STIMULI), counts]), halves, cfg.cka.estimator, rules)

    def rsa() -> None:
        pairs = np.triu_indices(N_STIMULI, k=1)
        model_entries = upper_triangle(rdm_from_centred_gram(centred))
        for columns in areas:
            counts = resample_counts(N_STIMULI, cfg.bootstrap.n, rng)
            weights = np.vstack([np.ones(pairs[0].size), counts[:, pairs[0]] * counts[:, pairs[1]]])
            select_rsa(model_entries, upper_triangle(rdm_from_responses(responses[:, columns])), weights, halves,
                       pairs, cfg.rsa.comparison, rules)

    def ridge() -> None:
        folds = stimulus_folds(N_STIMULI, cfg.cv.n_folds, cfg.cv.n_repeats, np.random.default_rng(2))
        fit_ridge_folds(kernels, responses, folds, relative_alphas=cfg.regression.relative_alphas, device="cpu")

    seconds = {"cka": median_seconds(cka, args.repeats), "rsa": median_seconds(rsa, args.repeats)}
    if not args.skip_ridge:
        seconds["ridge"] = median_seconds(ridge, args.repeats)
    print(f"{args.layers} layers x {args.neurons} neurons in {len(AREAS)} areas, 119 stimuli, "
          f"{cfg.bootstrap.n} bootstrap replicates, {cfg.cv.n_splits} halvings, medians of {args.repeats}")
    print("| method | seconds |\n|---|---|")
    for method, value in seconds.items():
        print(f"| {method} | {value:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "layers": args.layers, "neurons": args.neurons, "areas": len(AREAS), "bootstrap": cfg.bootstrap.n,
        "splits": cfg.cv.n_splits, "repeats": args.repeats, "seconds": seconds,
        "threads": torch.get_num_threads(), "numpy": np.__version__, "torch": torch.__version__,
        "machine": platform.machine(), "date": datetime.date.today().isoformat(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
