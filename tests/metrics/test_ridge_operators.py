"""The batched residual makers of the ridge solvers against the formula written per alpha."""

import numpy as np
import pytest
import torch

from deepmouse.metrics.ridge import _centred_eigh, _residual_makers


def _per_alpha(eigenvalues, eigenvectors, alpha):
    """``R = α Q diag(1/(w + α)) Qᵀ - 11ᵀ/m`` for one decomposition and one alpha, in numpy."""
    m = eigenvalues.size
    return alpha * (eigenvectors / (eigenvalues + alpha)) @ eigenvectors.T - 1.0 / m


@pytest.mark.parametrize("batch", [(), (3,), (2, 4)])
def test_residual_makers_equal_the_formula_for_every_alpha_and_kernel(batch):
    rng = np.random.default_rng(7)
    m, n_alphas = 9, 5
    features = rng.normal(size=(*batch, m, 4))  # rank 4 < m: a degenerate null space, as when p < n
    kernels = torch.as_tensor(features @ np.swapaxes(features, -1, -2))
    eigenvalues, eigenvectors = _centred_eigh(kernels)
    alphas = torch.as_tensor(np.exp(rng.normal(size=(*batch, n_alphas))))
    makers, diagonals = _residual_makers(eigenvalues, eigenvectors, alphas)
    assert makers.shape == (*batch, n_alphas, m, m)
    assert diagonals.shape == (*batch, n_alphas, m)
    for index in np.ndindex(*batch):
        for a in range(n_alphas):
            expected = _per_alpha(eigenvalues[index].numpy(), eigenvectors[index].numpy(), alphas[index][a].item())
            np.testing.assert_allclose(makers[index][a].numpy(), expected, rtol=0, atol=1e-13)
            np.testing.assert_allclose(diagonals[index][a].numpy(), np.diag(expected), rtol=0, atol=1e-13)
    # Residual makers of ridge with an intercept annihilate the constant.
    np.testing.assert_allclose(makers.sum(dim=-1).numpy(), 0.0, atol=1e-12)


def test_one_decomposition_and_an_alpha_grid_as_in_the_loo_solver():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(7, 12))
    eigenvalues, eigenvectors = _centred_eigh(torch.as_tensor(x @ x.T))
    alphas = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)
    makers, _ = _residual_makers(eigenvalues, eigenvectors, alphas)
    for a, alpha in enumerate(alphas.tolist()):
        np.testing.assert_allclose(makers[a].numpy(), _per_alpha(eigenvalues.numpy(), eigenvectors.numpy(), alpha),
                                   rtol=0, atol=1e-13)
