"""Unit tests for comfyui_inverse.operators (pure torch, CPU, seconds).

Tolerances: an identity such as H H⁺ H = H is a chain of a few matmuls/FFTs over axes of
≤ 64 pixels, which accumulates a few tens of ulps of rounding; H⁺ amplifies that rounding
by at most its gain κ = s_max/s_min over the kept spectrum. So every identity is checked
in relative norm with tol = 64·eps(dtype)·κ (eps = 1.2e-7 for float32, 2.2e-16 for float64).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_inverse.operators import (
    Colorization,
    Compose,
    ConvolutionFFT,
    Denoise,
    GaussianBlur,
    Inpainting,
    LinearOperator,
    MotionBlur,
    SeparableConvolution,
    SuperResolution,
    to_latent_grid,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float32, torch.float64]
BLUR_T = 3e-2  # default blur threshold: gains ≥ 0.03 are kept


def tol(dtype, kappa=1.0):
    return 64 * torch.finfo(dtype).eps * kappa


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def inner(a, b):
    return (a.double() * b.double()).sum().item()


def mask_for(shape, seed=0, batch=1, frac=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, shape[-2], shape[-1], generator=g) < frac).float()


def user_kernel():
    g = torch.Generator().manual_seed(5)
    return torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.1


# name: (factory(shape) -> operator, shapes to test, κ = gain bound of H⁺ relative to ‖H‖)
CASES = {
    "sr2_box": (lambda s: SuperResolution(2), [(2, 3, 24, 36), (1, 1, 14, 22), (3, 4, 16, 20)], 1.0),
    "sr4_box": (lambda s: SuperResolution(4), [(2, 3, 24, 36), (1, 4, 16, 12)], 1.0),
    "sr3_bicubic": (lambda s: SuperResolution(3, "bicubic"), [(2, 3, 15, 21), (1, 1, 24, 36)], 4.0),
    "sr4_bicubic": (lambda s: SuperResolution(4, "bicubic"), [(2, 3, 24, 36), (1, 4, 16, 20), (1, 1, 8, 12)], 4.0),
    "inpaint_shared": (lambda s: Inpainting(mask_for(s)[0]), [(2, 3, 17, 23), (1, 1, 24, 36), (3, 4, 16, 20)], 1.0),
    "inpaint_per_image": (lambda s: Inpainting(mask_for(s, batch=s[0])), [(3, 3, 17, 23)], 1.0),
    "gauss_svd": (lambda s: GaussianBlur(1.5), [(2, 3, 17, 23), (1, 1, 24, 36), (2, 4, 16, 20)], BLUR_T**-2),
    "gauss_fft": (lambda s: GaussianBlur(1.5, mode="fft"), [(2, 3, 17, 23), (1, 1, 24, 36), (2, 4, 16, 20)], 1 / BLUR_T),
    "motion_line": (lambda s: MotionBlur(7, angle=30), [(2, 3, 17, 23), (1, 4, 16, 20)], 1 / BLUR_T),
    "motion_random": (lambda s: MotionBlur(9, seed=1), [(2, 3, 17, 23), (1, 1, 24, 36)], 1 / BLUR_T),
    "conv_user_kernel": (lambda s: ConvolutionFFT(user_kernel()), [(2, 3, 17, 23), (1, 1, 16, 20)], 1 / BLUR_T),
    "separable_asymmetric": (lambda s: SeparableConvolution(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.1, 0.6, 0.2, 0.1])),
                             [(2, 3, 17, 23), (1, 1, 16, 20)], BLUR_T**-2),
    "denoise": (lambda s: Denoise(), [(2, 3, 17, 23), (1, 1, 8, 8), (1, 4, 16, 20)], 1.0),
    "colorization": (lambda s: Colorization(channels=s[1]), [(2, 3, 17, 23), (1, 4, 16, 20)], 1.0),
    "compose_sr_gauss_svd": (lambda s: Compose(GaussianBlur(1.5), SuperResolution(4, "bicubic")),
                             [(2, 3, 24, 36), (1, 1, 16, 20)], BLUR_T**-2),
    "compose_motion_gauss_fft": (lambda s: Compose(GaussianBlur(1.0, mode="fft"), MotionBlur(5)),
                                 [(2, 3, 17, 23), (1, 4, 16, 20)], BLUR_T**-2),
    "compose_box_sr_motion_fft": (lambda s: Compose(MotionBlur(5, angle=30), SuperResolution(2)),
                                  [(2, 3, 18, 22), (1, 4, 16, 20)], 1 / BLUR_T),
    "compose_box_sr_gauss_fft": (lambda s: Compose(GaussianBlur(1.0, mode="fft"), SuperResolution(4)),
                                 [(2, 1, 12, 20), (1, 3, 24, 36)], 1 / BLUR_T),
    "compose_nested_separable": (lambda s: Compose(Compose(GaussianBlur(0.7), GaussianBlur(1.0)), SuperResolution(2, "bicubic")),
                                 [(2, 3, 18, 22)], BLUR_T**-2),
    "compose_nested_fft_downsample": (lambda s: Compose(Compose(GaussianBlur(0.8, mode="fft"), MotionBlur(3)), SuperResolution(2)),
                                      [(2, 3, 18, 22)], BLUR_T**-2),
    "compose_sr_colorization": (lambda s: Compose(Colorization(channels=s[1]), SuperResolution(2)),
                                [(2, 3, 24, 36), (1, 4, 16, 20)], 1.0),
    "compose_mask_after_sr": (lambda s: Compose(SuperResolution(2), Inpainting(mask_for((s[-2] // 2, s[-1] // 2)))),
                              [(2, 3, 24, 36), (1, 1, 16, 20)], 1.0),
    "compose_two_masks": (lambda s: Compose(Inpainting(mask_for(s, seed=2)), Inpainting(mask_for(s, seed=1))),
                          [(2, 3, 17, 23)], 1.0),
    "compose_blur_after_denoise": (lambda s: Compose(Denoise(), GaussianBlur(1.0)), [(1, 3, 17, 23)], BLUR_T**-2),
}

PARAMS = [
    pytest.param(name, shape, dtype, data, id=f"{name}-{'x'.join(map(str, shape))}-{str(dtype)[6:]}-{data}")
    for name, (_, shapes, _) in CASES.items()
    for shape in shapes
    for dtype in DTYPES
    for data in ("random", "photo")
]


_PHOTO = {}


def photo_batch(shape, dtype, offset=0):
    """Crops of skimage's astronaut (512×512 RGB → 256×256 by 2×2 means), one per batch item."""
    if "img" not in _PHOTO:
        from skimage import data  # test extra of pyproject (scikit-image); a missing one must fail, not skip

        img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).double() / 255.0
        _PHOTO["img"] = F.avg_pool2d(img[None], 2)[0]
    img = _PHOTO["img"]
    b, c, h, w = shape
    crops = []
    for i in range(b):
        r0, c0 = 40 + 23 * (i + offset), 60 + 31 * (i + offset)
        rgb = img[:, r0 : r0 + h, c0 : c0 + w]
        gray = rgb.mean(0, keepdim=True)
        crops.append({1: gray, 3: rgb, 4: torch.cat([rgb, 1 - gray])}[c])
    return torch.stack(crops).to(dtype)


