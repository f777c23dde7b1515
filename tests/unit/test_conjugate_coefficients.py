"""Closed-form C-ΠGDM / C-ΠGFM step coefficients against float64 quadrature."""

import numpy as np
import pytest
import torch

from comfyui_inverse.samplers import schedules as sch
from comfyui_inverse.samplers.coefficients import flow_coefficients, integrate, vp_coefficients, xi_integral

FIELDS = ["r_perp", "r_par", "ks_perp", "ks_par", "ky", "kj_perp", "kj_par"]
GRIDS = {
    "paper5": sch.vp_sigmas_uniform_t(5, dtype=torch.float64).tolist(),
    "comfy_like": [14.6, 6.0, 2.5, 1.0, 0.4, 0.1, 0.03, 0.0],  # ends in 0: last step to t = 0
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, 15.0])
def test_closed_forms_match_quadrature(grid, w):
    closed = vp_coefficients(GRIDS[grid], w=w, lam=0.0, closed_form=True)
    quad = vp_coefficients(GRIDS[grid], w=w, lam=0.0, closed_form=False)
    for a, b in zip(closed, quad):
        for f in FIELDS:
            va, vb = getattr(a, f), getattr(b, f)
            # float64 quadrature of smooth integrands: agreement to ~1e-12 relative
            assert abs(va - vb) <= 1e-10 * max(1.0, abs(va)), (f, va, vb)


def test_closed_form_special_values():
    # spec §4.3: Φ_s1 = σ/μ (DDIM), Φ_y = μ^w − 1, Φ_j1 = w(artanh σ − σ) — checked on the absolute scale
    s = GRIDS["paper5"]
    w = 15.0
    mu, svp = sch.sigma_to_vp(s)
    c = vp_coefficients(s, w=w)[0]
    assert np.isclose(c.ks_perp / mu[1], s[1] - s[0], rtol=1e-12)
    assert np.isclose(c.ky * mu[1] ** (w - 1), mu[1] ** w - mu[0] ** w, rtol=1e-12)
    # Ξ_w is an incomplete beta; for w = 2 it is σ³/3
    assert np.isclose(xi_integral(2.0, 0.1, 0.8), (0.8**3 - 0.1**3) / 3, rtol=1e-13)
    assert np.isclose(integrate(lambda t: t**-0.5, 0.0, 1.0, sqrt_substitution=True), 2.0, rtol=1e-13)


def test_w_zero_gives_ddim_and_lambda_quadrature_is_consistent():
    s = GRIDS["paper5"]
    for c in vp_coefficients(s, w=0.0):
        assert c.ky == 0 and c.kj_perp == 0 and c.kj_par == 0
        assert c.r_perp == pytest.approx(c.r_par) and c.ks_perp == pytest.approx(c.ks_par)
    # λ ≠ 0 with the same λ on both subspaces still reduces to λ-DDIM when w = 0
    for c in vp_coefficients(s, w=0.0, lam=-0.3):
        assert c.r_perp == pytest.approx(c.r_par, rel=1e-14) and c.ks_perp == pytest.approx(c.ks_par, rel=1e-12)


def test_noisy_correction_vanishes_without_noise_and_is_small():
    s = GRIDS["paper5"]
    quiet = vp_coefficients(s, w=2.0, lam=-0.15, sigma_y=0.0)
    noisy = vp_coefficients(s, w=2.0, lam=-0.15, sigma_y=0.05)
    assert all(c.kappa == 0 and c.kyc == 0 for c in quiet)
    for a, b in zip(quiet, noisy):
        for f in FIELDS:
            assert getattr(a, f) == getattr(b, f)
    # spec §5: c3 ≈ −2.1e-3 at t = 0.4 for σ_y = 0.05, w = 2, λ = −0.15 (κ = c3 / e^{c1+c2})
    t = 0.4
    c12 = -0.15 * t + 0.5 * (1 - 2.0) * float(sch.vpsde_b(t))
    c3 = noisy[0].kappa * np.exp(c12)
    assert -2.3e-3 < c3 < -1.9e-3


@pytest.mark.parametrize("term", ["paper", "released"])
def test_flow_coefficients_closed_forms(term):
    s = sch.flow_sigmas_uniform_t(10, dtype=torch.float64).tolist()
    w = 20.0
    b = lambda t: w * (t * t / 2 - t**3 / 3)  # noqa: E731
    for c in flow_coefficients(s, w=w, lam=0.0, jacobian_term=term):
        # B = 0: K₄ = e^{b} − 1 (spec §6.2), normalized by e^{b(t_{k+1})}
        assert c.ky == pytest.approx((np.exp(b(c.t_next)) - np.exp(b(c.t))) / np.exp(b(c.t_next)), rel=1e-12)
        assert c.kv_perp == pytest.approx(c.t_next - c.t, rel=1e-12)
        assert c.r_par == pytest.approx(np.exp(b(c.t) - b(c.t_next)), rel=1e-12)
    paper = flow_coefficients(s, w=w, lam=0.2, jacobian_term="paper")
    released = flow_coefficients(s, w=w, lam=0.2, jacobian_term="released")
    h = s[0] - s[1]
    for p, r in zip(paper, released):
        # the released Jacobian term is ≈ h times the range-space one (spec §6.3)
        assert r.kj_par == pytest.approx(h * p.kj_par, rel=0.05)
        assert p.ky == r.ky and p.kv_par == r.kv_par
