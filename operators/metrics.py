"""Image-quality and measurement-consistency metrics (pure torch, images B×C×H×W in [0, 1])."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _shared(single: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A batch-1 tensor shaped like one item of `like` serves the whole batch (several samples of one image)."""
    return single.expand_as(like) if single.shape[0] == 1 and single.shape[1:] == like.shape[1:] else single


def _check_pair(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The reference, one per image (a single reference is shared by the batch)."""
    if image.shape[0] == 0:
        raise ValueError("image: the batch is empty (0 images); connect the node that makes the images to compare.")
    reference = _shared(reference, image)
    if image.shape != reference.shape:
        raise ValueError(
            f"image has shape {tuple(image.shape)} but reference has {tuple(reference.shape)}: "
            "compare images of the same size and batch (resize or crop one of them first)."
        )
    return reference


def psnr(image: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per batch item (inf for identical images)."""
    reference = _check_pair(image, reference)
    mse = (image.double() - reference.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(image: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01, K2 0.03) per item.

    Computed per channel on the 'valid' region and averaged, like scikit-image with
    gaussian_weights=True; images smaller than the window use a window that fits.
    """
    reference = _check_pair(image, reference)
    x, y = image.double(), reference.double()
    size = min(window, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2  # odd
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    channels = x.shape[1]
    kh = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    kw = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=channels), kw, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1)


def measurement_consistency(image: torch.Tensor, operator, y: torch.Tensor) -> torch.Tensor:
    """‖H x − y‖ / ‖y‖ per batch item: how well a reconstruction explains the measurement. A single
    measurement is shared by a batch of samples (as the solvers and Enforce Measurement allow)."""
    operator.check_input(tuple(image.shape), "image")
    hx = operator.forward(image.double())
    y = _shared(y, hx)
    if hx.shape != y.shape:
        raise ValueError(
            f"image gives a measurement of shape {tuple(hx.shape)} but the measurement has {tuple(y.shape)}: "
            "use the reconstruction of this measurement (same size and batch)."
        )
    diff = (hx - y.double()).flatten(1).norm(dim=1)
    return diff / y.double().flatten(1).norm(dim=1).clamp_min(1e-12)
