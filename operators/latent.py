"""Nearest latent-grid analogue of a pixel-space operator (for a VAE that downscales by 8).

A latent diffusion model's pixel→latent map is nonlinear, so no latent operator is exact;
these analogues let a sampler apply a cheap constraint directly on the latent grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LinearOperator
from .compose import Compose
from .convolution import ConvolutionFFT, GaussianBlur
from .inpainting import Inpainting
from .simple import Colorization, Denoise
from .super_resolution import SuperResolution


def to_latent_grid(op: LinearOperator, downscale: int = 8) -> LinearOperator:
    """Latent-grid analogue of `op` for a VAE with spatial `downscale`.

    Inpainting → Inpainting whose latent cell is missing if *any* pixel under it is missing
      (max-pool of the missing mask; edge pixels beyond a multiple of `downscale` are
      dropped, as the VAE encoder crops them).
    SuperResolution(s) → box SuperResolution(s/downscale) when s is a multiple of
      `downscale` (the bicubic kernel becomes box: approximate); for s < downscale the
      measurement is finer than the latent grid, so the analogue is Denoise (the latent
      of the upsampled measurement is itself the constraint); other s → ValueError.
    Denoise → Denoise.  GaussianBlur(σ) → GaussianBlur(σ/downscale), same mode and threshold
      (approximate).  MotionBlur / ConvolutionFFT → ConvolutionFFT of the kernel
      area-averaged by `downscale` (approximate).
    Compose → Compose of the analogues (a Denoise part drops out).
    Colorization → ValueError (channel mixing has no latent-grid counterpart).
    """
    if int(downscale) != downscale or downscale < 1:
        raise ValueError(f"latent downscale must be a positive integer, got {downscale}.")
    d = int(downscale)
    if isinstance(op, Denoise):
        return Denoise()
    if isinstance(op, Inpainting):
        missing = op.missing
        h, w = missing.shape[-2:]
        if h < d or w < d:
            raise ValueError(f"inpainting mask {h}×{w} is smaller than one latent cell ({d}×{d}): use a larger mask/image.")
        latent_missing = F.max_pool2d(missing, kernel_size=d, stride=d)
        return Inpainting(latent_missing[:, 0], threshold=0.5)
    if isinstance(op, SuperResolution):
        s = op.factor
        if s % d == 0:
            return SuperResolution(s // d, kernel="box")
        if s < d:
            return Denoise()
        lo, hi = s // d * d, (s // d + 1) * d
        raise ValueError(
            f"super-resolution factor {s} has no latent-grid analogue for a VAE downscale of {d}: "
            f"use a factor below {d} or a multiple of {d} (e.g. {lo} or {hi})."
        )
    if isinstance(op, GaussianBlur):
        return GaussianBlur(op.sigma / d, threshold=op.threshold, mode=op.mode)
    if isinstance(op, ConvolutionFFT):  # MotionBlur included
        k = op.kernel
        kh, kw = k.shape
        ph, pw = (-kh) % d, (-kw) % d
        k = F.pad(k[None, None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        small = F.avg_pool2d(k, kernel_size=d)[0, 0]
        return ConvolutionFFT(small, threshold=op.threshold)
    if isinstance(op, Compose):
        first, second = to_latent_grid(op.first, d), to_latent_grid(op.second, d)
        if isinstance(first, Denoise):
            return second
        if isinstance(second, Denoise):
            return first
        return Compose(first, second, allow_inexact_pinv=op.allow_inexact_pinv)
    if isinstance(op, Colorization):
        raise ValueError(
            "colorization has no latent-grid analogue (the VAE mixes colour channels nonlinearly): "
            "apply it in pixel space (a pixel-space data-consistency sampler such as TReg)."
        )
    raise ValueError(f"no latent-grid analogue is known for {op.describe()}: apply it in pixel space.")


__all__ = ["to_latent_grid"]
