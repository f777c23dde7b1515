"""Metrics against known values and scikit-image's reference implementation."""

import math

import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from comfyui_inverse.operators import SuperResolution
from comfyui_inverse.operators.metrics import measurement_consistency, psnr, ssim


@pytest.fixture(scope="module")
def photo():
    return torch.tensor(data.astronaut()[:64, :80] / 255.0).permute(2, 0, 1)[None].float()


def test_identical_images(photo):
    assert math.isinf(psnr(photo, photo).item())
    assert ssim(photo, photo).item() == pytest.approx(1.0, abs=1e-12)


def test_psnr_of_known_noise_level(photo):
    # A constant offset of 0.1 has MSE 0.01: PSNR = 20 dB (float64, so 1e-9 dB is fair).
    ref = photo.double()
    assert psnr(ref + 0.1, ref).item() == pytest.approx(20.0, abs=1e-9)


def test_matches_scikit_image(photo):
    g = torch.Generator().manual_seed(0)
    noisy = (photo + 0.05 * torch.randn(photo.shape, generator=g)).clamp(0, 1)
    ref, img = photo[0].permute(1, 2, 0).numpy(), noisy[0].permute(1, 2, 0).numpy()
    assert psnr(noisy, photo).item() == pytest.approx(peak_signal_noise_ratio(ref, img, data_range=1), rel=1e-6)
    expected = structural_similarity(ref, img, data_range=1, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim(noisy, photo).item() == pytest.approx(expected, abs=1e-5)  # skimage computes in float32


def test_batch_items_are_independent(photo):
    batch = torch.cat([photo, photo * 0.5])
    values = psnr(batch, torch.cat([photo, photo]))
    assert math.isinf(values[0].item()) and values[1].item() < 20


def test_measurement_consistency(photo):
    op = SuperResolution(4, kernel="bicubic")
    y = op.forward(photo)
    assert measurement_consistency(photo, op, y).item() < 1e-6
    g = torch.Generator().manual_seed(1)
    noise = 0.01 * torch.randn(y.shape, generator=g)
    expected = noise.norm() / (y + noise).norm()
    assert measurement_consistency(photo, op, y + noise).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_one_reference_serves_a_batch_of_samples(photo, metric):
    batch = torch.cat([photo, (photo + 0.1).clamp(0, 1)])
    torch.testing.assert_close(metric(batch, photo), metric(batch, torch.cat([photo, photo])), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="same size and batch"):
        metric(torch.cat([photo] * 3), torch.cat([photo, photo]))


def test_one_measurement_serves_a_batch_of_samples(photo):
    # several samples of one photo (latent batch 2, measurement batch 1) run in the solvers and Enforce
    # Measurement; the consistency node refused them ("same size and batch")
    op = SuperResolution(4, kernel="bicubic")
    y = op.forward(photo)
    values = measurement_consistency(torch.cat([photo, photo * 0.5]), op, y)
    assert values.shape == (2,) and values[0].item() < 1e-6
    assert values[1].item() == pytest.approx(0.5, rel=1e-6)  # ‖0.5y − y‖/‖y‖
    with pytest.raises(ValueError, match="same size and batch"):  # two measurements, three samples
        measurement_consistency(torch.cat([photo] * 3), op, torch.cat([y, y]))


def test_shape_mismatch_is_a_clear_error(photo):
    with pytest.raises(ValueError, match="same size"):
        psnr(photo, photo[..., :32])
    op = SuperResolution(4)
    with pytest.raises(ValueError, match="measurement"):
        measurement_consistency(photo, op, op.forward(photo[..., :32]))


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_empty_batch_is_a_clear_error(photo, metric):
    # an empty batch would give an empty result, and the metric nodes' batch mean would divide by zero
    with pytest.raises(ValueError, match="image: the batch is empty"):
        metric(photo[:0], photo[:0])
