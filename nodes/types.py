"""Custom socket types shared by the pack's nodes, and the MEASUREMENT payload."""

from __future__ import annotations

import math
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
    `from_photo`: y is the user's own photo (Measurement From Image), not made from a clean
    image (Degrade Image); size advice then speaks about that photo.
    """

    y: torch.Tensor
    operator: LinearOperator
    sigma_y: float
    image_shape: tuple[int, int, int, int]
    from_photo: bool = False

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


def _multiples(n: int, step: int) -> tuple[int, int]:
    """The multiples of `step` just below (at least one step) and just above n."""
    return max(step, n // step * step), -(-n // step) * step


def size_advice(measurement, h: int, w: int, downscale: int) -> str:
    """Why an h×w image cannot go through the VAE, and which size the user's own input should have.

    The input the user has is the photo given to Measurement From Image (y, small for
    super-resolution) or the clean image given to Degrade Image (x). With a ×s upscale a photo
    side p restores to s·p, which the VAE takes when p is a multiple of d/gcd(s, d); a clean
    image side must be a multiple of lcm(s, d), to be divisible by s as well.
    """
    yh, yw = (int(v) for v in measurement.y.shape[-2:])
    head = f"measurement: the restored image would be {w}×{h} pixels, but the VAE needs multiples of {downscale}."
    if h % yh or w % yw or h // yh != w // yw:  # no single integer upscale: size of the image only
        return f"{head} Crop or resize the input image to {w - w % downscale or downscale}×{h - h % downscale or downscale}."
    s = h // yh
    if getattr(measurement, "from_photo", False):
        step = downscale // math.gcd(s, downscale)
        (w0, w1), (h0, h1) = _multiples(yw, step), _multiples(yh, step)
        what = f"the photo given to Measurement From Image ({yw}×{yh})"
        if s == 1:
            return f"{head} Crop {what} to {w0}×{h0}, or resize it to {w1}×{h1}."
        return (f"{head} At ×{s}, crop {what} to {w0}×{h0} (restored {s * w0}×{s * h0}) or resize it to "
                f"{w1}×{h1} (restored {s * w1}×{s * h1}).")
    step = s * downscale // math.gcd(s, downscale)
    (w0, w1), (h0, h1) = _multiples(w, step), _multiples(h, step)
    multiple = f"multiples of {step}" + (f" (the factor {s} and the VAE's {downscale})" if s > 1 else "")
    return f"{head} Crop the image given to Degrade Image to {w0}×{h0}, or resize it to {w1}×{h1}: {multiple}."


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
        raise ValueError(size_advice(measurement, h, w, downscale))
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


def check_latent_channels(latent_shape, latent_format) -> None:
    """A LATENT made for another model family (e.g. an SD3 VAE Encode into an SD1.5 sampler) would fail deep
    inside the model's first convolution; name the input and the fix instead."""
    if len(latent_shape) != 4:  # e.g. a video latent (B×C×T×H×W)
        raise ValueError(
            f"latent_image: a {len(latent_shape)}-D latent {tuple(latent_shape)} (a video latent?), but the inverse "
            "samplers restore images from B×C×H×W latents. Use Empty Latent Image, VAE Encode or Inverse Init Latent."
        )
    expected = getattr(latent_format, "latent_channels", None)
    got = int(latent_shape[1])
    if expected is not None and got != int(expected):
        raise ValueError(
            f"latent_image: the latent has {got} channels but this model works on {expected}-channel latents "
            "(SD1.5/SDXL: 4, SD3/Flux: 16); it was made for another model family. Use Empty Latent Image, "
            "VAE Encode with this model's VAE, or Inverse Init Latent."
        )
