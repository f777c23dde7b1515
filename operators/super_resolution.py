"""Super-resolution: H downsamples by an integer factor s (box or bicubic antialiasing)."""

from __future__ import annotations

import math

import torch

from .separable import SeparableMatrixOperator


def keys_cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys cubic convolution kernel (a = −0.5 is MATLAB/PIL 'bicubic'); support |t| < 2."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def bicubic_matrix(n: int, factor: int) -> torch.Tensor:
    """(n/s)×n antialiased bicubic downsampling matrix, block-centred, reflect padding.

    Row m is centred on the middle of block m, c = s·m + (s−1)/2; pixel j gets weight
    cubic((j − c)/s), i.e. the Keys kernel stretched by s (4s taps), normalised to sum 1.
    Indices outside [0, n) are mirrored (j < 0 → −j−1, j ≥ n → 2n−1−j), as in the
    TReg/C-ΠGDM SRConv, so constant images stay constant.
    """
    s = factor
    m = n // s
    offsets = torch.arange(-2 * s, 2 * s, dtype=torch.float64)  # j − s·m − ⌊s/2⌋
    centre_shift = s // 2 - (s - 1) / 2  # 0.5 for even s, 0 for odd s
    taps = keys_cubic((offsets + centre_shift) / s)
    taps = taps / taps.sum()
    a = torch.zeros(m, n, dtype=torch.float64)
    rows = torch.arange(m).repeat_interleave(taps.numel())
    cols = (torch.arange(m)[:, None] * s + s // 2 + offsets.long()[None, :]).reshape(-1)
    cols = torch.remainder(cols, 2 * n)  # mirror-periodic extension
    cols = torch.where(cols >= n, 2 * n - 1 - cols, cols)
    a.index_put_((rows, cols), taps.repeat(m), accumulate=True)
    return a


def box_matrix(n: int, factor: int) -> torch.Tensor:
    """(n/s)×n block-average matrix."""
    return torch.kron(torch.eye(n // factor, dtype=torch.float64), torch.full((1, factor), 1.0 / factor))


class SuperResolution(SeparableMatrixOperator):
    """Downsampling by an integer `factor`; the measurement y is the low-resolution image.

    kernel="box": H = s×s average pooling, Hᵀ = replication / s², H⁺ = nearest
      replication (= s²·Hᵀ, since H Hᵀ = I/s²), (H⁺)ᵀ = s×s sum pooling, P = block mean.
      (`threshold` is irrelevant: every 1-D singular value equals 1/√s.)
    kernel="bicubic": separable Keys (a = −0.5) antialiased bicubic with 4s taps, block
      centred, reflect padding (specs: TReg §4.2, C-ΠGDM §2.2). H⁺ and P come from the SVD
      of the 1-D matrix (H⁺ is the minimum-norm pre-image, not bicubic upsampling).
      Singular values ≤ `threshold` are dropped (default 0 keeps all; they are ≥ 0.17).

    Identities (exact up to rounding): H H⁺ H = H, H⁺ H H⁺ = H⁺, P² = P = Pᵀ, P H⁺ = H⁺,
    H H⁺ = I (full row rank), ⟨Hx, y⟩ = ⟨x, Hᵀy⟩. Image sides must be divisible by `factor`.
    """

    def __init__(self, factor: int, kernel: str = "box", threshold: float = 0.0):
        super().__init__()
        try:
            ok = not isinstance(factor, bool) and int(factor) == factor and int(factor) >= 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"super-resolution factor must be a positive integer, got {factor!r}.")
        factor = int(factor)
        if kernel not in ("box", "bicubic"):
            raise ValueError(f'super-resolution kernel must be "box" or "bicubic", got {kernel!r}.')
        if threshold < 0:
            raise ValueError(f"singular-value threshold must be >= 0, got {threshold}.")
        self.factor, self.kernel, self.threshold = factor, kernel, float(threshold)
        self.name = f"sr{factor}_{kernel}"
        if kernel == "box":
            self.threshold = 0.0
            self.coisometry_scale = 1.0 / factor**2

    def describe(self):
        return f"SuperResolution(factor={self.factor}, kernel={self.kernel!r})"

    def _raw_axis_matrix(self, n, axis):
        if self.kernel == "box":
            return box_matrix(n, self.factor)
        return bicubic_matrix(n, self.factor)

    def _axis_out(self, n, axis):
        return n // self.factor

    def _axis_in(self, m, axis):
        return m * self.factor

    def check_input(self, shape, what="image"):
        super().check_input(shape, what)
        h, w = shape[-2:]
        s = self.factor
        if h % s or w % s:
            def options(n):
                lo, hi = n // s * s, math.ceil(n / s) * s
                return [v for v in dict.fromkeys((lo, hi)) if v > 0]

            sizes = [f"{a}×{b}" for a in options(h) for b in options(w)]
            raise ValueError(
                f"{what} is {h}×{w} but super-resolution factor {s} needs sides divisible by {s}: "
                f"crop or resize the image to {' or '.join(sizes)}."
            )

    def working_bytes(self, input_shape):
        return 0 if self.kernel == "box" else super().working_bytes(input_shape)  # box: no matrices (fast paths)

    # box: pooling/replication fast paths (same maths as the 1-D matrices)
    def _pool(self, x):
        b, c, h, w = x.shape
        s = self.factor
        return x.reshape(b, c, h // s, s, w // s, s).mean(dim=(3, 5))

    def _replicate(self, y):
        b, c, h, w = y.shape
        s = self.factor
        return y[:, :, :, None, :, None].expand(b, c, h, s, w, s).reshape(b, c, h * s, w * s)

    def forward(self, x):
        if self.kernel != "box":
            return super().forward(x)
        return self._pool(self._in(x, "image")).to(x.dtype)

    def adjoint(self, y):
        if self.kernel != "box":
            return super().adjoint(y)
        return (self._replicate(self._meas(y)) / self.factor**2).to(y.dtype)

    def pinv(self, y):
        if self.kernel != "box":
            return super().pinv(y)
        return self._replicate(self._meas(y)).to(y.dtype)

    def pinv_adjoint(self, x):
        if self.kernel != "box":
            return super().pinv_adjoint(x)
        return (self._pool(self._in(x, "image")) * self.factor**2).to(x.dtype)

    def project(self, x):
        if self.kernel != "box":
            return super().project(x)
        return self._replicate(self._pool(self._in(x, "image"))).to(x.dtype)
