"""Exact noisy C-ΠGDM (samplers/cpgdm_noisy.py): per-mode gains, the σ_y = 0 limit, the ODE it
solves, the fallback and the Wiener start, on small operators and the analytic mixture prior."""

import logging
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from comfyui_inverse.operators import (Colorization, Compose, GaussianBlur, Inpainting, MotionBlur, SeparableConvolution,
                                       SuperResolution)
from comfyui_inverse.samplers import (OperatorProblem, cpgdm, cpgfm, dense_matrix, measurement_start, mixture_prior,
                                      vp_sigmas_uniform_t)
from comfyui_inverse.samplers import schedules as sch
from comfyui_inverse.samplers.common import Run
from comfyui_inverse.samplers.cpgfm_noisy import cpgfm_exact_noisy
from comfyui_inverse.samplers.cpgdm_noisy import (cpgdm_exact_noisy, guidance_gain, mode_noise_ratio, wiener_start,
                                                  wiener_y)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 8, 8)


def _mask(h=8, w=8):
    m = torch.zeros(h, w)
    m[2:6, 1:5] = 1.0
    return m


SMALL_OPS = {  # operator, image shape (dense matrices of ≤ 200 columns)
    "sr2_bicubic": (SuperResolution(2, "bicubic"), (1, 2, 6, 8)),
    "sr2_box": (SuperResolution(2), (1, 1, 6, 8)),
    "gauss_svd": (GaussianBlur(1.0), (1, 1, 7, 9)),
    "gauss_fft": (GaussianBlur(1.0, mode="fft"), (1, 1, 9, 10)),
    "motion": (MotionBlur(4, angle=30), (1, 1, 8, 9)),
    "separable_asym": (SeparableConvolution(torch.tensor([0.5, 0.3, 0.2])), (1, 1, 7, 8)),
    "inpaint": (Inpainting(_mask(5, 6)), (1, 2, 5, 6)),
    "colorization": (Colorization(), (1, 3, 3, 4)),
    "sr_after_blur": (Compose(SuperResolution(2, "bicubic"), GaussianBlur(0.8)), (1, 1, 8, 10)),
}


def _dense_gain(h, r2, sigma_y):
    """Γ = r² Hᵀ(r² H Hᵀ + σ_y² I)⁻¹ H: the noisy ΠGDM guidance gain relative to the noiseless one."""
    m = h.shape[0]
    return r2 * h.T @ torch.linalg.solve(r2 * h @ h.T + sigma_y**2 * torch.eye(m, dtype=h.dtype), h)


@pytest.mark.parametrize("name", list(SMALL_OPS))
@pytest.mark.parametrize("sigma_vp", [0.9, 0.1, 0.01])
def test_per_mode_gains_equal_the_dense_solve(name, sigma_vp):
    op, shape = SMALL_OPS[name]
    d = math.prod(shape[1:])
    h = dense_matrix(op, shape[1:])
    spec = op.spectral(shape)
    rho, inv = mode_noise_ratio(spec, 0.05)
    gains = torch.from_numpy(guidance_gain(sigma_vp, rho))[inv]
    basis = torch.eye(d, dtype=torch.float64).reshape((d,) + shape[1:])
    per_mode = spec.apply(basis, gains).reshape(d, d).T
    dense = _dense_gain(h, sigma_vp**2, 0.05)
    assert (per_mode - dense).abs().max() <= 1e-10 * max(1.0, float(dense.abs().max()))
    assert (per_mode - dense).abs().max() < 1e-3 or sigma_vp > 0  # (the test can tell them apart)


@pytest.fixture(scope="module")
def prior():
    return mixture_prior(SHAPE, n_components=3, seed=0)


@pytest.fixture(scope="module")
def truth(prior):
    return prior.sample(1, torch.Generator().manual_seed(1))


def _problem(op, truth, n, sigma_y=0.0):
    y = op.forward(truth)
    if sigma_y:
        y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    return OperatorProblem(op, y.expand(n, *y.shape[1:]).clone(), sigma_y)


def _noise(n, seed=5):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


