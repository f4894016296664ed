"""Ridge scoring of every neuron against its floor and the feature statistics, in one run (DESIGN.md §9-10).

On an untrained model's real statistics (default resnet18_random, init seed 0, all stimuli in one
batch, ``paper`` preprocessing) and ``--neurons`` simulated neurons (default 6,619, the reference
study's count; the timing does not depend on their values):
1. feature statistics: :func:`~deepmouse.features.stats.compute_layer_statistics`;
2. scoring: :func:`~deepmouse.metrics.ridge.fit_ridge_folds` on every layer's kernel, the default
   11-value relative alpha grid and 10 outer folds (``scoring.cv`` defaults), float64;
3. floor: the two matrix products per chunk of neurons that the scoring cannot avoid (the inner
   LOO errors as pair-product weights, and the held-out predictions at every alpha), with the
   same shapes and batching, on random tensors, timed bare; the training kernels'
   eigendecompositions, which the scoring needs once per layer and fold, are timed alone beside it.
4. the reference study's procedure end to end on the same model, stimuli and neurons, once (unless
   ``--skip-reference``): every hooked output stored, sparse-randomly projected to the
   Johnson-Lindenstrauss dimension (4,096 at 119 stimuli), standardised, and scikit-learn's
   ``RidgeCV(alphas=[1.0])`` (its LOO) fitted per output; against this implementation's feature
   statistics plus default scoring.
Every measurement is repeated ``--repeats`` times and reported as the median (the machines this
runs on are shared). The table is printed; the numbers go to the JSON file. Run::

    python benchmarks/ridge.py --model resnet18_random --device auto --threads 2 \
        --out benchmarks/results/ridge.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deepmouse.config import CrossValidationConfig, RegressionConfig
from deepmouse.features.extract import resolve_device
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.metrics.folds import stimulus_folds
from deepmouse.metrics.ridge import DEFAULT_CHUNK_SIZE, OPERATOR_ROWS, fit_ridge_folds
from feature_statistics import DEFAULT_STIMULI, load_stimuli, prepare, stored_and_projected, synchronize

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ridge.json"
N_NEURONS = 6619
FLOOR_TARGET = 2.0
FEATURES_TARGET = 0.5


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median of ``repeats`` wall-clock runs, the device synchronised before and after each."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_products(n_layers: int, n_stimuli: int, folds: list[np.ndarray], n_alphas: int, n_neurons: int,
                   chunk_size: int, device: torch.device) -> Callable[[], None]:
    """The scoring's two products per chunk of neurons, same shapes and batching, on random tensors."""
    n_pairs = n_stimuli * (n_stimuli + 1) // 2
    held_out_sizes: dict[int, int] = {}
    for test in folds:
        held_out_sizes[len(test)] = held_out_sizes.get(len(test), 0) + 1
    layers_per_group = max(1, OPERATOR_ROWS // (len(folds) * n_alphas))
    generator = torch.Generator(device=device).manual_seed(0)
    operators = []
    for first in range(0, n_layers, layers_per_group):
        g = min(layers_per_group, n_layers - first)
        operators.append([
            (torch.randn(g * k * n_alphas, n_pairs, generator=generator, dtype=torch.float64, device=device),
             torch.randn(g * k * n_alphas * b, n_stimuli, generator=generator, dtype=torch.float64, device=device))
            for b, k in held_out_sizes.items()
        ])
    pairs = torch.randn(n_pairs, chunk_size, generator=generator, dtype=torch.float64, device=device)
    targets = torch.randn(n_stimuli, chunk_size, generator=generator, dtype=torch.float64, device=device)

    def run() -> None:
        for group in operators:
            for start in range(0, n_neurons, chunk_size):
                width = min(chunk_size, n_neurons - start)
                for loo_error, prediction in group:
                    loo_error @ pairs[:, :width]
                    prediction @ targets[:, :width]

    return run


def reference_procedure(model_id: str, stimuli: np.ndarray, device: torch.device, targets: np.ndarray,
                        srp_seed: int = 0) -> dict:
    """The reference study's way: store every output, project it (SRP), scale, ``RidgeCV(alphas=[1.0])`` per output.

    Parameters
    ----------
    targets : ndarray of shape (n_stimuli, n_neurons)

    Returns
    -------
    dict
        Seconds for the forward pass with storing, the projections and the ridge fits, and
        the number of outputs.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    _, model, inputs = prepare(model_id, stimuli, device)
    timings, projected = stored_and_projected(model, inputs, device, srp_seed)
    projected_at = time.perf_counter()
    for x in projected:
        scaled = StandardScaler().fit_transform(x.numpy().astype(np.float64))
        RidgeCV(alphas=[1.0]).fit(scaled, targets)
    finished = time.perf_counter()
    ridge_s = finished - projected_at
    return {"forward_and_store_s": timings["forward_and_store_s"], "project_s": timings["project_s"],
            "ridge_s": ridge_s, "total_s": timings["total_s"] + ridge_s, "n_outputs": timings["n_outputs"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18_random")
    parser.add_argument("--neurons", type=int, default=N_NEURONS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--stimuli", type=Path, default=DEFAULT_STIMULI)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--skip-reference", action="store_true", help="leave out the reference study's procedure")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    stimuli, stimuli_source = load_stimuli(args.stimuli)
    _, model, inputs = prepare(args.model, stimuli, device)
    stats = compute_layer_statistics(model, inputs, device)
    features_s = median_seconds(lambda: compute_layer_statistics(model, inputs, device), device, args.repeats)
    del model, inputs

    kernels = stats.kernel
    n_layers, n_stimuli = kernels.shape[0], kernels.shape[1]
    rng = np.random.default_rng(0)
    # Neurons reading random layers through random readouts of their kernels, plus noise.
    readers = rng.integers(n_layers, size=args.neurons)
    readouts = rng.normal(size=(n_stimuli, args.neurons))
    signal = np.empty((n_stimuli, args.neurons))
    for layer in range(n_layers):
        signal[:, readers == layer] = kernels[layer] @ readouts[:, readers == layer]
    targets = signal / signal.std(axis=0) + rng.normal(size=(n_stimuli, args.neurons))
    cv = CrossValidationConfig()
    folds = stimulus_folds(n_stimuli, cv.n_folds, cv.n_repeats, np.random.default_rng([cv.seed, 0]))
    grid = RegressionConfig().relative_alphas

    def score():
        return fit_ridge_folds(kernels, targets, folds, relative_alphas=grid, device=device, chunk_size=args.chunk_size)
    score_s = median_seconds(score, device, args.repeats)
    floor = floor_products(n_layers, n_stimuli, folds, len(grid), args.neurons, args.chunk_size, device)
    floor_s = median_seconds(floor, device, args.repeats)
    rows = {"float64": {"scoring_s": score_s, "floor_s": floor_s, "scoring_over_floor": score_s / floor_s,
                        "scoring_over_features": score_s / features_s}}
    train = [torch.as_tensor(kernels[:, np.setdiff1d(np.arange(n_stimuli), test)][:, :, np.setdiff1d(
        np.arange(n_stimuli), test)]) for test in folds]
    by_size: dict[int, list[torch.Tensor]] = {}
    for t in train:
        by_size.setdefault(t.shape[-1], []).append(t)
    batches = [torch.stack(ts, dim=1).to(device) for ts in by_size.values()]

    def eigh_alone() -> None:
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)  # as the scoring does on the CPU
        try:
            for batch in batches:
                torch.linalg.eigh(batch)
        finally:
            torch.set_num_threads(threads)

    eigh_s = median_seconds(eigh_alone, device, args.repeats)

    print(f"{args.model}: {n_layers} layers, {args.neurons} neurons, {len(folds)} folds, {len(grid)} alphas, "
          f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"feature statistics: {features_s:.2f} s; eigendecompositions alone ({n_layers} x {len(folds)}): "
          f"{eigh_s:.2f} s")
    print("| products | scoring s | floor s | scoring / floor (target <= 2) | scoring / features (target <= 0.5) |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['scoring_s']:.2f} | {row['floor_s']:.2f} | {row['scoring_over_floor']:.2f} | "
              f"{row['scoring_over_features']:.2f} |")
    reference = None
    if not args.skip_reference:
        reference = reference_procedure(args.model, stimuli, device, targets)
        ours = features_s + score_s
        reference["ours_s"] = ours
        reference["speedup"] = reference["total_s"] / ours
        print(f"reference study's procedure ({reference['n_outputs']} outputs): store {reference['forward_and_store_s']:.1f} s"
              f" + SRP {reference['project_s']:.1f} s + scale and RidgeCV(alpha 1.0) {reference['ridge_s']:.1f} s = "
              f"{reference['total_s']:.1f} s; this implementation (statistics + default scoring) "
              f"{ours:.1f} s: {reference['speedup']:.1f} x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "model": args.model,
        "n_layers": n_layers, "n_neurons": args.neurons, "n_folds": len(folds), "n_alphas": len(grid),
        "chunk_size": args.chunk_size, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "stimuli": stimuli_source, "repeats": args.repeats, "features_s": features_s, "eigh_s": eigh_s,
        "targets": {"floor": FLOOR_TARGET, "features": FEATURES_TARGET}, "scoring": rows, "reference": reference,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
