"""Weight schedule ω(t) = w + k/σ², DDNM, final consistency and the start policy (issue 13).

Exact cases on analytic Gaussian priors: the exact weight from an exact start reaches the
Monte-Carlo floor; schedule="paper" is the old scheme bit for bit; projections satisfy Hx = y.
"""

import math

import numpy as np
import pytest
import torch

from comfyui_inverse.operators import Colorization, GaussianBlur, Inpainting, MotionBlur, SuperResolution
from comfyui_inverse.samplers import (GaussianMixturePrior, OperatorProblem, cpgdm, cpgfm, ddim, ddnm, dense_matrix,
                                      enforce_measurement, flow_sigmas_uniform_t, measurement_start, mixture_prior,
                                      vp_sigmas_uniform_t)
from comfyui_inverse.samplers import schedules as sch
from comfyui_inverse.samplers.coefficients import WeightSchedule, integrate, vp_coefficients
from comfyui_inverse.samplers.ddnm import noise_aware_correction
from comfyui_inverse.samplers.presets import preset
from comfyui_inverse.samplers.restarts import TAU_RESTART, with_restarts
from comfyui_inverse.samplers.start_policy import choose_start_time

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 8, 8)


def _mask():
    m = torch.zeros(8, 8)
    m[2:6, 1:5] = 1.0
    return m


@pytest.fixture(scope="module")
def prior():
    return mixture_prior(SHAPE, n_components=3, seed=0)


def _problem(prior, op, n, sigma_y=0.0):
    truth = prior.sample(1, torch.Generator().manual_seed(1))
    y = op.forward(truth)
    if sigma_y:
        y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    return OperatorProblem(op, y.expand(n, *y.shape[1:]).clone(), sigma_y), y


def _noise(n, shape=SHAPE, seed=5):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- coefficients -------------------------------------------------------------------------

def test_paper_schedule_is_the_old_scheme_bit_for_bit(prior):
    s = vp_sigmas_uniform_t(5, dtype=torch.float64).tolist()
    mu, _ = sch.sigma_to_vp(s)
    for n, c in enumerate(vp_coefficients(s, w=15.0, k=0.0)):  # the closed forms of spec §4.5, unchanged
        assert c.r_par == (mu[n] / mu[n + 1]) ** 14.0 and c.ky == mu[n + 1] * (1.0 - (mu[n] / mu[n + 1]) ** 15.0)
    prob, _ = _problem(prior, SuperResolution(4, "bicubic"), 4)
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(4))
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    paper = cpgdm(den, prob, sig, xs, vjp=vjp, schedule="paper")
    assert torch.equal(paper, cpgdm(den, prob, sig, xs, w=15.0, lam=0.0, k=0.0, vjp=vjp))
    assert not torch.allclose(paper, cpgdm(den, prob, sig, xs, w=15.0, k=2.0, vjp=vjp))  # k changes the scheme
    with pytest.raises(ValueError, match="schedule='consistent'"):
        cpgdm(den, prob, sig, xs, k=2.0, schedule="paper")


