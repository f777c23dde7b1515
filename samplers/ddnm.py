"""DDIM with null-space projection (DDNM, Wang et al., ICLR 2023) and its noise-aware form.

Each step replaces the denoiser's estimate by its measurement-consistent version,

    x̂0 ← x̂0 + H⁺(y − H x̂0) = (I − P)x̂0 + H⁺y          (σ_y = 0: H x̂0 = y exactly)

and takes a deterministic DDIM step with the network's ε̂ (η = 0). With σ_y > 0 the full
projection would copy the measurement noise (amplified by 1/s_i on weak modes) into x̂0, so
the correction is scaled per mode, DDNM+-style: x̂0 ← x̂0 + Hᵀ(HHᵀ + (σ_y²/r_t²) I)⁻¹(y − H x̂0),
the Gaussian-posterior update of x̂0 under x0 ~ N(x̂0, r_t² I), r_t² = σ²/(1 + σ²) (ΠGDM's
variance, ComfyUI σ). Its gain s²r²/(s²r² + σ_y²) is 1 where the mode is well measured and the
step is noisy, and fades to 0 as r_t → 0 below the noise level. It is applied exactly as a
per-mode gain on H⁺(y − Hx̂0) for operators with a spectral form (operators/spectral.py), and
by conjugate gradients in measurement space otherwise. One model call per step, no Jacobian.
"""

from __future__ import annotations

import torch

from .cg import conjugate_gradient
from .coefficients import vp_coefficients
from .common import Run
from .ddim import ddim_steps

CG_ITERS = 30


def noise_aware_correction(operator, y: torch.Tensor, x0: torch.Tensor, sigma_y: float, r2: float,
                           iters: int = CG_ITERS) -> torch.Tensor:
    """Hᵀ(HHᵀ + (σ_y²/r²)I)⁻¹(y − Hx0): the Tikhonov/Wiener-gain version of H⁺(y − Hx0)."""
    resid = y.to(x0.dtype) - operator.forward(x0)
    alpha = sigma_y**2 / max(r2, 1e-300)
    spectrum = operator.spectral(tuple(x0.shape))
    if spectrum is not None:  # V diag(s²/(s² + α)) Vᵀ H⁺r = V diag(s/(s² + α)) Uᵀ r
        s2 = spectrum.s**2  # σ_y = 0: gain 1 on range(H), the plain projection
        return spectrum.apply(operator.pinv(resid), torch.where(s2 > 0, s2 / (s2 + alpha), torch.zeros_like(s2)))
    v = conjugate_gradient(lambda u: operator.forward(operator.adjoint(u)) + alpha * u, resid,
                           torch.zeros_like(resid), iters, tol=1e-10)
    return operator.adjoint(v.to(x0.dtype))


def ddnm(denoiser, problem, sigmas, x=None, *, sigma_y: float | None = None, generator=None, callback=None,
         should_stop=None, work_dtype=None):
    """DDNM over ComfyUI VP σ; noise-aware correction when σ_y > 0. Returns the state at sigmas[-1].

    `problem` needs project/residual (noiseless); the noise-aware form also needs
    problem.state_measurement() (pixel problems: H and y; latent surrogates: the latent-grid H and
    H·target, with σ_y in latent units).
    """
    sigma_y = float(problem.sigma_y if sigma_y is None else sigma_y)
    run = Run(denoiser, sigmas, x, "vp", problem=problem, generator=generator, callback=callback,
              should_stop=should_stop, work_dtype=work_dtype)
    if sigma_y > 0:
        if not hasattr(problem, "state_measurement"):
            raise ValueError("the noise-aware DDNM (sigma_y > 0) needs a problem with state_measurement() "
                             "(an OperatorProblem or a latent problem).")
        operator, y = problem.state_measurement()
    coefs = vp_coefficients(run.sigmas, w=0.0, lam=0.0, closed_form=True)

    def correct(x0, c):
        if sigma_y > 0:
            return x0 + noise_aware_correction(operator, y, x0, sigma_y, c.sigma**2 / (1 + c.sigma**2))
        return x0 + problem.residual(x0)

    return ddim_steps(run, coefs, correct)
