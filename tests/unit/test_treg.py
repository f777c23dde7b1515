"""TReg core (samplers/treg.py, samplers/treg_negation.py) on pure-torch toys.

Toy world: latent = pixels = 3×8×8 (192 values). decode = a fixed, well-conditioned random
linear map W, encode = W⁻¹ (its pseudo-inverse) plus an optional seeded "posterior" noise.
The eps model depends on the text embedding so CFG and the null embedding matter.
"""

import functools
import math

import pytest
import torch

from comfyui_inverse.operators.base import LinearOperator
from comfyui_inverse.operators.super_resolution import SuperResolution
from comfyui_inverse.samplers import treg
from comfyui_inverse.samplers.treg import AdaptiveNegation, SamplingAborted, data_consistency, treg_sample

SHAPE = (3, 8, 8)
N = 3 * 8 * 8
T, D = 4, 8  # token rows, token width of the toy text embedding
CFG = 3.0


def sd_sigmas(steps, dtype=torch.float64):
    """SD-1.5 discrete schedule (scaled linear betas) at `steps` evenly spaced timesteps, then 0."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    sig = ((1 - abar) / abar).sqrt()
    idx = torch.linspace(999, 0, steps).round().long()
    return torch.cat([sig[idx], torch.zeros(1, dtype=torch.float64)]).to(dtype)


@functools.lru_cache(maxsize=None)
def decoder_pair(seed):
    """(W, W⁺) for the linear toy decoder; W = I + small noise is well conditioned."""
    g = torch.Generator().manual_seed(seed)
    w = torch.eye(N, dtype=torch.float64) + 0.2 * torch.randn(N, N, generator=g, dtype=torch.float64) / math.sqrt(N)
    return w, torch.linalg.pinv(w)


class Toy:
    def __init__(self, seed=0, dtype=torch.float64, encode_noise=0.0):
        g = torch.Generator().manual_seed(seed + 1000)
        self.dtype = dtype
        w, w_inv = decoder_pair(seed)
        self.W, self.W_inv = w.to(dtype), w_inv.to(dtype)
        self.P = (0.5 * torch.randn(D, N, generator=g, dtype=torch.float64)).to(dtype)
        self.positive = torch.randn(1, T, D, generator=g, dtype=torch.float64).to(dtype)
        self.null = torch.randn(1, T, D, generator=g, dtype=torch.float64).to(dtype)
        self.embed_map = torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)
        self.encode_noise = encode_noise
        self.calls = []  # (kind, payload)

    def eps(self, z, sigma_b, emb):
        s = sigma_b.view(-1, 1, 1, 1).to(z.dtype)
        text = (emb.to(z.dtype).mean(1) @ self.P.to(z.dtype)).expand(z.shape[0], -1).reshape(z.shape)
        return 0.5 * torch.tanh(z) + text / (1.0 + s)

    def denoise(self, x, sigma_b, null):
        """CFG-combined x̂0 in ComfyUI's convention (x = x0 + σε, model input x/√(1+σ²))."""
        null = self.null if null is None else null
        self.calls.append(("denoise", null.detach().clone()))
        s = sigma_b.view(-1, 1, 1, 1).to(x.dtype)
        z = x / torch.sqrt(1 + s * s)
        e_u, e_c = self.eps(z, sigma_b, null), self.eps(z, sigma_b, self.positive)
        return x - s * (e_u + CFG * (e_c - e_u))

    def decode(self, z):
        self.calls.append(("decode", None))
        return (z.flatten(1) @ self.W.T).reshape(z.shape[0], *SHAPE)

    def encode(self, pixels, generator):
        self.calls.append(("encode", None))
        z = (pixels.flatten(1).to(self.dtype) @ self.W_inv.T).reshape(pixels.shape[0], *SHAPE)
        if self.encode_noise:
            n = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z.dtype)
            z = z + self.encode_noise * n
        return z

    def image_embed(self, pixels):
        self.calls.append(("embed", pixels.detach().clone()))
        return pixels.flatten(1).to(self.dtype) @ self.embed_map

    def negation(self, **kw):
        kw.setdefault("lr", 1e-2)
        return AdaptiveNegation(self.null, self.image_embed, **kw)


