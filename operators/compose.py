"""Composition: Compose(first, second) applies `first`, then `second` (e.g. blur, then downsample)."""

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

    def __init__(self, first, second, check_input, name):
        super().__init__()
        self.first, self.second, self._check_in, self.name = first, second, check_input, name

    def _raw_spectrum(self, h, w):
        return self.second.transfer_function(h, w) * self.first.transfer_function(h, w)

    def check_input(self, shape, what="image"):
        self._check_in(shape, what)


class Compose(LinearOperator):
    """Compose(first, second): y = second(first(x)), i.e. H = second ∘ first.

    H = second.H · first.H and Hᵀ = first.Hᵀ · second.Hᵀ (exactly, apart from the
    "fused-separable" re-truncation below); ⟨Hx, y⟩ = ⟨x, Hᵀy⟩ always holds.

    The pseudo-inverse is exact (all four Penrose conditions, P an orthogonal projector)
    in these cases, chosen at construction (`self.method`):
      "fused-separable": both parts separable (SuperResolution, GaussianBlur mode="svd",
         SeparableConvolution): the 1-D matrices are multiplied and the SVD recomputed; the
         product is truncated again at the larger of the parts' thresholds, so H equals
         second(first(x)) except for product directions with gain below that threshold.
      "fused-fft": both parts circular convolutions: spectra multiplied.
      "fused-fft-downsample": box SuperResolution (second) after a circular convolution: exact
         FFT pseudo-inverse through the aliasing sum (operators/downsample_fft.py); low-res
         frequencies with singular value below the blur's threshold are removed from H.
      "fused-mask": two Inpainting masks: one mask, missing where either is missing.
      "identity": one part is Denoise: the other part is used unchanged.
      "chain": H⁺ = first⁺ · second⁺, exact when first has H Hᵀ = c·I (box
         SuperResolution, Colorization) or second has Hᵀ H = c·I. Proof: then (AB)⁺ = B⁺A⁺.
    Otherwise (e.g. box SR of an inpainted image, bicubic SR after an FFT blur)
    `pinv_exact` is False and pinv / pinv_adjoint / project raise ValueError, because
    first⁺·second⁺ is not the Moore–Penrose inverse there and P would not be a projector
    (the C-ΠGDM samplers need one). TReg-style solvers only need forward/adjoint and work.
    Pass allow_inexact_pinv=True to get first⁺·second⁺ anyway (an approximation, only
    H⁺-consistency of each part holds).
    """

    def __init__(self, first: LinearOperator, second: LinearOperator, allow_inexact_pinv: bool = False):
        for role, op in (("first", first), ("second", second)):
            if not isinstance(op, LinearOperator):
                raise ValueError(f"Compose {role} must be a LinearOperator, got {type(op).__name__}.")
        self.first, self.second = first, second
        self.name = f"{second.name}∘{first.name}"
        self.allow_inexact_pinv = allow_inexact_pinv
        self.fused: LinearOperator | None = None
        self.threshold = max(getattr(second, "threshold", 0.0), getattr(first, "threshold", 0.0))
        if isinstance(first, Denoise) or isinstance(second, Denoise):
            self.method = "identity"
            self.fused = second if isinstance(first, Denoise) else first
        elif second.structure == "separable" and first.structure == "separable":
            self.method = "fused-separable"
            self.fused = FusedSeparable(first, second, self.check_input, self.check_measurement)
        elif second.structure == "fft" and first.structure == "fft":
            self.method = "fused-fft"
            self.fused = _FusedCirculant(first, second, self.check_input, self.name)
        elif isinstance(second, SuperResolution) and second.kernel == "box" and first.structure == "fft":
            self.method = "fused-fft-downsample"
            self.fused = DownsampledCirculant(first, second.factor, getattr(first, "threshold", 0.0),
                                              self.check_input, self.check_measurement, self.name)
        elif isinstance(second, Inpainting) and isinstance(first, Inpainting):
            mo, mi = second.missing, first.missing
            if mo.shape[-2:] != mi.shape[-2:] or (mo.shape[0] != mi.shape[0] and 1 not in (mo.shape[0], mi.shape[0])):
                raise ValueError(
                    f"cannot compose inpainting masks of shapes {tuple(mo.shape)} and {tuple(mi.shape)}: "
                    "give both masks the same height/width and batch (or batch 1)."
                )
            self.method = "fused-mask"
            self.fused = Inpainting(torch.maximum(second.missing, first.missing), threshold=0.5)
        else:
            self.method = "chain"
        self.pinv_exact = self.method != "chain" or (
            first.coisometry_scale is not None or second.isometry_scale is not None
        )
        self.structure = self.fused.structure if self.fused is not None else None
        if self.method == "chain" and first.coisometry_scale is not None and second.coisometry_scale is not None:
            self.coisometry_scale = first.coisometry_scale * second.coisometry_scale
        if self.method == "chain" and first.isometry_scale is not None and second.isometry_scale is not None:
            self.isometry_scale = first.isometry_scale * second.isometry_scale
        if self.fused is not None:
            self.coisometry_scale = self.fused.coisometry_scale
            self.isometry_scale = self.fused.isometry_scale

    def describe(self):
        return f"Compose({self.first.describe()}, then {self.second.describe()})"

    # shapes and checks ---------------------------------------------------------------
    def check_input(self, shape, what="image"):
        self.first.check_input(shape, what)
        self.second.check_input(self.first.output_shape(tuple(shape)), f"{what} after {self.first.describe()}")

    def check_measurement(self, shape, what="measurement"):
        self.second.check_measurement(shape, what)
        self.first.check_measurement(self.second.input_shape(tuple(shape)), f"{what} mapped back through {self.second.describe()}")

    def working_bytes(self, input_shape):
        middle = self.first.output_shape(tuple(input_shape))
        parts = self.first.working_bytes(tuple(input_shape)) + self.second.working_bytes(middle)
        own = self.fused is not None and self.fused is not self.first and self.fused is not self.second
        return parts + (self.fused.working_bytes(tuple(input_shape)) if own else 0)

    def output_shape(self, input_shape):
        return self.second.output_shape(self.first.output_shape(tuple(input_shape)))

    def input_shape(self, measurement_shape):
        return self.first.input_shape(self.second.input_shape(tuple(measurement_shape)))

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
                f"{self.describe()} has no exact pseudo-inverse in this implementation (first⁺·second⁺ is not "
                "the Moore–Penrose inverse here), so P = H⁺H would not be a projector. Use a sampler that "
                "needs only H and Hᵀ (TReg), or build Compose(..., allow_inexact_pinv=True) to accept an approximation."
            )

    def forward(self, x):
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        if self.fused is not None:
            return self.fused.forward(x)
        return self.second.forward(self.first.forward(x))

    def adjoint(self, y):
        _check_tensor(y, "measurement")
        self.check_measurement(tuple(y.shape))
        if self.fused is not None:
            return self.fused.adjoint(y)
        return self.first.adjoint(self.second.adjoint(y))

    def pinv(self, y):
        _check_tensor(y, "measurement")
        self.check_measurement(tuple(y.shape))
        if self.fused is not None:
            return self.fused.pinv(y)
        self._require_exact()
        return self.first.pinv(self.second.pinv(y))

    def pinv_adjoint(self, x):
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        if self.fused is not None:
            return self.fused.pinv_adjoint(x)
        self._require_exact()
        return self.second.pinv_adjoint(self.first.pinv_adjoint(x))

    def project(self, x):
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        if self.fused is not None:
            return self.fused.project(x)
        self._require_exact()
        return self.first.pinv(self.second.pinv(self.second.forward(self.first.forward(x))))