OPS = {"sr4": lambda: SuperResolution(4, "bicubic"), "inpaint": lambda: Inpainting(_mask()),
       "deblur": lambda: GaussianBlur(1.0), "deblur_fft": lambda: GaussianBlur(1.0, kernel_size=7, mode="fft")}


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("lam", [0.0, -0.15])
def test_sigma_y_zero_reproduces_the_noiseless_scheme(prior, truth, name, lam):
    """With ρ = 0 on every kept mode the per-mode scheme is the noiseless split scheme (1e-10)."""
    prob = _problem(OPS[name](), truth, 6)
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(6))
    ref = cpgdm(den, prob, sig, xs, vjp=vjp, w=15.0, lam=lam, sigma_y=0.0, schedule="paper")
    run = Run(den, sig, xs, "vp", problem=prob, vjp=vjp)
    out = cpgdm_exact_noisy(run, prob, prob.operator.spectral(tuple(xs.shape)), w=15.0, lam=lam, sigma_y=0.0)
    assert float((out - ref).norm() / ref.norm()) < 1e-10


@pytest.mark.parametrize("name", ["sr4", "deblur_fft"])
@pytest.mark.parametrize("k,a", [(2.0, 0.0), (4.0, 1.0)])
def test_sigma_y_zero_reproduces_the_noiseless_weight_schedule(prior, truth, name, k, a):
    """The same with the consistent schedule ω = w + k/σ² + a/μ² (coefficients.WeightSchedule)."""
    prob = _problem(OPS[name](), truth, 4)
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(4))
    ref = cpgdm(den, prob, sig, xs, vjp=vjp, w=5.0, k=k, a=a, lam=0.0, sigma_y=0.0)
    run = Run(den, sig, xs, "vp", problem=prob, vjp=vjp)
    out = cpgdm_exact_noisy(run, prob, prob.operator.spectral(tuple(xs.shape)), w=5.0, lam=0.0, sigma_y=0.0, k=k, a=a)
    assert float((out - ref).norm() / ref.norm()) < 1e-10


def _const_eps_denoiser(e):
    """D(x, σ) = x − σ·e: ε̂ ≡ e for every x and σ, so a frozen-ε̂ step is exact."""
    return lambda x, s: x - s.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype) * e.to(x.dtype)


@pytest.mark.parametrize("name", ["sr2_bicubic", "gauss_fft", "inpaint"])
@pytest.mark.parametrize("w,k", [(2.0, 0.0), (5.0, 2.0)])
def test_exact_map_solves_the_noisy_pigdm_ode(name, w, k):
    """With ε̂ constant (and no Jacobian term) the conjugate integrator is exact at any step count:
    it must match a tight RK solution of dx/dt = −½β x + ½β ε̂/σ − ½β·G, with the noisy ΠGDM
    guidance G = (w + k/σ²)μ²r²·Hᵀ(r²HHᵀ + σ_y²)⁻¹(y − H x̂0)/μ built from dense matrices."""
    op, shape = SMALL_OPS[name]
    sigma_y = 0.05
    g = torch.Generator().manual_seed(3)
    e = torch.randn(shape, generator=g, dtype=torch.float64)
    x_true = torch.randn(shape, generator=g, dtype=torch.float64) * 0.5
    y = op.forward(x_true) + sigma_y * torch.randn(op.output_shape(shape), generator=g, dtype=torch.float64)
    prob = OperatorProblem(op, y, sigma_y)
    sig = vp_sigmas_uniform_t(4, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=torch.randn(shape, generator=g, dtype=torch.float64))
    run = Run(_const_eps_denoiser(e), sig, xs, "vp", problem=prob, vjp="none")
    out = cpgdm_exact_noisy(run, prob, op.spectral(shape), w=w, lam=0.0, sigma_y=sigma_y, k=k)

    h = dense_matrix(op, shape[1:])
    yv, ev = y.reshape(-1), e.reshape(-1)
    eye_m = torch.eye(h.shape[0], dtype=torch.float64)

    def rhs(t, xv):
        b = float(sch.vpsde_b(t))
        mu, s = math.exp(-0.5 * b), math.sqrt(-math.expm1(-b))
        xv = torch.from_numpy(xv)
        x0 = (xv - s * ev) / mu
        r2 = s * s
        gain = h.T @ torch.linalg.solve(r2 * h @ h.T + sigma_y**2 * eye_m, yv - h @ x0)
        guide = (w + k / r2) * mu * mu * r2 * gain / mu  # score guidance in the VP state (J = I/μ)
        beta = float(sch.vpsde_beta(t))
        return (-0.5 * beta * xv + 0.5 * beta * ev / s - 0.5 * beta * guide).numpy()

    ts = sch.sigma_to_vp_time(sig.numpy())
    mus = sch.sigma_to_vp(sig.numpy())[0]
    sol = solve_ivp(rhs, (ts[0], ts[-1]), (mus[0] * xs).reshape(-1).numpy(), method="DOP853", rtol=1e-11, atol=1e-12)
    ref = torch.from_numpy(sol.y[:, -1]).reshape(shape) / mus[-1]
    assert float((out - ref).norm() / ref.norm()) < 1e-7