class DenseOperator(LinearOperator):
    """y = M·vec(x) per item: the generic fallback for tests."""

    def __init__(self, matrix):
        self.M = matrix

    def forward(self, x):
        return x.flatten(1) @ self.M.T.to(x.dtype)

    def adjoint(self, y):
        return (y @ self.M.to(y.dtype)).reshape(y.shape[0], *SHAPE)

    def pinv(self, y):
        return (y @ torch.linalg.pinv(self.M).T.to(y.dtype)).reshape(y.shape[0], *SHAPE)

    def output_shape(self, input_shape):
        return (input_shape[0], self.M.shape[0])


def measurement(op, batch=1, seed=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(batch, *SHAPE, generator=g, dtype=torch.float64).to(dtype)
    return op.forward(truth)


def start(sigmas, batch=1, seed=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, *SHAPE, generator=g, dtype=torch.float64).to(dtype)
    return noise * math.sqrt(1 + float(sigmas[0]) ** 2)  # ComfyUI's noise_scaling at full denoise


def reference_ddim(toy, sigmas, x_init, null):
    """Plain CFG DDIM (η = 0) written in the VP latent z from the paper's formulas."""
    abar = 1.0 / (1.0 + sigmas.double() ** 2)
    z = x_init * abar[0].sqrt()
    for k in range(len(sigmas) - 1):
        a, a_prev = abar[k], abar[k + 1]
        t = sigmas[k] * torch.ones(z.shape[0], dtype=z.dtype)
        e_u, e_c = toy.eps(z, t, null), toy.eps(z, t, toy.positive)
        e = e_u + CFG * (e_c - e_u)
        z0 = (z - (1 - a).sqrt() * e) / a.sqrt()
        z = a_prev.sqrt() * z0 + (1 - a_prev).sqrt() * e
    return z / abar[-1].sqrt()


def never(*_a, **_k):
    raise AssertionError("must not be called with DC off")


# --------------------------------------------------------------------------- plain DDIM


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_dc_off_equals_plain_cfg_ddim(dtype, atol):
    toy = Toy(dtype=dtype)
    sigmas = sd_sigmas(25, dtype)
    x_init = start(sigmas, batch=2, dtype=dtype)
    op = DenseOperator(torch.randn(10, N, dtype=dtype))
    y = torch.zeros(2, 10, dtype=dtype)
    negation = toy.negation()
    out = treg_sample(
        toy.denoise, sigmas, x_init, op, y, never, never,
        negation=negation, dc_until=0.0, generator=torch.Generator().manual_seed(0),
    )
    # The negation stores u in fp32 by design: the reference uses that same (rounded) u.
    ref = reference_ddim(toy, sigmas.double(), x_init.double(), negation.embedding[:1].double())
    assert out.dtype == dtype
    # fp32: ~1e-7 relative per op over 25 steps on values up to σ_max ≈ 14.6.
    assert torch.allclose(out.double(), ref, rtol=0, atol=atol)
    assert negation.updates == 0 and torch.equal(negation.embedding[0], toy.null[0].float())
    # The result is a clean sample (sigmas end in 0): not the noisy start.
    assert (out.double() - x_init.double()).abs().max() > 1.0


def test_sigmas_not_ending_in_zero_return_the_state_at_the_last_sigma():
    toy = Toy()
    sigmas = sd_sigmas(10)[:6]  # a SplitSigmas-style first half
    x_init = start(sigmas)
    out = treg_sample(toy.denoise, sigmas, x_init, None, torch.zeros(1, 1), never, never,
                      dc_until=0.0, generator=torch.Generator())
    ref = reference_ddim(toy, sigmas, x_init, toy.null)
    assert torch.allclose(out, ref, atol=1e-10)


# --------------------------------------------------------------------------- data consistency


def test_dc_reduces_measurement_residual_on_linear_decoder_toy():
    toy = Toy()
    op = SuperResolution(2, "bicubic")
    y = measurement(op)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(1, *SHAPE, generator=g, dtype=torch.float64)

    def residual(z):
        return float((op.forward(toy.decode(z)) - y).norm())

    x_y = data_consistency(toy.decode(z0), op, y, cg_iters=5, lam=1e-4)
    z_y = toy.encode(x_y, g)
    # SR×2 bicubic: AᵀA has condition ~4 on its range, 5 CG steps nearly solve A x = y.
    assert residual(z_y) < 1e-3 * residual(z0)


def test_dc_converges_to_tikhonov_solution_and_keeps_the_null_space():
    g = torch.Generator().manual_seed(2)
    M = torch.randn(20, N, generator=g, dtype=torch.float64)
    op = DenseOperator(M)
    x0 = torch.randn(1, *SHAPE, generator=g, dtype=torch.float64)
    y = torch.randn(1, 20, generator=g, dtype=torch.float64)
    lam = 1e-2
    # Closed form of (AᵀA+λI)x = Aᵀy + λx̂0: x̂0 + Aᵀ(AAᵀ+λI)⁻¹(y − A x̂0).
    r = y[0] - M @ x0.flatten()
    exact = x0.flatten() + M.T @ torch.linalg.solve(M @ M.T + lam * torch.eye(20, dtype=torch.float64), r)
    solved = data_consistency(x0, op, y, cg_iters=200, lam=lam, cg_tol=0.0)
    assert torch.allclose(solved.flatten(), exact, atol=1e-8)
    # With the paper's 5 iterations only range(Aᵀ) moves: the null-space part of x̂0 is kept.
    five = data_consistency(x0, op, y, cg_iters=5, lam=lam)
    null_proj = torch.eye(N, dtype=torch.float64) - torch.linalg.pinv(M) @ M
    assert torch.allclose(null_proj @ (five - x0).flatten(), torch.zeros(N, dtype=torch.float64), atol=1e-9)
    assert float((M @ five.flatten() - y[0]).norm()) < float(r.norm())


def test_dc_runs_in_fp32_for_half_inputs():
    op = SuperResolution(2, "box")
    x0 = torch.randn(1, *SHAPE).half()
    y = measurement(op, dtype=torch.float32).half()
    assert data_consistency(x0, op, y).dtype == torch.float32


def test_one_dc_step_matches_the_z_space_formula():
    """Blend + re-noise, written in z from treg_spec §1.3, equals the sampler's x-space update."""
    toy = Toy()
    op = SuperResolution(2, "bicubic")
    y = measurement(op)
    sigmas = sd_sigmas(10)[3:5]  # one step between two nonzero sigmas
    x_init = start(sigmas)
    seed = torch.Generator().manual_seed(11)
    replay = torch.Generator().set_state(seed.get_state())
    out = treg_sample(toy.denoise, sigmas, x_init, op, y, toy.decode, toy.encode, generator=seed)

    s, s_prev = float(sigmas[0]), float(sigmas[1])
    a, a_prev = 1 / (1 + s**2), 1 / (1 + s_prev**2)
    x0 = toy.denoise(x_init, torch.full((1,), s, dtype=torch.float64), None)
    z = x_init * math.sqrt(a)
    eps = (z - math.sqrt(a) * x0) / math.sqrt(1 - a)
    z_y = toy.encode(data_consistency(toy.decode(x0), op, y), None)
    z_bar = a_prev * z_y + (1 - a_prev) * x0
    n = torch.randn(x_init.shape, generator=replay, dtype=torch.float32).double()
    z_next = math.sqrt(a_prev) * z_bar + (1 - a_prev) * eps + math.sqrt(a_prev * (1 - a_prev)) * n
    assert torch.allclose(out, z_next / math.sqrt(a_prev), atol=1e-10)


def test_dc_on_the_last_step_returns_the_data_consistent_latent():
    toy = Toy()
    op = SuperResolution(2, "bicubic")
    y = measurement(op)
    sigmas = torch.tensor([0.5, 0.0], dtype=torch.float64)  # ᾱ_prev = 1: z̄ = z_y, no noise
    x_init = start(sigmas)
    seen = []
    out = treg_sample(toy.denoise, sigmas, x_init, op, y, toy.decode, toy.encode,
                      generator=torch.Generator(), callback=lambda k, x, x0: seen.append(x0))
    assert torch.allclose(out, seen[0], atol=1e-12)
    x0 = toy.denoise(x_init, torch.full((1,), 0.5, dtype=torch.float64), None)
    before = float((op.forward(toy.decode(x0)) - y).norm())
    # 5 CG steps (κ ≈ 2.5) and the λ = 1e-4 Tikhonov floor leave ~1e-3 of the residual.
    assert float((op.forward(toy.decode(out)) - y).norm()) < 1e-2 * before


def test_dc_schedule_and_call_counts_at_paper_default():
    schedule = treg.dc_schedule(200)
    dc_steps = [k for k, on in enumerate(schedule) if on]
    assert len(dc_steps) == 57 and dc_steps[0] == 0 and dc_steps[-1] == 168
    toy = Toy(dtype=torch.float32)
    op = SuperResolution(2, "box")
    y = measurement(op, dtype=torch.float32)
    sigmas = sd_sigmas(200, torch.float32)
    treg_sample(toy.denoise, sigmas, start(sigmas, dtype=torch.float32), op, y, toy.decode, toy.encode,
                negation=toy.negation(lr=1e-3, method="sign"), generator=torch.Generator().manual_seed(0))
    kinds = [kind for kind, _ in toy.calls]
    assert kinds.count("denoise") == 200
    assert kinds.count("decode") == kinds.count("encode") == kinds.count("embed") == 57
    # Any step count: 10 steps, every 3rd, k < 8.5 -> k = 0, 3, 6.
    assert [k for k, on in enumerate(treg.dc_schedule(10)) if on] == [0, 3, 6]
    assert not any(treg.dc_schedule(10, dc_until=0.0))


def test_dc_pulls_the_trajectory_toward_the_measurement():
    toy = Toy(dtype=torch.float32)
    op = SuperResolution(2, "bicubic")
    y = measurement(op, dtype=torch.float32)
    sigmas = sd_sigmas(30, torch.float32)
    x_init = start(sigmas, dtype=torch.float32)
    free = treg_sample(toy.denoise, sigmas, x_init, op, y, never, never, dc_until=0.0, generator=torch.Generator())
    solved = treg_sample(toy.denoise, sigmas, x_init, op, y, toy.decode, toy.encode,
                         dc_every=1, dc_until=1.0, generator=torch.Generator().manual_seed(0))

    def residual(z):
        return float((op.forward(toy.decode(z)) - y).norm())

    assert residual(solved) < 0.1 * residual(free)


# --------------------------------------------------------------------------- adaptive negation


def test_an_lowers_the_loss_and_adam_equals_the_sign_closed_form():
    toy = Toy(dtype=torch.float32)
    pixels = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(4))
    adam, sign = toy.negation(lr=1e-3), toy.negation(lr=1e-3, method="sign")
    features = toy.image_embed(pixels)
    adam.expand_to_batch(2)
    before = adam.loss(features)
    adam.update(pixels)
    sign.update(pixels)
    after = adam.loss(features)
    assert (after < before).all()
    # Adam on a linear loss: each step is lr·g/(|g|+eps), g = f̂/T, vs lr·sign(f̂).
    f_hat = features / features.norm(dim=-1, keepdim=True)
    g = (f_hat / T).abs()[:, None, :]
    bound = 10 * 1e-3 * 1e-8 / (g + 1e-8) + 1e-6  # + fp32 rounding of u (|u| ~ 1)
    assert ((adam.embedding - sign.embedding).abs() <= bound).all()
    shift = (sign.embedding - toy.null.float()).abs()
    assert torch.allclose(shift, torch.full_like(shift, 10 * 1e-3), atol=1e-6)


