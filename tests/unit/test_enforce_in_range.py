"""Enforce Measurement on an image that must stay in [0, 1] (samplers.enforce_measurement_in_range).

Found by running valid inputs through the all-in-one node on real ComfyUI: with enforce_measurement on, the
decoded SD1.5 output projected onto y overshot [0, 1] on ~2% of its pixels, and the IMAGE clip left
‖Hx − y‖/‖y‖ at 4e-3…1.2e-2 (SR ×2…×4, blur) where the node promises exact agreement (SD3: 1e-8).
"""

from __future__ import annotations

import pytest
import torch

from comfyui_inverse.operators import Compose, GaussianBlur, MotionBlur, SuperResolution
from comfyui_inverse.samplers import enforce_measurement, enforce_measurement_in_range

SHAPE = (2, 3, 48, 72)  # non-square, batch of 2
NOISE = 0.15


def _truth() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SHAPE[2]), torch.linspace(0, 1, SHAPE[3]), indexing="ij")
    image = torch.stack([0.5 + 0.45 * torch.sin(6.0 * xx + c) * torch.cos(4.0 * yy - c) for c in range(3)])
    return torch.stack([image, image.flip(-1)])


def _decoded_like(truth: torch.Tensor) -> torch.Tensor:
    """An output in [0, 1] that is far from the measurement (what a decoder gives)."""
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    return (truth + NOISE * noise).clamp(0.0, 1.0)


def _relative_residual(op, x, y) -> float:
    return float(((op.forward(x) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).max())


@pytest.mark.parametrize("op", [SuperResolution(4, "box"), SuperResolution(3, "bicubic"), GaussianBlur(2.0),
                                GaussianBlur(2.0, mode="fft"), Compose(GaussianBlur(1.5), SuperResolution(2))],
                         ids=["sr4_box", "sr3_bicubic", "gauss_zero", "gauss_circular", "blur_then_sr2"])
def test_in_range_enforcement_reaches_the_measurement_where_projection_then_clip_does_not(op):
    truth = _truth()
    y = op.forward(truth)
    x = _decoded_like(truth)
    clipped = enforce_measurement(op, x, y).clamp(0.0, 1.0)  # the node before: one projection, then the IMAGE clip
    out = enforce_measurement_in_range(op, x, y)
    before, after = _relative_residual(op, clipped, y), _relative_residual(op, out, y)
    assert before > 3e-3  # the failure this guards against (~4% of the pixels clipped)
    assert after < 2e-4 and after < 0.02 * before  # measured 3e-5…7e-5 (10 projections)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # both sets hold the true image: the extra projections never move away from it
    assert float((out - truth).norm()) <= float((clipped - truth).norm())


def test_slow_operator_still_improves_within_the_iteration_cap():
    op = MotionBlur(7.0, 30.0)
    truth = _truth()
    y = op.forward(truth)
    x = _decoded_like(truth)
    clipped = enforce_measurement(op, x, y).clamp(0.0, 1.0)
    assert _relative_residual(op, enforce_measurement_in_range(op, x, y), y) < 0.3 * _relative_residual(op, clipped, y)  # measured 0.16


def test_an_image_in_range_after_one_projection_gets_exactly_the_projection():
    op = SuperResolution(2, "bicubic")
    truth = _truth()
    y = op.forward(truth)
    x = truth + 0.01 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(enforce_measurement_in_range(op, x, y), enforce_measurement(op, x, y))


def test_noisy_measurement_stays_in_range_and_near_the_noise_level():
    op = GaussianBlur(2.0)
    truth = _truth()
    sigma_y = 0.02
    y = op.forward(truth) + sigma_y * torch.randn(op.forward(truth).shape, generator=torch.Generator().manual_seed(2))
    out = enforce_measurement_in_range(op, _decoded_like(truth), y, sigma_y)
    level = sigma_y * y[0].numel() ** 0.5
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((op.forward(out) - y).flatten(1).norm(dim=1).max()) <= 1.05 * level
