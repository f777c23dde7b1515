"""Tiled denoiser (samplers/tiling.py): exact where the model is local, seamless, and a drop-in for samplers.

The reference denoiser is local: a Gaussian-blur convolution (radius R, zero padding, width growing
with σ) followed by a pointwise tanh — a stationary prior's smoothing with a nonlinearity so its
Jacobian depends on x. A tile computes every pixel at least R from its inner edges exactly, and
the windows give zero weight to the `margin` ≥ R pixels next to inner edges, so tiling must
reproduce the untiled output, VJP and whole C-ΠGDM trajectory up to float64 rounding.
"""

import math

import pytest
import torch

from comfyui_inverse.operators import Inpainting, SuperResolution
from comfyui_inverse.samplers import (AutogradVJP, OperatorProblem, TiledDenoiser, cpgdm, cpgfm, dps,
                                      flow_sigmas_uniform_t, tiled, vp_sigmas_uniform_t)
from comfyui_inverse.samplers.tiling import tile_starts

pytestmark = pytest.mark.usefixtures("one_thread")

R = 3  # kernel radius: support 2R + 1 = 7 latent pixels


def local_denoiser(x, sigma):
    """Conv (Gaussian, width ∝ 1 + σ, radius R, per channel, zero padding) then 0.9·tanh."""
    c = x.shape[1]
    out = []
    for b in range(x.shape[0]):
        s = 0.6 + 0.4 * float(sigma[b])
        k = torch.exp(-0.5 * (torch.arange(-R, R + 1, dtype=x.dtype) / s) ** 2)
        k2 = (k[:, None] * k[None, :]) / k.sum() ** 2
        w = k2.expand(c, 1, 2 * R + 1, 2 * R + 1)
        out.append(0.9 * torch.tanh(torch.nn.functional.conv2d(x[b:b + 1], w, padding=R, groups=c)))
    return torch.cat(out)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("size,tile,overlap,max_batch", [((40, 52), 16, 12, 1), ((37, 53), 20, 13, 3),
                                                          ((33, 17), 24, 14, 64)])
def test_tiled_output_and_vjp_match_untiled(size, tile, overlap, max_batch):
    x = _x((2, 3, *size))
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    td = TiledDenoiser(local_denoiser, tile, overlap, max_batch=max_batch)
    assert td.margin >= R and td.num_tiles(*size) > 1
    ref = local_denoiser(x, sigma)
    assert _rel(td(x, sigma), ref) <= 1e-12
    cot = lambda x0: torch.sin(3 * x0) + 0.1  # noqa: E731 — depends on x̂0 like a residual does
    x0_ref, c_ref, j_ref = AutogradVJP()(local_denoiser, x, sigma, cot)
    x0_t, c_t, j_t = AutogradVJP()(td, x, sigma, cot)  # per-tile backward when > 1 batch
    assert _rel(x0_t, x0_ref) <= 1e-12 and _rel(c_t, c_ref) <= 1e-12
    assert _rel(j_t, j_ref) <= 1e-10, _rel(j_t, j_ref)


def test_per_tile_vjp_equals_backprop_through_the_blend():
    """Σ_i E_iᵀJ_iᵀ(ω_i ⊙ E_i u) is the VJP of the blended denoiser, also where tiles are wrong."""
    x = _x((1, 2, 30, 30), seed=3)
    sigma = torch.tensor([1.0], dtype=torch.float64)
    td = TiledDenoiser(local_denoiser, 12, 6, margin=1, max_batch=2)  # margin < R: tiles differ from untiled
    cot = lambda x0: x0 ** 2  # noqa: E731
    _, _, j_tiles = td.vjp_autograd(x, sigma, cot)
    xg = x.clone().requires_grad_(True)
    out = td(xg, sigma)
    (j_blend,) = torch.autograd.grad(out, xg, cot(out.detach()))
    assert _rel(j_tiles, j_blend) <= 1e-12
    assert _rel(out.detach(), local_denoiser(x, sigma)) > 1e-6  # the margin really was too small here