def test_an_adam_is_exact_in_fp32_even_for_half_embeddings():
    toy = Toy(dtype=torch.float32)
    negation = AdaptiveNegation(toy.null.half(), toy.image_embed, lr=8e-4)
    negation.update(torch.randn(1, *SHAPE))
    assert negation.embedding.dtype == torch.float32 and torch.isfinite(negation.embedding).all()


def test_an_moves_only_the_selected_columns():
    toy = Toy(dtype=torch.float32)
    embed4 = lambda p: toy.image_embed(p)[:, :4]  # a 4-wide "CLIP" for an 8-wide text embedding
    negation = AdaptiveNegation(toy.null, embed4, lr=1e-2, columns=(2, 6))
    negation.update(torch.randn(1, *SHAPE))
    moved = (negation.embedding - toy.null.float()).abs()
    assert (moved[..., 2:6] > 0.05).all()
    assert torch.equal(negation.embedding[..., :2], toy.null[..., :2].float())
    assert torch.equal(negation.embedding[..., 6:], toy.null[..., 6:].float())
    negation.reset()
    assert torch.equal(negation.embedding, toy.null.float()) and negation.updates == 0


def test_an_per_item_embeddings_match_single_item_updates():
    toy = Toy(dtype=torch.float32)
    pixels = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(5))
    both = toy.negation()
    both.update(pixels)
    assert both.embedding.shape == (2, T, D)
    for i in range(2):
        alone = toy.negation()
        alone.update(pixels[i : i + 1])
        assert torch.allclose(both.embedding[i : i + 1], alone.embedding, atol=1e-7)
    assert not torch.allclose(both.embedding[0], both.embedding[1])


