"""The one interface every linear degradation implements.

Images are B×C×H×W tensors (ComfyUI's B×H×W×C IMAGE is converted in nodes/ only).
Operators are linear, so they do not care about the value range; the samplers decide it.

Device and dtype are taken from the input on every call: operators build their small
matrices/spectra once in float64 on the CPU and cache a copy per (size, device, dtype).
float16/bfloat16 inputs are computed in float32 and cast back (FFT and small matmuls in
half precision lose the exactness the samplers rely on).
"""

from __future__ import annotations

import torch

_WORK_DTYPES = (torch.float32, torch.float64)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype an operator computes in for inputs of `dtype`."""
    return dtype if dtype in _WORK_DTYPES else torch.float32


class LinearOperator:
    """A linear degradation H with its adjoint and exact pseudo-inverse.

    Subclasses implement `forward`, `adjoint`, `pinv`, `pinv_adjoint` and `output_shape`.
    `project` (P = H⁺H) must be an exact orthogonal projector; override it when a cheaper
    form exists. `check_input` raises ValueError naming the input and the fix.

    Optional structure, used by `Compose` to fuse operators exactly (all default to None):
    `axis_matrices(h, w)` (float64 1-D matrices (A_h, A_w) with H X = A_h X A_wᵀ per channel),
    `transfer_function(h, w)` (rfft2 spectrum of a circular convolution),
    `coisometry_scale` (c with H Hᵀ = c·I) and `isometry_scale` (c with Hᵀ H = c·I).
    `spectral(shape)`: the SVD H = U diag(s) Vᵀ as a `Spectrum`, where one is cheap.
    """

    name = "operator"
    pinv_exact = True  # False only for Compose cases without an exact pseudo-inverse
    structure: str | None = None  # "separable" (axis_matrices) or "fft" (transfer_function)
    coisometry_scale: float | None = None
    isometry_scale: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # H
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # Hᵀ
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:  # H⁺
        raise NotImplementedError

    def pinv_adjoint(self, x: torch.Tensor) -> torch.Tensor:  # (H⁺)ᵀ
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:  # P = H⁺H
        return self.pinv(self.forward(x))

    def axis_matrices(self, h: int, w: int):
        """float64 CPU (A_h, A_w) with H X = A_h X A_wᵀ per channel, or None."""
        return None

    def transfer_function(self, h: int, w: int):
        """rfft2 spectrum (complex128, h×(w//2+1)) if H is a circular convolution, else None."""
        return None

    def spectral(self, shape: tuple[int, ...]):
        """`Spectrum` (V, s) of H on images of `shape` (operators/spectral.py), or None if H has no cheap one."""
        return None

    def _cached_spectrum(self, key, build):
        cache = self.__dict__.setdefault("_spectrum_cache", {})
        if key not in cache:
            cache[key] = build()
        return cache[key]

    def working_bytes(self, input_shape: tuple[int, ...]) -> int:
        """Memory (bytes) that applying H and H⁺ to images of `input_shape` needs beyond the images themselves:
        the operator's own matrices (0 unless it builds large ones), for callers that refuse what cannot fit."""
        return 0

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of H x for an input of `input_shape` (B, C, H, W)."""
        raise NotImplementedError

    def input_shape(self, measurement_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of Hᵀ y (and H⁺ y) for a measurement of `measurement_shape`."""
        raise NotImplementedError

    def check_input(self, shape: tuple[int, ...], what: str = "image") -> None:
        """Raise ValueError (naming `what` and the fix) if H cannot act on `shape`."""
        if len(shape) != 4:
            raise ValueError(
                f"{what} must be a B×C×H×W batch, got shape {tuple(shape)}. "
                "Add the missing batch/channel dimensions (e.g. x[None] or x.permute(0, 3, 1, 2) for a ComfyUI IMAGE)."
            )
        if min(shape) < 1:
            raise ValueError(f"{what} has an empty dimension: shape {tuple(shape)}.")

    def check_measurement(self, shape: tuple[int, ...], what: str = "measurement") -> None:
        """Raise ValueError if Hᵀ / H⁺ cannot act on a measurement of `shape`."""
        LinearOperator.check_input(self, shape, what)

    def describe(self) -> str:
        """One line for node UIs and error messages."""
        return self.name

    def __repr__(self) -> str:
        return self.describe()

    def to(self, device=None, dtype=None) -> "LinearOperator":
        """Operators follow their inputs' device/dtype lazily; kept for API symmetry."""
        return self

    def measure(
        self,
        x: torch.Tensor,
        sigma_y: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """y = H x + σ_y·n with n ~ N(0, I) drawn from `generator` (same seed → same y)."""
        if not sigma_y >= 0:  # also refuses NaN
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}. Use 0 for a noiseless measurement.")
        _check_tensor(x, "image")
        self.check_input(tuple(x.shape))
        y = self.forward(x)
        if sigma_y > 0:
            noise = torch.randn(y.shape, generator=generator, device="cpu", dtype=torch.float32)
            y = y + sigma_y * noise.to(device=y.device, dtype=y.dtype)
        return y

    # helpers for subclasses -------------------------------------------------------------
    def _in(self, x: torch.Tensor, what: str = "image") -> torch.Tensor:
        """Validate an image-space tensor and return it in the working dtype."""
        _check_tensor(x, what)
        self.check_input(tuple(x.shape), what)
        return x.to(work_dtype(x.dtype))

    def _meas(self, y: torch.Tensor, what: str = "measurement") -> torch.Tensor:
        """Validate a measurement-space tensor and return it in the working dtype."""
        _check_tensor(y, what)
        self.check_measurement(tuple(y.shape), what)
        return y.to(work_dtype(y.dtype))


def _check_tensor(x, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got {x.dtype}. Convert it with .float().")


class DeviceCache:
    """float64 CPU master tensors, copied once per (key, device, dtype)."""

    def __init__(self, build):
        self._build = build  # key -> tuple of float64/complex128 CPU tensors
        self._master: dict = {}
        self._copies: dict = {}

    def master(self, key):
        if key not in self._master:
            self._master[key] = self._build(key)
        return self._master[key]

    def get(self, key, device, dtype):
        ck = (key, str(device), dtype)
        if ck not in self._copies:
            cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            self._copies[ck] = tuple(
                t.to(device=device, dtype=cdtype if t.is_complex() else dtype) for t in self.master(key)
            )
        return self._copies[ck]