def test_exact_is_the_default_and_deblur_is_no_longer_refused(prior, truth):
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    prob = _problem(GaussianBlur(1.0), truth, 4, sigma_y=0.05)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(4))
    with pytest.raises(ValueError, match="unstable"):
        cpgdm(den, prob, sig, xs, vjp=vjp, noisy="paper")
    out = cpgdm(den, prob, sig, xs, vjp=vjp)
    assert torch.isfinite(out).all()
    assert torch.equal(out, cpgdm(den, prob, sig, xs, vjp=vjp, noisy="exact"))
    sr = _problem(SuperResolution(4, "bicubic"), truth, 4, sigma_y=0.05)
    paper = cpgdm(den, sr, sig, xs, vjp=vjp, noisy="paper")
    exact = cpgdm(den, sr, sig, xs, vjp=vjp, w=2.0, lam=-0.15)
    assert 1e-3 < float((paper - exact).norm() / paper.norm()) < 0.5  # different maps, same ballpark
    # σ_y = 0: the noisy setting is irrelevant, bit for bit
    clean = _problem(SuperResolution(4, "bicubic"), truth, 4)
    assert torch.equal(cpgdm(den, clean, sig, xs, vjp=vjp, noisy="exact"), cpgdm(den, clean, sig, xs, vjp=vjp, noisy="paper"))
    with pytest.raises(ValueError, match=r"noisy must be one of \('exact', 'paper'\)"):
        cpgdm(den, sr, sig, xs, vjp=vjp, noisy="heuristic")