@pytest.mark.parametrize("max_batch", [1, 64])  # per-tile backward / one batch = the plain backward
def test_vjp_works_after_a_first_call_under_inference_mode(max_batch):
    """ComfyUI samples under torch.inference_mode: a plan (blend weights) first built there must not
    leave inference tensors that a later autograd VJP saves for backward."""
    x = _x((1, 3, 30, 30), seed=5)
    sigma = torch.tensor([1.0], dtype=torch.float64)
    td = TiledDenoiser(local_denoiser, 20, 12, max_batch=max_batch)  # margin 3 = R: exact
    with torch.inference_mode():
        first = td(x.clone(), sigma.clone())
    cot = lambda x0: torch.cos(x0)  # noqa: E731
    x0, _, jtc = AutogradVJP()(td, x.clone(), sigma, cot)
    _, _, j_ref = AutogradVJP()(local_denoiser, x, sigma, cot)
    assert _rel(x0, first) <= 1e-12 and _rel(jtc, j_ref) <= 1e-10


def test_weights_partition_of_unity_and_positive_total():
    for (h, w), tile, overlap in [((37, 53), 16, 8), ((64, 64), 32, 16), ((9, 100), 40, 10)]:
        td = TiledDenoiser(local_denoiser, tile, overlap)
        tiles, weights = td.plan(h, w, "cpu", torch.float64)
        total = torch.zeros(h, w, dtype=torch.float64)
        for (t, l, th, tw), om in zip(tiles, weights):
            assert th == min(tile, h) and tw == min(tile, w) and t + th <= h and l + tw <= w
            assert float(om.min()) >= 0.0
            total[t:t + th, l:l + tw] += om
        assert torch.allclose(total, torch.ones_like(total), atol=1e-12)
    assert tile_starts(10, 16, 4) == [0]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 68 and min(b - a for a, b in zip(starts, starts[1:])) <= 24


def test_single_tile_is_the_untiled_call():
    x = _x((1, 4, 21, 19))
    sigma = torch.tensor([1.0], dtype=torch.float64)
    td = TiledDenoiser(local_denoiser, 64, 16)
    assert td.num_tiles(21, 19) == 1
    assert torch.equal(td(x, sigma), local_denoiser(x, sigma))
    assert tiled(local_denoiser, 0, 16) is local_denoiser


def test_bad_geometry_is_refused_by_name():
    with pytest.raises(ValueError, match="tile_overlap"):
        TiledDenoiser(local_denoiser, 16, 16)
    with pytest.raises(ValueError, match="margin"):
        TiledDenoiser(local_denoiser, 16, 8, margin=4)


def _trajectory(sampler, denoiser, problem, sigmas, x, **kw):
    states = []
    out = sampler(denoiser, problem, sigmas, x, callback=lambda i, xx, x0: states.append((xx.clone(), x0.clone())),
                  **kw)
    return states, out


@pytest.mark.parametrize("case", ["sr4_cpgdm", "inpaint_odd_cpgdm", "sr4_cpgfm"])
def test_tiled_solve_matches_untiled_at_every_step(case):
    shape = (1, 3, 40, 52) if case.startswith("sr4") else (1, 3, 37, 53)
    truth = torch.tanh(_x(shape, seed=7))
    if case.startswith("sr4"):
        op = SuperResolution(4, "bicubic")
    else:
        mask = torch.zeros(shape[-2:])
        mask[5:30, 10:31] = 1.0
        op = Inpainting(mask)
    problem = OperatorProblem(op, op.forward(truth))
    td = TiledDenoiser(local_denoiser, 20, 12, max_batch=2)
    assert td.num_batches(*shape[-2:]) > 1
    if case.endswith("cpgdm"):
        sampler, sigmas, kw = cpgdm, vp_sigmas_uniform_t(5, t_start=0.4, dtype=torch.float64), dict(w=15.0)
    else:
        sampler, sigmas, kw = cpgfm, flow_sigmas_uniform_t(6, t_start=0.4, dtype=torch.float64), dict(w=20.0)
    x = problem.pinv_y + float(sigmas[0]) * _x(shape, seed=9)
    ref_states, ref = _trajectory(sampler, local_denoiser, problem, sigmas, x, vjp="autograd", **kw)
    til_states, out = _trajectory(sampler, td, problem, sigmas, x, vjp="autograd", **kw)
    assert len(ref_states) == len(til_states) == len(sigmas) - 1
    for (xr, x0r), (xt, x0t) in zip(ref_states, til_states):
        assert _rel(xt, xr) <= 1e-4 and _rel(x0t, x0r) <= 1e-4
    assert _rel(out, ref) <= 1e-4
    assert _rel(out, x) > 1e-2  # the solve moved: comparing trajectories is not vacuous


