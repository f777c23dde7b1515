"""C-ΠGDM (spec §4) and its noisy variant (spec §5) for VP models (ComfyUI EPS / V).

Guidance weight w_t = w·r_t²·μ_t² makes the ΠGDM guidance's linear part a multiple of P,
which the conjugate map A_t = e^{c1}[I + (e^{c2} − 1)P] absorbs exactly. The state is
kept split into range(P) and its complement (see coefficients.py), never mixing
components whose scales differ by μ^{w}. The VJP is of ε̂ (g = J_εᵀu, spec pitfall 8),
obtained from the denoiser VJP as g = (u − J_Dᵀu)/σ_vp.

Noisy variant (σ_y > 0): as in the released code, u is unchanged and the map gets the
heuristic first-order correction A^σ = A + c3·M, c3 = ½wσ_y²(e^{c1+c2} − 1)·ln(e^{b} − 1),
inverted by one Neumann step. It is *not* an exact conjugate integrator of noisy ΠGDM
(the prefactor (e^{c1+c2} − 1) is not what a first-order expansion gives); we reproduce
it as written. σ_y is taken in the units of y (our y = Hx + σ_y n, no factor 2).
"""

from __future__ import annotations

import logging

import torch

from .coefficients import vp_coefficients
from .common import Run
from .cpgdm_noisy import choose_noisy_mode, cpgdm_exact_noisy

log = logging.getLogger(__name__)

NOISELESS_DEFAULTS = {"w": 15.0, "lam": 0.0}  # SR×4, 5 steps (test.sh)
NOISY_DEFAULTS = {"w": 2.0, "lam": -0.15}  # SR×4, σ_y = 0.05, 5 steps (imp_pgdm.sh)
EXACT_NOISY_DEFAULTS = {"w": 5.0, "k": 2.0, "lam": 0.0}  # noisy="exact", ω = w + k/σ² (benchmarks/analytic_posterior.py)
# ω(t) = w + k/σ_t² (schedule="consistent"), chosen by the sweep (benchmarks/results/weight_sweep.md)
CONSISTENT_DEFAULTS = {"w": 5.0, "k": 4.0, "lam": 0.0}
SCHEDULES = ("consistent", "paper")


