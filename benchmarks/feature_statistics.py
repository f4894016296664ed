"""Feature statistics against their floor and the reference study's way, in one run (DESIGN.md §10).

Per untrained model (init seed 0), all stimuli in one batch, ``paper`` preprocessing:
1. bare forward (``inference_mode``), best of ``--repeats``;
2. floor = forward + 2 x the summed time of one float32 ``x @ x.T`` per hooked output, timed
   alone in hooks on the same activations (the statistics form two Grams: one of the
   centred values, for S, s and G, and one of the standardised values, for K);
3. :func:`~deepmouse.features.stats.compute_layer_statistics`, best of ``--repeats``, / floor;
   also / the floor with the Grams formed as the statistics form them
   (:func:`~deepmouse.features.products.symmetric_product`: on the CPU each off-diagonal block
   once), which leaves what the statistics add beyond their products;
4. peak memory of forward and statistics (CUDA: ``max_memory_allocated``; CPU: peak RSS of a
   fresh process each), against the bound forward peak + 2 x the largest layer;
5. bytes of the cache entry against the reference study's SRP cache of the same layers;
6. the reference study's way in a fresh process: store every output (float32, CPU RAM), then
   sparse-randomly project each; time and peak RSS.
TF32 is off throughout: the statistics run at full float32, so the floor must too. Run::

    python benchmarks/feature_statistics.py --models alexnet_random resnet50_random \
        vit_small_patch16_224_random --device auto --out benchmarks/results/feature_statistics.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import torch

from deepmouse.config import SimulatedConfig
from deepmouse.data.simulated import simulated_scenes
from deepmouse.data.stimuli import with_blank
from deepmouse.errors import ConfigError, DeepmouseError
from deepmouse.features.cache import feature_cache_key, hash_stimuli, write_feature_entry
from deepmouse.features.extract import resolve_device
from deepmouse.features.hooks import flatten_per_stimulus, hooked_leaf_outputs
from deepmouse.features.products import symmetric_product
from deepmouse.features.stats import LayerStatistics, compute_layer_statistics, sparse_random_projection, srp_dimension
from deepmouse.models.build import build_model, count_parameters
from deepmouse.models.preprocess import preprocess_stimuli
from deepmouse.models.registry import ZooEntry, load_zoo

DEFAULT_MODELS = ("alexnet_random", "resnet50_random", "vit_small_patch16_224_random")
DEFAULT_STIMULI = Path(__file__).resolve().parents[1] / "data" / "stimuli" / "stimuli.npy"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "feature_statistics.json"
INIT_SEED = 0
PREPROCESSING = "paper"
FLOAT32_BYTES = 4
TIME_TARGET = 1.2
CACHE_TARGET = 0.1
SRP_ASSUMPTION = ("per deduplicated layer, n_stimuli x min(p, SRP dimension) float32 values, no metadata or "
                  "compression; layers with p <= the SRP dimension stored unprojected")


def load_stimuli(path: Path) -> tuple[np.ndarray, str]:
    """The pipeline's stimuli if ``path`` exists, else the simulated scenes plus the blank.

    Returns
    -------
    stimuli : ndarray of shape (n_stimuli, height, width), uint8
    source : str
    """
    if path.is_file():
        return np.load(path, allow_pickle=False), str(path)
    return with_blank(simulated_scenes(SimulatedConfig())), "simulated_scenes(SimulatedConfig()) + blank"


def prepare(model_id: str, stimuli: np.ndarray,
            device: torch.device) -> tuple[ZooEntry, torch.nn.Module, torch.Tensor]:
    """Zoo entry, untrained model on ``device`` and its inputs (n_stimuli, 3, 224, 224) on ``device``."""
    entry = load_zoo().get(model_id, key="--models")
    model = build_model(entry, init_seed=INIT_SEED).to(device)
    return entry, model, preprocess_stimuli(stimuli, PREPROCESSING, entry, model).to(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); timings must not end before the kernels do."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Fastest of ``repeats`` wall-clock runs, the device synchronised before and after each."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def bare_forward(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """One forward pass of ``inputs`` (n_stimuli, 3, size, size), no hooks, output dropped."""
    with torch.inference_mode():
        model(inputs)


def time_gram_products(model: torch.nn.Module, inputs: torch.Tensor, device: torch.device, repeats: int,
                       product: Callable[[torch.Tensor], object] = lambda x: x @ x.T) -> tuple[float, list[int]]:
    """Sum over hooked outputs of the time of one float32 Gram product (best of ``repeats`` forwards).

    ``product(x)`` is ``x @ x.T`` unless given: the floor as defined, against
    :func:`~deepmouse.features.products.symmetric_product` as the statistics compute it.

    Every hooked output counts, duplicates included, as the statistics reduce each
    before deduplicating. On CUDA each product is timed by events on the stream, so
    the forward's own kernels are not counted and no host synchronisation intervenes.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode, on ``device``.
    inputs : torch.Tensor of shape (n_stimuli, 3, size, size)
        On ``device``.
    device : torch.device
    repeats : int

    Returns
    -------
    seconds : float
    widths : list of int
        Features p of each hooked output, in execution order.
    """
    n_stimuli = inputs.shape[0]
    widths: list[int] = []
    readers: list[Callable[[], float]] = []

    def gram_only(name: str, module: torch.nn.Module, output: torch.Tensor) -> None:
        flat = flatten_per_stimulus(output.detach(), n_stimuli)
        if flat is None:
            return
        x = flat.to(torch.float32)
        widths.append(x.shape[1])
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            product(x)
            end.record()
            readers.append(lambda: start.elapsed_time(end) / 1000.0)
        else:
            started = time.perf_counter()
            product(x)
            seconds = time.perf_counter() - started
            readers.append(lambda: seconds)

    best = float("inf")
    for _ in range(repeats):
        widths.clear()
        readers.clear()
        with torch.inference_mode(), hooked_leaf_outputs(model, gram_only):
            model(inputs)
        synchronize(device)
        best = min(best, sum(read() for read in readers))
    return best, list(widths)


def cuda_peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    """``torch.cuda.max_memory_allocated`` over one run, the peak reset just before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def store_and_project(model: torch.nn.Module, inputs: torch.Tensor, device: torch.device, srp_seed: int) -> dict:
    """Timings and sizes of :func:`stored_and_projected` (the projected outputs let go)."""
    timings, _ = stored_and_projected(model, inputs, device, srp_seed)
    return timings


