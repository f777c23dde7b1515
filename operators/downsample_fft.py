"""Circular blur followed by s×s box downsampling, with an exact FFT pseudo-inverse.

H = S·T: T is a circular convolution (the blur's spectrum times the s×s block-average
filter) and S keeps every s-th pixel. In the Fourier domain H maps, for each low-res
frequency k, the s² aliased high-res coefficients X(k + j·n) to one number:
    Y(k) = (1/s²) Σ_j T(k + j·n) X(k + j·n)      (unnormalised DFTs, n = low-res size)
so H Hᵀ is a low-res circular filter with spectrum λ(k) = (1/s²) Σ_j |T(k + j·n)|²
(singular values √λ). With keep = (√λ ≥ threshold) and Q = F⁻¹ keep F on the low-res grid:
    H = Q S T,  Hᵀ = Tᵀ Sᵀ Q,  H⁺ = Hᵀ λ⁺,  (H⁺)ᵀ = λ⁺ H,  P = H⁺ H,
where λ⁺ = keep/λ. As elsewhere, the weak components are removed from H itself, so all four
Penrose conditions hold exactly and P is an orthogonal projector.
"""

from __future__ import annotations

import torch

from .base import DeviceCache, LinearOperator

_EPS64 = torch.finfo(torch.float64).eps


class DownsampledCirculant(LinearOperator):
    structure = None

    def __init__(self, circulant: LinearOperator, factor: int, threshold: float, check_input, check_measurement,
                 name: str):
        self.circulant, self.factor, self.threshold = circulant, factor, float(threshold)
        self._check_in, self._check_meas, self.name = check_input, check_measurement, name
        self._spectra = DeviceCache(self._build)

    def _build(self, key):
        h, w = key
        s = self.factor
        n1, n2 = h // s, w // s
        psf = torch.fft.irfft2(self.circulant.transfer_function(h, w), s=(h, w))
        box = torch.zeros(h, w, dtype=torch.float64)
        rows, cols = (-torch.arange(s)) % h, (-torch.arange(s)) % w  # y[m] = mean of z[s·m + r]
        box[rows[:, None], cols[None, :]] = 1.0 / s**2
        t_full = torch.fft.fft2(psf) * torch.fft.fft2(box)
        lam = (t_full.abs() ** 2).reshape(s, n1, s, n2).sum(dim=(0, 2)) / s**2
        floor = h * w * _EPS64 * float(lam.max())
        keep = (lam.sqrt() >= self.threshold) & (lam > floor)
        if not keep.any():
            raise ValueError(f"{self.name}: every singular value is below threshold={self.threshold:g}; lower it.")
        lam_pinv = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))
        half = n2 // 2 + 1
        return t_full[:, : w // 2 + 1], keep[:, :half].to(torch.float64), lam_pinv[:, :half]

    def _spec(self, h, w, t):
        return self._spectra.get((h, w), t.device, t.dtype)

    def _lowres_filter(self, y, gain):
        return torch.fft.irfft2(torch.fft.rfft2(y) * gain, s=y.shape[-2:])

    def _forward(self, xw):
        h, w = xw.shape[-2:]
        t_half, keep, _ = self._spec(h, w, xw)
        z = torch.fft.irfft2(torch.fft.rfft2(xw) * t_half, s=(h, w))
        return self._lowres_filter(z[..., :: self.factor, :: self.factor], keep)

    def _adjoint(self, yw):
        s = self.factor
        h, w = yw.shape[-2] * s, yw.shape[-1] * s
        t_half, keep, _ = self._spec(h, w, yw)
        up = yw.new_zeros(yw.shape[:-2] + (h, w))
        up[..., ::s, ::s] = self._lowres_filter(yw, keep)
        return torch.fft.irfft2(torch.fft.rfft2(up) * t_half.conj(), s=(h, w))

    def _lam_pinv(self, yw):
        s = self.factor
        return self._lowres_filter(yw, self._spec(yw.shape[-2] * s, yw.shape[-1] * s, yw)[2])

    def forward(self, x):
        return self._forward(self._in(x, "image")).to(x.dtype)

    def adjoint(self, y):
        return self._adjoint(self._meas(y)).to(y.dtype)

    def pinv(self, y):
        return self._adjoint(self._lam_pinv(self._meas(y))).to(y.dtype)

    def pinv_adjoint(self, x):
        return self._lam_pinv(self._forward(self._in(x, "image"))).to(x.dtype)

    def project(self, x):
        return self._adjoint(self._lam_pinv(self._forward(self._in(x, "image")))).to(x.dtype)

    def output_shape(self, input_shape):
        b, c, h, w = input_shape
        return (b, c, h // self.factor, w // self.factor)

    def input_shape(self, measurement_shape):
        b, c, h, w = measurement_shape
        return (b, c, h * self.factor, w * self.factor)

    def check_input(self, shape, what="image"):
        self._check_in(shape, what)

    def check_measurement(self, shape, what="measurement"):
        self._check_meas(shape, what)
