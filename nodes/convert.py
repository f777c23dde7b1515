"""ComfyUI IMAGE (B×H×W×C in [0, 1]) ↔ operator tensors (B×C×H×W), and widget-value checks."""

from __future__ import annotations

import math

import torch


def image_to_bchw(image: torch.Tensor, what: str = "image") -> torch.Tensor:
    if image.ndim != 4:
        raise ValueError(f"{what} must be a ComfyUI IMAGE (batch × height × width × channels), got shape {tuple(image.shape)}.")
    if min(image.shape) < 1:
        raise ValueError(f"{what} is empty (shape {tuple(image.shape)}): connect a node that outputs at least one image.")
    x = image.detach().to(device="cpu", dtype=torch.float32).movedim(-1, 1).contiguous()
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or Inf values: fix the node that produced it (or clamp it) before restoring.")
    return x


def bchw_to_image(x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """To a 3-channel ComfyUI IMAGE; 1-channel results are shown as grey."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.movedim(1, -1).to(torch.float32).contiguous()
    return x.clamp(0.0, 1.0) if clamp else x


def check_finite(**values) -> None:
    """NaN passes ComfyUI's min/max validation (every comparison is False): refuse it by name."""
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}: must be a finite number, got {value}. Set the widget to a number (NaN and Inf are not allowed).")
