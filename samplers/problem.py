"""The guidance "problem": the seam between samplers and the space they run in.

A problem exposes, in the sampler's *state* space (pixels, a latent surrogate, or a VAE
pixel bridge built by the node layer):

  project(x)          exact orthogonal projector P (= H⁺H for a pixel operator)
  pinv_y              H⁺y, a tensor lying in range(P)
  residual(x0_hat)    u = H⁺y − P x̂0 (a bridge may decode / correct / encode instead)
  noise_cov(x)        M x = H⁺(H⁺)ᵀ x  (only the noisy C-ΠGDM needs it)
  fidelity(x0_hat)    (Hᵀ(y − H x̂0), ‖y − H x̂0‖ per sample)  (only DPS needs it)
  sigma_y             measurement noise std (in the units of y)
  state_measurement() (operator, y) of the measurement in the state space (noise-aware corrections)

Samplers call these with float64 (or float32) tensors; implementations cast as they need.
"""

from __future__ import annotations

import torch


class ProjectorProblem:
    """The shared part: P, the target H⁺y and M from an exact `operator` and `self.pinv_y`."""

    operator = None
    pinv_y: torch.Tensor

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.project(x)

    def residual(self, x0_hat: torch.Tensor) -> torch.Tensor:
        return self.pinv_y.to(x0_hat.dtype) - self.operator.project(x0_hat)

    def noise_cov(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.pinv(self.operator.pinv_adjoint(x))

    def state_measurement(self):
        """(operator, y) with y = H·pinv_y: the measurement as the state-space operator sees it (H H⁺y = y
        for y in range(H)). A pixel problem overrides it with its actual y (noise outside range(H) kept)."""
        return self.operator, self.operator.forward(self.pinv_y)


class OperatorProblem(ProjectorProblem):
    """Pixel-space problem for y = H x0 + σ_y n with an exact `LinearOperator` H."""

    def __init__(self, operator, y: torch.Tensor, sigma_y: float = 0.0):
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise ValueError("measurement y must be a floating-point torch.Tensor.")
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}.")
        self.operator = operator
        self.y = y
        self.sigma_y = float(sigma_y)
        self.pinv_y = operator.pinv(y)

    def state_measurement(self):
        return self.operator, self.y

    def fidelity(self, x0_hat: torch.Tensor):
        r = self.y.to(x0_hat.dtype) - self.operator.forward(x0_hat)
        return self.operator.adjoint(r), r.flatten(1).norm(dim=1)

    def measurement_error(self, x: torch.Tensor) -> torch.Tensor:
        """‖H x − y‖ / ‖y‖ per sample (a diagnostic, not used by samplers)."""
        y = self.y.to(x.dtype)
        return (self.operator.forward(x) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1).clamp_min(1e-30)