def stored_and_projected(model: torch.nn.Module, inputs: torch.Tensor, device: torch.device,
                         srp_seed: int) -> tuple[dict, list[torch.Tensor]]:
    """The reference study's way: keep every hooked output in CPU RAM, then project each.

    Outputs with more features than the Johnson-Lindenstrauss dimension are
    projected with :func:`sparse_random_projection` (scikit-learn's matrix, seeded);
    the others are kept as they are, as :mod:`deepmouse.features.stats` does.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode, on ``device``.
    inputs : torch.Tensor of shape (n_stimuli, 3, size, size)
        On ``device``.
    device : torch.device
    srp_seed : int

    Returns
    -------
    timings : dict
        Seconds for forward-and-store and for the projections, bytes stored and projected.
    projected : list of torch.Tensor of shape (n_stimuli, <= n_components), float32, on the CPU
    """
    n_stimuli = inputs.shape[0]
    stored: list[torch.Tensor] = []

    def store(name: str, module: torch.nn.Module, output: torch.Tensor) -> None:
        flat = flatten_per_stimulus(output.detach(), n_stimuli)
        if flat is not None:
            stored.append(flat.to(device="cpu", dtype=torch.float32, copy=True))

    n_components = srp_dimension(n_stimuli)
    synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode(), hooked_leaf_outputs(model, store):
        model(inputs)
    synchronize(device)
    stored_at = time.perf_counter()
    with torch.inference_mode():
        projected = [sparse_random_projection(x, n_components, srp_seed) if x.shape[1] > n_components else x
                     for x in stored]
    finished = time.perf_counter()
    return {"forward_and_store_s": stored_at - started, "project_s": finished - stored_at,
            "total_s": finished - started, "n_components": n_components, "n_outputs": len(stored),
            "stored_bytes": sum(x.numel() * FLOAT32_BYTES for x in stored),
            "projected_bytes": sum(x.numel() * FLOAT32_BYTES for x in projected)}, projected


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count at the current RSS (Linux ``clear_refs``); False where not allowed.

    Imports, model building and preprocessing peak above a small model's forward pass:
    without the reset every measurement would report that same setup peak.
    """
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` where Linux reports it, else ``ru_maxrss``.

    ``ru_maxrss`` also keeps the peak that exited threads saw, which a reset does not clear.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def run_child(kind: str, model_id: str, args: argparse.Namespace) -> None:
    """Measure one thing in this fresh process; print it with the peak RSS as a JSON line."""
    device = resolve_device(args.device)
    _, model, inputs = prepare(model_id, load_stimuli(args.stimuli)[0], device)
    result: dict = {"peak_counts_setup": not reset_peak_rss(), "rss_before_bytes": psutil.Process().memory_info().rss}
    if kind == "forward":
        bare_forward(model, inputs)
    elif kind == "statistics":
        compute_layer_statistics(model, inputs, device)
    else:
        result.update(store_and_project(model, inputs, device, args.srp_seed))
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


def measure_in_child(kind: str, model_id: str, args: argparse.Namespace) -> dict:
    """Run :func:`run_child` in a fresh interpreter with this one's settings and thread count."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--models", model_id,
               "--device", args.device, "--stimuli", str(args.stimuli), "--srp-seed", str(args.srp_seed),
               "--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise DeepmouseError(f"{model_id}: the {kind} measurement process exited with {done.returncode}:\n"
                             f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_peaks(model: torch.nn.Module, inputs: torch.Tensor, device: torch.device, model_id: str,
                  largest_bytes: int, args: argparse.Namespace) -> dict:
    """Peak memory of the bare forward and of the statistics, and the DESIGN bound on the latter."""
    if device.type == "cuda":
        memory = {"method": "torch.cuda.max_memory_allocated",
                  "forward": cuda_peak_bytes(lambda: bare_forward(model, inputs), device),
                  "statistics": cuda_peak_bytes(lambda: compute_layer_statistics(model, inputs, device), device)}
    else:
        forward, statistics = (measure_in_child(kind, model_id, args) for kind in ("forward", "statistics"))
        counts_setup = forward["peak_counts_setup"] or statistics["peak_counts_setup"]
        memory = {"method": "peak RSS of a fresh process" + (", setup included" if counts_setup else ""),
                  "forward": forward["peak_rss_bytes"], "statistics": statistics["peak_rss_bytes"],
                  "rss_before_forward": forward["rss_before_bytes"],
                  "rss_before_statistics": statistics["rss_before_bytes"]}
    bound = memory["forward"] + 2 * largest_bytes
    return {**memory, "largest_layer": largest_bytes, "bound": bound, "meets_target": memory["statistics"] <= bound}