def make(name, shape, dtype, data, seed=0):
    factory, _, kappa = CASES[name]
    op = factory(shape)
    g = torch.Generator().manual_seed(seed)
    if data == "random":
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        x2 = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        y = torch.randn(op.output_shape(shape), generator=g, dtype=torch.float64).to(dtype)
    else:  # real photo; y = measurement of another crop plus a little noise (out of range(H))
        x, x2 = photo_batch(shape, dtype), photo_batch(shape, dtype, offset=3)
        y = op.forward(x2) + 0.05 * torch.randn(op.output_shape(shape), generator=g, dtype=torch.float64).to(dtype)
    return op, x, x2, y, kappa




@pytest.mark.parametrize("name,shape,dtype,data", PARAMS)
def test_identities(name, shape, dtype, data):
    """Adjoint pairs, the four Moore–Penrose conditions (which define H⁺ uniquely) and the
    projector P = H⁺H: P² = P, Pᵀ = P, P H⁺ = H⁺, `project` = pinv∘forward."""
    op, x, x2, y, kappa = make(name, shape, dtype, data)
    t = tol(dtype, kappa)
    hx, hty, hp, px = op.forward(x), op.adjoint(y), op.pinv(y), op.project(x)
    hpt = op.pinv_adjoint(x)
    assert hx.shape == op.output_shape(shape) == tuple(y.shape) == hpt.shape
    assert hty.shape == hp.shape == px.shape == tuple(shape) == op.input_shape(tuple(y.shape))
    assert {t_.dtype for t_ in (hx, hty, hp, px, hpt)} == {dtype}

    scale = hx.double().norm() * y.double().norm() + x.double().norm() * hty.double().norm()
    assert abs(inner(hx, y) - inner(x, hty)) <= tol(dtype) * scale, "<Hx, y> = <x, Hᵀy>"
    scale = hp.double().norm() * x.double().norm() + y.double().norm() * hpt.double().norm()
    assert abs(inner(hp, x) - inner(y, hpt)) <= t * scale, "<H⁺y, x> = <y, (H⁺)ᵀx>"

    assert rel(op.forward(op.pinv(hx)), hx) <= t, "H H⁺ H = H"
    assert rel(op.pinv(op.forward(hp)), hp) <= t, "H⁺ H H⁺ = H⁺"
    y2 = op.forward(x2) + torch.randn_like(y)
    hhp = lambda v: op.forward(op.pinv(v))  # noqa: E731
    scale = y.double().norm() * y2.double().norm()
    assert abs(inner(hhp(y), y2) - inner(y, hhp(y2))) <= t * scale, "(H H⁺)ᵀ = H H⁺"

    assert rel(px, op.pinv(hx)) <= t, "project = pinv∘forward"
    assert rel(op.project(px), px) <= t, "P² = P"
    scale = x.double().norm() * x2.double().norm()
    assert abs(inner(px, x2) - inner(x, op.project(x2))) <= t * scale, "Pᵀ = P"
    assert rel(op.project(hp), hp) <= t, "P H⁺ = H⁺"
    assert 0 < px.double().norm() <= x.double().norm() * (1 + t), "P is a non-zero contraction"


