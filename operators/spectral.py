"""Spectral forms H = U diag(s) Vᵀ of the operators that have a cheap one.

`op.spectral(shape)` returns a `Spectrum` for images of `shape` (B, C, H, W), or None:

  to_modes(x)    Vᵀx, a "mode tensor" (real, or complex for the Fourier basis)
  from_modes(c)  V c, back to an image (real)
  s              float64 CPU singular values, broadcastable against to_modes(x);
                 0 on the null space of H (including directions truncated from H)

V is orthonormal and complete: from_modes(to_modes(x)) = x, ⟨to_modes x, to_modes z⟩ =
⟨x, z⟩ (real part of the Hermitian product for the Fourier basis), so any function of
HᵀH is a per-mode gain: f(HᵀH) x = from_modes(f(s²) · to_modes(x)). The left factor U is
never needed: everything a sampler uses goes through H⁺y = V diag(1/s) Uᵀ y.

Bases: identity (Denoise), pixel diagonal (Inpainting, s = keep mask), a 3×3 (C×C)
channel basis (Colorization: first column 1/√C, s = 1/√C, the rest null), Kronecker
products of full 1-D SVDs (separable SR / zero-padded blur / their fusions) and the
orthonormal 2-D DFT (circular blurs, s = |ĥ|). Modes with equal s are interchangeable;
only P = V diag(s > 0) Vᵀ and the gains are basis independent.
"""

from __future__ import annotations

import math

import torch

from .base import work_dtype


class Spectrum:
    """V and s of H on one image shape (see module docstring). Subclasses implement the maps."""

    kind = "spectrum"
    s: torch.Tensor

    def __init__(self, s: torch.Tensor):
        self.s = s.to(torch.float64)
        self._copies: dict = {}

    def to_modes(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_modes(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def like(self, t: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """`values` (default s; float64 CPU, shaped like s) on t's device in t's real dtype."""
        real = t.real.dtype if t.is_complex() else t.dtype
        if values is not None:
            return values.to(device=t.device, dtype=real)
        key = (str(t.device), real)
        if key not in self._copies:
            self._copies[key] = self.s.to(device=t.device, dtype=real)
        return self._copies[key]

    def apply(self, x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """V diag(gains) Vᵀ x for per-mode `gains` shaped like s."""
        return self.from_modes(self.like(x, gains) * self.to_modes(x)).to(x.dtype)

    @property
    def rank_fraction(self) -> float:
        return float((self.s > 0).double().mean())


def _w(x: torch.Tensor) -> torch.Tensor:
    return x.to(work_dtype(x.dtype))


class IdentitySpectrum(Spectrum):
    """V = I, s = 1 (Denoise)."""

    kind = "identity"

    def __init__(self):
        super().__init__(torch.ones(1, 1, 1, 1, dtype=torch.float64))

    def to_modes(self, x):
        return _w(x)

    def from_modes(self, c):
        return c


class DiagonalSpectrum(Spectrum):
    """V = I, s = a 0/1 keep mask (Inpainting), shaped B×1×H×W (B = 1 broadcasts)."""

    kind = "diagonal"

    def to_modes(self, x):
        return _w(x)

    def from_modes(self, c):
        return c


class ChannelSpectrum(Spectrum):
    """Per-pixel C→1 channel mean: V = an orthonormal C×C basis whose first column is 1/√C."""

    kind = "channel"

    def __init__(self, channels: int):
        ones = torch.full((channels, 1), 1.0 / math.sqrt(channels), dtype=torch.float64)
        rest = torch.randn(channels, channels - 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.cat([ones, rest], dim=1))
        self.q = q * torch.sign(q[0, 0])  # first column +1/√C (QR may flip it)
        s = torch.zeros(1, channels, 1, 1, dtype=torch.float64)
        s[0, 0] = 1.0 / math.sqrt(channels)
        super().__init__(s)

    def _q(self, t):
        return self.like(t, self.q)

    def to_modes(self, x):
        xw = _w(x)
        return torch.einsum("bchw,cm->bmhw", xw, self._q(xw))

    def from_modes(self, c):
        return torch.einsum("bmhw,cm->bchw", c, self._q(c))


class SeparableSpectrum(Spectrum):
    """H X = A_h X A_wᵀ with A = U S Vᵀ per axis: modes V_hᵀ X V_w, s = s_h ⊗ s_w (H×W)."""

    kind = "separable"

    def __init__(self, v_h, s_h, v_w, s_w):
        self.v_h, self.v_w = v_h, v_w
        super().__init__(s_h[:, None] * s_w[None, :])

    def to_modes(self, x):
        xw = _w(x)
        return self.like(xw, self.v_h).T @ xw @ self.like(xw, self.v_w)

    def from_modes(self, c):
        return self.like(c, self.v_h) @ c @ self.like(c, self.v_w).T


def full_axis_svd(a: torch.Tensor, kept: int):
    """(V, s) of an m×n float64 matrix: V complete n×n, s of length n, zero past the `kept` largest."""
    _, s, vh = torch.linalg.svd(a, full_matrices=True)
    n = a.shape[1]
    s_full = torch.zeros(n, dtype=torch.float64)
    s_full[:kept] = s[:kept]
    return vh.T.contiguous(), s_full


class FourierSpectrum(Spectrum):
    """Circular convolution: modes = orthonormal 2-D DFT (complex, H×W), s = |ĥ| (0 where truncated)."""

    kind = "fourier"

    def to_modes(self, x):
        return torch.fft.fft2(_w(x), norm="ortho")

    def from_modes(self, c):
        return torch.fft.ifft2(c, norm="ortho").real


def full_spectrum_from_half(half: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The h×w fft2 of a real signal from its h×(w//2+1) rfft2 (Hermitian symmetry)."""
    cols = torch.arange(w)
    src = torch.where(cols <= w // 2, cols, w - cols)
    rows = torch.arange(h)
    full = half[:, src]
    mirrored = half[(-rows) % h][:, src].conj()
    return torch.where((cols <= w // 2)[None, :], full, mirrored)


__all__ = ["Spectrum", "IdentitySpectrum", "DiagonalSpectrum", "ChannelSpectrum", "SeparableSpectrum",
           "FourierSpectrum", "full_axis_svd", "full_spectrum_from_half"]
