"""Pure-torch linear degradation operators (no comfy import).

Every operator provides H (forward), Hᵀ (adjoint), H⁺ (pinv), (H⁺)ᵀ (pinv_adjoint),
P = H⁺H (project), output_shape / input_shape, check_input / check_measurement,
measure(x, sigma_y, generator) and describe(). Images are B×C×H×W.

Identities tested for every operator (tests/unit/test_operators.py), float32 and float64:
⟨Hx, y⟩ = ⟨x, Hᵀy⟩; the four Moore–Penrose conditions (H H⁺ H = H, H⁺ H H⁺ = H⁺,
(H H⁺)ᵀ = H H⁺, (H⁺ H)ᵀ = H⁺ H); P² = P, Pᵀ = P, P H⁺ = H⁺; ⟨H⁺y, x⟩ = ⟨y, (H⁺)ᵀx⟩; H⁺
equals torch.linalg.pinv of the dense H on small sizes. Blurs use the *truncated* H
(weak components removed from H itself), see convolution.py. Compose states its cases.

`op.spectral(shape)` gives the SVD H = U diag(s) Vᵀ (V as to_modes/from_modes, s per mode)
for masks, denoising, colorization, separable SR/blurs, FFT blurs and their fusions; None
for the rest (spectral.py).
"""

from .base import LinearOperator, work_dtype
from .compose import Compose
from .convolution import CirculantOperator, ConvolutionFFT, GaussianBlur, MotionBlur, SeparableConvolution, motion_kernel
from .inpainting import Inpainting
from .latent import to_latent_grid
from .separable import SeparableMatrixOperator
from .simple import Colorization, Denoise
from .spectral import Spectrum
from .super_resolution import SuperResolution

__all__ = [
    "LinearOperator",
    "SeparableMatrixOperator",
    "CirculantOperator",
    "SuperResolution",
    "Inpainting",
    "GaussianBlur",
    "SeparableConvolution",
    "ConvolutionFFT",
    "MotionBlur",
    "motion_kernel",
    "Denoise",
    "Colorization",
    "Compose",
    "to_latent_grid",
    "Spectrum",
    "work_dtype",
]
