"""Conjugate gradient for symmetric positive-definite operators on batched tensors.

Each batch item (dim 0) is an independent linear system: inner products, step sizes and
the stopping test are all per item, so a batch gives the same answer as solving the items
one by one. Used by TReg's pixel-space data consistency; generic otherwise.
"""

from __future__ import annotations

from typing import Callable

import torch


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item inner product ⟨a_i, b_i⟩ over all non-batch dims, shaped B×1×…×1 for broadcasting."""
    dots = (a * b).flatten(1).sum(dim=1)
    return dots.view(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(
    apply_A: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor,
    iters: int,
    tol: float = 1e-4,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Approximately solve A x = b for SPD `apply_A`, starting at `x0`, with `iters` CG steps.

    An item stops moving once its residual norm ‖b − A x‖ falls below `tol` (absolute);
    the loop ends early when every item has. `should_stop()` is polled before each
    iteration: when it returns True the current iterate is returned (callers that must
    abort check `should_stop` again themselves). Half-precision inputs are solved in fp32
    (the result is fp32); otherwise the dtype of `b` is kept.
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}.")
    if b.shape != x0.shape:
        raise ValueError(f"b and x0 must have the same shape, got {tuple(b.shape)} and {tuple(x0.shape)}.")
    dtype = torch.promote_types(b.dtype, torch.float32)
    b = b.to(dtype)
    x = x0.to(dtype).clone()
    if iters == 0:
        return x

    r = b - apply_A(x)
    p = r.clone()
    rs_old = batch_dot(r, r)
    tol_sq = tol * tol
    for _ in range(iters):
        active = rs_old > tol_sq
        if not bool(active.any()):
            break
        if should_stop is not None and should_stop():
            break
        Ap = apply_A(p)
        pAp = batch_dot(p, Ap)
        # Converged items (and a degenerate pAp) take a zero step instead of dividing by ~0.
        ok = active & (pAp > 0)
        alpha = torch.where(ok, rs_old / torch.where(ok, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = batch_dot(r, r)
        beta = torch.where(ok, rs_new / torch.where(ok, rs_old, torch.ones_like(rs_old)), torch.zeros_like(rs_old))
        p = r + beta * p
        rs_old = torch.where(ok, rs_new, rs_old)
    return x
