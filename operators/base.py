"""The one interface every linear degradation implements.

Images are B×C×H×W tensors (ComfyUI's B×H×W×C IMAGE is converted in nodes/ only).
Operators are linear, so they do not care about the value range; the samplers decide it.
"""

from __future__ import annotations

import torch


class LinearOperator:
    """A linear degradation H with its adjoint and exact pseudo-inverse.

    Subclasses implement `forward`, `adjoint`, `pinv`, `pinv_adjoint` and `output_shape`.
    `project` (P = H⁺H) must be an exact orthogonal projector; override it when a cheaper
    form exists. `check_input` raises ValueError naming the input and the fix.
    """

    name = "operator"

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

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of H x for an input of `input_shape` (B, C, H, W)."""
        raise NotImplementedError

    def check_input(self, shape: tuple[int, ...], what: str = "image") -> None:
        """Raise ValueError (naming `what` and the fix) if H cannot act on `shape`."""
        if len(shape) != 4:
            raise ValueError(f"{what} must be a B×C×H×W batch, got shape {tuple(shape)}.")

    def measure(
        self,
        x: torch.Tensor,
        sigma_y: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """y = H x + σ_y·n with n ~ N(0, I) drawn from `generator` (same seed → same y)."""
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}. Use 0 for a noiseless measurement.")
        self.check_input(tuple(x.shape))
        y = self.forward(x)
        if sigma_y > 0:
            noise = torch.randn(y.shape, generator=generator, device="cpu", dtype=torch.float32)
            y = y + sigma_y * noise.to(device=y.device, dtype=y.dtype)
        return y