def test_an_dimension_mismatch_names_both_widths_and_the_fix():
    toy = Toy(dtype=torch.float32)
    wide = AdaptiveNegation(toy.null, lambda p: torch.randn(p.shape[0], 12), lr=1e-3)
    with pytest.raises(ValueError) as err:
        wide.update(torch.randn(1, *SHAPE))
    message = str(err.value)
    assert "12" in message and f"{D}" in message and "columns" in message and "ViT-L/14" in message
    with pytest.raises(ValueError, match="columns"):
        AdaptiveNegation(toy.null, toy.image_embed, columns=(0, 2 * D))
    with pytest.raises(ValueError, match="batch"):
        AdaptiveNegation(toy.null.expand(3, -1, -1), toy.image_embed).expand_to_batch(2)


def test_loop_an_changes_only_the_null_and_is_used_from_the_next_call():
    toy = Toy()
    op = SuperResolution(2, "bicubic")
    y = measurement(op)
    positive = toy.positive.clone()
    negation = toy.negation()
    sigmas = sd_sigmas(6)
    treg_sample(toy.denoise, sigmas, start(sigmas), op, y, toy.decode, toy.encode,
                negation=negation, generator=torch.Generator().manual_seed(0))
    assert torch.equal(toy.positive, positive)
    assert negation.updates == 2  # DC at k = 0, 3 (k < 5.1)
    nulls = [payload for kind, payload in toy.calls if kind == "denoise"]
    assert torch.equal(nulls[0], toy.null.float())  # step 0 predicts with the initial u ...
    assert not torch.equal(nulls[1], nulls[0])  # ... and step 1 with the adapted one
    assert torch.equal(nulls[1], nulls[2]) and torch.equal(nulls[2], nulls[3])
    assert torch.equal(nulls[-1], negation.embedding)


