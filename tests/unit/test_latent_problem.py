"""Latent-surrogate and pixel-bridge problems with a linear toy VAE (exact answers known)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comfyui_inverse import operators as ops
from comfyui_inverse.samplers import cpgdm, cpgfm, flow_sigmas_uniform_t, mixture_prior, vp_sigmas_uniform_t
from comfyui_inverse.samplers.latent_problem import (LatentSurrogateProblem, PixelBridgeProblem, consistent_target,
                                                     latent_measurement_error, latent_noise_level,
                                                     make_latent_problem, pixel_measurement_error)

LATENT = (4, 2, 2)  # → 3×16×16 pixels
TOL = 1e-10  # float64 throughout: rounding only


class ToyVAE:
    """decode = overlapping linear ×8 upsampler (+ optional bias); encode = its pseudo-inverse (+ bias)."""

    def __init__(self, seed=0, enc_bias=0.0):
        g = torch.Generator().manual_seed(seed)
        self.kernel = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64) / 16
        d = 4 * 2 * 2
        basis = torch.eye(d, dtype=torch.float64).reshape(d, *LATENT)
        self.matrix = self._dec(basis).reshape(d, -1).T
        self.pinv = torch.linalg.pinv(self.matrix)
        self.enc_bias = enc_bias

    def _dec(self, z):
        return F.conv_transpose2d(z, self.kernel, stride=8, padding=4)

    def decode(self, z):
        return self._dec(z.to(torch.float64))

    def encode(self, x):
        z = (x.to(torch.float64).reshape(x.shape[0], -1) @ self.pinv.T).reshape(x.shape[0], *LATENT)
        return z + self.enc_bias


def mask_op():
    mask = torch.zeros(1, 16, 16)
    mask[:, 0:8, 0:8] = 1.0  # one latent cell missing
    return ops.Inpainting(mask)


def measurement(op, vae, batch=2, seed=1):
    z0 = torch.randn(batch, *LATENT, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return z0, op.forward(vae.decode(z0))


def test_surrogate_target_lies_in_range_and_residual_is_projected():
    vae = ToyVAE()
    op = mask_op()
    _, y = measurement(op, vae)
    problem = make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode)
    assert isinstance(problem, LatentSurrogateProblem)
    t = problem.pinv_y
    assert torch.allclose(problem.project(t), t, atol=TOL)
    assert torch.allclose(t, problem.operator.project(vae.encode(op.pinv(y))), atol=TOL)
    assert float(t[:, :, 0, 0].abs().max()) == 0.0  # the missing latent cell carries no target
    x = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = problem.residual(x)
    assert torch.allclose(problem.project(u), u, atol=TOL)
    assert torch.allclose(u, t - problem.project(x), atol=TOL)


def test_bridge_residual_is_encoded_pixel_correction_for_a_linear_vae():
    vae = ToyVAE()
    op = ops.SuperResolution(4, kernel="box")
    _, y = measurement(op, vae)
    problem = make_latent_problem("pixel_bridge", op, y, vae.decode, vae.encode)
    assert isinstance(problem, PixelBridgeProblem)
    x = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    pix = vae.decode(x)
    expected = vae.encode(op.pinv(y) - op.project(pix))  # E linear: E(D + Δ) − E(D) = E Δ
    assert torch.allclose(problem.residual(x), expected, atol=TOL)


def test_bridge_cancels_encoder_bias_only_with_cancel_bias():
    vae = ToyVAE(enc_bias=0.3)
    op = mask_op()
    _, y = measurement(op, vae)
    x = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    delta = vae.encode(op.pinv(y) - op.project(vae.decode(x))) - 0.3
    cancel = make_latent_problem("pixel_bridge", op, y, vae.decode, vae.encode, cancel_bias=True)
    raw = make_latent_problem("pixel_bridge", op, y, vae.decode, vae.encode, cancel_bias=False)
    assert torch.allclose(cancel.residual(x), delta, atol=TOL)
    # without cancelling, the round trip E(D(x)) − x (here the bias plus D⁺D x − x) leaks in
    roundtrip = vae.encode(vae.decode(x)) - x
    assert torch.allclose(raw.residual(x), delta + roundtrip, atol=TOL)
    assert float((raw.residual(x) - cancel.residual(x)).abs().max()) > 0.1


def test_modes_coincide_without_jacobian_and_differ_with_it():
    """The residual only enters through the VJP term (module docstring): vjp='none' ⇒ same output."""
    vae = ToyVAE()
    op = mask_op()
    prior = mixture_prior(shape=LATENT, n_components=2, seed=0)
    _, y = measurement(op, vae)
    sur = make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode)
    bri = make_latent_problem("pixel_bridge", op, y, vae.decode, vae.encode)
    sig = vp_sigmas_uniform_t(4, 0.4, 0.001, dtype=torch.float64)
    run = lambda p, v: cpgdm(prior.denoiser("vp"), p, sig, w=15.0, lam=0.0, vjp=v,  # noqa: E731
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(run(sur, "none"), run(bri, "none"))
    exact = prior.vjp_provider("vp")
    assert not torch.allclose(run(sur, exact), run(bri, exact), atol=1e-6)
    fsig = flow_sigmas_uniform_t(4, 0.6, dtype=torch.float64)
    frun = lambda p: cpgfm(prior.denoiser("flow"), p, fsig, w=20.0, lam=0.2, vjp="none",  # noqa: E731
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(frun(sur), frun(bri))


def test_metrics_vanish_at_the_truth_and_grow_away_from_it():
    vae = ToyVAE()
    op = ops.Denoise()
    z0, y = measurement(op, vae)
    problem = make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode)
    assert float(pixel_measurement_error(op, y, vae.decode, z0).max()) < 1e-12
    assert float(latent_measurement_error(problem, z0).max()) < 1e-12  # E = D⁺ recovers z0 exactly
    assert float(pixel_measurement_error(op, y, vae.decode, 1.1 * z0).min()) == pytest.approx(0.1, rel=1e-9)


def test_latent_noise_level_is_linear_in_sigma_for_a_linear_encoder():
    vae = ToyVAE()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = latent_noise_level(vae.encode, x, 0.05, torch.Generator().manual_seed(9))
    b = latent_noise_level(vae.encode, x, 0.10, torch.Generator().manual_seed(9))
    assert latent_noise_level(vae.encode, x, 0.0) == 0.0
    assert a > 0 and b == pytest.approx(2 * a, rel=1e-6)  # float32 noise draw


def test_bad_inputs_name_the_fix():
    vae = ToyVAE()
    op = mask_op()
    _, y = measurement(op, vae)
    with pytest.raises(ValueError, match="bridge mode"):
        make_latent_problem("pixels", op, y, vae.decode, vae.encode)
    with pytest.raises(ValueError, match="colorization has no latent-grid analogue"):
        make_latent_problem("latent_surrogate", ops.Colorization(), torch.zeros(1, 1, 16, 16), vae.decode, vae.encode)
    with pytest.raises(ValueError, match="decode and encode"):
        PixelBridgeProblem(op, y, op, None, vae.encode)
    with pytest.raises(ValueError, match="target_latent"):
        LatentSurrogateProblem(op, torch.zeros(16, 16))


# ------------------------------------------------------------------ consistent target

def dense_latent_operator(op, vae):
    d = vae.matrix.shape[1]
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *LATENT)
    return op.forward(vae.decode(basis)).reshape(d, -1).T


def test_consistent_target_converges_to_the_min_norm_correction_for_a_linear_vae():
    vae = ToyVAE()
    op = ops.SuperResolution(4, kernel="box")  # 3×4×4 = 48 measurements of 16 latent numbers: determined
    z_true = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = op.forward(vae.decode(z_true))
    start = vae.encode(op.pinv(y))
    a = dense_latent_operator(op, vae)
    residual = y.reshape(2, -1) - start.reshape(2, -1) @ a.T
    exact = start + (residual @ torch.linalg.pinv(a).T).reshape(start.shape)
    refined = consistent_target(op, y, vae.decode, start, iters=40)
    assert (refined - exact).norm() / exact.norm() < 1e-4
    before = pixel_measurement_error(op, y, vae.decode, start)
    after = pixel_measurement_error(op, y, vae.decode, refined)
    assert (before > 0.05).all() and (after < 1e-4).all()  # E(H⁺y) itself is not consistent; the refined one is
    assert consistent_target(op, y, vae.decode, start, iters=0) is start


def test_consistent_target_keeps_latent_cells_the_measurement_does_not_see():
    # Decoder = nearest ×8 upsampling of a 3-channel latent: each latent cell owns an 8×8 pixel block.
    decode = lambda z: F.interpolate(z, scale_factor=8, mode="nearest")  # noqa: E731
    mask = torch.zeros(1, 32, 32)
    mask[:, :16] = 1.0  # ComfyUI convention: 1 = unknown, so the top half is missing
    op = ops.Inpainting(mask)
    g = torch.Generator().manual_seed(2)
    start = torch.randn(1, 3, 4, 4, generator=g)
    y = op.forward(decode(torch.randn(1, 3, 4, 4, generator=g)))
    refined = consistent_target(op, y, decode, start, iters=10)
    assert torch.equal(refined[..., :2, :], start[..., :2, :])  # unobserved rows: untouched
    assert not torch.allclose(refined[..., 2:, :], start[..., 2:, :])
    assert pixel_measurement_error(op, y, decode, refined).item() < 1e-5


def test_consistent_target_mode_builds_a_surrogate_with_a_more_consistent_target():
    vae = ToyVAE()
    op = ops.SuperResolution(4, kernel="box")
    y = op.forward(vae.decode(torch.randn(1, *LATENT, generator=torch.Generator().manual_seed(3),
                                          dtype=torch.float64)))
    plain = make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode)
    refined = make_latent_problem("consistent_target", op, y, vae.decode, vae.encode)
    assert type(refined) is LatentSurrogateProblem
    assert (pixel_measurement_error(op, y, vae.decode, refined.target)
            < 0.1 * pixel_measurement_error(op, y, vae.decode, plain.target)).all()


def test_consistent_target_never_makes_a_nonlinear_decoders_target_less_consistent():
    vae = ToyVAE()
    decode = lambda z: torch.tanh(4.0 * vae.decode(z)) + 0.3 * vae.decode(z) ** 2  # noqa: E731  strongly nonlinear
    op = ops.SuperResolution(4, kernel="box")
    g = torch.Generator().manual_seed(5)
    y = op.forward(decode(torch.randn(6, *LATENT, generator=g, dtype=torch.float64)))
    start = torch.randn(6, *LATENT, generator=g, dtype=torch.float64)
    refined = consistent_target(op, y, decode, start, iters=10)
    before = pixel_measurement_error(op, y, decode, start)
    after = pixel_measurement_error(op, y, decode, refined)
    assert (after <= before + 1e-7).all()
    assert (after < 0.9 * before).any()  # and the step helps where the linearisation holds


# ------------------------------------------------------------------ start policy and noise-aware projection (issue 13)

def test_policy_start_is_the_encoded_wiener_estimate_only_for_noisy_spectral_measurements():
    from comfyui_inverse.samplers import OperatorProblem, wiener_y

    vae = ToyVAE()
    op = ops.SuperResolution(4, kernel="box")
    _, y = measurement(op, vae)
    for mode in ("latent_surrogate", "pixel_bridge"):
        noisy = make_latent_problem(mode, op, y, vae.decode, vae.encode, sigma_y_signed=0.1, start_point="policy")
        expected = vae.encode(wiener_y(OperatorProblem(op, y, 0.1)))
        assert torch.allclose(noisy.start_latent, expected, atol=TOL)
        assert not torch.allclose(noisy.start_latent, noisy.target, atol=1e-3)  # W y damps the weak modes of H⁺y
        # noiseless, or start_point="pinv" (the old start): the target itself
        for prob in (make_latent_problem(mode, op, y, vae.decode, vae.encode, start_point="policy"),
                     make_latent_problem(mode, op, y, vae.decode, vae.encode, sigma_y_signed=0.1)):
            assert prob.start_latent is prob.target
    with pytest.raises(ValueError, match="start_point"):
        make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode, start_point="wiener")


def test_latent_noise_aware_projection_is_the_dense_tikhonov_update_on_the_latent_grid():
    from comfyui_inverse.samplers import dense_matrix, ddnm
    from comfyui_inverse.samplers.ddnm import noise_aware_correction

    vae = ToyVAE()
    op = mask_op()  # latent grid: a latent mask (one cell missing)
    _, y = measurement(op, vae)
    for mode in ("latent_surrogate", "pixel_bridge"):
        prob = make_latent_problem(mode, op, y, vae.decode, vae.encode, sigma_y_signed=0.1)
        lat_op, y_lat = prob.state_measurement()
        assert lat_op is prob.operator and torch.allclose(lat_op.pinv(y_lat), prob.pinv_y, atol=TOL)
        x0 = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        h = dense_matrix(lat_op, LATENT)
        r = (y_lat - lat_op.forward(x0)).reshape(2, -1)
        alpha = prob.sigma_y**2 / 0.3
        dense = (h.T @ torch.linalg.solve(h @ h.T + alpha * torch.eye(h.shape[0], dtype=torch.float64), r.T)).T
        got = noise_aware_correction(lat_op, y_lat, x0, prob.sigma_y, 0.3)
        torch.testing.assert_close(got.reshape(2, -1), dense, rtol=1e-8, atol=1e-10)
        # σ_y = 0 is the plain projection H⁺(y − Hx̂0) = P(target) − P x̂0 to rounding
        plain = noise_aware_correction(lat_op, y_lat, x0, 0.0, 0.3)
        torch.testing.assert_close(plain, prob.residual(x0) if mode == "latent_surrogate" else
                                   prob.pinv_y - prob.project(x0), rtol=0, atol=1e-10)
    # the latent DDNM takes the noise-aware step (it refused latent problems before) and differs from the plain one
    prior = mixture_prior(shape=LATENT, n_components=2, seed=0)
    sig = vp_sigmas_uniform_t(4, 0.4, 0.001, dtype=torch.float64)
    prob = make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode, sigma_y_signed=0.1)
    x = prob.start_latent + float(sig[0]) * torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(3),
                                                         dtype=torch.float64)
    aware, plain = ddnm(prior.denoiser("vp"), prob, sig, x), ddnm(prior.denoiser("vp"), prob, sig, x, sigma_y=0.0)
    assert torch.isfinite(aware).all() and not torch.allclose(aware, plain, atol=1e-4)
    zero = make_latent_problem("latent_surrogate", op, y, vae.decode, vae.encode)
    assert torch.equal(ddnm(prior.denoiser("vp"), zero, sig, x), plain)