@pytest.mark.parametrize("name", list(CASES))
def test_batch_items_are_independent(name):
    shape = (3,) + CASES[name][1][0][1:]
    op, x, _, y, kappa = make(name, shape, torch.float64, "random")
    per_image = isinstance(op, Inpainting) and op.missing.shape[0] > 1
    item_op = (lambda i: Inpainting(op.missing[i, 0])) if per_image else (lambda i: op)  # noqa: E731
    for method in ("forward", "adjoint", "pinv", "project", "pinv_adjoint"):
        arg = y if method in ("adjoint", "pinv") else x
        whole = getattr(op, method)(arg)
        single = torch.cat([getattr(item_op(i), method)(arg[i : i + 1]) for i in range(shape[0])])
        assert rel(single, whole) <= tol(torch.float64, kappa), method


@pytest.mark.parametrize("name", list(CASES))
def test_float32_matches_float64(name):
    shape = CASES[name][1][0]
    op, x, _, y, kappa = make(name, shape, torch.float64, "random")
    for method, arg in ((op.forward, x), (op.pinv, y), (op.project, x)):
        assert rel(method(arg.float()).double(), method(arg)) <= tol(torch.float32, kappa)


@pytest.mark.parametrize("name", list(CASES))
def test_autograd_gradient_is_adjoint(name):
    """DPS-style solvers differentiate through H: ∇ ½‖Hx‖² must equal HᵀHx."""
    shape = CASES[name][1][0]
    op, x, _, _, _ = make(name, shape, torch.float64, "random")
    x.requires_grad_(True)
    (0.5 * op.forward(x).square().sum()).backward()
    assert rel(x.grad, op.adjoint(op.forward(x.detach()))) <= 1e-12


def dense(fn, in_shape):
    """Columns fn(e_i) for all basis images e_i: the dense matrix of a linear map."""
    d = math.prod(in_shape[1:])
    basis = torch.eye(d, dtype=torch.float64).reshape((d,) + tuple(in_shape[1:]))
    return fn(basis).reshape(d, -1).T


SMALL = {  # tiny shapes for dense-matrix checks (d ≤ 300)
    "sr2_box": (1, 3, 6, 10), "sr4_box": (1, 1, 8, 12), "sr3_bicubic": (1, 2, 9, 12), "sr4_bicubic": (1, 1, 8, 16),
    "inpaint_shared": (1, 3, 7, 9), "inpaint_per_image": (1, 2, 7, 9), "gauss_svd": (1, 1, 11, 13),
    "gauss_fft": (1, 1, 13, 15), "motion_line": (1, 1, 12, 13), "motion_random": (1, 1, 13, 14),
    "conv_user_kernel": (1, 2, 7, 9), "denoise": (1, 3, 5, 7), "colorization": (1, 3, 6, 7),
    "compose_sr_gauss_svd": (1, 1, 12, 16), "compose_motion_gauss_fft": (1, 1, 12, 13),
    "compose_box_sr_motion_fft": (lambda s: Compose(MotionBlur(5, angle=30), SuperResolution(2)),
                                  [(2, 3, 18, 22), (1, 4, 16, 20)], 1 / BLUR_T),
    "compose_box_sr_gauss_fft": (lambda s: Compose(GaussianBlur(1.0, mode="fft"), SuperResolution(4)),
                                 [(2, 1, 12, 20), (1, 3, 24, 36)], 1 / BLUR_T),
    "compose_sr_colorization": (1, 3, 6, 8), "compose_box_sr_motion_fft": (1, 2, 10, 14),
    "compose_box_sr_gauss_fft": (1, 1, 12, 16), "separable_asymmetric": (1, 2, 7, 9),
    "compose_nested_separable": (1, 1, 10, 14), "compose_nested_fft_downsample": (1, 1, 10, 14), "compose_mask_after_sr": (1, 2, 6, 10),
    "compose_two_masks": (1, 2, 7, 9), "compose_blur_after_denoise": (1, 1, 11, 13),
}


@pytest.mark.parametrize("name", list(CASES))
def test_against_dense_matrices(name):
    """Hᵀ is the transpose of H and H⁺ is torch.linalg.pinv of the (truncated) dense H."""
    shape = SMALL[name]
    op = CASES[name][0](shape)
    out = op.output_shape(shape)
    h = dense(op.forward, shape)
    ht = dense(op.adjoint, out)
    hp = dense(op.pinv, out)
    hpt = dense(op.pinv_adjoint, shape)
    p = dense(op.project, shape)
    assert torch.allclose(ht, h.T, atol=1e-12)
    # the kept singular values are ≥ 0.03² relative, the dropped ones are rounding (~1e-16)
    ref = torch.linalg.pinv(h, rtol=1e-8)
    assert torch.allclose(hp, ref, atol=1e-8 * ref.abs().max())
    assert torch.allclose(hpt, hp.T, atol=1e-10 * ref.abs().max())
    assert torch.allclose(p, ref @ h, atol=1e-9)


# --- operator-specific behaviour -----------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
def test_box_sr_pinv_is_nearest_upsampling(factor):
    op = SuperResolution(factor)
    y = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    assert torch.equal(op.pinv(y), F.interpolate(y, scale_factor=factor, mode="nearest"))
    x = torch.randn(2, 3, 5 * factor, 7 * factor, dtype=torch.float64)
    assert torch.allclose(op.forward(x), F.avg_pool2d(x, factor), atol=1e-14)
    assert torch.allclose(op.pinv(y), factor**2 * op.adjoint(y), atol=1e-14)


