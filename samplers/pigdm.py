"""Continuous ΠGDM (spec §3.2, VP) and ΠGFM (spec §3.3, flow) baselines, noiseless guidance.

ΠGDM: λ-DDIM for the unconditional part plus an Euler step for the guidance
w·J_x̂0ᵀ(H⁺y − P x̂0) (effective weight w_t = w·r_t², so r_t² cancels). As in the released
code the noiseless form is used even when σ_y > 0. The VJP is of x̂0 (pitfall 8).
"""

from __future__ import annotations

from . import schedules as sch
from .coefficients import vp_coefficients
from .common import Run


def pigdm(denoiser, problem, sigmas, x=None, *, w: float = 1.0, lam: float = 0.0, vjp="autograd",
          generator=None, callback=None, should_stop=None, work_dtype=None):
    """Continuous ΠGDM over ComfyUI VP σ; returns the state at sigmas[-1]."""
    run = Run(denoiser, sigmas, x, "vp", problem=problem, generator=generator, vjp=vjp,
              callback=callback, should_stop=should_stop, work_dtype=work_dtype)
    coefs = vp_coefficients(run.sigmas, w=0.0, lam=lam, closed_form=(lam == 0.0))
    x = run.x0
    for n, c in enumerate(coefs):
        if run.stop():
            break
        x0, _, jtu = run.evaluate(x, c.sigma, problem.residual)
        eps = (x - x0) / c.sigma
        run.report(n, x, x0)
        xvp = c.mu * x
        dt = c.t - c.t_next
        # a_{t_n}/a_{t_{n+1}} = e^{c1(t_n) − c1(t_{n+1})} = r_perp / (1 − λΔs)
        scale = c.r_perp / (1.0 - lam * dt)
        guide = 0.5 * w * float(sch.vpsde_beta(c.t)) * scale * dt * (jtu / c.mu)  # J_x̂0 w.r.t. x_vp
        x = (c.r_perp * xvp + c.ks_perp * eps + guide) / c.mu_next
    return run.output(x)


def pigfm(denoiser, problem, sigmas, x=None, *, w: float = 1.0, vjp="autograd", generator=None,
          callback=None, should_stop=None, work_dtype=None):
    """Flow ΠGFM (Euler), ComfyUI CONST σ (t = 1 − σ, needs sigmas[0] < 1)."""
    run = Run(denoiser, sigmas, x, "flow", problem=problem, generator=generator, vjp=vjp,
              callback=callback, should_stop=should_stop, work_dtype=work_dtype)
    if run.sigmas[0] >= 1.0:
        raise ValueError("ΠGFM's weight is singular at t = 0: start below sigma = 1 (e.g. 0.4).")
    x = run.x0
    s = run.sigmas
    for n in range(len(s) - 1):
        if run.stop():
            break
        sig, t = s[n], 1.0 - s[n]
        x0, _, jtu = run.evaluate(x, sig, problem.residual)
        v = (x0 - x) / sig
        run.report(n, x, x0)
        weight = w * ((1 - t) ** 2 + t**2) / (t * (1 - t))
        x = x + (s[n] - s[n + 1]) * (v + weight * jtu)
    return run.output(x)
