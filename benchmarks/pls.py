"""PLS2 scoring of 6,619 neurons per layer against its own matrix-product floor (DESIGN.md §10).

The same synthetic data as ``benchmarks/ridge.py``: an untrained model's real statistics
(default resnet18_random, ``paper`` preprocessing) and ``--neurons`` simulated neurons (default
6,619) reading random layers through random readouts of their kernels, plus noise; all of them
one site (one PLS2 fit per layer and fit). Timed, per layer, on ``--layers`` layers spread over
the depth (every layer costs the same: the kernels are all 119 × 119):

1. scoring: :func:`~deepmouse.metrics.pls.fit_pls_folds` with the default ``scoring.pls``
   grid and inner folds and the default 10 outer folds, float64;
2. floor: the products with the neurons that the scoring cannot avoid, on random tensors of
   the same shapes and chunking — the held-out predictions (``folds · b × n`` by ``n × chunk``)
   and the inner errors as pair-product weights (``folds × n(n+1)/2`` by ``n(n+1)/2 × chunk``)
   per layer, and the neurons' Gram ``Y Yᵀ`` once per site (shared by the layers; reported
   apart);
3. extraction alone: the components of every fit (no product with the neurons), the part
   that does not shrink with the neurons;
4. ridge beside it: :func:`~deepmouse.metrics.ridge.fit_ridge_folds` of the same neurons on the
   same layers, folds and machine state (the default alphas), per layer.

Medians of ``--repeats`` runs. Run::

    python benchmarks/pls.py --model resnet18_random --layers 3 --threads 2 --out benchmarks/results/pls.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

from deepmouse.config import CrossValidationConfig, PlsConfig, RegressionConfig
from deepmouse.features.extract import resolve_device
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.metrics import pls
from deepmouse.metrics.folds import stimulus_folds
from deepmouse.metrics.ridge import DEFAULT_CHUNK_SIZE, fit_ridge_folds
from feature_statistics import DEFAULT_STIMULI, load_stimuli, prepare
from ridge import N_NEURONS, median_seconds

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pls.json"
FLOOR_TARGET = 2.0


def floor_products(n_stimuli: int, folds: list[np.ndarray], n_neurons: int, chunk_size: int,
                   device: torch.device):
    """The scoring's products with the neurons for one layer, and the site's Gram, on random tensors."""
    generator = torch.Generator(device=device).manual_seed(0)
    n_pairs = n_stimuli * (n_stimuli + 1) // 2
    sizes: dict[int, int] = {}
    for test in folds:
        sizes[len(test)] = sizes.get(len(test), 0) + 1
    predictions = [torch.randn(k * b, n_stimuli, generator=generator, dtype=torch.float64, device=device)
                   for b, k in sizes.items()]
    errors = torch.randn(len(folds), n_pairs, generator=generator, dtype=torch.float64, device=device)
    pairs = torch.randn(n_pairs, chunk_size, generator=generator, dtype=torch.float64, device=device)
    targets = torch.randn(n_stimuli, n_neurons, generator=generator, dtype=torch.float64, device=device)

    def per_layer() -> None:
        for start in range(0, n_neurons, chunk_size):
            width = min(chunk_size, n_neurons - start)
            errors @ pairs[:, :width]
            for rows in predictions:
                rows @ targets[:, start:start + width]

    def gram() -> None:
        for start in range(0, n_neurons, chunk_size):
            chunk = targets[:, start:start + chunk_size]
            chunk @ chunk.T

    return per_layer, gram


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet18_random")
    parser.add_argument("--neurons", type=int, default=N_NEURONS)
    parser.add_argument("--layers", type=int, default=3, help="layers timed, spread over the depth")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--stimuli", type=Path, default=DEFAULT_STIMULI)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    stimuli, stimuli_source = load_stimuli(args.stimuli)
    _, model, inputs = prepare(args.model, stimuli, device)
    kernels = compute_layer_statistics(model, inputs, device).kernel
    del model, inputs
    n_layers, n_stimuli = kernels.shape[0], kernels.shape[1]
    rng = np.random.default_rng(0)
    # As benchmarks/ridge.py: neurons reading random layers through random readouts of their kernels, plus noise.
    readers = rng.integers(n_layers, size=args.neurons)
    readouts = rng.normal(size=(n_stimuli, args.neurons))
    signal = np.empty((n_stimuli, args.neurons))
    for layer in range(n_layers):
        signal[:, readers == layer] = kernels[layer] @ readouts[:, readers == layer]
    targets = signal / signal.std(axis=0) + rng.normal(size=(n_stimuli, args.neurons))
    chosen = np.unique(np.linspace(0, n_layers - 1, args.layers).round().astype(int))
    cv, cfg = CrossValidationConfig(), PlsConfig()
    folds = stimulus_folds(n_stimuli, cv.n_folds, cv.n_repeats, np.random.default_rng([cv.seed, 0]))

    def score() -> None:
        pls.fit_pls_folds(kernels[chosen], targets, folds, np.random.default_rng([cv.seed, 2]),
                          components=cfg.components, inner_folds=cfg.inner_folds, device=device,
                          chunk_size=args.chunk_size)

    score_s = median_seconds(score, device, args.repeats) / chosen.size
    fits, _ = pls._fold_fits(pls._check_folds(folds, n_stimuli), n_stimuli, cfg.inner_folds,
                             np.random.default_rng([cv.seed, 2]))
    fits = fits.to(device)
    y = torch.as_tensor(targets - targets.mean(axis=0), device=device)
    parts = pls._FitParts.of(fits, pls._responses_root(y), cfg.inner_folds + 1)
    layer_kernels = torch.as_tensor(kernels[chosen], device=device)

    def extract() -> None:
        parts.extract(layer_kernels, max(cfg.components))

    extract_s = median_seconds(extract, device, args.repeats) / chosen.size

    def ridge() -> None:
        fit_ridge_folds(kernels[chosen], targets, folds, relative_alphas=RegressionConfig().relative_alphas,
                        device=device, chunk_size=args.chunk_size)

    ridge_s = median_seconds(ridge, device, args.repeats) / chosen.size
    per_layer, gram = floor_products(n_stimuli, folds, args.neurons, args.chunk_size, device)
    floor_s = median_seconds(per_layer, device, args.repeats)
    gram_s = median_seconds(gram, device, args.repeats)
    print(f"{args.model}: layers {chosen.tolist()} of {n_layers}, {args.neurons} neurons in one site, "
          f"{len(folds)} folds x ({cfg.inner_folds} inner + 1), components {list(cfg.components)}, device {device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print("| per layer | scoring s | extraction alone s | floor s | scoring / floor (target <= 2) | ridge s, same run |")
    print("|---|---|---|---|---|---|")
    print(f"| float64 | {score_s:.3f} | {extract_s:.3f} | {floor_s:.3f} | {score_s / floor_s:.1f} | {ridge_s:.3f} |")
    print(f"neurons' Gram once per site: {gram_s:.3f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "model": args.model,
        "layers": chosen.tolist(), "n_layers": n_layers, "n_neurons": args.neurons, "n_folds": len(folds),
        "inner_folds": cfg.inner_folds, "components": list(cfg.components), "chunk_size": args.chunk_size,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "stimuli": stimuli_source, "repeats": args.repeats,
        "scoring_s_per_layer": score_s, "extraction_s_per_layer": extract_s, "floor_s_per_layer": floor_s,
        "gram_s_per_site": gram_s, "scoring_over_floor": score_s / floor_s, "target": FLOOR_TARGET,
        "ridge_scoring_s_per_layer": ridge_s,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
