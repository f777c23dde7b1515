"""Separable operators H X = A_h X A_wᵀ (per channel) with an exact SVD pseudo-inverse.

Only 1-D matrices (n×n at most) are ever formed, never the dense d×d operator.
For A = U S Vᵀ with singular values below `threshold` set to zero (the papers' truncation),
the operator *used as H* is the truncated A_t = U_k S_k V_kᵀ, so that

    A_t⁺ = V_k S_k⁻¹ U_kᵀ,   Π = V_k V_kᵀ = A_t⁺ A_t,

and in 2-D  H⁺ Y = A_h⁺ Y A_w⁺ᵀ,  P X = Π_h X Π_w,  (H⁺)ᵀ X = A_h⁺ᵀ X A_w⁺  exactly.
"""

from __future__ import annotations

import torch

from .base import DeviceCache, LinearOperator
from .spectral import SeparableSpectrum, full_axis_svd

_EPS64 = torch.finfo(torch.float64).eps


def truncated_svd_factors(a: torch.Tensor, threshold: float) -> tuple[torch.Tensor, ...]:
    """(A_t, A_t⁺, Π, kept singular values) of a float64 matrix, keeping s ≥ threshold.

    A relative floor max(m, n)·eps·s_max always applies so numerically-zero singular
    values never get inverted.
    """
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    floor = max(a.shape) * _EPS64 * (float(s[0]) if s.numel() else 0.0)
    keep = (s >= threshold) & (s > floor)
    uk, sk, vk = u[:, keep], s[keep], vh[keep].T
    a_t = (uk * sk) @ vk.T
    a_pinv = (vk / sk) @ uk.T
    proj = vk @ vk.T
    return a_t, a_pinv, proj, sk