@pytest.mark.parametrize("lam", [0.0, -0.2])
def test_scheduled_coefficients_match_direct_quadrature(lam):
    """ky and ks∥ (exact antiderivatives) against quadrature of the integrands of spec §4.2 with w → ω(t)."""
    sched = WeightSchedule(5.0, 3.0)
    s = vp_sigmas_uniform_t(6, t_start=0.5, t_end=0.002, dtype=torch.float64).tolist()

    def c12(t):
        return lam * t + 0.5 * sch.vpsde_b(t) - sched.half_integral(t)

    # c12' = λ + ½β(1 − ω): the antiderivative is right
    for t in (0.01, 0.1, 0.4):
        h = 1e-6
        assert (c12(t + h) - c12(t - h)) / (2 * h) == pytest.approx(lam + 0.5 * sch.vpsde_beta(t) * (1 - sched.omega(t)),
                                                                     rel=1e-6)
    for c in vp_coefficients(s, w=5.0, k=3.0, lam=lam):
        e = c12(c.t_next)

        def q(f):
            return integrate(lambda u: f(u), c.t, c.t_next, sqrt_substitution=True)

        ky = q(lambda u: -0.5 * sched.omega(u) * sch.vpsde_beta(u) * sch.vpsde_mu(u) * np.exp(c12(u) - e))
        ks = q(lambda u: 0.5 * sch.vpsde_beta(u) * np.exp(c12(u) - e)
               * (1 / sch.vpsde_sigma(u) - sched.omega(u) * sch.vpsde_sigma(u)))
        assert c.ky == pytest.approx(ky, rel=1e-8, abs=1e-12) and c.ks_par == pytest.approx(ks, rel=1e-8, abs=1e-12)


# ---- exact cases ----------------------------------------------------------------------------

def test_exact_weight_from_exact_start_reaches_the_floor():
    """Isotropic Gaussian prior N(m, vI): ω = 1/σ² + 1/(μ²v) (k = 1, a = 1/v) is the exact ΠGDM weight, so
    from exact posterior draws the sampler integrates the exact posterior PF-ODE: its sample mean is as good
    as n exact draws, with the posterior's spread and Hx = y."""
    shape, v, n = (3, 4, 4), 0.3, 512
    d = math.prod(shape)
    mean = torch.linspace(-0.5, 0.5, d, dtype=torch.float64)
    prior = GaussianMixturePrior(mean[None], v * torch.eye(d, dtype=torch.float64)[None], torch.ones(1), shape)
    op = SuperResolution(2, "bicubic")
    truth = prior.sample(1, torch.Generator().manual_seed(1))
    y = op.forward(truth)
    prob = OperatorProblem(op, y.expand(n, *y.shape[1:]).clone())
    post_mean, _, cmeans, covs = prior.posterior(dense_matrix(op, shape), y.reshape(1, -1))
    ev, q = torch.linalg.eigh(covs[0])
    draws = (cmeans[0, 0] + _noise(n, (d,), seed=3) @ (q * ev.clamp_min(0).sqrt()).T).reshape(n, *shape)
    floor = math.sqrt(float(covs[0].trace()) / n) / float(post_mean.norm())
    sig = vp_sigmas_uniform_t(40, t_start=0.5, t_end=0.0, dtype=torch.float64)
    xs = draws + float(sig[0]) * _noise(n, shape)
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")

    def err(out):
        return float((out.reshape(n, -1).mean(0) - post_mean[0]).norm() / post_mean[0].norm())

    out = cpgdm(den, prob, sig, xs, w=0.0, k=1.0, a=1.0 / v, vjp=vjp)
    exact, draws_err = err(out), err(draws)
    assert exact < 2 * floor and exact < 1.5 * max(draws_err, 0.5 * floor), (exact, floor, draws_err)
    # exact posterior samples: the spread matches the posterior's, and Hx = y
    spread = float(torch.cov(out.reshape(n, -1).T).trace() / covs[0].trace())
    assert abs(spread - 1) < 0.15, spread
    assert float(prob.measurement_error(out).max()) < 1e-6
    paper = cpgdm(den, prob, sig, xs, vjp=vjp, schedule="paper")  # the checks can fail: the paper's weight
    assert float(prob.measurement_error(paper).mean()) > 1e-3  # never enforces Hx = y


def test_sigma_y_zero_reproduces_the_noiseless_scheme(prior):
    noisy_prob, _ = _problem(prior, SuperResolution(4, "bicubic"), 4, sigma_y=0.05)
    quiet_prob = OperatorProblem(noisy_prob.operator, noisy_prob.y)
    sig = vp_sigmas_uniform_t(5, dtype=torch.float64)
    xs = measurement_start(quiet_prob, float(sig[0]), "vp", noise=_noise(4))
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    a = cpgdm(den, noisy_prob, sig, xs, vjp=vjp, sigma_y=0.0)
    b = cpgdm(den, quiet_prob, sig, xs, vjp=vjp)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


