"""Exact noisy C-ΠGFM: the flow analogue of cpgdm_noisy.py (per-mode conjugate map in the SVD of H).

Flow time t = 1 − σ (t = 1 is data), x̂1 = x + (1 − t)v̂, γ_t = w·t(1 − t), ΠGFM's
r_t² = (1 − t)²/(t² + (1 − t)²), ρ_i = σ_y²/s_i². The noisy ΠGFM guidance replaces u = H⁺y − P x̂1
by Γ_t u, Γ_t = V diag(γ_i) Vᵀ, γ_i = r_t²/(r_t² + ρ_i) (the noiseless one at ρ = 0, 0 on the null space):
  dx/dt = −γ_tΓ_t x + v̂ − γ_t(1 − t)Γ_t v̂ + γ_tΓ_t H⁺y + γ_t(1 − t) J_vᵀ(Γ_t u).
Γ_t is diagonal in V, so the conjugate map is per mode e^{a(t) + b_i(t)}, a = B·t,
b_i = ∫ (w r² + k)t(1 − t)/(r² + ρ_i) dt (k: the flow weight term of coefficients.flow_coefficients),
a rational function of u = 1 − t over D(u) = (1 + 2ρ)u² − 2ρu + ρ integrated in closed form
(polynomial + ln D + atan, _int_over_d). ρ = 0 gives the noiseless b = w(t²/2 − t³/3) (+ k term). The cotangent Γ_{t_k}u and v̂ are frozen over a step; coefficients by
Gauss–Legendre in t, vectorised over the distinct ρ_i.
"""

from __future__ import annotations

import numpy as np
import torch

from .coefficients import _GL_NODES, _GL_WEIGHTS, _PANELS, check_flow_weight
from .cpgdm_noisy import _CHUNK, mode_noise_ratio, per_rho


def _int_over_d(num, u, rho):
    """∫ num(u)/D(u) du (antiderivative, per ρ), D = (1 + 2ρ)u² − 2ρu + ρ, num = [n4, n3, n2, n1, n0].

    Long division gives a cubic plus (A u + B)/D; for ρ > 0 D has no real root (discriminant
    −4ρ(1 + ρ)): (A/2c)·ln D + (B − Ap/2c)(2/Δ)·atan((2cu + p)/Δ), Δ = 2√(ρ(1 + ρ)). ρ = 0: D = u²,
    A·ln u − B/u.
    """
    n4, n3, n2, n1, n0 = num
    c, p, r = 1.0 + 2.0 * rho, -2.0 * rho, rho
    q2 = n4 / c
    n3_, n2_ = n3 - q2 * p, n2 - q2 * r
    q1 = n3_ / c
    n2__, n1_ = n2_ - q1 * p, n1 - q1 * r
    q0 = n2__ / c
    a_, b_ = n1_ - q0 * p, n0 - q0 * r
    poly = q2 * u**3 / 3.0 + q1 * u**2 / 2.0 + q0 * u
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = 2.0 * np.sqrt(r * (1.0 + r))
        smooth = (a_ / (2.0 * c) * np.log(c * u * u + p * u + r)
                  + (b_ - a_ * p / (2.0 * c)) * 2.0 / delta * np.arctan((2.0 * c * u + p) / delta))
        singular = a_ * np.log(u) - b_ / u
    return poly + np.where(r > 0, smooth, singular)


_W_NUM = (-1.0, 1.0, 0.0, 0.0, 0.0)  # t(1 − t)·γ_i·… in u = 1 − t: u³ − u⁴
_K_NUM = (-2.0, 4.0, -3.0, 1.0, 0.0)  # (1 − u)u(1 − 2u + 2u²) = u − 3u² + 4u³ − 2u⁴


def _flow_log_range(t, rho, w, k=0.0):
    """b_i(t) up to a per-ρ constant (module docstring); 0 on the null space (ρ = inf).

    dB_i/dt = (w r² + k)·t(1 − t)/(r² + ρ): w·t(1 − t)³/D and k·t(1 − t)(t² + (1 − t)²)/D with
    D = (1 + ρ)(1 − t)² + ρt², integrated in u = 1 − t (dt = −du).
    """
    t = np.asarray(t, dtype=np.float64)
    finite = np.isfinite(rho)
    r = np.where(finite, rho, 0.0)
    u = 1.0 - t
    b = -w * _int_over_d(_W_NUM, u, r)
    if k:
        b = b - k * _int_over_d(_K_NUM, u, r)
    return np.where(finite, b, 0.0)