class SeparableMatrixOperator(LinearOperator):
    """Base for operators given by one 1-D matrix per axis (see module docstring).

    Subclasses implement `_raw_axis_matrix(n, axis)` (float64, m×n, before truncation)
    and `_axis_out(n, axis)` (m), and set `self.threshold`.
    """

    threshold = 0.0
    structure = "separable"

    def __init__(self):
        self._factors = DeviceCache(self._build_factors)

    # subclass hooks
    def _raw_axis_matrix(self, n: int, axis: int) -> torch.Tensor:
        raise NotImplementedError

    def _axis_out(self, n: int, axis: int) -> int:
        raise NotImplementedError

    def _axis_in(self, m: int, axis: int) -> int:
        raise NotImplementedError

    def _build_factors(self, key):
        axis, n = key
        a_t, a_pinv, proj, s = truncated_svd_factors(self._raw_axis_matrix(n, axis), self.threshold)
        if s.numel() == 0:
            raise ValueError(
                f"{self.describe()}: every singular value along an image axis of {n} pixels is below "
                f"threshold={self.threshold}; lower the threshold (the operator would be zero)."
            )
        return a_t, a_pinv, proj, s

    def singular_values(self, n: int, axis: int = 0) -> torch.Tensor:
        """Kept 1-D singular values along an axis of n pixels (float64, descending)."""
        return self._factors.master((axis, n))[3]

    def axis_matrix(self, n: int, axis: int) -> torch.Tensor:
        """Truncated float64 1-D matrix of H along `axis` (0: height, 1: width) for n pixels."""
        return self._factors.master((axis, n))[0]

    def axis_matrices(self, h: int, w: int):
        return self.axis_matrix(h, 0), self.axis_matrix(w, 1)

    def working_bytes(self, input_shape):
        """Per axis of n pixels (m measured): the m×n matrix, its SVD, A_t, A_t⁺, the n×n projector Π in float64
        and float32 copies, about 8·(m² + 4mn + 2n²) bytes (a ×4 bicubic upscale to 8192² peaked at 2.3 GB)."""
        total = 0
        for axis, n in enumerate(input_shape[-2:]):
            n = int(n)
            m = self._axis_out(n, axis)
            total += 8 * (m * m + 4 * m * n + 2 * n * n)
        return total

    def spectral(self, shape):
        self.check_input(tuple(shape))
        h, w = shape[-2:]

        def build():
            # a separate full SVD (complete V, null space included); the kept count comes from
            # the operator's own factors so both truncate the same directions
            v_h, s_h = full_axis_svd(self._raw_axis_matrix(h, 0), self.singular_values(h, 0).numel())
            v_w, s_w = full_axis_svd(self._raw_axis_matrix(w, 1), self.singular_values(w, 1).numel())
            return SeparableSpectrum(v_h, s_h, v_w, s_w)

        return self._cached_spectrum((h, w), build)

    def _mats(self, h: int, w: int, t: torch.Tensor, which: int):
        fh = self._factors.get((0, h), t.device, t.dtype)[which]
        fw = self._factors.get((1, w), t.device, t.dtype)[which]
        return fh, fw

    def forward(self, x):
        xw = self._in(x, "image")
        ah, aw = self._mats(xw.shape[-2], xw.shape[-1], xw, 0)
        return (ah @ xw @ aw.T).to(x.dtype)

    def adjoint(self, y):
        yw = self._meas(y)
        h, w = self._axis_in(yw.shape[-2], 0), self._axis_in(yw.shape[-1], 1)
        ah, aw = self._mats(h, w, yw, 0)
        return (ah.T @ yw @ aw).to(y.dtype)

    def pinv(self, y):
        yw = self._meas(y)
        h, w = self._axis_in(yw.shape[-2], 0), self._axis_in(yw.shape[-1], 1)
        ph, pw = self._mats(h, w, yw, 1)
        return (ph @ yw @ pw.T).to(y.dtype)

    def pinv_adjoint(self, x):
        xw = self._in(x, "image")
        ph, pw = self._mats(xw.shape[-2], xw.shape[-1], xw, 1)
        return (ph.T @ xw @ pw).to(x.dtype)

    def project(self, x):
        xw = self._in(x, "image")
        qh, qw = self._mats(xw.shape[-2], xw.shape[-1], xw, 2)
        return (qh @ xw @ qw).to(x.dtype)

    def output_shape(self, input_shape):
        b, c, h, w = input_shape
        return (b, c, self._axis_out(h, 0), self._axis_out(w, 1))

    def input_shape(self, measurement_shape):
        b, c, h, w = measurement_shape
        return (b, c, self._axis_in(h, 0), self._axis_in(w, 1))


class FusedSeparable(SeparableMatrixOperator):
    """`first`, then `second`, for two separable operators: 1-D matrices multiplied, SVD recomputed.

    The product is truncated again at the larger of the parts' thresholds: directions
    that survive each part can still combine into a much weaker one, which would make
    H⁺ needlessly ill-conditioned (and float32 identities loose).
    """

    def __init__(self, first: LinearOperator, second: LinearOperator, check_input, check_measurement):
        super().__init__()
        self.first, self.second = first, second
        self._check_in, self._check_meas = check_input, check_measurement
        self.name = f"{second.name}∘{first.name}"
        self.threshold = max(getattr(second, "threshold", 0.0), getattr(first, "threshold", 0.0))

    def _first_out(self, n, axis):
        return self.first.output_shape((1, 1, n, n))[2 + axis]

    def _raw_axis_matrix(self, n, axis):
        m = self._first_out(n, axis)
        a_first = self.first.axis_matrix(n, axis)
        a_second = self.second.axis_matrix(m, axis)
        return a_second @ a_first

    def _axis_out(self, n, axis):
        m = self._first_out(n, axis)
        return self.second.output_shape((1, 1, m, m))[2 + axis]

    def _axis_in(self, m, axis):
        k = self.second.input_shape((1, 1, m, m))[2 + axis]
        return self.first.input_shape((1, 1, k, k))[2 + axis]

    def check_input(self, shape, what="image"):
        self._check_in(shape, what)

    def check_measurement(self, shape, what="measurement"):
        self._check_meas(shape, what)
