"""Custom socket types shared by the pack's nodes, and the MEASUREMENT payload."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..operators.base import LinearOperator

OperatorType = io.Custom("INVERSE_OPERATOR")
MeasurementType = io.Custom("MEASUREMENT")


@dataclass(frozen=True)
class Measurement:
    """What a solver needs to know about the observation.

    `y` is H x + noise on the [0, 1] image scale (B×C'×H'×W', CPU float32), `image_shape` the
    B×C×H×W shape of the unknown image x, `sigma_y` the noise std on the [0, 1] scale.
    """

    y: torch.Tensor
    operator: LinearOperator
    sigma_y: float
    image_shape: tuple[int, int, int, int]

    @property
    def batch(self) -> int:
        return self.image_shape[0]

    def pinv_image(self) -> torch.Tensor:
        """H⁺y (B×C×H×W), the classical baseline and every solver's starting point."""
        return self.operator.pinv(self.y)

    def to_signed(self) -> torch.Tensor:
        """y for the [-1, 1] image scale the models use: H(2x−1) = 2Hx − H(1)."""
        ones = torch.ones(self.image_shape, dtype=self.y.dtype, device=self.y.device)
        return 2.0 * self.y - self.operator.forward(ones)


def check_measurement_image(measurement, downscale: int) -> tuple[int, int, int, int]:
    """The measurement a latent solver can restore: a MEASUREMENT of an RGB image whose sides the
    VAE accepts. Returns its image shape (B, C, H, W)."""
    if not isinstance(measurement, Measurement):
        raise ValueError("measurement: expected a MEASUREMENT (from Degrade Image or Measurement From Image), "
                         f"got {type(measurement).__name__}.")
    b, c, h, w = (int(v) for v in measurement.image_shape)
    if c != 3:
        raise ValueError(
            f"measurement: the unknown image has {c} channels; the solvers restore RGB images (3 channels). "
            "Remove the alpha channel (e.g. with Split Image with Alpha) before making the measurement."
        )
    if h % downscale or w % downscale:
        raise ValueError(
            f"measurement: the restored image would be {w}×{h} pixels, but the VAE needs multiples of {downscale}. "
            f"Crop or resize the input image to {w - w % downscale}×{h - h % downscale} (for super-resolution: a "
            f"low-resolution size that is a multiple of {downscale} divided by the factor)."
        )
    return b, c, h, w


def check_measurement(measurement, latent_shape, downscale: int) -> tuple[int, int, int, int]:
    """check_measurement_image, plus the latent being sampled: matching size, and a batch of 1 or B."""
    b, c, h, w = check_measurement_image(measurement, downscale)
    lb, _, lh, lw = (int(v) for v in latent_shape)
    if (lh * downscale, lw * downscale) != (h, w):
        raise ValueError(
            f"latent_image: the latent is {lw}×{lh} ({lw * downscale}×{lh * downscale} pixels) but the measurement's "
            f"image is {w}×{h}. Use an Empty Latent Image of width {w} and height {h}, or the Inverse Init Latent node."
        )
    if b not in (1, lb):
        raise ValueError(
            f"latent_image: batch of {lb} latents but the measurement holds {b} images. Set the Empty Latent Image "
            f"batch_size to {b} (one result per measured image), or use a single measurement for the whole batch."
        )
    return b, c, h, w