OPS = {"sr4": lambda: SuperResolution(4, "bicubic"), "inpaint": lambda: Inpainting(_mask()),
       "deblur": lambda: GaussianBlur(1.0), "motion": lambda: MotionBlur(3.0, angle=45.0), "color": Colorization}


@pytest.mark.parametrize("name", list(OPS))
def test_projection_samplers_satisfy_the_measurement(prior, name):
    prob, _ = _problem(prior, OPS[name](), 6)
    sig = vp_sigmas_uniform_t(5, t_end=0.0, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(6))
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    out = ddnm(den, prob, sig, xs)
    assert float(prob.measurement_error(out).max()) < 1e-6
    assert torch.equal(out, ddim(den, prob, sig, xs))  # the DDIM-projection baseline is DDNM
    # k > 0 on a grid ending at σ = 0 lands the range part on H⁺y: consistent too (diffusion and flow)
    assert float(prob.measurement_error(cpgdm(den, prob, sig, xs, w=5.0, k=2.0, vjp=vjp)).max()) < 1e-6
    fsig = flow_sigmas_uniform_t(5, dtype=torch.float64)
    fxs = measurement_start(prob, float(fsig[0]), "flow", noise=_noise(6))
    fout = cpgfm(prior.denoiser("flow"), prob, fsig, fxs, w=10.0, k=4.0, vjp=prior.vjp_provider("flow"))
    assert float(prob.measurement_error(fout).max()) < 1e-6
    # and the paper's weight does not enforce it (the failure the k term fixes)
    assert float(prob.measurement_error(cpgdm(den, prob, sig, xs, vjp=vjp, schedule="paper")).mean()) > 1e-3


def test_noise_aware_correction_is_the_dense_tikhonov_update(prior):
    op = GaussianBlur(1.0)
    x0 = prior.sample(2, torch.Generator().manual_seed(4))
    y = op.forward(prior.sample(2, torch.Generator().manual_seed(6)))
    h = dense_matrix(op, SHAPE)
    alpha = 0.05**2 / 0.3
    r = (y - op.forward(x0)).reshape(2, -1)
    dense = (h.T @ torch.linalg.solve(h @ h.T + alpha * torch.eye(h.shape[0], dtype=torch.float64), r.T)).T
    got = noise_aware_correction(op, y, x0, 0.05, 0.3)
    torch.testing.assert_close(got.reshape(2, -1), dense, rtol=1e-8, atol=1e-10)


def test_enforce_measurement(prior):
    op = SuperResolution(4, "bicubic")
    x = prior.sample(3, torch.Generator().manual_seed(7))
    y = op.forward(prior.sample(3, torch.Generator().manual_seed(8)))
    prob = OperatorProblem(op, y)
    assert float(prob.measurement_error(enforce_measurement(op, x, y)).max()) < 1e-10
    # noisy: the residual ends at the noise level σ_y·√m, and an output already within it is untouched
    sigma_y = 0.05
    out = enforce_measurement(op, x, y, sigma_y)
    resid = (op.forward(out) - y).flatten(1).norm(dim=1)
    torch.testing.assert_close(resid, torch.full_like(resid, sigma_y * math.sqrt(y[0].numel())), rtol=1e-8, atol=0)
    close = enforce_measurement(op, x, y) + 1e-4 * _noise(3)
    assert torch.equal(enforce_measurement(op, close, y, sigma_y), close)


@pytest.mark.parametrize("op", [SuperResolution(4, "bicubic"), GaussianBlur(1.0), MotionBlur(3, 45.0),
                                Inpainting(_mask()), Colorization()], ids=lambda o: type(o).__name__)
