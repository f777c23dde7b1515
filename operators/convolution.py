"""Blur operators: FFT circular convolution and separable zero-padded (SVD) convolution.

Truncation choice (both forms): spectral components whose gain is below `threshold`
are removed from H itself, not only from H⁺. H is then the truncated operator, exactly as
the TReg / C-ΠGDM Gaussian deblurring operator (SVD-truncated), so H H⁺ H = H,
H⁺ H H⁺ = H⁺ and P = H⁺H is an exact orthogonal projector. A measurement made with a plain
(untruncated) convolution differs from H x only in those weak components.
"""

from __future__ import annotations

import math

import torch

from .base import DeviceCache, LinearOperator, _check_tensor
from .separable import SeparableMatrixOperator
from .spectral import FourierSpectrum, full_spectrum_from_half

_EPS64 = torch.finfo(torch.float64).eps


def _check_threshold(threshold: float) -> float:
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}.")
    return float(threshold)


def gaussian_taps(sigma: float, kernel_size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian, taps at t = −⌊k/2⌋ … k−1−⌊k/2⌋ (centre tap at index ⌊k/2⌋)."""
    t = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def default_gaussian_size(sigma: float) -> int:
    return 2 * math.ceil(4 * sigma) + 1  # ±4σ: the dropped tail is < 1e-4 of the mass


class CirculantOperator(LinearOperator):
    """Any circular convolution given by its rfft2 spectrum `_raw_spectrum(h, w)`.

    With K the spectrum and keep = (|K| ≥ threshold):
      H = F⁻¹ (K·keep) F,  Hᵀ = F⁻¹ conj(K·keep) F,  H⁺ = F⁻¹ (keep·conj(K)/|K|²) F,
      (H⁺)ᵀ = F⁻¹ (keep·K/|K|²) F,  P = F⁻¹ keep F.
    H uses the truncated spectrum (see module docstring). Components with |K| at the
    rounding floor are always dropped so nothing is divided by ~0.
    Identities: all four Penrose conditions, P² = P = Pᵀ, P H⁺ = H⁺, ⟨Hx, y⟩ = ⟨x, Hᵀy⟩.
    """

    structure = "fft"
    threshold = 0.0

    def __init__(self):
        self._spectra = DeviceCache(self._build_spectra)

    def _raw_spectrum(self, h: int, w: int) -> torch.Tensor:
        raise NotImplementedError

    def _build_spectra(self, key):
        h, w = key
        k = self._raw_spectrum(h, w)
        mag = k.abs()
        floor = h * w * _EPS64 * float(mag.max())
        keep = (mag >= self.threshold) & (mag > floor)
        if not keep.any():
            raise ValueError(
                f"{self.describe()}: every frequency gain is below threshold={self.threshold:g} on a {h}×{w} "
                "image; lower the threshold."
            )
        safe = torch.where(keep, k, torch.ones_like(k))
        k_t = torch.where(keep, k, torch.zeros_like(k))
        k_pinv = torch.where(keep, 1.0 / safe, torch.zeros_like(k))
        return k_t, k_pinv, keep.to(torch.float64)

    def transfer_function(self, h: int, w: int) -> torch.Tensor:
        """Truncated rfft2 spectrum (complex128, h×(w//2+1)) of H on an h×w grid."""
        return self._spectra.master((h, w))[0]

    def spectral(self, shape):
        self.check_input(tuple(shape))
        h, w = shape[-2:]
        build = lambda: FourierSpectrum(full_spectrum_from_half(self.transfer_function(h, w), h, w).abs())  # noqa: E731
        return self._cached_spectrum((h, w), build)

    def kept_fraction(self, h: int, w: int) -> float:
        """Fraction of the full 2-D spectrum that H keeps (rank(H) / (h·w))."""
        keep = self._spectra.master((h, w))[2]
        full = torch.cat([keep, keep[:, 1 : (w + 1) // 2]], dim=1)  # count the mirrored half too
        return float(full.mean())

    def check_measurement(self, shape, what="measurement"):
        self.check_input(shape, what)

    def _filter(self, t: torch.Tensor, what: str, which: int, conj: bool) -> torch.Tensor:
        tw = self._in(t, what) if what == "image" else self._meas(t, what)
        h, w = tw.shape[-2:]
        spec = self._spectra.get((h, w), tw.device, tw.dtype)[which]
        if conj:
            spec = spec.conj()
        out = torch.fft.irfft2(torch.fft.rfft2(tw) * spec, s=(h, w))
        return out.to(t.dtype)

    def forward(self, x):
        return self._filter(x, "image", 0, False)

    def adjoint(self, y):
        return self._filter(y, "measurement", 0, True)

    def pinv(self, y):
        return self._filter(y, "measurement", 1, False)

    def pinv_adjoint(self, x):
        return self._filter(x, "image", 1, True)

    def project(self, x):
        return self._filter(x, "image", 2, False)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def input_shape(self, measurement_shape):
        return tuple(measurement_shape)


class ConvolutionFFT(CirculantOperator):
    """Circular 2-D convolution with a kernel (normalised to sum 1), in the Fourier domain.

    The kernel centre is pixel (⌊kh/2⌋, ⌊kw/2⌋); each channel is convolved separately.
    Formulas and identities: CirculantOperator. threshold=0 gives the plain circular
    convolution. The kernel must fit in the image (circular wrap-around would alias it).
    """

    name = "convolution"

    def __init__(self, kernel: torch.Tensor, threshold: float = 3e-2):
        super().__init__()
        _check_tensor(kernel, "blur kernel")
        k = kernel.detach().to(device="cpu", dtype=torch.float64)
        while k.ndim > 2 and k.shape[0] == 1:
            k = k[0]
        if k.ndim != 2:
            raise ValueError(
                f"blur kernel must be a 2-D kh×kw tensor, got shape {tuple(kernel.shape)}. "
                "For a kernel image average its channels first (e.g. image[0].mean(-1))."
            )
        if not torch.isfinite(k).all() or k.sum() <= 0:
            raise ValueError("blur kernel must be finite with a positive sum (it is normalised to sum 1).")
        self.kernel = k / k.sum()
        self.threshold = _check_threshold(threshold)

    def describe(self):
        kh, kw = self.kernel.shape
        return f"ConvolutionFFT(kernel {kh}×{kw}, threshold={self.threshold:g})"

    def _raw_spectrum(self, h: int, w: int) -> torch.Tensor:
        kh, kw = self.kernel.shape
        psf = torch.zeros(h, w, dtype=torch.float64)
        psf[:kh, :kw] = self.kernel
        psf = torch.roll(psf, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        return torch.fft.rfft2(psf)

    def check_input(self, shape, what="image"):
        super().check_input(shape, what)
        kh, kw = self.kernel.shape
        if kh > shape[-2] or kw > shape[-1]:
            raise ValueError(
                f"blur kernel {kh}×{kw} is larger than the {what} ({shape[-2]}×{shape[-1]}): "
                "use a smaller kernel (kernel_size / sigma / length) or a larger image."
            )


def _splat(points: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear splat of (N, 2) (row, col) points, relative to the centre, into size×size."""
    k = torch.zeros(size, size, dtype=torch.float64)
    p = points + size // 2
    p0 = p.floor()
    frac = p - p0
    for dr in (0, 1):
        for dc in (0, 1):
            wgt = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
            r, c = p0[:, 0].long() + dr, p0[:, 1].long() + dc
            ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            k.index_put_((r[ok], c[ok]), wgt[ok], accumulate=True)
    return k


def motion_kernel(length: float, angle: float = 0.0, seed: int | None = None, kernel_size: int | None = None):
    """Motion-blur kernel: a straight line of `length` px at `angle` degrees (counter-clockwise
    from the +x axis), or, with `seed`, a random smooth camera-shake trajectory whose
    largest extent is `length` px (rotated by `angle`). Sums to 1."""
    if kernel_size is None:
        kernel_size = 2 * math.ceil((length + 2) / 2) + 1
    theta = math.radians(angle)
    if seed is None:
        t = torch.linspace(-length / 2, length / 2, max(2, math.ceil(8 * length) + 1), dtype=torch.float64)
        pts = torch.stack([-t * math.sin(theta), t * math.cos(theta)], dim=1)
    else:
        g = torch.Generator().manual_seed(int(seed))
        steps = 64
        # velocity = initial direction + integrated random accelerations (a smooth random walk)
        acc = torch.randn(steps, 2, generator=g, dtype=torch.float64) * 0.35
        vel = torch.tensor([[1.0, 0.0]], dtype=torch.float64) + torch.cumsum(acc, dim=0) / math.sqrt(steps)
        xy = torch.cat([torch.zeros(1, 2, dtype=torch.float64), torch.cumsum(vel, dim=0)])  # (x, y up)
        rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
        xy = xy @ rot.T
        path = torch.stack([-xy[:, 1], xy[:, 0]], dim=1)  # (row, col)
        extent = (path.max(0).values - path.min(0).values).max().clamp_min(1e-12)
        path = (path - (path.max(0).values + path.min(0).values) / 2) * (length / extent)
        # dense samples along the polyline so the splat has no gaps
        n_sub = max(2, math.ceil(8 * length / steps) + 1)
        s = torch.linspace(0, 1, n_sub, dtype=torch.float64)[None, :, None]
        pts = (path[:-1, None] * (1 - s) + path[1:, None] * s).reshape(-1, 2)
    k = _splat(pts, kernel_size)
    return k / k.sum()


class MotionBlur(ConvolutionFFT):
    """Motion blur (circular FFT convolution): a line of `length` px at `angle` degrees, or
    a seeded random trajectory when `seed` is given. Same identities as ConvolutionFFT."""

    name = "motion_blur"

    def __init__(self, length: float, angle: float = 0.0, seed: int | None = None, kernel_size: int | None = None,
                 threshold: float = 3e-2):
        if not length > 0:
            raise ValueError(f"motion blur length must be > 0 pixels, got {length}.")
        if kernel_size is not None and (int(kernel_size) != kernel_size or kernel_size < 1):
            raise ValueError(f"motion blur kernel_size must be a positive integer, got {kernel_size}.")
        if kernel_size is not None and kernel_size < length:
            raise ValueError(
                f"motion blur kernel_size {kernel_size} is shorter than the blur length {length}: "
                "use kernel_size >= length + 2 or leave it empty (automatic)."
            )
        self.length, self.angle, self.seed = float(length), float(angle), seed
        super().__init__(motion_kernel(length, angle, seed, kernel_size), threshold)

    def describe(self):
        kind = f"seed={self.seed}" if self.seed is not None else f"angle={self.angle:g}"
        return f"MotionBlur(length={self.length:g}, {kind}, threshold={self.threshold:g})"


class SeparableConvolution(SeparableMatrixOperator):
    """Separable blur with zero padding: H X = G_h X G_wᵀ, G[i, j] = k[j − i + ⌊k/2⌋]
    (out-of-image taps dropped, not renormalised), with 1-D singular values below
    `threshold` removed from H (SVD truncation, as in the papers). Identities: see
    operators/separable.py (all four Penrose conditions, exact P). Kernels longer than the
    image are allowed (the zero-padded matrix is still well defined)."""

    name = "separable_blur"

    def __init__(self, kernel_h: torch.Tensor, kernel_w: torch.Tensor | None = None, threshold: float = 3e-2):
        super().__init__()
        self.taps = [kernel_h.to(torch.float64).cpu(), (kernel_w if kernel_w is not None else kernel_h).to(torch.float64).cpu()]
        self.threshold = _check_threshold(threshold)

    def _raw_axis_matrix(self, n, axis):
        k = self.taps[axis]
        i = torch.arange(n)
        d = i[None, :] - i[:, None] + k.numel() // 2  # j − i + centre
        ok = (d >= 0) & (d < k.numel())
        return torch.where(ok, k[d.clamp(0, k.numel() - 1)], torch.zeros((), dtype=torch.float64))

    def _axis_out(self, n, axis):
        return n

    def _axis_in(self, m, axis):
        return m

    def kept_fraction(self, h: int, w: int) -> float:
        return self.singular_values(h, 0).numel() * self.singular_values(w, 1).numel() / (h * w)


class GaussianBlur(LinearOperator):
    """Gaussian blur with standard deviation `sigma` px.

    mode="svd" (default): SeparableConvolution, zero padding, 1-D singular values below
      `threshold` removed from H (the TReg / C-ΠGDM operator, without the DDRM ordering bug).
    mode="fft": ConvolutionFFT (circular), frequency gains below `threshold` removed from H.
    kernel_size defaults to 2·⌈4σ⌉+1. Identities: all four Penrose conditions, exact P.
    """

    name = "gaussian_blur"

    def __init__(self, sigma: float, kernel_size: int | None = None, threshold: float = 3e-2, mode: str = "svd"):
        if not sigma > 0:
            raise ValueError(f"Gaussian blur sigma must be > 0 pixels, got {sigma}.")
        if mode not in ("svd", "fft"):
            raise ValueError(f'Gaussian blur mode must be "svd" or "fft", got {mode!r}.')
        if kernel_size is None:
            kernel_size = default_gaussian_size(sigma)
        if int(kernel_size) != kernel_size or kernel_size < 1:
            raise ValueError(f"Gaussian blur kernel_size must be a positive integer, got {kernel_size}.")
        self.sigma, self.kernel_size, self.mode = float(sigma), int(kernel_size), mode
        self.structure = "separable" if mode == "svd" else "fft"
        self.threshold = _check_threshold(threshold)
        taps = gaussian_taps(self.sigma, self.kernel_size)
        if mode == "svd":
            self.impl = SeparableConvolution(taps, taps, threshold)
        else:
            self.impl = ConvolutionFFT(torch.outer(taps, taps), threshold)
        self.kernel = torch.outer(taps, taps)
        self.impl.describe = self.describe  # errors raised inside name this operator

    def describe(self):
        return (f"GaussianBlur(sigma={self.sigma:g}, kernel_size={self.kernel_size}, "
                f"threshold={self.threshold:g}, mode={self.mode!r})")

    def forward(self, x):
        return self.impl.forward(x)

    def adjoint(self, y):
        return self.impl.adjoint(y)

    def pinv(self, y):
        return self.impl.pinv(y)

    def pinv_adjoint(self, x):
        return self.impl.pinv_adjoint(x)

    def project(self, x):
        return self.impl.project(x)

    def output_shape(self, input_shape):
        return self.impl.output_shape(input_shape)

    def input_shape(self, measurement_shape):
        return self.impl.input_shape(measurement_shape)

    def check_input(self, shape, what="image"):
        self.impl.check_input(shape, what)

    def check_measurement(self, shape, what="measurement"):
        self.impl.check_measurement(shape, what)

    def kept_fraction(self, h: int, w: int) -> float:
        return self.impl.kept_fraction(h, w)

    def working_bytes(self, input_shape):
        return self.impl.working_bytes(input_shape)

    def axis_matrices(self, h, w):
        return self.impl.axis_matrices(h, w) if self.mode == "svd" else None

    def axis_matrix(self, n, axis):
        return self.impl.axis_matrix(n, axis)

    def transfer_function(self, h, w):
        return self.impl.transfer_function(h, w) if self.mode == "fft" else None

    def spectral(self, shape):
        return self.impl.spectral(shape)