def resolve_weight(schedule: str, sigma_y: float, w: float | None, k: float | None, lam: float | None):
    """(w, k, lam) after defaults; schedule="paper" is the paper's constant weight (k = 0)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if sigma_y > 0 or schedule == "paper":
        if k not in (None, 0.0):
            raise ValueError(f"k = {k:g} needs schedule='consistent' and a noiseless measurement (sigma_y = 0); "
                             "the paper's schedule and the released noisy map use the constant weight w.")
        defaults, k = (NOISY_DEFAULTS if sigma_y > 0 else NOISELESS_DEFAULTS), 0.0
    else:
        defaults = CONSISTENT_DEFAULTS
        k = defaults["k"] if k is None else float(k)
    w = defaults["w"] if w is None else float(w)
    lam = defaults["lam"] if lam is None else float(lam)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k:g}.")
    return w, k, lam


def cpgdm(denoiser, problem, sigmas, x=None, *, w: float | None = None, lam: float | None = None,
          k: float | None = None, schedule: str = "consistent", sigma_y: float | None = None, vjp="autograd",
          generator=None, callback=None, should_stop=None, work_dtype=None, closed_form: bool | None = None,
          a: float = 0.0, noisy: str = "exact"):
    """Conditional conjugate ΠGDM sampler; returns the state at sigmas[-1] (ComfyUI σ).

    Guidance weight ω(t)·r_t²·μ_t² with ω(t) = w + k/σ_t² (+ a/μ_t², see WeightSchedule).
    schedule="paper" is the paper's constant ω = w (defaults w = 15, λ = 0 noiseless); the
    default "consistent" schedule adds the k/σ² term that enforces Hx = y as t → 0.
    noisy (σ_y > 0 only): "exact" = the per-mode noisy ΠGDM map in the SVD of H (cpgdm_noisy.py,
    defaults w = 5, k = 2; falls back to "paper" with a log line when the operator has no spectral
    form), "paper" = the released c₃ heuristic (constant weight, defaults w = 2, λ = −0.15).
    sigma_y defaults to problem.sigma_y. x defaults to the data-dependent start H⁺y + σ0·z.
    """
    sigma_y = float(problem.sigma_y if sigma_y is None else sigma_y)
    mode, spectrum = choose_noisy_mode(noisy, problem, problem.pinv_y, sigma_y)
    if sigma_y > 0 and mode == "exact":
        d = EXACT_NOISY_DEFAULTS
        w = d["w"] if w is None else float(w)
        lam = d["lam"] if lam is None else float(lam)
        k = (0.0 if schedule == "paper" else d["k"]) if k is None else float(k)
        run = Run(denoiser, sigmas, x, "vp", problem=problem, generator=generator, vjp=vjp,
                  callback=callback, should_stop=should_stop, work_dtype=work_dtype)
        return cpgdm_exact_noisy(run, problem, spectrum, w=w, lam=lam, sigma_y=sigma_y, k=k, a=a)
    if sigma_y > 0 and noisy == "exact" and k:  # fell back to the released map, which has no k term
        log.warning("C-ΠGDM: k = %g is dropped: the released noisy map (used because the operator has no "
                    "spectral form) has the constant weight only.", k)
        k = None
    w, k, lam = resolve_weight(schedule, sigma_y, w, k, lam)
    run = Run(denoiser, sigmas, x, "vp", problem=problem, generator=generator, vjp=vjp,
              callback=callback, should_stop=should_stop, work_dtype=work_dtype)
    coefs = vp_coefficients(run.sigmas, w=w, lam=lam, sigma_y=sigma_y, closed_form=closed_form, k=k, a=a)
    noisy = sigma_y > 0
    P = problem.project
    M = problem.noise_cov
    hy = problem.pinv_y.to(run.work)
    if noisy:
        _check_noisy_correction(coefs, M, hy, sigma_y, w)
    m_hy = M(hy) if noisy else None
    use_jac = run.vjp.name != "none" and (w != 0.0 or k != 0.0 or a != 0.0)

    # split VP state: z⊥ = x_vp⊥, z∥ = x_vp∥ (+ κ·M x_vp∥ when noisy)
    xvp = coefs[0].mu * run.x0
    zpar = P(xvp)
    zperp = xvp - zpar
    if noisy:
        zpar = zpar + coefs[0].kappa * M(zpar)

    def unmap(zpar_, kappa):
        return zpar_ - kappa * M(zpar_) if noisy else zpar_

    for n, c in enumerate(coefs):
        x = (zperp + unmap(zpar, c.kappa)) / c.mu
        if run.stop():
            return run.output(x)
        x0, u, jtu = run.evaluate(x, c.sigma, problem.residual if use_jac else None)
        eps = (x - x0) / c.sigma
        run.report(n, x, x0)
        p_eps = P(eps)
        zperp = c.r_perp * zperp + c.ks_perp * (eps - p_eps)
        zpar = c.r_par * zpar + c.ky * hy + c.ks_par * p_eps
        if use_jac:
            g = (u - jtu) / c.sigma_vp
            p_g = P(g)
            zperp = zperp + c.kj_perp * (g - p_g)
            zpar = zpar + c.kj_par * p_g
            if noisy:
                zpar = zpar + c.kjc * M(g)
        if noisy:
            zpar = zpar + c.kyc * m_hy + c.ksc * M(eps)
    last = coefs[-1]
    x = (zperp + unmap(zpar, last.kappa_next)) / last.mu_next
    return run.output(x)


def _spectral_norm(apply, like: torch.Tensor, iters: int = 20) -> float:
    """‖M‖ by power iteration from a fixed-seed vector (the caller's generator is untouched)."""
    v = torch.randn(like.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v.to(device=like.device, dtype=like.dtype)
    norm = 0.0
    for _ in range(iters):
        v = apply(v / v.norm().clamp_min(1e-300))
        norm = float(v.norm())
    return norm


class UnstableNoisyCorrection(ValueError):
    """Noisy C-ΠGDM refused: its σ_y correction would diverge. `product` = max|c3|·‖M‖ (must be
    < 0.5), `w` the guidance weight; callers that know the user's units reword the message."""

    def __init__(self, message: str, *, product: float, w: float):
        super().__init__(message)
        self.product = product
        self.w = w


def _check_noisy_correction(coefs, M, hy, sigma_y, w) -> None:
    """The c3·M map and its one-term Neumann inverse need |κ|·‖M‖ < 1 (κ = c3/e^{c1+c2}).

    Ill-conditioned operators (e.g. a deblur keeping singular values down to 0.03, ‖M‖ ~ 1e5)
    break this and the released heuristic diverges; refuse instead of returning NaNs.
    """
    kappa = max(max(abs(c.kappa), abs(c.kappa_next)) for c in coefs)
    norm_m = _spectral_norm(M, hy[:1])
    if kappa * norm_m >= 0.5:
        raise UnstableNoisyCorrection(
            f"noisy C-ΠGDM (sigma_y={sigma_y:g}, w={w:g}) is unstable for this operator: the σ_y correction "
            f"max|c3|·‖H⁺(H⁺)ᵀ‖ = {kappa:.2e}·{norm_m:.3g} = {kappa * norm_m:.3g} must be < 0.5. Use noisy='exact' "
            "(no such limit), lower w or sigma_y, raise the operator's singular-value threshold, or run the noiseless "
            "sampler (sigma_y=0).",
            product=kappa * norm_m, w=w)