def test_noisy_enforce_is_the_least_change_tikhonov_step_at_the_noise_level(prior, op):
    """σ_y > 0: x + (HᵀH + αI)⁻¹Hᵀ(y − Hx) (the dense solve) with α such that the residual is σ_y·√m
    (noise outside range(H), e.g. in an inpainting hole, counted), and no larger than the uniform
    step x + β·H⁺(y − Hx) that reaches the same residual."""
    from comfyui_inverse.samplers.consistency import morozov_alpha

    sigma_y = 0.05
    x = prior.sample(3, torch.Generator().manual_seed(7))
    y = op.forward(prior.sample(3, torch.Generator().manual_seed(8)))
    y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(9), dtype=y.dtype)
    out = enforce_measurement(op, x, y, sigma_y)
    level = sigma_y * math.sqrt(y[0].numel())
    resid = y - op.forward(x)
    torch.testing.assert_close((op.forward(out) - y).flatten(1).norm(dim=1), torch.full((3,), level, dtype=torch.float64),
                               rtol=1e-8, atol=0)
    spectrum = op.spectral((3, *SHAPE))
    alpha = morozov_alpha(spectrum, resid, spectrum.to_modes(op.pinv(resid)), level)
    h = dense_matrix(op, SHAPE)
    for i in range(3):
        dense = torch.linalg.solve(h.T @ h + float(alpha[i]) * torch.eye(h.shape[1], dtype=torch.float64),
                                   h.T @ resid[i].reshape(-1))
        torch.testing.assert_close((out - x)[i].reshape(-1), dense, rtol=1e-7, atol=1e-9)
    uniform_norm = enforce_measurement(op, x, y)  # β·H⁺r with β from the range-part residual
    r_range = op.forward(op.pinv(resid)).flatten(1).norm(dim=1)
    r_out2 = resid.flatten(1).pow(2).sum(1) - r_range**2
    beta = 1.0 - (level**2 - r_out2).clamp_min(0).sqrt() / r_range
    uniform = (beta.view(-1, 1, 1, 1) * (uniform_norm - x)).flatten(1).norm(dim=1)
    assert ((out - x).flatten(1).norm(dim=1) <= uniform * (1 + 1e-9)).all()


@pytest.mark.parametrize("op", [SuperResolution(4, "bicubic"), GaussianBlur(1.0), MotionBlur(3, 45.0),
                                Inpainting(_mask()), Colorization()], ids=lambda o: type(o).__name__)
def test_noise_aware_steps_at_sigma_y_zero_are_the_noiseless_projection(prior, op):
    x = prior.sample(2, torch.Generator().manual_seed(7))
    y = op.forward(prior.sample(2, torch.Generator().manual_seed(8)))
    plain = op.pinv(y - op.forward(x))
    torch.testing.assert_close(noise_aware_correction(op, y, x, 0.0, 0.3), plain, rtol=0, atol=1e-10)
    torch.testing.assert_close(enforce_measurement(op, x, y, 0.0), x + plain, rtol=0, atol=1e-10)