def measure_cache(stats: LayerStatistics, entry: ZooEntry, stimuli: np.ndarray) -> dict:
    """Bytes of the cache entry against the reference study's SRP cache of the same layers."""
    with tempfile.TemporaryDirectory() as folder:
        key = feature_cache_key(entry, init_seed=INIT_SEED, weights_sha256=None, preprocessing=PREPROCESSING,
                                stimuli_sha256=hash_stimuli(stimuli))
        entry_dir = write_feature_entry(Path(folder) / entry.model_id, stats, key, {"model_id": entry.model_id})
        entry_bytes = sum(path.stat().st_size for path in entry_dir.iterdir() if path.is_file())
    n_components = srp_dimension(stats.n_stimuli)
    srp_bytes = int(sum(stats.n_stimuli * min(int(p), n_components) * FLOAT32_BYTES for p in stats.n_features))
    return {"entry": entry_bytes, "reference_srp": srp_bytes, "ratio": entry_bytes / srp_bytes,
            "target": CACHE_TARGET, "meets_target": entry_bytes / srp_bytes <= CACHE_TARGET,
            "srp_dimension": n_components, "assumption": SRP_ASSUMPTION}


def measure_reference(model_id: str, stored_bytes: int, largest_bytes: int, args: argparse.Namespace) -> dict:
    """The reference study's way in a fresh process, unless skipped or short of RAM."""
    # The child holds every output, then a transposed copy and the projection of one of them;
    # this process's RSS (torch, model, inputs) stands in for the child's own.
    needed = psutil.Process().memory_info().rss + stored_bytes + 2 * largest_bytes
    available = psutil.virtual_memory().available
    if args.skip_reference:
        reference = {"skipped": True, "note": "--skip-reference"}
    elif needed > available:
        reference = {"skipped": True, "note": f"needs about {needed / 2**30:.1f} GiB of RAM, "
                                              f"{available / 2**30:.1f} GiB available; not run to avoid swapping"}
    else:
        reference = {"skipped": False, **measure_in_child("reference", model_id, args)}
    return {**reference, "estimated_bytes": needed, "available_bytes": available}


