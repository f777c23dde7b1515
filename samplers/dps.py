"""DPS baseline (spec §3.4, "original" mode) for VP models: DDIM (η = 0) plus
−ζ/‖y − Hx̂0‖ · ∇_{x_t}‖y − Hx̂0‖², the gradient taken w.r.t. the VP state x_t."""

from __future__ import annotations

from .coefficients import vp_coefficients
from .common import Run


def dps(denoiser, problem, sigmas, x=None, *, zeta: float = 1.0, vjp="autograd", generator=None,
        callback=None, should_stop=None, work_dtype=None):
    """Diffusion posterior sampling over ComfyUI VP σ; returns the state at sigmas[-1]."""
    run = Run(denoiser, sigmas, x, "vp", problem=problem, generator=generator, vjp=vjp,
              callback=callback, should_stop=should_stop, work_dtype=work_dtype)
    coefs = vp_coefficients(run.sigmas, w=0.0, lam=0.0, closed_form=True)
    x = run.x0
    shape = (-1,) + (1,) * (x.ndim - 1)
    for n, c in enumerate(coefs):
        if run.stop():
            break
        norms = {}

        def cotangent(x0):
            grad_dir, norm = problem.fidelity(x0)  # Hᵀ(y − Hx̂0), ‖y − Hx̂0‖
            norms["r"] = norm
            return grad_dir

        x0, _, jtr = run.evaluate(x, c.sigma, cotangent)
        eps = (x - x0) / c.sigma
        run.report(n, x, x0)
        # −∇_{x_vp}‖r‖² = 2 J_Dᵀ Hᵀ r / μ
        step = (2.0 * zeta / (c.mu * norms["r"].clamp_min(1e-12))).view(shape) * jtr
        xvp = c.r_perp * c.mu * x + c.ks_perp * eps + step
        x = xvp / c.mu_next
    return run.output(x)
