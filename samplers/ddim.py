"""λ-DDIM (scalar conjugate integrator) for VP models, and the DDIM-projection baseline."""

from __future__ import annotations

from .coefficients import vp_coefficients
from .common import Run


def ddim(denoiser, problem, sigmas, x=None, *, lam: float = 0.0, generator=None,
         callback=None, should_stop=None, work_dtype=None):
    """Deterministic λ-DDIM over ComfyUI σ (VE-scaled VP state); λ = 0 is plain DDIM.

    Same argument order as cpgdm / pigdm / dps; `problem` may be None (unconditional DDIM).
    With a `problem`, every x̂0 is replaced by (I−P)x̂0 + H⁺y before the step (range–null
    "DDIM-projection" baseline) and x defaults to the measurement start H⁺y + σ0·z.
    Returns the state at sigmas[-1] (x̂0-like when sigmas end in 0).
    """
    run = Run(denoiser, sigmas, x, "vp", problem=problem, generator=generator, callback=callback,
              should_stop=should_stop, work_dtype=work_dtype)
    coefs = vp_coefficients(run.sigmas, w=0.0, lam=lam, closed_form=(lam == 0.0))
    correct = None if problem is None else (lambda x0, c: x0 + problem.residual(x0))
    return ddim_steps(run, coefs, correct)


def ddim_steps(run, coefs, correct=None):
    """The deterministic (η = 0) DDIM loop; `correct(x0, step)` replaces each x̂0 before its step
    (the network's ε̂ is kept), as DDIM-projection and DDNM do."""
    x = run.x0
    for n, c in enumerate(coefs):
        if run.stop():
            break
        x0, _, _ = run.evaluate(x, c.sigma)
        eps = (x - x0) / c.sigma
        run.report(n, x, x0)
        if correct is not None:
            x0 = correct(x0, c)
        xvp = c.mu * x0 + c.sigma_vp * eps
        x = (c.r_perp * xvp + c.ks_perp * eps) / c.mu_next
    return run.output(x)