def benchmark_model(model_id: str, stimuli: np.ndarray, device: torch.device, args: argparse.Namespace) -> dict:
    """Every measurement of one model (see the module docstring)."""
    entry, model, inputs = prepare(model_id, stimuli, device)
    n_stimuli = inputs.shape[0]
    if device.type == "cuda":
        bare_forward(model, inputs)  # CUDA context, cuDNN algorithm choice and allocator growth, untimed
    forward_s = best_seconds(lambda: bare_forward(model, inputs), device, args.repeats)
    one_gram_s, widths = time_gram_products(model, inputs, device, args.repeats)
    floor_s = forward_s + 2 * one_gram_s
    symmetric_s, _ = time_gram_products(model, inputs, device, args.repeats, product=symmetric_product)
    symmetric_floor_s = forward_s + 2 * symmetric_s
    latest: dict = {}
    statistics_s = best_seconds(lambda: latest.update(stats=compute_layer_statistics(model, inputs, device)),
                                device, args.repeats)
    stats = latest.pop("stats")
    largest_bytes = n_stimuli * max(widths) * FLOAT32_BYTES
    result = {
        "model_id": model_id, "n_params": count_parameters(model), "n_stimuli": n_stimuli,
        "input_shape": list(inputs.shape[1:]), "n_hooked_outputs": len(widths), "n_layers": stats.n_layers,
        "time_s": {"forward": forward_s, "one_gram_sum": one_gram_s, "floor": floor_s, "statistics": statistics_s,
                   "statistics_over_floor": statistics_s / floor_s, "target": TIME_TARGET,
                   "one_symmetric_product_sum": symmetric_s, "floor_symmetric": symmetric_floor_s,
                   "statistics_over_floor_symmetric": statistics_s / symmetric_floor_s,
                   "meets_target": statistics_s / floor_s <= TIME_TARGET},
        "memory_bytes": measure_peaks(model, inputs, device, model_id, largest_bytes, args),
        "cache_bytes": measure_cache(stats, entry, stimuli),
    }
    del model, inputs, stats
    if device.type == "cuda":
        torch.cuda.empty_cache()
    stored_bytes = n_stimuli * sum(widths) * FLOAT32_BYTES
    result["reference"] = measure_reference(model_id, stored_bytes, largest_bytes, args)
    return result


def _mib(n_bytes: float) -> str:
    """Bytes as MiB for the table."""
    return f"{n_bytes / 2**20:,.1f}"


def _reference_cell(result: dict, show: Callable[[dict], str]) -> str:
    """A table cell from the reference measurement, or "skipped"."""
    return "skipped" if result["reference"]["skipped"] else show(result["reference"])


