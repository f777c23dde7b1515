"""Denoising (identity) and colorization (channel mean)."""

from __future__ import annotations

from .base import LinearOperator
from .spectral import ChannelSpectrum, IdentitySpectrum


class Denoise(LinearOperator):
    """H = Hᵀ = H⁺ = (H⁺)ᵀ = P = I: the measurement is the (noisy) image itself."""

    name = "denoise"
    coisometry_scale = 1.0
    isometry_scale = 1.0

    def describe(self):
        return "Denoise()"

    def spectral(self, shape):
        self.check_input(tuple(shape))
        return self._cached_spectrum("identity", IdentitySpectrum)

    def _same(self, t, what):
        return self._in(t, what).to(t.dtype)

    def forward(self, x):
        return self._same(x, "image")

    def adjoint(self, y):
        return self._same(y, "measurement")

    def pinv(self, y):
        return self._same(y, "measurement")

    def pinv_adjoint(self, x):
        return self._same(x, "image")

    def project(self, x):
        return self._same(x, "image")

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def input_shape(self, measurement_shape):
        return tuple(measurement_shape)


class Colorization(LinearOperator):
    """H = channel mean (B×C×H×W → B×1×H×W), i.e. H = (1/C)·1ᵀ per pixel.

    H Hᵀ = I/C, so Hᵀ y = y/C replicated, H⁺ = C·Hᵀ = replication over the C channels,
    (H⁺)ᵀ = channel sum and P = channel mean replicated. The output channel count C is
    fixed by `channels` (default 3, RGB); images must have that many channels (≥ 2).
    Identities: all four Penrose conditions, P² = P = Pᵀ, P H⁺ = H⁺, H H⁺ = I.
    """

    name = "colorization"

    def __init__(self, channels: int = 3):
        if int(channels) != channels or channels < 2:
            raise ValueError(
                f"colorization needs at least 2 image channels, got channels={channels}. "
                "A one-channel image is already gray: use Denoise instead."
            )
        self.channels = int(channels)
        self.coisometry_scale = 1.0 / self.channels

    def describe(self):
        return f"Colorization(channels={self.channels})"

    def check_input(self, shape, what="image"):
        super().check_input(shape, what)
        if shape[1] != self.channels:
            raise ValueError(
                f"{what} has {shape[1]} channels but this colorization operator expects {self.channels} "
                f"(RGB is 3): convert the image to {self.channels} channels or build Colorization(channels={shape[1]})"
                + (" — a one-channel image is already gray; use Denoise." if shape[1] == 1 else ".")
            )

    def check_measurement(self, shape, what="measurement"):
        super().check_measurement(shape, what)
        if shape[1] != 1:
            raise ValueError(
                f"{what} for colorization must have 1 channel (gray), got {shape[1]}: "
                "pass the gray image, e.g. image.mean(dim=1, keepdim=True)."
            )

    def spectral(self, shape):
        self.check_input(tuple(shape))
        return self._cached_spectrum("channel", lambda: ChannelSpectrum(self.channels))

    def forward(self, x):
        xw = self._in(x, "image")
        return xw.mean(dim=1, keepdim=True).to(x.dtype)

    def adjoint(self, y):
        yw = self._meas(y)
        return (yw / self.channels).expand(-1, self.channels, -1, -1).contiguous().to(y.dtype)

    def pinv(self, y):
        yw = self._meas(y)
        return yw.expand(-1, self.channels, -1, -1).contiguous().to(y.dtype)

    def pinv_adjoint(self, x):
        xw = self._in(x, "image")
        return xw.sum(dim=1, keepdim=True).to(x.dtype)

    def project(self, x):
        xw = self._in(x, "image")
        return xw.mean(dim=1, keepdim=True).expand(-1, self.channels, -1, -1).contiguous().to(x.dtype)

    def output_shape(self, input_shape):
        b, _, h, w = input_shape
        return (b, 1, h, w)

    def input_shape(self, measurement_shape):
        b, _, h, w = measurement_shape
        return (b, self.channels, h, w)