def test_start_policy_and_presets():
    shape = (1, 3, 64, 64)
    assert choose_start_time(Colorization(), shape) == 0.6
    assert choose_start_time(SuperResolution(4, "bicubic"), shape) == 0.4
    assert choose_start_time(GaussianBlur(2.0), shape) == 0.4
    block = torch.zeros(64, 64)
    block[16:40, 16:40] = 1.0
    assert choose_start_time(Inpainting(block), shape) == 0.4
    p = preset("auto", "vp", Colorization(), 0.0, shape)
    assert p["task"] == "colorize" and p["start"] == 0.6 and p["k"] > 0
    noisy = preset("auto", "vp", SuperResolution(4), 0.05, shape)  # noisy: the exact per-mode map
    assert noisy["noisy"] == "exact" and (noisy["w"], noisy["k"], noisy["lam"]) == (5.0, 2.0, 0.0)
    # noisy, 10 NFE either way: a restart where the operator has a null space, straight steps for blurs
    assert (noisy["steps"], noisy["restarts"], noisy["restart_start"]) == (5, 1, TAU_RESTART)
    hole = preset("auto", "vp", Inpainting(block), 0.05, shape)
    assert (hole["restarts"], hole["restart_start"]) == (1, 0.2)
    for blur in (GaussianBlur(2.0), MotionBlur(3.0, 45.0)):
        straight = preset("auto", "vp", blur, 0.05, shape)
        assert (straight["steps"], straight["restarts"]) == (10, 0)
    flow = preset("auto", "flow", SuperResolution(4), 0.05, shape)
    assert flow["noisy"] == "exact" and flow["k"] == 1.0 and preset("auto", "flow", SuperResolution(4), 0.0)["k"] == 4.0


def test_restarts_are_seeded_and_zero_restarts_is_one_pass(prior):
    prob, _ = _problem(prior, Inpainting(_mask()), 4)
    sig = vp_sigmas_uniform_t(3, t_end=0.0, dtype=torch.float64)
    again = vp_sigmas_uniform_t(3, t_start=TAU_RESTART, t_end=0.0, dtype=torch.float64)
    xs = measurement_start(prob, float(sig[0]), "vp", noise=_noise(4))
    calls = []

    def sample(s, x):
        calls.append(float(s[0]))
        return ddnm(prior.denoiser("vp"), prob, s, x)

    assert torch.equal(with_restarts(sample, xs, sig, None, 0), ddnm(prior.denoiser("vp"), prob, sig, xs))
    a = with_restarts(sample, xs, sig, again, 2, generator=torch.Generator().manual_seed(3))
    b = with_restarts(sample, xs, sig, again, 2, generator=torch.Generator().manual_seed(3))
    c = with_restarts(sample, xs, sig, again, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert calls[-3:] == [float(sig[0]), float(again[0]), float(again[0])]
    assert float(prob.measurement_error(a).max()) < 1e-6  # still a DDNM output: consistent
    with pytest.raises(ValueError, match="restarts"):
        with_restarts(sample, xs, sig, again, -1)


def test_flow_k_term_coefficients():
    """ky from the identity d/ds e^{a+b} = (B + γ)e^{a+b} against direct quadrature of γe^{a+b}; k = 0 unchanged;
    the last step to σ = 0 lands the range part on H⁺y (r∥ = 0, ky = 1, kv∥ = kj∥ = 0)."""
    from comfyui_inverse.samplers.coefficients import flow_coefficients

    s = flow_sigmas_uniform_t(6, dtype=torch.float64).tolist()
    k, w, lamb = 3.0, 10.0, 0.2

    def b(t):
        return w * (t * t / 2 - t**3 / 3) + k * (-t - np.log1p(-t) - 2 * t**3 / 3)

    def gamma(t):
        return w * t * (1 - t) + k * t * (t * t + (1 - t) ** 2) / (1 - t)

    coefs = flow_coefficients(s, w=w, lam=lamb, k=k)
    for c in coefs[:-1]:
        e = lamb * c.t_next + b(c.t_next)
        ky = integrate(lambda u: gamma(u) * np.exp(lamb * u + b(u) - e), c.t, c.t_next)
        assert c.ky == pytest.approx(ky, rel=1e-9)
    last = coefs[-1]
    assert (last.r_par, last.ky, last.kv_par, last.kj_par) == (0.0, 1.0, 0.0, 0.0)
    paper = flow_coefficients(s, w=20.0, lam=0.2)
    assert all(a == b for a, b in zip(paper, flow_coefficients(s, w=20.0, lam=0.2, k=0.0)))
    with pytest.raises(ValueError, match="released"):
        flow_coefficients(s, w=w, lam=lamb, k=k, jacobian_term="released")