TABLE_ROWS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("layers (hooked outputs)", lambda r: f"{r['n_layers']} ({r['n_hooked_outputs']})"),
    ("bare forward (s)", lambda r: f"{r['time_s']['forward']:.3f}"),
    ("one Gram per output, summed (s)", lambda r: f"{r['time_s']['one_gram_sum']:.3f}"),
    ("floor = forward + 2 x Grams (s)", lambda r: f"{r['time_s']['floor']:.3f}"),
    ("statistics (s)", lambda r: f"{r['time_s']['statistics']:.3f}"),
    (f"statistics / floor (<= {TIME_TARGET})",
     lambda r: f"{r['time_s']['statistics_over_floor']:.2f} {'ok' if r['time_s']['meets_target'] else 'OVER'}"),
    ("Grams as the statistics form them, summed (s)", lambda r: f"{r['time_s']['one_symmetric_product_sum']:.3f}"),
    ("statistics / floor with those", lambda r: f"{r['time_s']['statistics_over_floor_symmetric']:.2f}"),
    ("peak memory, forward (MiB)", lambda r: _mib(r["memory_bytes"]["forward"])),
    ("peak memory, statistics (MiB)", lambda r: _mib(r["memory_bytes"]["statistics"])),
    ("largest layer, float32 (MiB)", lambda r: _mib(r["memory_bytes"]["largest_layer"])),
    ("statistics <= forward + 2 x largest",
     lambda r: f"{'yes' if r['memory_bytes']['meets_target'] else 'NO'} (bound {_mib(r['memory_bytes']['bound'])})"),
    ("cache entry (KiB)", lambda r: f"{r['cache_bytes']['entry'] / 1024:,.1f}"),
    ("reference SRP cache (KiB)", lambda r: f"{r['cache_bytes']['reference_srp'] / 1024:,.1f}"),
    (f"cache ratio (<= {CACHE_TARGET})",
     lambda r: f"{r['cache_bytes']['ratio']:.3f} {'ok' if r['cache_bytes']['meets_target'] else 'OVER'}"),
    ("reference: store + project (s)",
     lambda r: _reference_cell(r, lambda x: f"{x['forward_and_store_s']:.2f} + {x['project_s']:.2f}")),
    ("reference: stored outputs (MiB)", lambda r: _reference_cell(r, lambda x: _mib(x["stored_bytes"]))),
    ("reference: peak RSS (MiB)", lambda r: _reference_cell(r, lambda x: _mib(x["peak_rss_bytes"]))),
    ("reference time / statistics time",
     lambda r: _reference_cell(r, lambda x: f"{x['total_s'] / r['time_s']['statistics']:.1f}")),
)


def format_table(report: dict) -> str:
    """One row per measurement, one column per model, then any notes on skipped references."""
    results = list(report["models"].values())
    header = ["", *report["models"]]
    rows = [header] + [[label, *(show(result) for result in results)] for label, show in TABLE_ROWS]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"{report['device']} ({report['device_type']}), torch {report['torch']}, "
             f"{report['threads']} threads, {report['n_stimuli']} stimuli, memory: "
             f"{results[0]['memory_bytes']['method'] if results else '-'}"]
    lines += ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                        for column, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines += [f"{result['model_id']}: reference skipped: {result['reference']['note']}"
              for result in results if result["reference"]["skipped"]]
    return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    """The GPU's name, or the CPU model from ``/proc/cpuinfo`` where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; ``--child`` is how the script measures itself in a fresh process."""
    parser = argparse.ArgumentParser(description="Feature statistics: time, memory and cache bytes, side by side.")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="zoo ids of untrained models")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<index>")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement; the best counts")
    parser.add_argument("--stimuli", type=Path, default=DEFAULT_STIMULI,
                        help="uint8 (n, H, W) .npy; simulated scenes plus the blank when it does not exist")
    parser.add_argument("--srp-seed", type=int, default=0, help="seed of the reference's projection")
    parser.add_argument("--threads", type=int, help="torch CPU threads (torch's default when left out)")
    parser.add_argument("--skip-reference", action="store_true", help="do not run the reference study's way")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file for all numbers")
    parser.add_argument("--child", choices=("forward", "statistics", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure every model, print the table and write the JSON report."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.child is not None:
        run_child(args.child, args.models[0], args)
        return
    for model_id in args.models:  # a wrong id stops the run before anything is measured
        if not load_zoo().get(model_id, key="--models").is_random:
            raise ConfigError(f"--models: {model_id!r} is trained; this benchmark runs untrained models (*_random)")
    device = resolve_device(args.device)
    stimuli, source = load_stimuli(args.stimuli)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(device), "device_type": device.type, "host_cpu": describe_device(torch.device("cpu")),
        "host_memory_bytes": psutil.virtual_memory().total, "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(), "tf32": False,
        "stimuli": source, "stimuli_sha256": hash_stimuli(stimuli), "n_stimuli": int(stimuli.shape[0]),
        "preprocessing": PREPROCESSING, "init_seed": INIT_SEED, "repeats": args.repeats, "models": {},
    }
    for model_id in args.models:
        print(f"{model_id}: measuring on {device} ...", flush=True)
        report["models"][model_id] = benchmark_model(model_id, stimuli, device, args)
    print(format_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(f"numbers written to {args.out}")


if __name__ == "__main__":
    try:
        main()
    except DeepmouseError as err:
        sys.exit(f"error: {err}")
