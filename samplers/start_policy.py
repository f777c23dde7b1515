"""Start policy: when (VP time τ) and from where (H⁺y or noise) a guided sampler starts.

Measured on the analytic benchmark (benchmarks/results/analytic_posterior.md, start sweep):
  * the data-dependent point H⁺y + σ0·z beat a pure-noise start σ0·z at the same τ in every
    case tried, so the point is H⁺y, or its Wiener-filtered version W y when σ_y > 0;
  * the plain null-space fraction 1 − rank(P)/n does not predict the best τ (SR×4 has 94% null
    space and wants τ = 0.4; colorization 67% and wants 0.6). What matters is how much *image
    energy* H⁺y is missing: zero-filled high frequencies (SR, deblur) cost little, zero-filled
    chroma or large holes cost a lot. `lowpass_null_fraction` measures that without a prior,
    with smooth random probes, and τ = 0.6 when at least half of their energy is unobserved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TAU_DEFAULT = 0.4
TAU_LARGE_NULL = 0.6
LARGE_NULL = 0.5


def lowpass_null_fraction(operator, shape, probes: int = 4, seed: int = 0) -> float:
    """E‖(I − P)v‖²/E‖v‖² over smooth random images v (coarse noise upsampled ×4, colour-independent)."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(probes, c, max(1, h // 4), max(1, w // 4), generator=g, dtype=torch.float64)
    v = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    v = v - v.mean(dim=(2, 3), keepdim=True) + torch.randn(probes, c, 1, 1, generator=g, dtype=torch.float64)
    null = v - operator.project(v)
    return float(null.pow(2).sum() / v.pow(2).sum())


def choose_start_time(operator, shape, sigma_y: float = 0.0) -> float:
    """τ for the VP grid (flow: σ0) from the operator's low-pass null-space fraction (see module doc)."""
    return TAU_LARGE_NULL if lowpass_null_fraction(operator, shape) >= LARGE_NULL else TAU_DEFAULT


def choose_start_point(problem, sigma_y: float | None = None) -> str:
    """"wiener" (W y, cpgdm_noisy.wiener_y) for a noisy measurement whose operator has a spectral form,
    else "pinv" (H⁺y). W y = H⁺y on modes with s_i ≫ σ_y and damps the weak ones, where H⁺y is mostly
    amplified noise (noisy deblurring: error/floor 5.5× → 1.7× at 10 NFE, benchmarks/results/analytic_noisy.md)."""
    from .cpgdm_noisy import problem_spectrum

    sigma_y = float(problem.sigma_y if sigma_y is None else sigma_y)
    if sigma_y > 0 and problem_spectrum(problem, problem.pinv_y) is not None:
        return "wiener"
    return "pinv"


def start_point(problem, sigma_y: float | None = None) -> torch.Tensor:
    """The clean point the start policy noises: W y ("wiener") or H⁺y ("pinv"), in the problem's space."""
    from .cpgdm_noisy import wiener_y

    if choose_start_point(problem, sigma_y) == "wiener":
        return wiener_y(problem, sigma_y=sigma_y)
    return problem.pinv_y


def policy_start(problem, sigma0: float, kind: str = "vp", generator=None, noise=None, dtype=None):
    """The start state at σ0 from the chosen point: W y + σ0·z or H⁺y + σ0·z (flow: (1−σ0)·point + σ0·z)."""
    from .common import measurement_start
    from .cpgdm_noisy import wiener_start

    if choose_start_point(problem) == "wiener":
        return wiener_start(problem, sigma0, kind, generator=generator, noise=noise, dtype=dtype)
    return measurement_start(problem, sigma0, kind, generator=generator, noise=noise, dtype=dtype)