@pytest.mark.parametrize("factor,c,h,w", [(2, 3, 10, 14), (3, 1, 15, 9), (4, 4, 16, 24), (16, 3, 32, 48)])
def test_bicubic_keeps_constant_images(factor, c, h, w):
    op = SuperResolution(factor, "bicubic")
    x = torch.full((1, c, h, w), 0.37, dtype=torch.float64)
    assert torch.allclose(op.forward(x), torch.full(op.output_shape(x.shape), 0.37, dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bicubic_matches_torch_antialiased_bicubic_inside(factor):
    """Away from the borders (where padding differs) H equals torch's antialiased bicubic."""
    op = SuperResolution(factor, "bicubic")
    x = torch.randn(1, 2, 12 * factor, 10 * factor, dtype=torch.float64)
    ours = op.forward(x)[..., 3:-3, 3:-3]
    ref = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True)[..., 3:-3, 3:-3]
    assert torch.allclose(ours, ref, atol=1e-12)
    assert not torch.allclose(op.forward(x), F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True))


def test_bicubic_singular_values_match_the_specs():
    s4 = SuperResolution(4, "bicubic").singular_values(256)  # C-ΠGDM §2.2: [0.349, 0.500]
    s16 = SuperResolution(16, "bicubic").singular_values(512)  # TReg §4.2: [0.175, 0.25]
    assert s4.numel() == 64 and abs(s4.min() - 0.349) < 1e-3 and abs(s4.max() - 0.5) < 1e-3
    assert s16.numel() == 32 and abs(s16.min() - 0.175) < 1e-3 and abs(s16.max() - 0.25) < 1e-3


def test_gaussian_truncation_matches_the_specs():
    """60-tap kernels t = −30…29 with threshold 3e-2: 73/256 (σ=3) and 87/512 (σ=5) 1-D modes kept."""
    assert GaussianBlur(3.0, kernel_size=60).impl.singular_values(256).numel() == 73
    assert GaussianBlur(5.0, kernel_size=60).impl.singular_values(512).numel() == 87


