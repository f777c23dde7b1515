"""Exact noisy C-ΠGDM: the conjugate map of noisy ΠGDM guidance, diagonal in the SVD of H.

Derivation (VP state x, σ = σ_vp, μ, r_t² = σ², H = U diag(s) Vᵀ, ρ_i = σ_y²/s_i²):
  noisy ΠGDM guidance  Jᵀ Hᵀ(r²HHᵀ + σ_y²I)⁻¹(y − H x̂0) = Jᵀ V diag(1/(r² + ρ_i)) Vᵀ (H⁺y − P x̂0);
  with the weight ω(t)μ²r² (ω = w + k/σ² + a/μ², the paper's w·μ²r² at k = a = 0) it is G = ωμ² J_x̂0ᵀ Γ_t u,
  Γ_t = V diag(γ_i) Vᵀ, γ_i = r²/(r² + ρ_i) (1 on range(P) when σ_y = 0, 0 on the null space).
  Expanding x̂0 = (x − σε̂)/μ as in the noiseless case: dx/dt = −½β(I − ωΓ_t)x + ½βε̂/σ
  − ½βωσΓ_tε̂ − ½βωμΓ_tH⁺y + ½βωμσ J_εᵀ(Γ u); every Γ_t is diagonal in V, so the conjugate map
  A_t = exp∫(λ − F) is the per-mode scalar e^{E_i(t)}, E_i = λt + ½b − ½∫β(wv + k)/(v + ρ_i)
  (v = σ²), in closed form E_i = λt + ½b − ½A_i ln(v + ρ_i) − ½B_i b, A_i = (k − wρ_i)/(1 + ρ_i),
  B_i = (w + k)/(1 + ρ_i) (partial fractions, dv = β(1 − v)dt). ρ_i = 0 gives the noiseless
  range factor, ρ_i = ∞ the null-space one; the released c₃·M heuristic is its first-order
  expansion in σ_y² with a different prefactor.

Per step (ε̂ and the cotangent Γ_{t_n}u frozen at t_n; the VJP g = J_εᵀ(Γ_{t_n}u)), in mode
coordinates c = Vᵀx_vp:  c' = r·c + ky·Vᵀ H⁺y + ks·Vᵀε̂ + kj·Vᵀg  with per-mode r, ky, ks, kj
(Gauss–Legendre in √t, the nodes of coefficients.py, vectorised over the distinct ρ_i).
λ ≠ 0 keeps the released Euler factor (1 − λΔt) on r, as the noiseless scheme does, so σ_y = 0
reproduces it. Cost per step: three V-transforms on top of the noiseless step; no M = H⁺(H⁺)ᵀ.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from . import schedules as sch
from .coefficients import _GL_NODES, _GL_WEIGHTS, _PANELS

log = logging.getLogger(__name__)

NOISY_MODES = ("exact", "paper")
_CHUNK = 8192  # distinct ρ per vectorised quadrature block (nodes × chunk float64 arrays)
_EXACT_LIMIT = 2048  # up to this many distinct ρ the coefficients are computed exactly (see per_rho)


def per_rho(fn, rho: np.ndarray):
    """fn(ρ array) → list of per-ρ arrays, exactly for ≤ _EXACT_LIMIT distinct finite ρ > 0; otherwise
    on _EXACT_LIMIT log-spaced ρ and interpolated linearly in ln ρ (the coefficients are smooth in ln ρ;
    measured ≤ 1e-5 relative, far below a few-step sampler's own error). Distinct ρ grow with the image
    (a random motion blur has ~3e4 at 256²), the quadrature cost with them. ρ = 0 and ∞ stay exact."""
    inner = np.isfinite(rho) & (rho > 0)
    if int(inner.sum()) <= _EXACT_LIMIT:
        return fn(rho)
    grid = np.geomspace(rho[inner].min(), rho[inner].max(), _EXACT_LIMIT)
    on_grid, at_ends = fn(grid), fn(rho[~inner])
    out = []
    for g, e in zip(on_grid, at_ends):
        arr = np.empty_like(rho)
        arr[inner] = np.interp(np.log(rho[inner]), np.log(grid), g)
        arr[~inner] = e
        out.append(arr)
    return out


def _nodes(t: float, tn: float):
    """Oriented ∫_t^{tn} f = Σ weights·f(nodes), composite GL in s = √t (as coefficients.integrate)."""
    a, b = np.sqrt(tn), np.sqrt(t)
    edges = np.linspace(a, b, _PANELS + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    s = (edges[:-1, None] + half[:, None] * (_GL_NODES[None, :] + 1.0)).reshape(-1)
    wts = (half[:, None] * _GL_WEIGHTS[None, :]).reshape(-1) * 2.0 * s
    return s * s, -wts  # t > tn: the step integrates backwards in time


def _log_factor(t, rho, w, k, lam, a=0.0):
    """E(t, ρ) = log of the per-mode conjugate factor (module docstring); ρ = inf is the null space.

    The a/μ² term of ω (coefficients.WeightSchedule) adds −½a[α(ln(v + ρ) + b) + e^{b}/(1 + ρ)],
    α = −ρ/(1 + ρ)² (partial fractions of v/((v + ρ)(1 − v)²), 1/(1 − v) = e^{b}).
    """
    b = sch.vpsde_b(t)
    v = -np.expm1(-b)
    base = lam * t + 0.5 * b
    finite = np.isfinite(rho)
    r = np.where(finite, rho, 0.0)
    a_ = (k - w * r) / (1.0 + r)
    b_ = (w + k) / (1.0 + r)
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.log(v + r)
        range_part = -0.5 * np.where(a_ == 0.0, 0.0, a_ * lv) - 0.5 * b_ * b
        if a:
            alpha = -r / (1.0 + r) ** 2
            range_part = range_part - 0.5 * a * (np.where(alpha == 0.0, 0.0, alpha * (lv + b)) + np.exp(b) / (1.0 + r))
    return base + np.where(finite, range_part, 0.0)


def _omega_gamma(v, rho, w, k, a=0.0):
    """ω·γ = (w + k/v + a/(1 − v))·v/(v + ρ): the guidance gain relative to the noise-free r²-weight (0 on the null space)."""
    finite = np.isfinite(rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (w * v + k + a * v / (1.0 - v)) / (v + np.where(finite, rho, 0.0))
    return np.where(finite, out, 0.0)


def mode_step_coefficients(t: float, tn: float, rho: np.ndarray, w: float, k: float, lam: float, a: float = 0.0):
    """(r, ks, ky, kj) per ρ for the step t → tn (arrays like rho; see module docstring)."""
    rho = np.asarray(rho, dtype=np.float64)
    out = [np.empty_like(rho) for _ in range(4)]
    ts, wts = _nodes(t, tn)
    beta = sch.vpsde_beta(ts)[:, None]
    sig = sch.vpsde_sigma(ts)[:, None]
    mu = sch.vpsde_mu(ts)[:, None]
    v = sig * sig
    dec = 1.0 - lam * (t - tn)
    for lo in range(0, rho.size, _CHUNK):
        rr = rho.reshape(-1)[lo:lo + _CHUNK]
        en = _log_factor(np.float64(tn), rr, w, k, lam, a)
        e = np.exp(_log_factor(ts[:, None], rr[None, :], w, k, lam, a) - en[None, :])
        og = _omega_gamma(v, rr[None, :], w, k, a)
        sl = slice(lo, lo + rr.size)
        out[0].reshape(-1)[sl] = dec * np.exp(_log_factor(np.float64(t), rr, w, k, lam, a) - en)
        out[1].reshape(-1)[sl] = wts @ (0.5 * beta * (1.0 / sig - sig * og) * e)
        out[2].reshape(-1)[sl] = wts @ (-0.5 * beta * mu * og * e)
        out[3].reshape(-1)[sl] = wts @ (0.5 * beta * mu * sig * (w + k / v + a / (mu * mu)) * e)
    return out


def guidance_gain(sigma_vp: float, rho: np.ndarray) -> np.ndarray:
    """γ = r²/(r² + ρ) with r² = σ_vp² (0 on the null space, ρ = inf)."""
    v = sigma_vp * sigma_vp
    finite = np.isfinite(rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = v / (v + np.where(finite, rho, 0.0))
    return np.where(finite, g, 0.0)


def mode_noise_ratio(spectrum, sigma_y: float):
    """(distinct ρ = σ_y²/s² as numpy, inverse index shaped like s); ρ = inf where s = 0."""
    s = spectrum.s
    rho = torch.where(s > 0, sigma_y**2 / s.clamp_min(1e-300) ** 2, torch.full_like(s, float("inf")))
    uniq, inv = torch.unique(rho, return_inverse=True)
    return uniq.numpy(), inv


def cpgdm_exact_noisy(run, problem, spectrum, *, w: float, lam: float, sigma_y: float, k: float = 0.0, a: float = 0.0):
    """Run the exact noisy C-ΠGDM on a prepared `Run` (see cpgdm()); returns the final state."""
    rho, inv = mode_noise_ratio(spectrum, sigma_y)
    ts = sch.sigma_to_vp_time(run.sigmas)
    mus, svps = sch.sigma_to_vp(run.sigmas)
    use_jac = run.vjp.name != "none" and (w != 0.0 or k != 0.0 or a != 0.0)

    def per_mode(values, like):
        return spectrum.like(like, torch.from_numpy(np.ascontiguousarray(values))[inv])

    c = spectrum.to_modes(float(mus[0]) * run.x0)
    hy = spectrum.to_modes(problem.pinv_y.to(run.work))
    for n in range(len(run.sigmas) - 1):
        sigma, mu, svp = run.sigmas[n], float(mus[n]), float(svps[n])
        x = spectrum.from_modes(c) / mu
        if run.stop():
            return run.output(x)
        gain = torch.from_numpy(guidance_gain(svp, rho))[inv]
        cot = (lambda x0, g_=gain: spectrum.apply(problem.residual(x0), g_)) if use_jac else None
        x0, u, jtu = run.evaluate(x, sigma, cot)
        eps = (x - x0) / sigma
        run.report(n, x, x0)
        step = per_rho(lambda rr: mode_step_coefficients(float(ts[n]), float(ts[n + 1]), rr, w, k, lam, a), rho)
        r, ks, ky, kj = (per_mode(arr, c) for arr in step)
        c = r * c + ky * hy + ks * spectrum.to_modes(eps)
        if use_jac:
            c = c + kj * spectrum.to_modes((u - jtu) / svp)
    return run.output(spectrum.from_modes(c) / float(mus[-1]))


def problem_spectrum(problem, like: torch.Tensor):
    """The problem's operator spectrum on `like`'s shape, or None (no operator / no cheap SVD)."""
    op = getattr(problem, "operator", None)
    spectral = getattr(op, "spectral", None)
    return spectral(tuple(like.shape)) if spectral is not None else None


def choose_noisy_mode(noisy: str, problem, like: torch.Tensor, sigma_y: float):
    """("exact", spectrum) or ("paper", None) for a noisy run; falls back to "paper" with a log line.

    Fallback rather than refusal: "exact" is the default, and the operators without a spectral
    form (chains such as SR∘colorization, box SR after an FFT blur) ran with the released
    heuristic before; refusing would break those graphs. The log names the operator and the fix.
    """
    if noisy not in NOISY_MODES:
        raise ValueError(f'noisy must be one of {NOISY_MODES} ("exact": per-mode noisy ΠGDM map, "paper": the '
                         f'released c₃ heuristic), got {noisy!r}.')
    if noisy == "paper" or sigma_y <= 0:
        return "paper", None
    spectrum = problem_spectrum(problem, like)
    if spectrum is None:
        op = getattr(problem, "operator", None)
        name = op.describe() if op is not None else type(problem).__name__
        log.warning("noisy='exact' needs an operator with a spectral form (SVD); %s has none, so the released "
                    "noisy sampler (noisy='paper') is used for sigma_y=%g. Pass noisy='paper' to silence this, "
                    "or sigma_y=0 for the noiseless sampler.", name, sigma_y)
        return "paper", None
    return "exact", spectrum


__all__ = ["per_rho", "NOISY_MODES", "cpgdm_exact_noisy", "choose_noisy_mode", "guidance_gain", "mode_step_coefficients",
           "mode_noise_ratio", "problem_spectrum"]


WIENER_TAU = 1.0  # prior std per mode on the models' [-1, 1] scale (see wiener_y)


def wiener_y(problem, tau: float = WIENER_TAU, sigma_y: float | None = None) -> torch.Tensor:
    """W y = V diag(s²/(s² + σ_y²/τ²)) Vᵀ H⁺y  (= V diag(s/(s² + σ_y²/τ²)) Uᵀ y), the Wiener
    estimate of x0 for a white N(0, τ²I) prior in the state's units.

    H⁺y puts noise of std σ_y/s_i on mode i; the Wiener gain keeps modes with s_i ≫ σ_y/τ and
    damps the ill-conditioned ones, where H⁺y is mostly amplified noise (a deblur's weak
    frequencies). A white prior is enough for a start (the sampler's prior shapes the result);
    τ = 1 rather than the ~0.5 pixel std of a [-1, 1] image because image energy sits in few
    low-frequency modes whose std exceeds the pixel std. Analytic deblur, σ_y = 0.05, error/floor
    at 5 | 10 NFE: τ = 0.5 3.6 | 1.2, τ = 1 2.9 | 1.7, τ = 1.5 2.6 | 2.2, H⁺y (τ = ∞) 3.8 | 5.5.
    σ_y = 0 gives H⁺y. Raises ValueError when the operator has no spectral form.
    """
    sigma_y = float(problem.sigma_y if sigma_y is None else sigma_y)
    if not tau > 0:
        raise ValueError(f"Wiener tau (prior std) must be > 0, got {tau}.")
    hy = problem.pinv_y
    if sigma_y <= 0:
        return hy
    spectrum = problem_spectrum(problem, hy)
    if spectrum is None:
        raise ValueError(f"the Wiener start needs an operator with a spectral form; {problem.operator.describe()} "
                         "has none: start from H⁺y (measurement_start) instead.")
    s2 = spectrum.s**2
    return spectrum.apply(hy.to(torch.float64 if hy.dtype == torch.float64 else torch.float32),
                          s2 / (s2 + (sigma_y / tau) ** 2)).to(hy.dtype)


def wiener_start(problem, sigma0: float, kind: str, tau: float = WIENER_TAU, generator=None, noise=None,
                 dtype=None) -> torch.Tensor:
    """measurement_start with W y in place of H⁺y: VP W y + σ0·z, flow (1−σ0)·W y + σ0·z (same z)."""
    from .common import measurement_start

    x = measurement_start(problem, sigma0, kind, generator=generator, noise=noise, dtype=dtype)
    shift = (wiener_y(problem, tau) - problem.pinv_y).to(x)
    return x + (shift if kind == "vp" else (1.0 - sigma0) * shift)


__all__ += ["WIENER_TAU", "wiener_y", "wiener_start"]