def test_dps_runs_on_the_tiled_denoiser_unchanged():
    shape = (1, 3, 24, 24)
    op = SuperResolution(4, "bicubic")
    problem = OperatorProblem(op, op.forward(torch.tanh(_x(shape, seed=1))))
    sigmas = vp_sigmas_uniform_t(4, t_start=0.3, dtype=torch.float64)
    x = problem.pinv_y + float(sigmas[0]) * _x(shape, seed=2)
    ref = dps(local_denoiser, problem, sigmas, x, zeta=0.5)
    out = dps(TiledDenoiser(local_denoiser, 16, 12, max_batch=1), problem, sigmas, x, zeta=0.5)
    assert _rel(out, ref) <= 1e-4


def seam_jumps(out, tiles, width):
    """(largest jump across tile borders, 99th percentile of jumps in the single-tile interior,
    largest jump anywhere in the overlaps) along x.

    The jump across columns j|j+1 is how far the step there departs from its neighbours' steps,
    |Δ_j − ½(Δ_{j−1} + Δ_{j+1})|: a discontinuity's size, constant on a cubic image.
    """
    steps = out[..., 1:] - out[..., :-1]
    jump = (steps[..., 1:-1] - 0.5 * (steps[..., :-2] + steps[..., 2:])).abs()  # jump[..., j - 1] for j|j+1
    cover = torch.zeros(width, dtype=torch.int64)
    for _, l, _, w in tiles:
        cover[l:l + w] += 1
    borders = {l - 1 for _, l, _, _ in tiles if l > 0} | {l + w - 1 for _, l, _, w in tiles if l + w < width}
    at_border = [j - 1 for j in sorted(borders) if 1 <= j <= width - 3]
    far = R + 2  # a jump at j|j+1 sees columns j−1..j+2; zero padding reaches R columns in
    inside = range(far, width - 1 - far)
    interior = [j - 1 for j in inside if cover[j] == 1 and cover[j + 1] == 1 and all(abs(j - b) > far for b in borders)]
    shared = [j - 1 for j in inside if cover[j] > 1 or cover[j + 1] > 1 or j in borders]
    return (float(jump[..., at_border].max()), float(torch.quantile(jump[..., interior].flatten(), 0.99)),
            float(jump[..., shared].max()))


def nonlocal_denoiser(x, sigma):
    """Blur plus half of each call's own mean, linear: tiles disagree (as a real model's tiles do)."""
    k = torch.exp(-0.5 * (torch.arange(-R, R + 1, dtype=x.dtype) / 1.2) ** 2)
    k2 = (k[:, None] * k[None, :]) / k.sum() ** 2
    blur = torch.nn.functional.conv2d(x, k2.expand(x.shape[1], 1, 2 * R + 1, 2 * R + 1), padding=R, groups=x.shape[1])
    return blur + 0.5 * x.mean(dim=(-2, -1), keepdim=True)


def test_no_seams_on_a_smooth_image():
    h, w = 24, 96
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64),
                            indexing="ij")
    img = (4 * xx ** 3 - xx + torch.sin(2 * math.pi * yy))[None, None].expand(1, 3, h, w).contiguous()
    img = img * torch.tensor([1.0, 0.7, -0.4], dtype=torch.float64)[None, :, None, None]
    sigma = torch.tensor([0.5], dtype=torch.float64)

    def jumps(overlap):
        td = TiledDenoiser(nonlocal_denoiser, (24, 32), overlap)
        tiles, _ = td.plan(h, w, "cpu", torch.float64)
        assert len(tiles) >= 3
        return seam_jumps(td(img, sigma), tiles, w)

    border, interior, blend = jumps(16)
    assert border <= interior * (1 + 1e-6), (border, interior)
    hard_border, hard_interior, _ = jumps(0)  # abutting tiles: the same measure sees the seam
    assert hard_border > 100 * hard_interior, (hard_border, hard_interior)
    assert blend < 0.1 * hard_border, (blend, hard_border)  # the tiles' disagreement is spread over the overlap
