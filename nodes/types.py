"""Custom socket types shared by the pack's nodes, and the MEASUREMENT payload."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..operators.base import LinearOperator

OperatorType = io.Custom("INVERSE_OPERATOR")
MeasurementType = io.Custom("MEASUREMENT")


@dataclass(frozen=True)
class Measurement:
    """What a solver needs to know about the observation.

    `y` is H x + noise on the [0, 1] image scale (B×C'×H'×W', CPU float32), `image_shape` the
    B×C×H×W shape of the unknown image x, `sigma_y` the noise std on the [0, 1] scale.
    """

    y: torch.Tensor
    operator: LinearOperator
    sigma_y: float
    image_shape: tuple[int, int, int, int]

    @property
    def batch(self) -> int:
        return self.image_shape[0]

    def pinv_image(self) -> torch.Tensor:
        """H⁺y (B×C×H×W), the classical baseline and every solver's starting point."""
        return self.operator.pinv(self.y)

    def to_signed(self) -> torch.Tensor:
        """y for the [-1, 1] image scale the models use: H(2x−1) = 2Hx − H(1)."""
        ones = torch.ones(self.image_shape, dtype=self.y.dtype, device=self.y.device)
        return 2.0 * self.y - self.operator.forward(ones)
