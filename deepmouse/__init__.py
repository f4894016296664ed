"""deepmouse: benchmark deep vision models against mouse visual cortex.

``deepmouse.score_regression``, ``deepmouse.score_rsa`` and ``deepmouse.score_cka`` score a user's own feature
and response arrays with the pipeline's code (see :mod:`deepmouse.scoring.api`).
"""

import os

# Torch's CPU allocator reads this once, at its first allocation, so it is set before any torch
# import of the package. Tensors of 2 MB or more (a layer's activations for every stimulus) then
# sit on transparent huge pages: a fresh tensor costs 512 times fewer page faults. The default
# run's feature statistics take 15 % less time, its scoring 5 % less; every value is the same
# (tests/test_allocator.py). A value set beforehand wins: THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def __getattr__(name: str):
    # The scoring API pulls in torch; import it only when it is asked for.
    if name in ("score_regression", "score_rsa", "score_cka"):
        from deepmouse.scoring import api

        return getattr(api, name)
    raise AttributeError(f"module 'deepmouse' has no attribute {name!r}")