def test_operator_without_spectral_form_falls_back_to_paper_with_a_log_line(caplog):
    op = Compose(SuperResolution(2), Colorization())  # chain: exact H⁺, no cheap SVD
    shape = (2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert op.spectral(shape) is None
    prob = OperatorProblem(op, op.forward(torch.randn(shape, generator=g, dtype=torch.float64)), 0.05)
    e = torch.randn(shape, generator=g, dtype=torch.float64)
    sig = vp_sigmas_uniform_t(3, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=torch.randn(shape, generator=g, dtype=torch.float64))
    with caplog.at_level(logging.WARNING):
        out = cpgdm(_const_eps_denoiser(e), prob, sig, xs, vjp="none")
    assert "has none" in caplog.text and "noisy='paper'" in caplog.text and "Compose(" in caplog.text
    assert torch.equal(out, cpgdm(_const_eps_denoiser(e), prob, sig, xs, vjp="none", noisy="paper"))


@pytest.mark.parametrize("name", ["gauss_svd", "gauss_fft", "sr2_bicubic", "colorization"])
def test_wiener_start_is_the_dense_wiener_filter(name):
    op, shape = SMALL_OPS[name]
    g = torch.Generator().manual_seed(4)
    y = torch.randn(op.output_shape(shape), generator=g, dtype=torch.float64)
    h = dense_matrix(op, shape[1:])
    tau, sigma_y = 0.7, 0.05
    dense = torch.linalg.solve(h.T @ h + (sigma_y / tau) ** 2 * torch.eye(h.shape[1], dtype=torch.float64), h.T @ y.reshape(-1))
    prob = OperatorProblem(op, y, sigma_y)
    assert torch.allclose(wiener_y(prob, tau).reshape(-1), dense, atol=1e-10 * float(dense.abs().max()))
    assert torch.equal(wiener_y(OperatorProblem(op, y, 0.0), tau), prob.pinv_y)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    x = wiener_start(prob, 3.0, "vp", tau=tau, noise=z)
    assert torch.allclose(x, wiener_y(prob, tau) + 3.0 * z, atol=1e-12)
    xf = wiener_start(prob, 0.4, "flow", tau=tau, noise=z)
    assert torch.allclose(xf, 0.6 * wiener_y(prob, tau) + 0.4 * z, atol=1e-12)
    with pytest.raises(ValueError, match="tau"):
        wiener_y(prob, 0.0)


def test_wiener_start_refuses_operators_without_spectral_form():
    op = Compose(SuperResolution(2), Colorization())
    prob = OperatorProblem(op, torch.randn(1, 1, 4, 4, dtype=torch.float64), 0.05)
    with pytest.raises(ValueError, match="spectral form.*H⁺y"):
        wiener_y(prob)


@pytest.mark.parametrize("name,w,k", [("sr4", 3.0, 1.0), ("deblur_fft", 2.0, 0.0)])
def test_exact_noisy_converges_at_first_order_to_the_noisy_pigdm_ode(prior, truth, name, w, k):
    """Full scheme (Jacobian term included): first-order convergence to a tight DOP853 solution of
    dx/dt = −½βx + ½βε̂/σ − ½β·G, G = ω μ² J_x̂0ᵀ Γ_t u, Γ_t = r²Hᵀ(r²HHᵀ + σ_y²I)⁻¹H (dense)."""
    sigma_y = 0.05
    op = OPS[name]()
    prob = _problem(op, truth, 1, sigma_y)
    xs = measurement_start(prob, float(sch.vp_time_to_sigma(0.4)), "vp", noise=_noise(1))
    h = dense_matrix(op, SHAPE)
    shape = xs.shape

    def rhs(t, xf):
        x = torch.from_numpy(xf).reshape(shape)
        mu, sv, beta = float(sch.vpsde_mu(t)), float(sch.vpsde_sigma(t)), float(sch.vpsde_beta(t))
        s = torch.full((1,), sv / mu, dtype=torch.float64)
        x_ve = x / mu
        x0 = prior.denoise(x_ve, s)
        eps = (x_ve - x0) / (sv / mu)
        gu = (_dense_gain(h, sv * sv, sigma_y) @ prob.residual(x0).reshape(-1)).reshape(shape)
        guide = (w + k / (sv * sv)) * mu * prior.vjp(x_ve, s, gu)
        return (-0.5 * beta * x - 0.5 * beta * (-eps / sv + guide)).reshape(-1).numpy()

    mu0 = float(sch.vpsde_mu(0.4))
    sol = solve_ivp(rhs, (0.4, 0.001), (mu0 * xs).reshape(-1).numpy(), method="DOP853", rtol=1e-9, atol=1e-11)
    ref = torch.from_numpy(sol.y[:, -1]).reshape(shape) / float(sch.vpsde_mu(0.001))
    errs = []
    for n_steps in (10, 20, 40):
        sig = vp_sigmas_uniform_t(n_steps, dtype=torch.float64)
        run = Run(prior.denoiser("vp"), sig, xs, "vp", problem=prob, vjp=prior.vjp_provider("vp"))
        out = cpgdm_exact_noisy(run, prob, op.spectral(tuple(shape)), w=w, lam=0.0, sigma_y=sigma_y, k=k)
        errs.append(float((out - ref).norm() / ref.norm()))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(1.6 < r < 2.5 for r in ratios), (errs, ratios)


# ---- flow: C-ΠGFM ------------------------------------------------------------------------

FLOW_T_END = 0.999


def _flow_grid(n, t0=0.6):
    return torch.tensor(1.0 - np.linspace(t0, FLOW_T_END, n + 1), dtype=torch.float64)


@pytest.mark.parametrize("name", ["sr4", "inpaint", "deblur"])
@pytest.mark.parametrize("jacobian_term,k", [("paper", 0.0), ("released", 0.0), ("paper", 2.0)])
def test_flow_sigma_y_zero_reproduces_the_noiseless_scheme(prior, truth, name, jacobian_term, k):
    prob = _problem(OPS[name](), truth, 4)
    den, vjp = prior.denoiser("flow"), prior.vjp_provider("flow")
    sig = _flow_grid(6)
    xs = measurement_start(prob, float(sig[0]), "flow", noise=_noise(4))
    ref = cpgfm(den, prob, sig, xs, vjp=vjp, jacobian_term=jacobian_term, k=k)
    run = Run(den, sig, xs, "flow", problem=prob, vjp=vjp)
    out = cpgfm_exact_noisy(run, prob, prob.operator.spectral(tuple(xs.shape)), w=20.0, lam=0.2, sigma_y=0.0,
                            jacobian_term=jacobian_term, k=k)
    assert float((out - ref).norm() / ref.norm()) < 1e-10


def _dense_flow_gain(h, t, sigma_y):
    r2 = (1 - t) ** 2 / (t * t + (1 - t) ** 2)
    return _dense_gain(h, r2, sigma_y)


@pytest.mark.parametrize("name", ["sr2_bicubic", "gauss_fft", "inpaint"])
@pytest.mark.parametrize("k", [0.0, 2.0])
def test_flow_exact_map_solves_the_noisy_pigfm_ode(name, k):
    """Constant v̂ (D(x, σ) = x + σ·v): the per-mode integrator is exact at any step count, against a
    dense RK solve of dx/dt = v̂ + γ_t Γ_t(H⁺y − x − (1 − t)v̂) (Jacobian term off)."""
    op, shape = SMALL_OPS[name]
    sigma_y, w = 0.05, 20.0
    g = torch.Generator().manual_seed(6)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    y = op.forward(0.5 * torch.randn(shape, generator=g, dtype=torch.float64))
    y = y + sigma_y * torch.randn(y.shape, generator=g, dtype=torch.float64)
    prob = OperatorProblem(op, y, sigma_y)
    sig = _flow_grid(3)
    xs = measurement_start(prob, float(sig[0]), "flow", noise=torch.randn(shape, generator=g, dtype=torch.float64))
    den = lambda x, s: x + s.reshape(-1, 1, 1, 1).to(x.dtype) * v.to(x.dtype)  # noqa: E731
    out = cpgfm(den, prob, sig, xs, w=w, lam=0.0, k=k, vjp="none")
    h = dense_matrix(op, shape[1:])
    hy = prob.pinv_y.reshape(-1)
    vv = v.reshape(-1)

    def rhs(t, xf):
        x = torch.from_numpy(xf)
        gamma = w * t * (1 - t) + k * t * (t * t + (1 - t) ** 2) / (1 - t)  # the noiseless γ_t with the k term
        return (vv + gamma * (_dense_flow_gain(h, t, sigma_y) @ (hy - x - (1 - t) * vv))).numpy()

    sol = solve_ivp(rhs, (0.6, FLOW_T_END), xs.reshape(-1).numpy(), method="DOP853", rtol=1e-11, atol=1e-12)
    ref = torch.from_numpy(sol.y[:, -1]).reshape(shape)
    assert float((out - ref).norm() / ref.norm()) < 1e-7


def test_flow_exact_noisy_converges_at_first_order_to_the_noisy_pigfm_ode(prior, truth):
    sigma_y, w = 0.05, 20.0
    op = OPS["sr4"]()
    prob = _problem(op, truth, 1, sigma_y)
    xs = measurement_start(prob, 0.4, "flow", noise=_noise(1))
    h = dense_matrix(op, SHAPE)
    shape = xs.shape

    def rhs(t, xf):
        x = torch.from_numpy(xf).reshape(shape)
        s = torch.full((1,), 1.0 - t, dtype=torch.float64)
        x0 = prior.denoise(x, s, "flow")
        gu = (_dense_flow_gain(h, t, sigma_y) @ prob.residual(x0).reshape(-1)).reshape(shape)
        return ((x0 - x) / (1.0 - t) + w * t * (1 - t) * prior.vjp(x, s, gu, "flow")).reshape(-1).numpy()

    sol = solve_ivp(rhs, (0.6, FLOW_T_END), xs.reshape(-1).numpy(), method="DOP853", rtol=1e-9, atol=1e-11)
    ref = torch.from_numpy(sol.y[:, -1]).reshape(shape)
    den, vjp = prior.denoiser("flow"), prior.vjp_provider("flow")
    errs = [float((cpgfm(den, prob, _flow_grid(n), xs, w=w, lam=0.2, vjp=vjp) - ref).norm() / ref.norm())
            for n in (10, 20, 40)]
    assert all(1.6 < a / b < 2.5 for a, b in zip(errs, errs[1:])), errs


def test_many_distinct_modes_use_interpolated_coefficients_within_1e_4():
    """Above _EXACT_LIMIT distinct ρ the per-mode coefficients come from a log-ρ table (cost no longer
    grows with the image); they must stay within 1e-4 of the exact quadrature (VP and flow)."""
    from comfyui_inverse.samplers.cpgdm_noisy import _EXACT_LIMIT, mode_step_coefficients, per_rho
    from comfyui_inverse.samplers.cpgfm_noisy import flow_mode_step_coefficients

    rho, _ = mode_noise_ratio(MotionBlur(9, seed=1).spectral((1, 3, 128, 128)), 0.05)
    assert rho.size > _EXACT_LIMIT
    for fn in (lambda rr: mode_step_coefficients(0.081, 0.001, rr, 5.0, 2.0, 0.0),
               lambda rr: mode_step_coefficients(0.4, 0.32, rr, 15.0, 0.0, -0.15),
               lambda rr: flow_mode_step_coefficients(0.9, 0.99, rr, 10.0, 0.2, "paper", 4.0)):
        for exact, table in zip(fn(rho), per_rho(fn, rho)):
            assert np.max(np.abs(exact - table) / np.maximum(np.abs(exact), 1e-3)) < 1e-4
