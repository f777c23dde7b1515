"""Batched conjugate gradient (samplers/cg.py) against dense solves."""

import pytest
import torch

from comfyui_inverse.samplers.cg import batch_dot, conjugate_gradient


def random_spd(n, cond, generator, dtype=torch.float64):
    """SPD matrix with eigenvalues log-spaced in [1, cond]."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    eig = torch.logspace(0, torch.log10(torch.tensor(float(cond))).item(), n, dtype=dtype)
    return q @ torch.diag(eig) @ q.T


def batched_matvec(mats):
    """apply_A for a batch of B×n×n matrices acting on B×n (reshaped to B×1×n to test flattening)."""
    return lambda v: torch.einsum("bij,bj->bi", mats, v.reshape(v.shape[0], -1)).reshape(v.shape)


def test_cg_matches_dense_solve_on_random_spd():
    g = torch.Generator().manual_seed(0)
    n = 24
    mats = torch.stack([random_spd(n, 50.0, g), random_spd(n, 5.0, g)])
    b = torch.randn(2, 1, n, generator=g, dtype=torch.float64)
    x0 = torch.randn(2, 1, n, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(mats, b.reshape(2, n)).reshape(2, 1, n)
    # Exact arithmetic: CG terminates in n steps; fp64 leaves ~1e-10 with a few spare iterations.
    x = conjugate_gradient(batched_matvec(mats), b, x0, iters=3 * n, tol=0.0)
    assert torch.allclose(x, exact, rtol=0, atol=1e-9)


def test_cg_error_decreases_in_energy_norm():
    g = torch.Generator().manual_seed(1)
    n = 30
    mats = random_spd(n, 1e3, g)[None]
    b = torch.randn(1, n, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(mats[0], b[0])[None]
    errors = []
    for iters in range(0, 8):
        e = conjugate_gradient(batched_matvec(mats), b, torch.zeros_like(b), iters, tol=0.0) - exact
        errors.append(float(e @ mats[0] @ e.T))
    # CG minimises the A-norm error over growing Krylov spaces: strictly monotone here.
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))


def test_cg_batch_items_are_independent():
    g = torch.Generator().manual_seed(2)
    n = 16
    mats = torch.stack([random_spd(n, 20.0, g) for _ in range(3)]).float()
    b = torch.randn(3, 2, 8, generator=g)
    x0 = torch.randn(3, 2, 8, generator=g)
    batched = conjugate_gradient(batched_matvec(mats), b, x0, iters=5)
    for i in range(3):
        alone = conjugate_gradient(batched_matvec(mats[i : i + 1]), b[i : i + 1], x0[i : i + 1], iters=5)
        # Same operations per item; only reduction order may differ (fp32 ulp-level).
        assert torch.allclose(batched[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    # A pooled inner product (one alpha for the whole batch) would not match the single solves:
    # scale item 0's system by 1000 and check item 1 is unaffected.
    scaled = mats.clone()
    scaled[0] *= 1000
    other = conjugate_gradient(batched_matvec(scaled), b, x0, iters=5)
    assert torch.allclose(other[1:], batched[1:], rtol=1e-5, atol=1e-6)


def test_cg_converged_item_stops_while_others_continue():
    g = torch.Generator().manual_seed(3)
    n = 10
    mats = torch.stack([random_spd(n, 10.0, g), random_spd(n, 10.0, g)])
    exact0 = torch.randn(1, n, generator=g, dtype=torch.float64)
    b = torch.cat([mats[0] @ exact0[0], torch.randn(n, generator=g, dtype=torch.float64)]).reshape(2, n)
    x0 = torch.cat([exact0, torch.zeros(1, n, dtype=torch.float64)])  # item 0 starts at its solution
    x = conjugate_gradient(batched_matvec(mats), b, x0, iters=4, tol=1e-8)
    assert torch.equal(x[0], x0[0])  # zero residual: untouched, no NaN from 0/0
    assert not torch.allclose(x[1], x0[1])
    assert torch.isfinite(x).all()


def test_cg_should_stop_returns_current_iterate():
    g = torch.Generator().manual_seed(4)
    mats = random_spd(8, 10.0, g)[None]
    b = torch.randn(1, 8, generator=g, dtype=torch.float64)
    x0 = torch.zeros_like(b)
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    stopped = conjugate_gradient(batched_matvec(mats), b, x0, iters=8, tol=0.0, should_stop=stop_after_two)
    two = conjugate_gradient(batched_matvec(mats), b, x0, iters=2, tol=0.0)
    assert torch.equal(stopped, two)
    assert len(calls) == 3


def test_cg_half_precision_is_solved_in_fp32_and_bad_input_is_rejected():
    g = torch.Generator().manual_seed(5)
    mats = random_spd(6, 4.0, g).float()[None]
    b = torch.randn(1, 6, generator=g)
    x = conjugate_gradient(batched_matvec(mats), b.half(), b.half(), iters=2)
    assert x.dtype == torch.float32
    assert batch_dot(b, b).shape == (1, 1)
    with pytest.raises(ValueError, match="same shape"):
        conjugate_gradient(batched_matvec(mats), b, b[:, :3], iters=2)
    with pytest.raises(ValueError, match="iters"):
        conjugate_gradient(batched_matvec(mats), b, b, iters=-1)
