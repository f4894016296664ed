"""Large float64 matrix products of the scores, in torch's BLAS.

The resamples of RSA and CKA multiply a (1,001 x thousands) matrix of weightings by the
entries of every layer. numpy's bundled OpenBLAS ran these products 2.5-5 times slower than
torch's MKL on the 2-core machines of ``benchmarks/README.md`` (it picks a generic kernel on
their virtual CPU), at the same float64 precision. Everything around the products stays
in numpy, where small element-wise steps do not wait on a thread pool.
"""

from __future__ import annotations

import numpy as np
import torch

TORCH_PRODUCT_MIN = 1 << 22
"""Multiply-adds from which :func:`matmul` hands its product to torch. Below it numpy is
faster: torch's call and thread-pool overhead (measured 19 ms CPU for 1 x 1,770 by 1,770 x 57
on a busy 2-core machine) costs more than a small product."""


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def matmul(a: np.ndarray, b: np.ndarray, *, device: str | torch.device | None = None) -> np.ndarray:
    """``a @ b`` of two 2-D arrays in float64, in torch on ``device`` (CUDA when available by default).

    Products below :data:`TORCH_PRODUCT_MIN` multiply-adds run in numpy. Either operand may
    be a transposed view: torch multiplies it as it lies, without a copy.

    Parameters
    ----------
    a : ndarray of shape (m, k)
    b : ndarray of shape (k, n)

    Returns
    -------
    ndarray of shape (m, n), float64
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[0] * a.shape[1] * b.shape[1] < TORCH_PRODUCT_MIN:
        return a @ b
    device = default_device() if device is None else torch.device(device)
    return (torch.as_tensor(a, device=device) @ torch.as_tensor(b, device=device)).cpu().numpy()
