"""Final measurement consistency: move an output onto (or toward) the measurement.

Noiseless:  x ← x + H⁺(y − Hx), after which Hx = y exactly (H H⁺ y = y for y in range(H)).
Noisy:      x ← x + β·H⁺(y − Hx) with β ∈ [0, 1] chosen per sample so that the residual
            ‖Hx − y‖ ends at the noise level σ_y·√m (Morozov's discrepancy principle): fitting
            y more closely than its noise only copies the noise into x, and an output that is
            already within the noise level is left untouched. (H H⁺ is the projector onto
            range(H), so the residual shrinks exactly by (1 − β) for y − Hx in range(H).)
Operators are linear, so this works on any pixel range; the node layer applies it to the
decoded image of latent models.
"""

from __future__ import annotations

import torch


def enforce_measurement(operator, x: torch.Tensor, y: torch.Tensor, sigma_y: float = 0.0) -> torch.Tensor:
    """x moved onto the measurement (σ_y = 0) or to the noise level (σ_y > 0); dtype of x kept."""
    if not sigma_y >= 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}.")
    work = torch.float64 if x.device.type != "mps" else torch.float32
    xw, yw = x.to(work), y.to(device=x.device, dtype=work)
    resid = yw - operator.forward(xw)
    if yw.shape[0] != xw.shape[0] and yw.shape[0] == 1:
        yw = yw.expand(xw.shape[0], *yw.shape[1:])
        resid = yw - operator.forward(xw)
    if sigma_y == 0:
        beta = torch.ones(xw.shape[0], dtype=work, device=x.device)
    else:
        norm = resid.flatten(1).norm(dim=1)
        level = sigma_y * resid[0].numel() ** 0.5
        beta = (1.0 - level / norm.clamp_min(1e-300)).clamp(0.0, 1.0)
    step = operator.pinv(resid)
    return (xw + beta.view(-1, *([1] * (x.ndim - 1))) * step).to(x.dtype)
