"""Scalar step coefficients of the conjugate integrators, precomputed once per σ grid.

All coefficients are *normalized*: the conjugate state x̄ = A_t x is divided by the
scalar part of A at the step's target time, separately on range(P) and its complement,
so a step reads (VP state x_vp = μ·x, first order, network outputs frozen):

  x⊥' = r⊥·x⊥ + ks⊥·(I−P)ε̂ + kj⊥·(I−P)g
  x∥' = r∥·x∥ + ky·H⁺y + ks∥·Pε̂ + kj∥·Pg  [+ kyc·M H⁺y + ksc·Mε̂ + kjc·Mg]   (noisy)

This never forms A_t⁻¹ on a mixed vector (spec pitfall 5: the range/complement factors
differ by up to μ^{w} ≈ 1e-5) and keeps every exponential as a difference of logs.
λ = 0 uses the closed forms of spec §4.3/§4.5; otherwise Gauss–Legendre quadrature in
s = √t (which removes the 1/σ_t ~ t^{-1/2} endpoint behaviour), float64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import schedules as sch

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(48)
_PANELS = 4


def integrate(f, lo: float, hi: float, sqrt_substitution: bool = False) -> float:
    """∫_lo^hi f(t) dt (oriented) by composite 48-point Gauss–Legendre; f is vectorized."""
    if lo == hi:
        return 0.0
    sign = 1.0
    if lo > hi:
        lo, hi, sign = hi, lo, -1.0
    if sqrt_substitution:
        a, b = np.sqrt(lo), np.sqrt(hi)
        g = lambda s: f(s * s) * 2.0 * s  # noqa: E731
    else:
        a, b, g = lo, hi, f
    edges = np.linspace(a, b, _PANELS + 1)
    total = 0.0
    for p0, p1 in zip(edges[:-1], edges[1:]):
        half = 0.5 * (p1 - p0)
        total += half * float(np.dot(_GL_WEIGHTS, g(p0 + half * (_GL_NODES + 1.0))))
    return sign * total


def xi_integral(w: float, lo: float, hi: float) -> float:
    """Ξ_w(hi) − Ξ_w(lo) with Ξ_w(σ) = ∫₀^σ r²(1 − r²)^{w/2−1} dr (an incomplete beta)."""
    return integrate(lambda r: r * r * np.exp((0.5 * w - 1.0) * np.log1p(-r * r)), lo, hi)


def psi(sigma_vp):
    """Ψ(σ) = artanh σ − σ."""
    return np.arctanh(sigma_vp) - sigma_vp


@dataclass
class VPStep:
    """Coefficients of one step t_n → t_{n+1} (see module docstring)."""

    sigma: float  # ComfyUI σ at t_n
    sigma_next: float
    mu: float
    mu_next: float
    sigma_vp: float
    t: float
    t_next: float
    r_perp: float
    r_par: float
    ks_perp: float
    ks_par: float
    ky: float
    kj_perp: float
    kj_par: float
    kyc: float = 0.0
    ksc: float = 0.0
    kjc: float = 0.0
    kappa: float = 0.0  # c3/e^{c1+c2} at t_n (noisy map)
    kappa_next: float = 0.0


@dataclass(frozen=True)
class WeightSchedule:
    """C-ΠGDM's guidance weight w_t = ω(t)·r_t²·μ_t² with ω(t) = w + k/σ_t² + a/μ_t² (VP time t).

    The paper's constant ω = w (k = a = 0) makes w_t vanish like μ²σ² relative to the exact
    ΠGDM weight as t → 0, so Hx = y is never enforced. The k/σ² term restores the exact weight's
    1/σ² growth (k plays the exact weight's role near t = 0). With w = 0, k = 1, a = 1/v, ω is the
    *exact* weight for an isotropic Gaussian prior N(m, v·I): 1/(μ²·Var[x0|x_t]) = 1/σ² + 1/(μ²v).
    """

    w: float
    k: float = 0.0
    a: float = 0.0

    @property
    def constant(self) -> bool:
        return self.k == 0.0 and self.a == 0.0

    def omega(self, t):
        b = sch.vpsde_b(t)
        with np.errstate(divide="ignore"):
            return self.w + self.k / -np.expm1(-b) + self.a * np.exp(b)

    def half_integral(self, t):
        """½∫β·ω dt (antiderivative): ½[w·b + k·ln(e^{b} − 1) + a·e^{b}]; +∞·k at t = 0 is fine."""
        b = sch.vpsde_b(t)
        with np.errstate(divide="ignore"):
            log_term = self.k * np.log(np.expm1(b)) if self.k else 0.0
        return 0.5 * (self.w * b + log_term + self.a * np.exp(b))


def _vp_terms(w, lam, sigma_y, schedule: WeightSchedule | None = None):
    """log-scale factors and the noisy correction c3, as functions of VP time t."""

    def c1(t):
        return lam * t + 0.5 * sch.vpsde_b(t)

    def c12(t):
        if schedule is None or schedule.constant:
            return lam * t + 0.5 * (1.0 - w) * sch.vpsde_b(t)
        return lam * t + 0.5 * sch.vpsde_b(t) - schedule.half_integral(t)

    def c3(t):
        if sigma_y == 0.0:
            return np.zeros_like(np.asarray(t, dtype=np.float64))
        b = sch.vpsde_b(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = 0.5 * w * sigma_y**2 * np.expm1(c12(t)) * np.log(np.expm1(b))
        return np.where(b > 0, v, 0.0)  # c3 → 0 as t ln t (pitfall 6)

    return c1, c12, c3


def vp_coefficients(sigmas: list[float], w: float = 0.0, lam: float = 0.0, sigma_y: float = 0.0,
                    closed_form: bool | None = None, k: float = 0.0, a: float = 0.0) -> list[VPStep]:
    """Per-step C-ΠGDM coefficients on a ComfyUI σ grid (w = 0 gives λ-DDIM's).

    k, a: the weight schedule ω(t) = w + k/σ_t² + a/μ_t² (see WeightSchedule); k = a = 0 is the
    paper's constant weight, computed exactly as before.
    """
    schedule = WeightSchedule(float(w), float(k), float(a))
    if not schedule.constant:
        if sigma_y != 0.0:
            raise ValueError("the weight schedule (k, a) is defined for the noiseless map only (sigma_y = 0).")
        if closed_form:
            raise ValueError("closed-form coefficients exist only for the constant weight (k = a = 0).")
        return _scheduled_vp_coefficients(sigmas, schedule, lam)
    if closed_form is None:
        closed_form = lam == 0.0 and sigma_y == 0.0
    if closed_form and (lam != 0.0 or sigma_y != 0.0):
        raise ValueError("closed-form coefficients exist only for lam = 0 and sigma_y = 0.")
    ts = sch.sigma_to_vp_time(sigmas)
    mus, svps = sch.sigma_to_vp(sigmas)
    c1, c12, c3 = _vp_terms(w, lam, sigma_y)
    beta = sch.vpsde_beta
    mu_t, sig_t = sch.vpsde_mu, sch.vpsde_sigma
    steps = []
    for n in range(len(sigmas) - 1):
        t, tn = float(ts[n]), float(ts[n + 1])
        mu, mun, sv, svn = float(mus[n]), float(mus[n + 1]), float(svps[n]), float(svps[n + 1])
        dec = 1.0 - lam * (t - tn)  # Euler for the λ·x̄ term, as in the released code
        if closed_form:
            r_perp = mun / mu
            r_par = (mu / mun) ** (w - 1.0)
            ks_perp = svn - sv * mun / mu
            ks_par = svn - sv * (mu / mun) ** (w - 1.0)
            ky = mun * (1.0 - (mu / mun) ** w)
            kj_perp = w * (psi(svn) - psi(sv)) * mun
            kj_par = w * xi_integral(w, sv, svn) * mun ** (1.0 - w)
            extra = {}
        else:
            e1n, e12n = c1(tn), c12(tn)
            r_perp = dec * np.exp(c1(t) - e1n)
            r_par = dec * np.exp(c12(t) - e12n)

            def q(f):
                return integrate(f, t, tn, sqrt_substitution=True)

            ks_perp = q(lambda s: 0.5 * beta(s) * np.exp(c1(s) - e1n) / sig_t(s))
            ks_par = q(lambda s: 0.5 * beta(s) * np.exp(c12(s) - e12n) * (1.0 / sig_t(s) - w * sig_t(s)))
            ky = q(lambda s: -0.5 * w * beta(s) * mu_t(s) * np.exp(c12(s) - e12n))
            kj_perp = q(lambda s: 0.5 * w * beta(s) * sig_t(s) * mu_t(s) * np.exp(c1(s) - e1n))
            kj_par = q(lambda s: 0.5 * w * beta(s) * sig_t(s) * mu_t(s) * np.exp(c12(s) - e12n))
            extra = {}
            if sigma_y > 0:
                g = np.exp(-e12n)
                extra = dict(
                    kyc=q(lambda s: -0.5 * w * beta(s) * mu_t(s) * c3(s) * g),
                    ksc=q(lambda s: 0.5 * beta(s) * c3(s) * (1.0 / sig_t(s) - w * sig_t(s)) * g),
                    kjc=q(lambda s: 0.5 * w * beta(s) * sig_t(s) * mu_t(s) * c3(s) * g),
                    kappa=float(c3(t) * np.exp(-c12(t))),
                    kappa_next=float(c3(tn) * g),
                )
        steps.append(VPStep(
            sigma=float(sigmas[n]), sigma_next=float(sigmas[n + 1]), mu=mu, mu_next=mun, sigma_vp=sv,
            t=t, t_next=tn, r_perp=float(r_perp), r_par=float(r_par), ks_perp=float(ks_perp),
            ks_par=float(ks_par), ky=float(ky), kj_perp=float(kj_perp), kj_par=float(kj_par), **extra,
        ))
    return steps


def _scheduled_vp_coefficients(sigmas, schedule: WeightSchedule, lam: float) -> list[VPStep]:
    """Coefficients for a time-dependent ω(t) (same ODE as the paper's with w → ω(t)).

    The P-part log-scale is c12 = λt + ½b − ½∫βω. k > 0 makes it +∞ at t = 0, so a grid ending
    in σ = 0 gives r∥ = 0, ky = 1: the range part lands exactly on H⁺y. ky and ks∥ come from
    the exact antiderivatives d/dt[μe^{c12}] = (λ − ½βω)μe^{c12}, d/dt[σe^{c12}] =
    (λσ + ½β(1/σ − ωσ))e^{c12}, which stay finite where the 1/σ² weight makes the
    integrands of the quadrature form steep; the λ remainders have bounded integrands.
    """
    ts = sch.sigma_to_vp_time(sigmas)
    mus, svps = sch.sigma_to_vp(sigmas)
    c1, c12, _ = _vp_terms(schedule.w, lam, 0.0, schedule)
    beta, omega = sch.vpsde_beta, schedule.omega
    mu_t, sig_t = sch.vpsde_mu, sch.vpsde_sigma
    steps = []
    for n in range(len(sigmas) - 1):
        t, tn = float(ts[n]), float(ts[n + 1])
        mu, mun, sv, svn = float(mus[n]), float(mus[n + 1]), float(svps[n]), float(svps[n + 1])
        dec = 1.0 - lam * (t - tn)
        e1n, e12n = c1(tn), c12(tn)

        def q(f):
            return integrate(f, t, tn, sqrt_substitution=True)

        def par(s):  # e^{c12(s) − c12(t_{n+1})}, 0 when t_{n+1} = 0 and k > 0
            with np.errstate(invalid="ignore"):
                return np.nan_to_num(np.exp(c12(s) - e12n), nan=0.0)

        decay = float(par(t))
        r_perp = dec * np.exp(c1(t) - e1n)
        r_par = dec * decay
        ks_perp = q(lambda s: 0.5 * beta(s) * np.exp(c1(s) - e1n) / sig_t(s))
        lam_mu = q(lambda s: mu_t(s) * par(s)) if lam else 0.0
        lam_sig = q(lambda s: sig_t(s) * par(s)) if lam else 0.0
        ky = mun - mu * decay - lam * lam_mu
        ks_par = svn - sv * decay - lam * lam_sig
        kj_perp = q(lambda s: 0.5 * omega(s) * beta(s) * sig_t(s) * mu_t(s) * np.exp(c1(s) - e1n))
        kj_par = q(lambda s: 0.5 * omega(s) * beta(s) * sig_t(s) * mu_t(s) * par(s))
        steps.append(VPStep(
            sigma=float(sigmas[n]), sigma_next=float(sigmas[n + 1]), mu=mu, mu_next=mun, sigma_vp=sv,
            t=t, t_next=tn, r_perp=float(r_perp), r_par=float(r_par), ks_perp=float(ks_perp),
            ks_par=float(ks_par), ky=float(ky), kj_perp=float(kj_perp), kj_par=float(kj_par),
        ))
    return steps


@dataclass
class FlowStep:
    sigma: float
    sigma_next: float
    t: float
    t_next: float
    r_perp: float
    r_par: float
    kv_perp: float
    kv_par: float
    ky: float
    kj_perp: float
    kj_par: float


def check_flow_weight(jacobian_term: str, k: float) -> None:
    """The C-ΠGFM weight options shared by the noiseless and the exact noisy maps."""
    if jacobian_term not in ("paper", "released"):
        raise ValueError(f'jacobian_term must be "paper" or "released", got {jacobian_term!r}.')
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k:g}.")
    if k and jacobian_term == "released":
        raise ValueError('jacobian_term="released" is defined for the paper\'s weight only (k = 0).')


def flow_coefficients(sigmas: list[float], w: float = 20.0, lam: float = 0.2, jacobian_term: str = "paper",
                      t_integral_start: float = 0.0, k: float = 0.0) -> list[FlowStep]:
    """Per-step C-ΠGFM coefficients (spec §6) on a ComfyUI CONST σ grid, t = 1 − σ.

    A_t = e^{a}[I + (e^{b} − 1)P], a = B(t − t_i) with B = `lam`, b = ∫γ, γ_t = w t(1 − t) (the paper's
    weight w_t = w·r_t²·t²). `jacobian_term="released"` reproduces ConjugateV2's h·ΔK₃·g
    (spec §6.3) instead of ΔL₁g + ΔL₂Pg.

    k > 0 adds the flow analogue of C-ΠGDM's k/σ² term: weight w_t = (w·r_t² + k)·t², i.e. k·t²
    times the exact ΠGFM weight (as k·μ² times it in VP), so γ gains k·t(t² + (1−t)²)/(1−t)
    and b gains k[−t − ln(1−t) − 2t³/3]. b → ∞ at t = 1: a step ending at σ = 0 puts the
    range part exactly on H⁺y. ky then comes from d/ds e^{a+b} = (B + γ)e^{a+b}.
    """
    check_flow_weight(jacobian_term, k)
    ti = t_integral_start

    def a(t):
        return lam * (np.asarray(t, dtype=np.float64) - ti)

    def b_k(t):
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return k * (-t - np.log1p(-t) - 2.0 * t**3 / 3.0)

    def bb(t):
        t = np.asarray(t, dtype=np.float64)
        base = w * ((t * t / 2 - t**3 / 3) - (ti * ti / 2 - ti**3 / 3))
        return base + (b_k(t) - b_k(ti)) if k else base

    def gamma(t):
        t = np.asarray(t, dtype=np.float64)
        return w * t * (1.0 - t) + (k * t * (t * t + (1 - t) ** 2) / (1.0 - t) if k else 0.0)

    def gamma_1mt(t):  # γ(t)(1 − t), finite at t = 1
        t = np.asarray(t, dtype=np.float64)
        return w * t * (1.0 - t) ** 2 + k * t * (t * t + (1 - t) ** 2)

    steps = []
    for n in range(len(sigmas) - 1):
        t, tn = 1.0 - sigmas[n], 1.0 - sigmas[n + 1]
        h = tn - t
        dec = 1.0 + lam * h  # Euler for B·x̄, as in the released code
        an, abn = a(tn), a(tn) + bb(tn)

        def q(f):
            return integrate(f, t, tn)

        def par(s):  # e^{a(s)+b(s) − a(t_{n+1}) − b(t_{n+1})}; 0 for s < 1 when b(t_{n+1}) = ∞
            with np.errstate(invalid="ignore"):
                return np.nan_to_num(np.exp(a(s) + bb(s) - abn), nan=0.0)

        r_perp = dec * np.exp(a(t) - an)
        kv_perp = q(lambda s: np.exp(a(s) - an))
        if k:
            r_par = dec * float(par(t))
            kv_par = q(lambda s: par(s) * (1.0 - gamma_1mt(s)))
            ky = 1.0 - float(par(t)) - lam * q(par)
            kj_perp = q(lambda s: gamma_1mt(s) * np.exp(a(s) - an))
            kj_par = q(lambda s: gamma_1mt(s) * par(s))
        else:
            r_par = dec * np.exp(a(t) + bb(t) - abn)
            kv_par = q(lambda s: np.exp(a(s) + bb(s) - abn) * (1.0 - gamma(s) * (1.0 - s)))
            ky = q(lambda s: gamma(s) * np.exp(a(s) + bb(s) - abn))
            if jacobian_term == "paper":
                kj_perp = q(lambda s: gamma(s) * (1.0 - s) * np.exp(a(s) - an))
                kj_par = q(lambda s: gamma(s) * (1.0 - s) * np.exp(a(s) + bb(s) - abn))
            else:
                dk3 = q(lambda s: gamma(s) * (1.0 - s) * np.exp(a(s) + bb(s)))  # absolute ΔK₃
                kj_perp = h * dk3 * np.exp(-an)
                kj_par = h * dk3 * np.exp(-abn)
        steps.append(FlowStep(
            sigma=float(sigmas[n]), sigma_next=float(sigmas[n + 1]), t=float(t), t_next=float(tn),
            r_perp=float(r_perp), r_par=float(r_par), kv_perp=float(kv_perp), kv_par=float(kv_par),
            ky=float(ky), kj_perp=float(kj_perp), kj_par=float(kj_par),
        ))
    return steps
