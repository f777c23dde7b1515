"""Time conventions: ComfyUI σ ↔ VP (ᾱ, μ, σ_vp) ↔ continuous VP-SDE time t ↔ flow time.

ComfyUI's EPS/V models use the VE-scaled state x = x0 + σ·ε, i.e. the VP state is
x_vp = μ·x with μ = √ᾱ = 1/√(1+σ²) and σ_vp = σ·μ.  CONST (flow) models use
x = (1−σ)·x0 + σ·ε, which is the rectified-flow state at paper time t = 1 − σ.

The paper's VP-SDE is β(t) = β0 + t(β1 − β0) with b(t) = ∫₀ᵗ β = −ln ᾱ(t). Inverting
b(t) = ln(1+σ²) gives a VP time for *any* ComfyUI σ, so λ ≠ 0 is meaningful on any grid.
All scalar maths here is float64 (Python floats / numpy), never the model dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA_0 = 0.1
BETA_1 = 20.0


def _arr(v):
    return np.asarray(v, dtype=np.float64)


def vpsde_beta(t, beta_0: float = BETA_0, beta_1: float = BETA_1):
    return beta_0 + _arr(t) * (beta_1 - beta_0)


def vpsde_b(t, beta_0: float = BETA_0, beta_1: float = BETA_1):
    """b(t) = ∫₀ᵗ β = −ln ᾱ(t)."""
    t = _arr(t)
    return beta_0 * t + 0.5 * (beta_1 - beta_0) * t * t


def vpsde_mu(t, **kw):
    """Signal coefficient μ_t = √ᾱ_t = exp(−b/2)."""
    return np.exp(-0.5 * vpsde_b(t, **kw))


def vpsde_sigma(t, **kw):
    """VP noise coefficient σ_t = √(1 − e^{−b})."""
    return np.sqrt(-np.expm1(-vpsde_b(t, **kw)))


def vp_time_to_sigma(t, **kw):
    """ComfyUI (VE-scaled) σ at VP-SDE time t: σ = σ_t/μ_t = √(e^{b} − 1)."""
    return np.sqrt(np.expm1(vpsde_b(t, **kw)))


def sigma_to_vp_time(sigma, beta_0: float = BETA_0, beta_1: float = BETA_1):
    """VP-SDE time with ᾱ(t) = 1/(1+σ²): the positive root of b(t) = ln(1+σ²).

    Written as 2b/(β0 + √(β0² + 2(β1−β0)b)) to stay accurate for small σ.
    """
    b = np.log1p(_arr(sigma) ** 2)
    return 2.0 * b / (beta_0 + np.sqrt(beta_0 * beta_0 + 2.0 * (beta_1 - beta_0) * b))


def sigma_to_alpha_bar(sigma):
    """ᾱ = 1/(1+σ²) for ComfyUI EPS/V models."""
    return 1.0 / (1.0 + _arr(sigma) ** 2)


def alpha_bar_to_sigma(alpha_bar):
    a = _arr(alpha_bar)
    return np.sqrt((1.0 - a) / a)


def sigma_to_vp(sigma):
    """(μ, σ_vp) of the VP state x_vp = μ·x for a ComfyUI σ."""
    s = _arr(sigma)
    mu = 1.0 / np.sqrt(1.0 + s * s)
    return mu, s * mu


def sigma_to_flow_time(sigma):
    """Rectified-flow time t = 1 − σ (t = 1 is data) for ComfyUI CONST models."""
    return 1.0 - _arr(sigma)


def vp_sigmas_uniform_t(steps: int, t_start: float = 0.4, t_end: float = 0.001, dtype=torch.float32) -> torch.Tensor:
    """The paper's VP grid: `steps`+1 times uniform in t from t_start down to t_end, as ComfyUI σ.

    Paper defaults: τ = 0.4 (config t_start = 0.6 is reverse time s = 1 − t), stop at 0.001;
    no trailing zero (the final state keeps σ ≈ 0.01 of noise, as in the paper).
    """
    _check_steps(steps)
    if not 0.0 <= t_end < t_start:
        raise ValueError(f"need 0 <= t_end < t_start, got t_start={t_start}, t_end={t_end}.")
    t = np.linspace(t_start, t_end, steps + 1)
    return torch.tensor(vp_time_to_sigma(t), dtype=dtype)


def flow_sigmas_uniform_t(steps: int, t_start: float = 0.6, dtype=torch.float32) -> torch.Tensor:
    """The paper's flow grid: t uniform from t_start (`skip_t`) to 1, as ComfyUI σ = 1 − t (ends at 0)."""
    _check_steps(steps)
    if not 0.0 <= t_start < 1.0:
        raise ValueError(f"flow t_start must be in [0, 1), got {t_start}.")
    t = np.linspace(t_start, 1.0, steps + 1)
    return torch.tensor(1.0 - t, dtype=dtype)


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")


def sigmas_preview(values: list[float], shown: int = 4) -> str:
    """The first few noise levels, for error messages (a 200-step schedule would flood the UI)."""
    head = ", ".join(f"{v:.4g}" for v in values[:shown])
    return f"[{head}{', …' if len(values) > shown else ''}] ({len(values)} values)"


def sigmas_to_list(sigmas, kind: str, *, strict: bool = True) -> list[float]:
    """Validate a ComfyUI SIGMAS tensor (1-D, descending, ≥ 2 entries) and return float64 values.

    strict: every step lowers the noise and the first level is > 0 (the conjugate samplers); else equal
    neighbours and a clean start are allowed (TReg skips steps at σ = 0)."""
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(
            "sigmas: need a 1-D list of at least 2 noise levels (one step), "
            f"got {getattr(sigmas, 'shape', type(sigmas))}. Connect a scheduler with steps >= 1 (Inverse Sigmas, "
            "BasicScheduler), not a single value split off by Split Sigmas."
        )
    s = [float(v) for v in sigmas.detach().to("cpu", torch.float64).tolist()]
    if any(not math.isfinite(v) or v < 0 for v in s):
        raise ValueError(f"sigmas: must be finite and >= 0, got {sigmas_preview(s)}.")
    if any(b >= a if strict else b > a for a, b in zip(s, s[1:])):
        raise ValueError(f"sigmas: must go from noisy to clean ({'strictly ' if strict else ''}descending), got "
                         f"{sigmas_preview(s)}. Remove Flip Sigmas, or connect the scheduler's output directly.")
    if kind == "flow" and s[0] > 1.0:
        raise ValueError(f"sigmas: start at {s[0]:.4g}, but a rectified-flow model (SD3/Flux) needs noise levels in "
                         "[0, 1]; this is a diffusion schedule (e.g. Karras). Use Inverse Sigmas or BasicScheduler "
                         "with this model.")
    if strict and s[0] == 0.0:
        raise ValueError("sigmas[0] must be > 0.")
    return s
