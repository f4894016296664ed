"""Check the GPU path: feature statistics on CUDA, compared with CPU entries, then scoring.

Run from the repository root after the pipeline's ``stimuli``, ``responses`` and ``neurons``
stages (and, for the comparison, ``features`` on the CPU)::

    python benchmarks/cuda_check.py --models alexnet_random resnet18_random \
        --cpu-features data/features --out benchmarks/results/cuda_check.json

For each model it times ``extract_features`` on the chosen device (model build and
preprocessing included, as the ``features`` stage runs it), compares G, s, the centred
Gram S, K and the correlation RDMs of the usable layers with the CPU entry of the same cache
key where one exists (the keys match: the device is not part of the key, so the numbers
must agree to float32 rounding), then scores every model with the pipeline's own
``score_models`` and reports its time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepmouse.config import load_params  # noqa: E402
from deepmouse.features.cache import cache_key_digest, load_feature_entry  # noqa: E402
from deepmouse.features.extract import extract_features, resolve_device  # noqa: E402
from deepmouse.scoring import score_models  # noqa: E402


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| over a stack of matrices."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(float).tiny))


def rdm_difference(stats, cpu) -> float | None:
    """max |RDM - CPU RDM| over the layers usable in both (None where none is)."""
    usable = stats.usable_layers() & cpu.usable_layers()
    if not usable.any():
        return None
    return float(np.abs(stats.correlation_rdms(usable) - cpu.correlation_rdms(usable)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--stimuli", default="data/stimuli/stimuli.npy")
    parser.add_argument("--neurons", default="data/neurons/neurons.parquet")
    parser.add_argument("--responses", default="data/responses")
    parser.add_argument("--cpu-features", default=None, help="folder of CPU feature entries to compare with")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    features_cfg = dataclasses.replace(params.features, device=args.device)
    device = resolve_device(args.device)
    stimuli = np.load(args.stimuli)
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "n_stimuli": int(stimuli.shape[0]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "features"
        for model_id in args.models:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            extract_features(model_id, stimuli, features_cfg, root / model_id, progress=lambda _: None)
            seconds = time.perf_counter() - started
            stats, key = load_feature_entry(root / model_id)
            entry = {"seconds": round(seconds, 3), "layers": int(stats.n_layers)}
            if device.type == "cuda":
                entry["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
            reference = Path(args.cpu_features or "") / model_id
            if args.cpu_features and reference.is_dir():
                cpu, cpu_key = load_feature_entry(reference)
                same_layers = cpu.layers["layer_name"].tolist() == stats.layers["layer_name"].tolist()
                entry["cpu_comparison"] = {
                    "same_key": cache_key_digest(cpu_key) == cache_key_digest(key),
                    "same_layers": same_layers,
                    **({
                        "gram_rel_diff": relative_difference(stats.gram, cpu.gram),
                        "row_sums_rel_diff": relative_difference(stats.row_sums, cpu.row_sums),
                        "centred_gram_rel_diff": relative_difference(stats.centred_gram, cpu.centred_gram),
                        "kernel_rel_diff": relative_difference(stats.kernel, cpu.kernel),
                        "rdm_max_abs_diff": rdm_difference(stats, cpu),
                    } if same_layers else {}),
                }
            report["models"][model_id] = entry
            print(model_id, json.dumps(entry), flush=True)
        started = time.perf_counter()
        tables = score_models(args.models, root, features_cfg, Path(args.stimuli).parent, args.neurons,
                              args.responses, params.scoring, Path(tmp) / "scores", progress=lambda _: None)
        report["scoring_seconds"] = round(time.perf_counter() - started, 3)
        best = tables["model_scores"].groupby(["method", "model_id"])["score"].mean().round(4)
        report["mean_scores"] = {f"{m}/{model}": float(v) for (m, model), v in best.items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "models"}, indent=2))


if __name__ == "__main__":
    main()
