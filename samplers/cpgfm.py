"""C-ΠGFM (spec §6) for flow models (ComfyUI CONST; t = 1 − σ, v = x̂0 − ε̂ = (x̂0 − x)/σ).

γ_t = w·t(1−t); A_t = e^{a}[I + (e^{b} − 1)P] with a = B·t, b' = γ. The VJP is of v̂:
g = J_vᵀu = (J_Dᵀu − u)/σ. `jacobian_term="released"` reproduces the official
ConjugateV2's h·ΔK₃·g (about h times weaker; converges to the Jacobian-free ODE),
"paper" the consistent ΔL₁g + ΔL₂Pg. The tuned defaults (w = 20, B = 0.2, st = 0.6,
10 steps) were tuned with the released behaviour.
"""

from __future__ import annotations

from .coefficients import flow_coefficients
from .common import Run
from .cpgdm_noisy import choose_noisy_mode
from .cpgfm_noisy import cpgfm_exact_noisy

DEFAULTS = {"w": 20.0, "lam": 0.2, "t_start": 0.6, "steps": 10}


def cpgfm(denoiser, problem, sigmas, x=None, *, w: float = 20.0, lam: float = 0.2, k: float = 0.0,
          jacobian_term: str = "paper", vjp="autograd", generator=None, callback=None,
          should_stop=None, work_dtype=None, sigma_y: float | None = None, noisy: str = "exact"):
    """Conditional conjugate ΠGFM; returns the state at sigmas[-1] (the model never sees σ = 0).

    k > 0 adds the flow analogue of C-ΠGDM's k/σ² weight term (coefficients.flow_coefficients):
    k·t² times the exact ΠGFM weight; on a grid ending at σ = 0 the output satisfies Hx = y.
    k = 0 is the paper's weight, unchanged. `lam` is the paper's scalar B of the conjugate map.
    sigma_y defaults to problem.sigma_y. noisy (σ_y > 0 only): "exact" = the per-mode noisy ΠGFM
    map in the SVD of H (cpgfm_noisy.py; falls back to "paper" with a log line when the operator
    has no spectral form), "paper" = the released sampler, which ignores σ_y.
    """
    sigma_y = float(problem.sigma_y if sigma_y is None else sigma_y)
    mode, spectrum = choose_noisy_mode(noisy, problem, problem.pinv_y, sigma_y)
    run = Run(denoiser, sigmas, x, "flow", problem=problem, generator=generator, vjp=vjp,
              callback=callback, should_stop=should_stop, work_dtype=work_dtype)
    if mode == "exact":
        return cpgfm_exact_noisy(run, problem, spectrum, w=w, lam=lam, sigma_y=sigma_y, jacobian_term=jacobian_term,
                                 k=float(k))
    coefs = flow_coefficients(run.sigmas, w=w, lam=lam, jacobian_term=jacobian_term, k=float(k))
    P = problem.project
    hy = problem.pinv_y.to(run.work)
    use_jac = run.vjp.name != "none" and (w != 0.0 or k != 0.0)
    zpar = P(run.x0)
    zperp = run.x0 - zpar
    for k, c in enumerate(coefs):
        x = zperp + zpar
        if run.stop():
            return run.output(x)
        x0, u, jtu = run.evaluate(x, c.sigma, problem.residual if use_jac else None)
        v = (x0 - x) / c.sigma
        run.report(k, x, x0)
        p_v = P(v)
        zperp = c.r_perp * zperp + c.kv_perp * (v - p_v)
        zpar = c.r_par * zpar + c.kv_par * p_v + c.ky * hy
        if use_jac:
            g = (jtu - u) / c.sigma
            p_g = P(g)
            zperp = zperp + c.kj_perp * (g - p_g)
            zpar = zpar + c.kj_par * p_g
    return run.output(zperp + zpar)