def test_loop_batch_of_two_keeps_per_item_null_embeddings():
    toy = Toy()
    op = SuperResolution(2, "bicubic")
    y = measurement(op, batch=2)
    negation = toy.negation(method="sign")
    sigmas = sd_sigmas(4)
    treg_sample(toy.denoise, sigmas, start(sigmas, batch=2), op, y, toy.decode, toy.encode,
                negation=negation, generator=torch.Generator().manual_seed(0))
    assert negation.embedding.shape == (2, T, D)
    # Replay: each item's embedding is the initial one moved by its own image's sign pattern only.
    images = [payload for kind, payload in toy.calls if kind == "embed"]
    for i in range(2):
        expected = toy.null.float()[0].clone()
        for pix in images:
            f = toy.image_embed(pix[i : i + 1]).float()
            expected -= 10 * negation.lr * torch.sign(f)
        assert torch.allclose(negation.embedding[i], expected, atol=1e-6)
    assert not torch.equal(negation.embedding[0], negation.embedding[1])


# --------------------------------------------------------------------------- determinism, stop


def run_full(toy, seed, negation=None):
    op = SuperResolution(2, "bicubic")
    sigmas = sd_sigmas(12, torch.float32)
    return treg_sample(toy.denoise, sigmas, start(sigmas, batch=2, dtype=torch.float32), op,
                       measurement(op, batch=2, dtype=torch.float32), toy.decode, toy.encode,
                       negation=negation, dc_every=2, generator=torch.Generator().manual_seed(seed))


def test_same_seed_is_bit_identical_and_seed_matters():
    toy = Toy(dtype=torch.float32, encode_noise=0.05)
    negation = toy.negation()
    first = run_full(toy, 123, negation)
    first_null = negation.embedding.clone()
    second = run_full(toy, 123, negation)  # same negation object: reset at the start
    assert torch.equal(first, second) and torch.equal(first_null, negation.embedding)
    assert not torch.allclose(first, run_full(toy, 124, toy.negation()))


