"""Shared plumbing of every sampler: dtypes, σ tensors, model calls, start states, hooks."""

from __future__ import annotations

import torch

from .schedules import sigmas_to_list
from .vjp import get_vjp


def default_work_dtype(device: torch.device) -> torch.dtype:
    """float64 accumulation where the device has it (MPS has no float64)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def gaussian_noise(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """N(0, I) drawn on the CPU from `generator` (same seed → same noise on any device)."""
    z = torch.randn(tuple(shape), generator=generator, device="cpu", dtype=torch.float32)
    return z.to(device=device, dtype=dtype)


def measurement_start(problem, sigma0: float, kind: str, generator=None, noise=None, dtype=None) -> torch.Tensor:
    """Data-dependent start at σ0 in ComfyUI convention (spec pitfall 2).

    VP: x = H⁺y + σ0·z  (the VP state μ·H⁺y + σ_vp·z);  flow: x = (1−σ0)·H⁺y + σ0·z.
    """
    hy = problem.pinv_y
    dtype = dtype or hy.dtype
    z = noise if noise is not None else gaussian_noise(hy.shape, generator, hy.device, dtype)
    if z.shape != hy.shape:
        raise ValueError(f"start noise must have the shape of H⁺y {tuple(hy.shape)}, got {tuple(z.shape)}.")
    hy, z = hy.to(dtype), z.to(device=hy.device, dtype=dtype)
    if kind == "vp":
        return hy + sigma0 * z
    if kind == "flow":
        return (1.0 - sigma0) * hy + sigma0 * z
    raise ValueError(f'kind must be "vp" or "flow", got {kind!r}.')


class Run:
    """One sampling run: validated σ list, dtypes, hooks, and the model-call wrapper."""

    def __init__(self, denoiser, sigmas, x, kind, *, problem=None, generator=None, vjp="none",
                 callback=None, should_stop=None, work_dtype=None):
        if not callable(denoiser):
            raise ValueError("denoiser must be a callable (x, sigma) -> x0_hat.")
        self.sigmas = sigmas_to_list(sigmas, kind)
        if x is None:
            if problem is None:
                raise ValueError("pass the initial state x (or a problem for the measurement start).")
            x = measurement_start(problem, self.sigmas[0], kind, generator=generator)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            raise ValueError("x must be a floating-point tensor with a leading batch dimension.")
        self.denoiser = denoiser
        self.model_dtype = x.dtype
        self.device = x.device
        self.work = work_dtype or default_work_dtype(x.device)
        self.x0 = x.detach().to(self.work)
        self.batch = x.shape[0]
        self.vjp = get_vjp(vjp)
        self.callback = callback
        self.should_stop = should_stop

    def stop(self) -> bool:
        return self.should_stop is not None and bool(self.should_stop())

    def evaluate(self, x: torch.Tensor, sigma: float, cotangent_fn=None):
        """(x̂0, c, J_Dᵀc) in the work dtype; the model sees x and σ in the input dtype."""
        xm = x.to(self.model_dtype)
        s = torch.full((self.batch,), sigma, dtype=self.model_dtype, device=self.device)
        cot = None
        if cotangent_fn is not None:
            cot = lambda x0: cotangent_fn(x0.to(self.work))  # noqa: E731
        x0, c, jtc = self.vjp(self.denoiser, xm, s, cot)
        conv = lambda t: None if t is None else t.to(self.work)  # noqa: E731
        return conv(x0), conv(c), conv(jtc)

    def report(self, step: int, x: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if self.callback is not None:
            self.callback(step, x.to(self.model_dtype), x0_hat.to(self.model_dtype))

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.model_dtype)
