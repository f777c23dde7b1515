"""C-ΠGDM / C-ΠGFM and baselines on an analytic Gaussian-mixture prior (3×8×8 images).

The prior's exact denoiser, Jacobian and posterior make every claim checkable: the exact
VJP provider (closed-form Jacobian) is used for speed; autograd is tested in test_vjp.py.
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from comfyui_inverse.operators import GaussianBlur, Inpainting, SuperResolution
from comfyui_inverse.samplers import (OperatorProblem, cpgdm, cpgfm, ddim, dense_matrix, dps, flow_sigmas_uniform_t,
                                      gaussian_prior, measurement_start, mixture_prior, pigdm, vp_sigmas_uniform_t)
from comfyui_inverse.samplers import schedules as sch

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 8, 8)


def _mask():
    m = torch.zeros(8, 8)
    m[2:6, 1:5] = 1.0  # 25% missing block
    return m


OPERATORS = {
    "sr4": lambda: SuperResolution(4, "bicubic"),
    "inpaint": lambda: Inpainting(_mask()),
    "deblur": lambda: GaussianBlur(1.0),
}




@pytest.fixture(scope="module")
def prior():
    return mixture_prior(SHAPE, n_components=3, seed=0)


@pytest.fixture(scope="module")
def truth(prior):
    return prior.sample(1, torch.Generator().manual_seed(1))


def _problem(op, truth, n, sigma_y=0.0, seed=2):
    y = op.forward(truth)
    if sigma_y:
        y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return OperatorProblem(op, y.expand(n, *y.shape[1:]).clone(), sigma_y), y


def _noise(n, seed=5):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- exactness against DDIM --------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, -0.3])
def test_cpgdm_with_zero_weight_is_ddim(prior, truth, lam):
    prob, _ = _problem(SuperResolution(4, "bicubic"), truth, 6)
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(6))
    den = prior.denoiser("vp")
    a = ddim(den, None, sig, xs, lam=lam)
    b = cpgdm(den, prob, sig, xs, w=0.0, lam=lam, vjp=prior.vjp_provider("vp"), schedule="paper")
    # same maths, different operation order (split state): float64 rounding only
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    c = cpgdm(den, prob, sig.float(), xs.float(), w=0.0, lam=lam, vjp="none", schedule="paper")
    assert c.dtype == torch.float32
    torch.testing.assert_close(c.double(), a, rtol=1e-5, atol=1e-5)  # float32 input σ and x


# ---- (1) high-NFE behaviour --------------------------------------------------------------

def test_ddim_high_nfe_gives_prior_covariance():
    shape = (3, 4, 4)  # small d keeps 2000 samples × 50 steps cheap
    prior = gaussian_prior(shape, lengthscale=1.5, std=0.5)
    n = 2000
    sig = vp_sigmas_uniform_t(50, t_start=1.0, t_end=1e-4, dtype=torch.float64)
    s0 = float(sig[0])
    # start at the exact marginal: x = x0 + σ0 ε with x0 ~ prior
    g = torch.Generator().manual_seed(11)
    x = prior.sample(n, g) + s0 * torch.randn(n, *shape, generator=g, dtype=torch.float64)
    out = ddim(prior.denoiser("vp"), None, sig, x).reshape(n, -1)
    cov = prior.covariance
    emp = torch.cov(out.T)
    rel = float((emp - cov).norm() / cov.norm())
    # Gaussian sampling error: E‖Ŝ − Σ‖²_F = (tr(Σ)² + ‖Σ‖²_F)/(n−1); allow 3× its rms
    expected = math.sqrt((float(cov.trace()) ** 2 + float(cov.norm()) ** 2) / (n - 1)) / float(cov.norm())
    assert rel < 3 * expected, (rel, expected)
    mean_err = float((out.mean(0) - prior.mean.reshape(-1)).norm())
    assert mean_err < 4 * math.sqrt(float(cov.trace()) / n)
    # the test can fail: too few steps give a visibly wrong covariance
    few = ddim(prior.denoiser("vp"), None, vp_sigmas_uniform_t(2, t_start=1.0, t_end=1e-4, dtype=torch.float64), x)
    rel_few = float((torch.cov(few.reshape(n, -1).T) - cov).norm() / cov.norm())
    assert rel_few > 3 * expected


@pytest.mark.parametrize("name", list(OPERATORS))
def test_guided_high_nfe_is_measurement_consistent(prior, truth, name):
    op = OPERATORS[name]()
    n = 8
    prob, _ = _problem(op, truth, n)
    sig = vp_sigmas_uniform_t(40, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(n))
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    free = float(prob.measurement_error(ddim(den, None, sig, xs)).mean())
    errs = [float(prob.measurement_error(cpgdm(den, prob, sig, xs, w=w, vjp=vjp, schedule="paper")).mean()) for w in (15.0, 60.0)]
    pig = float(prob.measurement_error(pigdm(den, prob, sig, xs, w=10.0, vjp=vjp)).mean())
    # guidance drives ‖Hx − y‖/‖y‖ far below the unguided ODE from the same start, more so for larger w
    assert errs[1] < errs[0] < 0.4 * free
    assert errs[1] < 0.2 * free and pig < 0.5 * free


# ---- (2) C-ΠGDM beats ΠGDM at 5 NFE against the exact posterior mean -----------------------

@pytest.mark.parametrize("name", list(OPERATORS))
def test_cpgdm_beats_pigdm_at_5_nfe(prior, truth, name):
    op = OPERATORS[name]()
    n = 256
    prob, y = _problem(op, truth, n)
    post_mean = prior.posterior(dense_matrix(op, SHAPE), y.reshape(1, -1), 0.0)[0][0]
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(n))
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")

    def err(out):
        return float((out.reshape(n, -1).mean(0) - post_mean).norm() / post_mean.norm())

    c = err(cpgdm(den, prob, sig, xs, w=15.0, lam=0.0, vjp=vjp, schedule="paper"))  # paper defaults
    # ΠGDM at its best weight among the released scripts' range (w = 1 … 6)
    p = min(err(pigdm(den, prob, sig, xs, w=w, vjp=vjp)) for w in (1.0, 3.0, 6.0))
    # Monte-Carlo noise is shared (same start noise for both), so a strict win is meaningful
    assert c < p, (c, p)


# ---- (3) first-order convergence to the conditional ODE -----------------------------------

def _cpgdm_ode_reference(prior, prob, x_start, w, t0, t1):
    """Tight DOP853 solution of the guided PF-ODE written with G = w μ² J_x̂0ᵀ u (spec §4.1)."""
    shape = x_start.shape

    def rhs(t, xf):
        x = torch.from_numpy(xf).reshape(shape)
        mu, sv = float(sch.vpsde_mu(t)), float(sch.vpsde_sigma(t))
        beta = float(sch.vpsde_beta(t))
        s = torch.full((shape[0],), sv / mu, dtype=torch.float64)
        x_ve = x / mu
        x0 = prior.denoise(x_ve, s)
        eps = (x_ve - x0) / (sv / mu)
        u = prob.residual(x0)
        guide = w * mu * prior.vjp(x_ve, s, u)  # w μ² J_x̂0ᵀu, J_x̂0 = J_D/μ w.r.t. x_vp
        return (-0.5 * beta * x - 0.5 * beta * (-eps / sv + guide)).reshape(-1).numpy()

    mu0 = float(sch.vpsde_mu(t0))
    sol = solve_ivp(rhs, (t0, t1), (mu0 * x_start).reshape(-1).numpy(), method="DOP853", rtol=1e-8, atol=1e-10)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape) / float(sch.vpsde_mu(t1))


@pytest.fixture(scope="module")
def ode_case(prior, truth):
    prob, _ = _problem(SuperResolution(4, "bicubic"), truth, 1)
    xs = measurement_start(prob, float(sch.vp_time_to_sigma(0.4)), "vp", noise=_noise(1))
    return prob, xs, _cpgdm_ode_reference(prior, prob, xs, 3.0, 0.4, 0.001)


@pytest.mark.parametrize("lam", [0.0, -0.3])
def test_cpgdm_converges_at_first_order(prior, ode_case, lam):
    # λ changes the integrator, not the ODE: both must converge to the same solution
    prob, xs, ref = ode_case
    w = 3.0
    errs = []
    for n_steps in (10, 20, 40):
        sig = vp_sigmas_uniform_t(n_steps, dtype=torch.float64)
        out = cpgdm(prior.denoiser("vp"), prob, sig, xs, w=w, lam=lam, vjp=prior.vjp_provider("vp"), schedule="paper")
        errs.append(float((out - ref).norm() / ref.norm()))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(1.6 < r < 2.5 for r in ratios), (errs, ratios)


FLOW_T_END = 0.999  # v̂ = (x̂1 − x)/(1 − t) is stiff as t → 1; stop both solvers just short of it


def _flow_grid(n):
    return torch.tensor(1.0 - np.linspace(0.6, FLOW_T_END, n + 1), dtype=torch.float64)


def _cpgfm_ode_reference(prior, prob, x_start, w, jacobian=True):
    """dx/dt = v̂ + γ_t J_x̂1ᵀ u (spec §6.1), or with J_x̂1 ≈ I (the Jacobian-free ODE)."""
    shape = x_start.shape

    def rhs(t, xf):
        x = torch.from_numpy(xf).reshape(shape)
        s = torch.full((shape[0],), 1.0 - t, dtype=torch.float64)
        x0 = prior.denoise(x, s, "flow")
        u = prob.residual(x0)
        ju = prior.vjp(x, s, u, "flow") if jacobian else u
        return ((x0 - x) / (1.0 - t) + w * t * (1 - t) * ju).reshape(-1).numpy()

    sol = solve_ivp(rhs, (0.6, FLOW_T_END), x_start.reshape(-1).numpy(), method="DOP853", rtol=1e-8, atol=1e-10)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape)


def test_cpgfm_paper_converges_to_full_ode_and_released_to_jacobian_free(prior, truth):
    prob, _ = _problem(SuperResolution(4, "bicubic"), truth, 1)
    w = 20.0
    xs = measurement_start(prob, 0.4, "flow", noise=_noise(1))
    full = _cpgfm_ode_reference(prior, prob, xs, w, jacobian=True)
    free = _cpgfm_ode_reference(prior, prob, xs, w, jacobian=False)
    den, vjp = prior.denoiser("flow"), prior.vjp_provider("flow")
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    errs = [rel(cpgfm(den, prob, _flow_grid(n), xs, w=w, lam=0.2, vjp=vjp), full) for n in (10, 20, 40)]
    assert all(1.6 < a / b < 2.5 for a, b in zip(errs, errs[1:])), errs
    sig = _flow_grid(80)
    released = cpgfm(den, prob, sig, xs, w=w, lam=0.2, jacobian_term="released", vjp=vjp)
    assert rel(released, free) < 0.5 * rel(released, full)
    assert rel(full, free) > 0.01  # the two ODEs differ, so the test can tell them apart


# ---- contracts: noise, determinism, hooks, dtypes, batches ---------------------------------

def _all_samplers(prior, prob):
    vjp = prior.vjp_provider("vp")
    den = prior.denoiser("vp")
    return {
        "cpgdm": lambda s, x=None, **k: cpgdm(den, prob, s, x, vjp=vjp, **k),
        "ncpgdm": lambda s, x=None, **k: cpgdm(den, prob, s, x, sigma_y=0.05, vjp=vjp, noisy="paper", **k),
        "ncpgdm_exact": lambda s, x=None, **k: cpgdm(den, prob, s, x, sigma_y=0.05, vjp=vjp, **k),
        "pigdm": lambda s, x=None, **k: pigdm(den, prob, s, x, vjp=vjp, **k),
        "dps": lambda s, x=None, **k: dps(den, prob, s, x, vjp=vjp, **k),
        "ddim_proj": lambda s, x=None, **k: ddim(den, prob, s, x, **k),
        "cpgfm": lambda s, x=None, **k: cpgfm(prior.denoiser("flow"), prob, 0.4 * s / s[0], x,
                                              vjp=prior.vjp_provider("flow"), **k),
    }


def test_seed_callback_and_stop_contracts(prior, truth):
    prob, _ = _problem(SuperResolution(4, "bicubic"), truth, 3)
    sig = vp_sigmas_uniform_t(5)  # float32 σ, as ComfyUI hands them over
    for name, run in _all_samplers(prior, prob).items():
        a = run(sig, generator=torch.Generator().manual_seed(7))
        b = run(sig, generator=torch.Generator().manual_seed(7))
        c = run(sig, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b), name  # bit-identical
        assert not torch.equal(a, c), name
        calls = []
        run(sig, generator=torch.Generator().manual_seed(7), callback=lambda i, x, x0: calls.append((i, x.shape)))
        assert [i for i, _ in calls] == list(range(5)) and calls[0][1] == a.shape, name
        seen = []
        stopped = run(sig, generator=torch.Generator().manual_seed(7), callback=lambda i, x, x0: seen.append(i),
                      should_stop=lambda: len(seen) >= 2)
        assert seen == [0, 1] and stopped.shape == a.shape and not torch.equal(stopped, a), name


def test_batch_members_are_independent_and_dtype_is_kept(prior, truth):
    prob, _ = _problem(GaussianBlur(1.0), truth, 4)
    sig = vp_sigmas_uniform_t(5)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(4)).float()
    vjp = prior.vjp_provider("vp")
    full = cpgdm(prior.denoiser("vp"), prob, sig, xs, vjp=vjp)
    assert full.dtype == torch.float32
    prob1, _ = _problem(GaussianBlur(1.0), truth, 1)
    one = cpgdm(prior.denoiser("vp"), prob1, sig, xs[2:3], vjp=vjp)
    torch.testing.assert_close(one, full[2:3], rtol=1e-6, atol=1e-6)

    def half_model(x, s):  # fp16 model: accumulation must not happen in fp16
        return prior.denoise(x.double(), s.double()).half()

    out = cpgdm(half_model, prob, sig, xs.half(), vjp="none")
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_noisy_defaults_and_sigma_end_zero(prior, truth):
    prob, _ = _problem(SuperResolution(4, "bicubic"), truth, 8, sigma_y=0.05)
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(8))
    noisy = cpgdm(den, prob, sig, xs, vjp=vjp, noisy="paper")  # w = 2, λ = −0.15, c3 correction on
    plain = cpgdm(den, prob, sig, xs, vjp=vjp, w=2.0, lam=-0.15, sigma_y=0.0, schedule="paper")
    diff = float((noisy - plain).norm() / plain.norm())
    assert 1e-5 < diff < 0.2  # a small first-order correction, not nothing and not a blow-up
    # the heuristic c3·M map diverges when |κ|·‖M‖ ≥ 1 (ill-conditioned deblur, ‖M‖ ~ 1e5): refused
    blur_prob, _ = _problem(GaussianBlur(1.0), truth, 2, sigma_y=0.05)
    with pytest.raises(ValueError, match="unstable"):
        cpgdm(den, blur_prob, sig, vjp=vjp, generator=torch.Generator().manual_seed(0), noisy="paper")
    # a ComfyUI-style grid ending in σ = 0: the model is never called at 0, the output is finite
    seen = []

    def watch(x, s):
        seen.append(float(s.min()))
        return den(x, s)

    out = cpgdm(watch, OperatorProblem(prob.operator, prob.y[:2]), torch.tensor([14.6, 3.0, 0.8, 0.2, 0.0]),
                vjp="finite_difference", generator=torch.Generator().manual_seed(0))
    assert min(seen) > 0 and torch.isfinite(out).all()


def test_bad_inputs_raise_value_error(prior, truth):
    prob, _ = _problem(SuperResolution(4, "bicubic"), truth, 1)
    with pytest.raises(ValueError, match="sigmas"):
        cpgdm(prior.denoiser("vp"), prob, torch.tensor([0.1, 0.5]))
    with pytest.raises(ValueError, match="vjp"):
        cpgdm(prior.denoiser("vp"), prob, vp_sigmas_uniform_t(3), vjp="magic")
    with pytest.raises(ValueError, match="jacobian_term"):
        cpgfm(prior.denoiser("flow"), prob, flow_sigmas_uniform_t(3), jacobian_term="v2")