def test_should_stop_aborts_in_the_loop_and_inside_cg():
    toy = Toy(dtype=torch.float32)
    polls = []

    def stop_at(n):
        def should_stop():
            polls.append(1)
            return len(polls) >= n
        return should_stop

    op = SuperResolution(2, "bicubic")
    sigmas = sd_sigmas(12, torch.float32)
    args = (toy.denoise, sigmas, start(sigmas, dtype=torch.float32), op, measurement(op, dtype=torch.float32),
            toy.decode, toy.encode)
    with pytest.raises(SamplingAborted):
        treg_sample(*args, generator=torch.Generator(), should_stop=stop_at(1))
    assert not any(kind == "denoise" for kind, _ in toy.calls)
    # Poll 1 = step 0 start, poll 2 = first CG iteration: CG stops, then the loop aborts
    # before encode.
    polls.clear()
    with pytest.raises(SamplingAborted):
        treg_sample(*args, generator=torch.Generator(), should_stop=stop_at(2))
    assert [kind for kind, _ in toy.calls] == ["denoise", "decode"]


# --------------------------------------------------------------------------- DPS


def test_dps_step_matches_the_z_space_gradient_step():
    toy = Toy()
    op = SuperResolution(2, "bicubic")
    y = measurement(op)
    sigmas = sd_sigmas(10)[4:6]
    x_init = start(sigmas)
    kwargs = dict(dc_until=0.0, use_dps=True, generator=torch.Generator())
    plain = treg_sample(toy.denoise, sigmas, x_init, op, y, toy.decode, never, dc_until=0.0, generator=torch.Generator())
    zero = treg_sample(toy.denoise, sigmas, x_init, op, y, toy.decode, never, **{**kwargs, "dps_scale": 0.0})
    assert torch.allclose(zero, plain, atol=1e-12)

    out = treg_sample(toy.denoise, sigmas, x_init, op, y, toy.decode, never, **kwargs)
    s, s_prev = float(sigmas[0]), float(sigmas[1])
    a, a_prev = 1 / (1 + s**2), 1 / (1 + s_prev**2)
    z = (x_init * math.sqrt(a)).requires_grad_(True)  # the reference differentiates w.r.t. z
    x0 = toy.denoise(z / math.sqrt(a), torch.full((1,), s, dtype=torch.float64), None)
    rho = (y - op.forward(toy.decode(x0))).norm()
    (g_z,) = torch.autograd.grad(rho, z)
    with torch.no_grad():
        eps = (z - math.sqrt(a) * x0) / math.sqrt(1 - a)
        z_next = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps - math.sqrt(a_prev) * g_z
    assert torch.allclose(out, z_next / math.sqrt(a_prev), atol=1e-10)
    assert not torch.allclose(out, plain, atol=1e-6)


def test_dps_works_under_inference_mode():
    toy = Toy(dtype=torch.float32)
    op = SuperResolution(2, "box")
    sigmas = sd_sigmas(6, torch.float32)
    with torch.inference_mode():  # ComfyUI runs every prompt like this
        out = treg_sample(toy.denoise, sigmas, start(sigmas, dtype=torch.float32), op,
                          measurement(op, dtype=torch.float32), toy.decode, toy.encode,
                          negation=toy.negation(), use_dps=True, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------- input checks, adapter


def test_bad_inputs_raise_clear_value_errors():
    toy = Toy()
    sigmas = sd_sigmas(4)
    x = start(sigmas)
    op = SuperResolution(2, "box")
    y = measurement(op)
    call = lambda **kw: treg_sample(toy.denoise, kw.pop("sigmas", sigmas), x, op, kw.pop("y", y), toy.decode,
                                    toy.encode, **{"generator": torch.Generator(), **kw})
    with pytest.raises(ValueError, match="Flow models"):
        call(prediction="flow")
    with pytest.raises(ValueError, match="descending.*Remove Flip Sigmas"):
        call(sigmas=sigmas.flip(0))
    with pytest.raises(ValueError, match="Split Sigmas"):
        call(sigmas=sigmas[-1:])
    with pytest.raises(ValueError, match="dc_every"):
        call(dc_every=0)
    with pytest.raises(ValueError, match="dc_until"):
        call(dc_until=1.5)
    with pytest.raises(ValueError, match="generator"):
        call(generator=None)
    with pytest.raises(ValueError, match="measurement batch"):
        call(y=torch.cat([y, y]))
    for kind in ("eps", "v", "vp"):  # V-prediction is a VP model too: accepted
        treg.check_vp_prediction(kind)
