"""Composition H = outer ∘ inner (e.g. blur, then downsample)."""

from __future__ import annotations

import torch

from .base import LinearOperator, _check_tensor
from .convolution import CirculantOperator
from .downsample_fft import DownsampledCirculant
from .inpainting import Inpainting
from .separable import FusedSeparable
from .simple import Denoise
from .super_resolution import SuperResolution


class _FusedCirculant(CirculantOperator):
    """Product of two truncated spectra; truncation already happened in the parts."""

    def __init__(self, outer, inner, check_input, name):
        super().__init__()
        self.outer, self.inner, self._check_in, self.name = outer, inner, check_input, name

    def _raw_spectrum(self, h, w):
        return self.outer.transfer_function(h, w) * self.inner.transfer_function(h, w)

    def check_input(self, shape, what="image"):
        self._check_in(shape, what)


class Compose(LinearOperator):
    """H = outer ∘ inner: y = outer(inner(x)).

    H = outer.H · inner.H and Hᵀ = inner.Hᵀ · outer.Hᵀ (exactly, apart from the
    "fused-separable" re-truncation below); ⟨Hx, y⟩ = ⟨x, Hᵀy⟩ always holds.

    The pseudo-inverse is exact (all four Penrose conditions, P an orthogonal projector)
    in these cases, chosen at construction (`self.method`):
      "fused-separable": both parts separable (SuperResolution, GaussianBlur mode="svd",
         SeparableConvolution): the 1-D matrices are multiplied and the SVD recomputed; the
         product is truncated again at the larger of the parts' thresholds, so H equals
         outer(inner(x)) except for product directions with gain below that threshold.
      "fused-fft": both parts circular convolutions: spectra multiplied.
      "fused-fft-downsample": box SuperResolution after a circular convolution: exact
         FFT pseudo-inverse through the aliasing sum (operators/downsample_fft.py); low-res
         frequencies with singular value below the blur's threshold are removed from H.
      "fused-mask": two Inpainting masks: one mask, missing where either is missing.
      "identity": one part is Denoise: the other part is used unchanged.
      "chain": H⁺ = inner⁺ · outer⁺, exact when inner has H Hᵀ = c·I (box
         SuperResolution, Colorization) or outer has Hᵀ H = c·I. Proof: then (AB)⁺ = B⁺A⁺.
    Otherwise (e.g. box SR of an inpainted image, bicubic SR after an FFT blur)
    `pinv_exact` is False and pinv / pinv_adjoint / project raise ValueError, because
    inner⁺·outer⁺ is not the Moore–Penrose inverse there and P would not be a projector
    (the C-ΠGDM samplers need one). TReg-style solvers only need forward/adjoint and work.
    Pass allow_inexact_pinv=True to get inner⁺·outer⁺ anyway (an approximation, only
    H⁺-consistency of each part holds).
    """

    def __init__(self, outer: LinearOperator, inner: LinearOperator, allow_inexact_pinv: bool = False):
        for role, op in (("outer", outer), ("inner", inner)):
            if not isinstance(op, LinearOperator):
                raise ValueError(f"Compose {role} must be a LinearOperator, got {type(op).__name__}.")
        self.outer, self.inner = outer, inner
        self.name = f"{outer.name}∘{inner.name}"
        self.allow_inexact_pinv = allow_inexact_pinv
        self.fused: LinearOperator | None = None
        self.threshold = max(getattr(outer, "threshold", 0.0), getattr(inner, "threshold", 0.0))
        if isinstance(inner, Denoise) or isinstance(outer, Denoise):
            self.method = "identity"
            self.fused = outer if isinstance(inner, Denoise) else inner
        elif outer.structure == "separable" and inner.structure == "separable":
            self.method = "fused-separable"
            self.fused = FusedSeparable(outer, inner, self.check_input, self.check_measurement)
        elif outer.structure == "fft" and inner.structure == "fft":
            self.method = "fused-fft"
            self.fused = _FusedCirculant(outer, inner, self.check_input, self.name)
        elif isinstance(outer, SuperResolution) and outer.kernel == "box" and inner.structure == "fft":
            self.method = "fused-fft-downsample"
            self.fused = DownsampledCirculant(inner, outer.factor, getattr(inner, "threshold", 0.0),
                                              self.check_input, self.check_measurement, self.name)
        elif isinstance(outer, Inpainting) and isinstance(inner, Inpainting):
            mo, mi = outer.missing, inner.missing
            if mo.shape[-2:] != mi.shape[-2:] or (mo.shape[0] != mi.shape[0] and 1 not in (mo.shape[0], mi.shape[0])):
                raise ValueError(
                    f"cannot compose inpainting masks of shapes {tuple(mo.shape)} and {tuple(mi.shape)}: "
                    "give both masks the same height/width and batch (or batch 1)."
                )
            self.method = "fused-mask"
            self.fused = Inpainting(torch.maximum(outer.missing, inner.missing), threshold=0.5)
        else:
            self.method = "chain"
        self.pinv_exact = self.method != "chain" or (
            inner.coisometry_scale is not None or outer.isometry_scale is not None
        )
        self.structure = self.fused.structure if self.fused is not None else None
        if self.method == "chain" and inner.coisometry_scale is not None and outer.coisometry_scale is not None:
            self.coisometry_scale = inner.coisometry_scale * outer.coisometry_scale
        if self.method == "chain" and inner.isometry_scale is not None and outer.isometry_scale is not None:
            self.isometry_scale = inner.isometry_scale * outer.isometry_scale
        if self.fused is not None:
            self.coisometry_scale = self.fused.coisometry_scale
            self.isometry_scale = self.fused.isometry_scale

    def describe(self):
        return f"Compose({self.outer.describe()} ∘ {self.inner.describe()})"

    # shapes and checks ---------------------------------------------------------------
    def check_input(self, shape, what="image"):
        self.inner.check_input(shape, what)
        self.outer.check_input(self.inner.output_shape(tuple(shape)), f"{what} after {self.inner.describe()}")

    def check_measurement(self, shape, what="measurement"):
        self.outer.check_measurement(shape, what)
        self.inner.check_measurement(self.outer.input_shape(tuple(shape)), f"{what} mapped back through {self.outer.describe()}")

    def output_shape(self, input_shape):
        return self.outer.output_shape(self.inner.output_shape(tuple(input_shape)))

    def input_shape(self, measurement_shape):
        return self.inner.input_shape(self.outer.input_shape(tuple(measurement_shape)))

    def axis_matrices(self, h, w):
        return self.fused.axis_matrices(h, w) if self.structure == "separable" else None

    def axis_matrix(self, n, axis):
        return self.fused.axis_matrix(n, axis)

    def transfer_function(self, h, w):
        return self.fused.transfer_function(h, w) if self.structure == "fft" else None

    def spectral(self, shape):
        """The fused operator's spectrum (fused separable / FFT / mask, or a Denoise part dropped); None otherwise."""
        self.check_input(tuple(shape))
        return self.fused.spectral(shape) if self.fused is not None else None

    # operator --------------------------------------------------------------------------
    def _require_exact(self):
        if not self.pinv_exact and not self.allow_inexact_pinv:
            raise ValueError(
                f"{self.describe()} has no exact pseudo-inverse in this implementation (inner⁺·outer⁺ is not "
                "the Moore–Penrose inverse here), so P = H⁺H would not be a projector. Use a sampler that "
                "needs only H and Hᵀ (TReg), or build Compose(..., allow_inexact_pinv=True) to accept an approximation."
            )

    def forward(self, x):
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        if self.fused is not None:
            return self.fused.forward(x)
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y):
        _check_tensor(y, "measurement")
        self.check_measurement(tuple(y.shape))
        if self.fused is not None:
            return self.fused.adjoint(y)
        return self.inner.adjoint(self.outer.adjoint(y))

    def pinv(self, y):
        _check_tensor(y, "measurement")
        self.check_measurement(tuple(y.shape))
        if self.fused is not None:
            return self.fused.pinv(y)
        self._require_exact()
        return self.inner.pinv(self.outer.pinv(y))

    def pinv_adjoint(self, x):
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        if self.fused is not None:
            return self.fused.pinv_adjoint(x)
        self._require_exact()
        return self.outer.pinv_adjoint(self.inner.pinv_adjoint(x))

    def project(self, x):
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        if self.fused is not None:
            return self.fused.project(x)
        self._require_exact()
        return self.inner.pinv(self.outer.pinv(self.outer.forward(self.inner.forward(x))))