def test_gaussian_svd_without_threshold_is_zero_padded_convolution():
    op = GaussianBlur(1.3, threshold=0.0)
    x = torch.randn(2, 3, 20, 26, dtype=torch.float64)
    k = op.kernel
    ref = F.conv2d(x, k.expand(3, 1, *k.shape), padding=k.shape[-1] // 2, groups=3)
    assert torch.allclose(op.forward(x), ref, atol=1e-12)


def circular_conv(x, k):
    kh, kw = k.shape
    out = torch.zeros_like(x)
    for a in range(kh):
        for b in range(kw):
            out += k[a, b] * torch.roll(x, shifts=(a - kh // 2, b - kw // 2), dims=(-2, -1))
    return out


@pytest.mark.parametrize("op", [GaussianBlur(1.2, mode="fft", threshold=0.0), ConvolutionFFT(user_kernel(), 0.0),
                                MotionBlur(6, angle=45, threshold=0.0)], ids=repr)
def test_fft_without_threshold_is_circular_convolution(op):
    x = torch.randn(2, 3, 17, 22, dtype=torch.float64)
    assert torch.allclose(op.forward(x), circular_conv(x, op.kernel), atol=1e-12)


def test_truncated_blur_differs_from_plain_blur_only_in_weak_components():
    """‖H_t x − H x‖ ≤ threshold·‖x‖ per axis for the SVD form (2 axes: ≤ 2·threshold)."""
    x = torch.randn(1, 3, 32, 40, dtype=torch.float64)
    for mode in ("svd", "fft"):
        full, trunc = GaussianBlur(2.0, mode=mode, threshold=0.0), GaussianBlur(2.0, mode=mode)
        diff = (full.forward(x) - trunc.forward(x)).norm()
        assert 0 < diff <= 2 * BLUR_T * x.norm()
        assert trunc.kept_fraction(32, 40) < 1


def test_motion_kernels():
    line = MotionBlur(9, angle=0).kernel
    assert abs(line.sum() - 1) < 1e-12 and (line >= 0).all()
    rows = line.sum(1).nonzero().flatten()
    assert rows.tolist() == [line.shape[0] // 2]  # horizontal line on the centre row
    assert (line.sum(0) > 0).sum() >= 9
    vertical = MotionBlur(9, angle=90).kernel
    assert torch.allclose(vertical, line.T, atol=1e-12)
    a, b, c = MotionBlur(15, seed=3).kernel, MotionBlur(15, seed=3).kernel, MotionBlur(15, seed=4).kernel
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.sum() - 1) < 1e-12 and (a > 0).sum() > 15


def test_user_kernel_is_normalised_and_accepts_leading_singleton_dims():
    k = user_kernel() * 7
    op = ConvolutionFFT(k[None, None].float())
    assert abs(op.kernel.sum() - 1) < 1e-12 and op.kernel.shape == (5, 3)


def test_inpainting_mask_semantics():
    mask = torch.zeros(6, 8)
    mask[1:3, 2:5] = 1.0  # 1 = missing
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    y = Inpainting(mask).forward(x)
    assert (y[:, :, 1:3, 2:5] == 0).all()
    assert torch.equal(y[:, :, 0], x[:, :, 0])
    for m in (mask, mask[None], mask[None, None], mask.bool(), mask.double()):
        assert torch.equal(Inpainting(m).forward(x), y)


def test_inpainting_soft_mask_threshold_dilation_and_resize():
    soft = torch.tensor([[0.2, 0.5, 0.6, 0.9]])
    assert Inpainting(soft).missing.flatten().tolist() == [0, 0, 1, 1]
    assert Inpainting(soft, threshold=0.1).missing.flatten().tolist() == [1, 1, 1, 1]
    dot = torch.zeros(9, 9)
    dot[4, 4] = 1
    grown = Inpainting(dot, dilate=2).missing[0, 0]
    assert grown.sum() == 25 and grown[2:7, 2:7].all()
    big = Inpainting(torch.ones(4, 6) * (torch.arange(6) >= 3), resize_to=(8, 12)).missing[0, 0]
    assert big.shape == (8, 12) and big[:, :5].sum() == 0 and big[:, 7:].all()
    assert Inpainting(torch.zeros(3, 4)).missing.shape == (1, 1, 3, 4)


def test_inpainting_mask_batch_broadcasts_and_per_image_masks_apply_per_image():
    masks = torch.zeros(2, 4, 4)
    masks[0, 0, 0] = 1
    masks[1, 3, 3] = 1
    x = torch.ones(2, 1, 4, 4)
    y = Inpainting(masks).forward(x)
    assert y[0, 0, 0, 0] == 0 and y[0, 0, 3, 3] == 1 and y[1, 0, 3, 3] == 0 and y[1, 0, 0, 0] == 1
    assert Inpainting(masks[:1]).forward(torch.ones(5, 2, 4, 4)).sum() == 5 * 2 * 15


def test_colorization_values():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    op = Colorization()
    assert torch.allclose(op.forward(x), x.mean(1, keepdim=True))
    y = torch.randn(2, 1, 5, 6, dtype=torch.float64)
    assert torch.equal(op.pinv(y), y.expand(-1, 3, -1, -1))


def test_compose_fusions_equal_the_chain():
    x = torch.randn(2, 3, 24, 32, dtype=torch.float64)
    fft = Compose(GaussianBlur(1.0, mode="fft"), MotionBlur(5, angle=20))
    assert fft.method == "fused-fft"
    assert torch.allclose(fft.forward(x), fft.second.forward(fft.first.forward(x)), atol=1e-12)
    sep = Compose(GaussianBlur(1.5), SuperResolution(4, "bicubic"))
    assert sep.method == "fused-separable"  # no product direction below the threshold here:
    assert torch.allclose(sep.forward(x), sep.second.forward(sep.first.forward(x)), atol=1e-12)
    strong = Compose(GaussianBlur(4.0), SuperResolution(2))  # re-truncation drops weak product directions
    chain = strong.second.forward(strong.first.forward(x))
    assert 0 < (strong.forward(x) - chain).norm() <= 2 * BLUR_T * x.norm()
    down = Compose(MotionBlur(5, angle=20), SuperResolution(2))
    assert down.method == "fused-fft-downsample"
    chain = down.second.forward(down.first.forward(x))  # low-res components with gain < 0.03 dropped:
    assert 0 < (down.forward(x) - chain).norm() <= BLUR_T * x.norm()
    exact = Compose(MotionBlur(5, angle=20, threshold=0.0), SuperResolution(4))
    assert torch.allclose(exact.forward(x), exact.second.forward(exact.first.forward(x)), atol=1e-12)
    masks = Compose(Inpainting(mask_for(x.shape, seed=2)), Inpainting(mask_for(x.shape, seed=1)))
    assert torch.equal(masks.forward(x), masks.second.forward(masks.first.forward(x)))
    chain_op = Compose(SuperResolution(2), Inpainting(mask_for((12, 16))))
    assert chain_op.method == "chain" and chain_op.pinv_exact
    assert Compose(SuperResolution(2), Denoise()).method == "identity"
    assert CASES["compose_nested_separable"][0](None).method == "fused-separable"
    assert CASES["compose_nested_fft_downsample"][0](None).method == "fused-fft-downsample"


def test_compose_without_exact_pinv_is_honest():
    op = Compose(Inpainting(mask_for((8, 12))), SuperResolution(2))
    assert not op.pinv_exact
    x = torch.randn(1, 3, 8, 12, dtype=torch.float64)
    y = torch.randn(1, 3, 4, 6, dtype=torch.float64)
    assert abs(inner(op.forward(x), y) - inner(x, op.adjoint(y))) < 1e-12
    for call in (lambda: op.pinv(y), lambda: op.project(x), lambda: op.pinv_adjoint(x)):
        with pytest.raises(ValueError, match="no exact pseudo-inverse.*allow_inexact_pinv=True"):
            call()
    approx = Compose(Inpainting(mask_for((8, 12))), SuperResolution(2), allow_inexact_pinv=True)
    assert approx.pinv(y).shape == x.shape
    # and it is indeed not the Moore–Penrose inverse: H⁺ H H⁺ ≠ H⁺
    hp = approx.pinv(y)
    assert rel(approx.pinv(approx.forward(hp)), hp) > 1e-3


def test_half_precision_inputs_are_computed_in_float32():
    op = GaussianBlur(1.0, mode="fft")
    x = torch.randn(1, 3, 16, 16)
    out = op.forward(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert rel(out.float(), op.forward(x)) < 2e-2  # bfloat16 has 8 mantissa bits


def test_describe_repr_and_to():
    ops = [SuperResolution(4, "bicubic"), Inpainting(torch.zeros(4, 4)), GaussianBlur(2.0), MotionBlur(5, seed=1),
           ConvolutionFFT(user_kernel()), Denoise(), Colorization(), Compose(GaussianBlur(1.0), SuperResolution(2))]
    for op in ops:
        assert isinstance(op, LinearOperator)
        assert repr(op) == op.describe() and type(op).__name__ in op.describe()
        assert op.to(device="cpu", dtype=torch.float64) is op


# --- bad input -----------------------------------------------------------------------------


def test_sr_divisibility_message():
    with pytest.raises(ValueError) as err:
        SuperResolution(4).forward(torch.zeros(1, 3, 255, 256))
    assert str(err.value) == (
        "image is 255×256 but super-resolution factor 4 needs sides divisible by 4: "
        "crop or resize the image to 252×256 or 256×256"
        "."
    )
    with pytest.raises(ValueError, match=r"20×30 but .* factor 8 .* 16×24 or 16×32 or 24×24 or 24×32"):
        SuperResolution(8, "bicubic").check_input((1, 3, 20, 30))


@pytest.mark.parametrize(
    "call,pattern",
    [
        (lambda: SuperResolution(4).pinv_adjoint(torch.zeros(1, 3, 10, 12)), r"image is 10×12 .* crop or resize"),
        (lambda: SuperResolution(2).forward(torch.zeros(3, 8, 8)), r"image must be a B×C×H×W batch.*x\[None\]"),
        (lambda: SuperResolution(2).forward(torch.zeros(1, 3, 8, 8, dtype=torch.int64)), r"image must be a floating.*\.float\(\)"),
        (lambda: SuperResolution(2).pinv([1.0]), r"measurement must be a torch.Tensor"),
        (lambda: SuperResolution(0), r"factor must be a positive integer"),
        (lambda: SuperResolution(2.5), r"factor must be a positive integer"),
        (lambda: SuperResolution("4"), r"factor must be a positive integer"),
        (lambda: SuperResolution(2, kernel="lanczos"), r'kernel must be "box" or "bicubic"'),
        (lambda: GaussianBlur(1.0, mode="fft").forward(torch.zeros(1, 3, 8, 8)),
         r"blur kernel 9×9 is larger than the image \(8×8\): use a smaller kernel"),
        (lambda: MotionBlur(15).adjoint(torch.zeros(1, 3, 8, 30)), r"blur kernel .* larger than the measurement"),
        (lambda: ConvolutionFFT(torch.ones(2, 3, 3)), r"blur kernel must be a 2-D .* average its channels"),
        (lambda: ConvolutionFFT(-torch.ones(3, 3)), r"blur kernel must be finite with a positive sum"),
        (lambda: GaussianBlur(0.0), r"sigma must be > 0"),
        (lambda: GaussianBlur(1.0, mode="dct"), r'mode must be "svd" or "fft"'),
        (lambda: GaussianBlur(1.0, threshold=-1), r"threshold must be >= 0"),
        (lambda: GaussianBlur(1.0, threshold=2.0).forward(torch.zeros(1, 1, 8, 8)), r"every singular value .* lower the threshold"),
        (lambda: MotionBlur(0), r"length must be > 0"),
        (lambda: MotionBlur(9, kernel_size=5), r"kernel_size 5 is shorter than the blur length 9"),
        (lambda: Inpainting(torch.zeros(8, 8)).forward(torch.zeros(1, 3, 8, 9)),
         r"image is 8×9 but the inpainting mask is 8×8: resize the mask .*resize_to=\(8, 9\)"),
        (lambda: Inpainting(torch.zeros(2, 8, 8)).forward(torch.zeros(3, 3, 8, 8)),
         r"image batch is 3 but the inpainting mask batch is 2: give one mask .* or exactly 3 masks"),
        (lambda: Inpainting(torch.zeros(8, 8)).pinv(torch.zeros(1, 3, 4, 4)), r"measurement is 4×4 but the inpainting mask"),
        (lambda: Inpainting(torch.zeros(2, 3, 8, 8)), r"mask must be H×W, B×H×W .* one channel"),
        (lambda: Inpainting(torch.zeros(8, 8), threshold=1.0), r"mask threshold must be in \[0, 1\)"),
        (lambda: Inpainting(torch.full((8, 8), float("nan"))), r"mask contains NaN or Inf values: fix the node"),
        (lambda: Inpainting(torch.full((8, 8), float("inf"))), r"mask contains NaN or Inf values"),
        (lambda: Inpainting(torch.zeros(8, 8), dilate=-1), r"dilation must be a whole number"),
        (lambda: Colorization().forward(torch.zeros(1, 1, 8, 8)), r"image has 1 channels but .* expects 3 .* use Denoise"),
        (lambda: Colorization().forward(torch.zeros(1, 4, 8, 8)), r"image has 4 channels .* Colorization\(channels=4\)"),
        (lambda: Colorization().pinv(torch.zeros(1, 3, 8, 8)), r"measurement for colorization must have 1 channel"),
        (lambda: Colorization(channels=1), r"at least 2 image channels.*use Denoise"),
        (lambda: Compose(GaussianBlur(1.0), SuperResolution(4)).forward(torch.zeros(1, 3, 18, 20)), r"image after GaussianBlur.* is 18×20 .* factor 4"),
        (lambda: Compose(Colorization(), SuperResolution(4)).forward(torch.zeros(1, 3, 16, 18)),
         r"image after Colorization\(channels=3\) is 16×18 .* factor 4"),
        (lambda: Compose(SuperResolution(2), Inpainting(torch.zeros(4, 4))).pinv(torch.zeros(1, 3, 5, 4)),
         r"measurement is 5×4 but the inpainting mask is 4×4"),
        (lambda: Compose(Inpainting(torch.zeros(5, 4)), Inpainting(torch.zeros(4, 4))), r"cannot compose inpainting masks"),
        (lambda: Compose("blur", SuperResolution(2)), r"Compose first must be a LinearOperator"),
    ],
)
def test_bad_input_raises_clear_value_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# --- measurement noise -----------------------------------------------------------------------


def test_measure_is_deterministic_per_seed():
    op = SuperResolution(2, "bicubic")
    x = torch.randn(2, 3, 16, 20, dtype=torch.float64)
    a = op.measure(x, 0.1, torch.Generator().manual_seed(7))
    b = op.measure(x, 0.1, torch.Generator().manual_seed(7))
    c = op.measure(x, 0.1, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float64
    assert torch.equal(op.measure(x, 0.0), op.forward(x))
    noise = Denoise().measure(torch.zeros(4, 3, 64, 64), 0.2, torch.Generator().manual_seed(0))
    assert abs(noise.std().item() - 0.2) < 0.005  # 49k samples: std error ≈ 0.2/√(2·49152) ≈ 6e-4


def test_measure_rejects_bad_input():
    with pytest.raises(ValueError, match=r"sigma_y must be >= 0.*Use 0 for a noiseless"):
        Denoise().measure(torch.zeros(1, 3, 4, 4), -0.1)
    with pytest.raises(ValueError, match=r"image is 6×6 but super-resolution factor 4"):
        SuperResolution(4).measure(torch.zeros(1, 3, 6, 6), 0.1)
    with pytest.raises(ValueError, match=r"image must be a torch.Tensor"):
        Denoise().measure([[0.0]], 0.1)


# --- latent grid -----------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(64, 48), (60, 44)])
def test_latent_mask_covers_every_partially_missing_cell(h, w):
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(2, h, w, generator=g) < 0.01).float()
    lat = to_latent_grid(Inpainting(mask))
    assert isinstance(lat, Inpainting) and lat.missing.shape == (2, 1, h // 8, w // 8)
    for b in range(2):
        for i in range(h // 8):
            for j in range(w // 8):
                cell = mask[b, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
                assert lat.missing[b, 0, i, j] == float(cell.any())
    assert 0 < lat.missing_fraction < 1


def test_latent_grid_analogues():
    lat_shape = (1, 4, 32, 24)
    sr16 = to_latent_grid(SuperResolution(16, "bicubic"))
    assert isinstance(sr16, SuperResolution) and sr16.factor == 2 and sr16.kernel == "box"
    assert sr16.output_shape(lat_shape) == (1, 4, 16, 12)
    assert isinstance(to_latent_grid(SuperResolution(8)), SuperResolution)
    assert to_latent_grid(SuperResolution(8)).factor == 1
    for s in (2, 3, 4):
        assert isinstance(to_latent_grid(SuperResolution(s)), Denoise)
    with pytest.raises(ValueError, match=r"factor 12 has no latent-grid analogue.*\(e\.g\. 8 or 16\)"):
        to_latent_grid(SuperResolution(12))
    assert isinstance(to_latent_grid(Denoise()), Denoise)
    blur = to_latent_grid(GaussianBlur(16.0, mode="fft"))
    assert isinstance(blur, GaussianBlur) and blur.sigma == 2.0 and blur.mode == "fft"
    motion = to_latent_grid(MotionBlur(30, angle=10))
    assert isinstance(motion, ConvolutionFFT) and abs(motion.kernel.sum() - 1) < 1e-12
    assert motion.kernel.shape == (math.ceil(33 / 8),) * 2
    with pytest.raises(ValueError, match=r"colorization has no latent-grid analogue"):
        to_latent_grid(Colorization())
    with pytest.raises(ValueError, match=r"downscale must be a positive integer"):
        to_latent_grid(Denoise(), downscale=0)
    comp = to_latent_grid(Compose(GaussianBlur(8.0), SuperResolution(16)))
    assert isinstance(comp, Compose) and comp.output_shape(lat_shape) == (1, 4, 16, 12)
    assert isinstance(to_latent_grid(Compose(GaussianBlur(8.0), SuperResolution(4))), GaussianBlur)
    # the analogues are operators with exact projectors too
    z = torch.randn(lat_shape, dtype=torch.float64)
    for op in (sr16, blur, motion, comp, to_latent_grid(Inpainting(mask_for((256, 192))))):
        pz = op.project(z)
        assert rel(op.project(pz), pz) < 1e-10


# --- spectral forms (operators/spectral.py) ------------------------------------------------

NO_SPECTRUM = {"compose_box_sr_motion_fft", "compose_box_sr_gauss_fft", "compose_nested_fft_downsample",
               "compose_sr_colorization", "compose_mask_after_sr"}  # aliasing sums and chains: no cheap V


def modes_inner(a, b):
    return (a.conj() * b).real.sum().item() if a.is_complex() else inner(a, b)


@pytest.mark.parametrize("name", list(CASES))
def test_spectral_form_is_an_svd_of_the_operator(name):
    """V orthonormal and complete; V diag(s>0) Vᵀ = P, V diag(s²) Vᵀ = HᵀH, V diag(1/s²) Vᵀ = H⁺(H⁺)ᵀ
    (so H⁺ = V diag(1/s) Uᵀ up to the left factor), H⁺y has no null-space modes."""
    shape = CASES[name][1][0]
    op, x, x2, y, kappa = make(name, shape, torch.float64, "random")
    spec = op.spectral(shape)
    if name in NO_SPECTRUM:
        assert spec is None
        return
    t = tol(torch.float64, kappa)
    c, c2 = spec.to_modes(x), spec.to_modes(x2)
    s = spec.like(c)
    assert torch.broadcast_shapes(s.shape, c.shape) == c.shape and (s >= 0).all() and (s > 0).any()
    assert rel(spec.from_modes(c), x) <= tol(torch.float64), "V Vᵀ = I"
    assert abs(modes_inner(c, c2) - inner(x, x2)) <= tol(torch.float64) * x.norm() * x2.norm(), "Vᵀ V = I"
    assert rel(spec.apply(x, (spec.s > 0).double()), op.project(x)) <= t, "P = V diag(s>0) Vᵀ"
    assert rel(spec.apply(x, spec.s**2), op.adjoint(op.forward(x))) <= t, "HᵀH = V diag(s²) Vᵀ"
    inv2 = torch.where(spec.s > 0, 1.0 / spec.s.clamp_min(1e-300) ** 2, torch.zeros_like(spec.s))
    assert rel(spec.apply(x, inv2), op.pinv(op.pinv_adjoint(x))) <= t * kappa, "H⁺(H⁺)ᵀ = V diag(1/s²) Vᵀ"
    hp_modes = spec.to_modes(op.pinv(y))
    assert (hp_modes * (s == 0)).abs().max() <= t * hp_modes.abs().max(), "H⁺y lies in range(V_s>0)"
    assert op.spectral(shape) is spec  # cached per shape


def test_spectral_singular_values_are_the_operators():
    sr = SuperResolution(4, "bicubic")
    spec = sr.spectral((1, 1, 16, 16))
    s1 = sr.singular_values(16)
    assert torch.allclose(spec.s, torch.outer(torch.cat([s1, torch.zeros(12)]), torch.cat([s1, torch.zeros(12)])))
    blur = GaussianBlur(1.0, mode="fft", threshold=0.0)
    spec = blur.spectral((1, 1, 12, 10))
    assert torch.allclose(spec.s, torch.fft.fft2(torch.fft.irfft2(blur.transfer_function(12, 10), s=(12, 10))).abs())
    assert torch.allclose(Colorization().spectral((1, 3, 2, 2)).s.flatten(), torch.tensor([3**-0.5, 0.0, 0.0], dtype=torch.float64))
    assert Inpainting(mask_for((5, 6))).spectral((1, 3, 5, 6)).rank_fraction == pytest.approx(1 - float(mask_for((5, 6)).mean()))
    with pytest.raises(ValueError, match="divisible by 4"):
        sr.spectral((1, 1, 15, 16))


def test_latent_grid_analogues_have_spectral_forms():
    """The conjugate samplers' exact noisy map needs the spectrum of the *latent* operator."""
    lat_shape = (1, 4, 32, 24)
    pixel_ops = [Inpainting(mask_for((256, 192))), SuperResolution(16, "bicubic"), SuperResolution(4), Denoise(),
                 GaussianBlur(16.0), GaussianBlur(16.0, mode="fft"), MotionBlur(30, angle=10),
                 Compose(GaussianBlur(8.0), SuperResolution(16)), Compose(MotionBlur(20), GaussianBlur(8.0, mode="fft"))]
    for op in pixel_ops:
        assert to_latent_grid(op).spectral(lat_shape) is not None, op.describe()


def _held_bytes(cache) -> int:
    tensors = [t for v in (*cache._master.values(), *cache._copies.values()) for t in v]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("make, cache", [
    (lambda: SuperResolution(4, "bicubic"), lambda op: op._factors),
    (lambda: GaussianBlur(2.0), lambda op: op.impl._factors),
])
def test_working_bytes_covers_the_cached_matrices(make, cache):
    # the nodes refuse H / H⁺ when image copies + working_bytes exceed free memory: the estimate must cover what
    # the operator keeps (float64 factors + float32 copies), and grow like n² (the n×n projector)
    op, shape = make(), (1, 3, 64, 48)
    y = op.forward(torch.rand(shape))
    op.pinv(y), op.project(torch.rand(shape)), op.pinv_adjoint(torch.rand(shape))
    assert 0 < _held_bytes(cache(op)) <= op.working_bytes(shape)
    assert op.working_bytes((1, 3, 128, 96)) == pytest.approx(4 * op.working_bytes(shape), rel=0.01)


def test_working_bytes_is_zero_without_matrices():
    shape = (1, 3, 64, 64)
    for op in (SuperResolution(4, "box"), GaussianBlur(2.0, mode="fft"), MotionBlur(9.0),
               Inpainting(torch.zeros(64, 64)), Colorization(), Denoise()):
        assert op.working_bytes(shape) == 0, op.describe()
    fused = Compose(GaussianBlur(2.0), SuperResolution(4, "bicubic"))  # parts' matrices + the fused product's
    assert fused.working_bytes(shape) > GaussianBlur(2.0).working_bytes(shape) + SuperResolution(4, "bicubic").working_bytes(shape)
    assert Compose(Denoise(), GaussianBlur(2.0)).working_bytes(shape) == GaussianBlur(2.0).working_bytes(shape)
