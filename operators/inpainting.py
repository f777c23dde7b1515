"""Inpainting: H keeps the known pixels; the measurement stays full size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LinearOperator
from .spectral import DiagonalSpectrum


def _as_batch_mask(mask: torch.Tensor) -> torch.Tensor:
    """B×H×W, H×W or B×1×H×W → B×1×H×W float64 on the CPU."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor (1 = missing), got {type(mask).__name__}.")
    if mask.is_complex():
        raise ValueError("mask must be real-valued (1 = missing, 0 = known).")
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    elif not (mask.ndim == 4 and mask.shape[1] == 1):
        raise ValueError(
            f"mask must be H×W, B×H×W (ComfyUI MASK) or B×1×H×W, got shape {tuple(mask.shape)}. "
            "Use one channel of the mask image, e.g. image[..., 0]."
        )
    if mask.shape[-1] < 1 or mask.shape[-2] < 1 or mask.shape[0] < 1:
        raise ValueError(f"mask is empty: shape {tuple(mask.shape)}.")
    if not torch.isfinite(mask).all():  # NaN > threshold is False: NaN pixels would silently count as known
        raise ValueError("mask contains NaN or Inf values: fix the node that produced it (or clamp it) before restoring.")
    return mask.detach().to(device="cpu", dtype=torch.float64)


class Inpainting(LinearOperator):
    """H = Hᵀ = H⁺ = (H⁺)ᵀ = P = keep ⊙ · (an orthogonal projection; y is full size).

    `mask` follows the ComfyUI MASK convention: 1 = missing (to be filled), 0 = known.
    Shapes H×W or B×H×W (or B×1×H×W); a batch-1 mask broadcasts over the image batch,
    otherwise its batch must equal the image batch. The mask is shared by all channels.
    Preparation order: resize to `resize_to`=(H, W) (bilinear, antialiased; only when
    given), binarize (missing where mask > `threshold`), dilate the missing region by
    `dilate` pixels (square max-pool).
    Identities: all four Penrose conditions, P² = P = Pᵀ, P H⁺ = H⁺, H H⁺ = P.
    """

    name = "inpainting"

    def __init__(self, mask: torch.Tensor, threshold: float = 0.5, dilate: int = 0, resize_to=None):
        m = _as_batch_mask(mask)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"mask threshold must be in [0, 1), got {threshold}.")
        if int(dilate) != dilate or dilate < 0:
            raise ValueError(f"mask dilation must be a whole number of pixels >= 0, got {dilate}.")
        if resize_to is not None:
            if len(resize_to) != 2 or min(resize_to) < 1:
                raise ValueError(f"resize_to must be (height, width) with positive sides, got {resize_to!r}.")
            size = (int(resize_to[0]), int(resize_to[1]))
            if size != tuple(m.shape[-2:]):
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)
        missing = (m > threshold).to(torch.float64)
        if dilate:
            d = int(dilate)
            missing = F.max_pool2d(missing, kernel_size=2 * d + 1, stride=1, padding=d)
        self.missing = missing  # B×1×H×W, float64 CPU, values {0, 1}
        self.keep = 1.0 - missing
        self.threshold, self.dilate = threshold, int(dilate)
        self._copies: dict = {}

    @property
    def missing_fraction(self) -> float:
        return float(self.missing.mean())

    def describe(self):
        b, _, h, w = self.missing.shape
        return f"Inpainting(mask {b}×{h}×{w}, {100 * self.missing_fraction:.1f}% missing)"

    def _keep_like(self, t: torch.Tensor) -> torch.Tensor:
        key = (str(t.device), t.dtype)
        if key not in self._copies:
            self._copies[key] = self.keep.to(device=t.device, dtype=t.dtype)
        return self._copies[key]

    def check_input(self, shape, what="image"):
        super().check_input(shape, what)
        mb, _, mh, mw = self.missing.shape
        if tuple(shape[-2:]) != (mh, mw):
            raise ValueError(
                f"{what} is {shape[-2]}×{shape[-1]} but the inpainting mask is {mh}×{mw}: "
                f"resize the mask to the image (resize_to=({shape[-2]}, {shape[-1]})) or crop/resize the image to {mh}×{mw}."
            )
        if mb != 1 and mb != shape[0]:
            raise ValueError(
                f"{what} batch is {shape[0]} but the inpainting mask batch is {mb}: "
                f"give one mask (batch 1, shared by all images) or exactly {shape[0]} masks."
            )

    def check_measurement(self, shape, what="measurement"):
        self.check_input(shape, what)

    def spectral(self, shape):
        self.check_input(tuple(shape))
        return self._cached_spectrum("mask", lambda: DiagonalSpectrum(self.keep))

    def _apply(self, t: torch.Tensor, what: str) -> torch.Tensor:
        tw = self._in(t, what)
        return (tw * self._keep_like(tw)).to(t.dtype)

    def forward(self, x):
        return self._apply(x, "image")

    def adjoint(self, y):
        return self._apply(y, "measurement")

    def pinv(self, y):
        return self._apply(y, "measurement")

    def pinv_adjoint(self, x):
        return self._apply(x, "image")

    def project(self, x):
        return self._apply(x, "image")

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def input_shape(self, measurement_shape):
        return tuple(measurement_shape)
