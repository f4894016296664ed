"""Torch's CPU tensors on transparent huge pages (``deepmouse/__init__.py``): faster, same values.

Each case runs in a process of its own, because torch reads ``THP_MEM_ALLOC_ENABLE`` once, at its
first allocation.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")

# An untrained AlexNet's statistics and ridge, RSA and CKA scores of planted neurons, written
# as raw bytes: what the features and scores stages compute, at a size whose activations
# (40 stimuli x 64 x 55 x 55 floats, 31 MB) go to huge pages when they are on.
STATISTICS_AND_SCORES = """
import hashlib, json, os, sys
import deepmouse
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.models.build import build_model
from deepmouse.models.registry import load_zoo
from deepmouse.scoring.api import score_cka, score_regression, score_rsa
entry = load_zoo().get("alexnet_random")
model = build_model(entry, init_seed=0)
inputs = torch.from_numpy(np.random.default_rng(0).standard_normal((40, 3, 224, 224), dtype=np.float32))
stats = compute_layer_statistics(model, inputs, "cpu")
digest = hashlib.sha256()
for array in (stats.gram, stats.row_sums, stats.kernel, stats.centred_gram):
    digest.update(np.ascontiguousarray(array).tobytes())
features = stats.kernel[3][:, :30]
rng = np.random.default_rng(1)
responses = features @ rng.standard_normal((30, 12)) + rng.standard_normal((40, 12))
# Every value's bytes: the regression frame's hashed, the RSA and CKA dicts' floats written in full
# (a frame's repr would round them).
digest.update(pd.util.hash_pandas_object(score_regression(features, responses)).to_numpy().tobytes())
for scores in (score_rsa(features, responses), score_cka(features, responses)):
    digest.update(repr(sorted(scores.items())).encode())
print(json.dumps({"env": os.environ.get("THP_MEM_ALLOC_ENABLE"), "digest": digest.hexdigest()}))
"""

# Whether a fresh 64 MB tensor, written once, sits on huge pages (AnonHugePages of its mapping).
HUGE_PAGES_USED = """
import json
import deepmouse
import torch
tensor = torch.ones(16 * 1024 * 1024)
start = tensor.data_ptr()
huge = 0
with open("/proc/self/smaps") as smaps:
    inside = False
    for line in smaps:
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            low, high = (int(bound, 16) for bound in first.split("-"))
            inside = low <= start < high
        elif inside and first == "AnonHugePages:":
            huge = int(line.split()[1])
print(json.dumps({"huge_kb": huge}))
"""


def _run(script: str, thp: str | None) -> dict:
    env = {name: value for name, value in os.environ.items() if name != "THP_MEM_ALLOC_ENABLE"}
    if thp is not None:
        env["THP_MEM_ALLOC_ENABLE"] = thp
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_statistics_and_scores_are_the_same_bytes_with_huge_pages_on_and_off():
    on, off = _run(STATISTICS_AND_SCORES, None), _run(STATISTICS_AND_SCORES, "0")
    assert on["env"] == "1", "importing deepmouse sets THP_MEM_ALLOC_ENABLE when it is not set"
    assert off["env"] == "0", "a value set beforehand wins"
    assert on["digest"] == off["digest"]


@pytest.mark.skipif(not THP_MODE.exists() or "[madvise]" not in THP_MODE.read_text(),
                    reason="only the system-wide mode 'madvise' (this machine's) leaves huge pages to the allocator")
def test_a_large_tensor_sits_on_huge_pages_only_when_on():
    assert _run(HUGE_PAGES_USED, None)["huge_kb"] >= 32 * 1024
    assert _run(HUGE_PAGES_USED, "0")["huge_kb"] == 0