def flow_gain(t: float, rho: np.ndarray) -> np.ndarray:
    """γ_i = r_t²/(r_t² + ρ_i), r_t² = (1 − t)²/(t² + (1 − t)²); 0 on the null space."""
    r2 = (1.0 - t) ** 2 / (t * t + (1.0 - t) ** 2)
    finite = np.isfinite(rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = r2 / (r2 + np.where(finite, rho, 0.0))
    return np.where(finite, np.nan_to_num(g, nan=1.0), 0.0)  # t = 1, ρ = 0: the noiseless gain 1


def flow_mode_step_coefficients(t: float, tn: float, rho, w: float, lam: float, jacobian_term: str = "paper",
                                k: float = 0.0):
    """(r, kv, ky, kj) per ρ for the step t → tn (flow time, tn > t)."""
    rho = np.asarray(rho, dtype=np.float64)
    out = [np.empty_like(rho) for _ in range(4)]
    h = tn - t
    edges = np.linspace(t, tn, _PANELS + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    s = (edges[:-1, None] + half[:, None] * (_GL_NODES[None, :] + 1.0)).reshape(-1)
    wts = (half[:, None] * _GL_WEIGHTS[None, :]).reshape(-1)
    gamma = (w * s * (1.0 - s) + k * s * (s * s + (1.0 - s) ** 2) / (1.0 - s))[:, None]  # noiseless γ (with k)
    gamma_1ms = (w * s * (1.0 - s) ** 2 + k * s * (s * s + (1.0 - s) ** 2))[:, None]
    a_s, a_n = lam * s[:, None], lam * tn
    dec = 1.0 + lam * h  # Euler for B·x̄, as in the released code
    for lo in range(0, rho.size, _CHUNK):
        rr = rho.reshape(-1)[lo:lo + _CHUNK]
        bn = _flow_log_range(tn, rr, w, k)
        b_s = _flow_log_range(s[:, None], rr[None, :], w, k)
        with np.errstate(invalid="ignore"):  # b(t_{n+1}) = ∞ (k > 0, ρ = 0, σ = 0): factor 0
            e = np.nan_to_num(np.exp(a_s + b_s - a_n - bn[None, :]), nan=0.0)
        gi = np.stack([flow_gain(float(si), rr) for si in s])
        sl = slice(lo, lo + rr.size)
        with np.errstate(invalid="ignore"):
            out[0].reshape(-1)[sl] = dec * np.nan_to_num(np.exp(lam * t + _flow_log_range(t, rr, w, k) - a_n - bn), nan=0.0)
        out[1].reshape(-1)[sl] = wts @ (e * (1.0 - gamma_1ms * gi))
        out[2].reshape(-1)[sl] = wts @ (gamma * gi * e)
        if jacobian_term == "paper":
            out[3].reshape(-1)[sl] = wts @ (gamma_1ms * e)
        else:  # released: h·ΔK₃ with the range factor e^{a+b} even on the null space (spec §6.3)
            null_b = (w * (s * s / 2 - s**3 / 3))[:, None]  # the released absolute b (integral start 0)
            b_range = np.where(np.isfinite(rr)[None, :], b_s, null_b)
            dk3 = wts @ (gamma * (1.0 - s[:, None]) * np.exp(a_s + b_range - a_n - bn[None, :]))
            out[3].reshape(-1)[sl] = h * dk3
    return out


def cpgfm_exact_noisy(run, problem, spectrum, *, w: float, lam: float, sigma_y: float, jacobian_term: str = "paper",
                      k: float = 0.0):
    """Run the exact noisy C-ΠGFM on a prepared flow `Run` (see cpgfm()); returns the final state."""
    check_flow_weight(jacobian_term, k)
    rho, inv = mode_noise_ratio(spectrum, sigma_y)
    use_jac = run.vjp.name != "none" and (w != 0.0 or k != 0.0)

    def per_mode(values, like):
        return spectrum.like(like, torch.from_numpy(np.ascontiguousarray(values))[inv])

    c = spectrum.to_modes(run.x0)
    hy = spectrum.to_modes(problem.pinv_y.to(run.work))
    s = run.sigmas
    for n in range(len(s) - 1):
        t, tn = 1.0 - s[n], 1.0 - s[n + 1]
        x = spectrum.from_modes(c)
        if run.stop():
            return run.output(x)
        gain = torch.from_numpy(flow_gain(t, rho))[inv]
        cot = (lambda x0, g_=gain: spectrum.apply(problem.residual(x0), g_)) if use_jac else None
        x0, u, jtu = run.evaluate(x, s[n], cot)
        v = (x0 - x) / s[n]
        run.report(n, x, x0)
        step = per_rho(lambda rr: flow_mode_step_coefficients(t, tn, rr, w, lam, jacobian_term, k), rho)
        r, kv, ky, kj = (per_mode(arr, c) for arr in step)
        c = r * c + kv * spectrum.to_modes(v) + ky * hy
        if use_jac:
            c = c + kj * spectrum.to_modes((jtu - u) / s[n])
    return run.output(spectrum.from_modes(c))


__all__ = ["cpgfm_exact_noisy", "flow_gain", "flow_mode_step_coefficients"]
