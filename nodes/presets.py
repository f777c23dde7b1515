"""Per-task × per-family starting settings for the conjugate solvers.

Starting points are the papers' tuned defaults (cpgdm spec §7): VP noiseless w = 15, λ = 0,
5 steps from τ = 0.4; VP noisy (σ_y > 0) w = 2, λ = −0.15; flow w = 20, B = 0.2, st = 0.6
(start noise 0.4), 10 steps. They were tuned in pixel space on ImageNet/LSUN models, not on
latent models: treat them as a starting point. `start` is the noise level to start from on
the method's clock (VP: VP-SDE time τ; flow: σ0 = 1 − st), 0.4 for both papers.
"""

from __future__ import annotations

from .. import operators as ops

TASKS = ("sr4", "sr8", "inpaint", "gaussian_deblur", "motion_deblur", "denoise")
PRESET_NAMES = ("auto",) + TASKS + ("custom",)

_VP = {"steps": 5, "w": 15.0, "lam": 0.0, "start": 0.4}
_VP_NOISY = {"steps": 5, "w": 2.0, "lam": -0.15, "start": 0.4}
_FLOW = {"steps": 10, "w": 20.0, "lam": 0.2, "start": 0.4}

# Task overrides on top of the family defaults. Inpainting leaves large regions unconstrained,
# so it starts from more noise (the data-dependent start carries no information in the hole).
_TASK = {
    "inpaint": {"start": 0.6},
}


def detect_task(operator) -> str:
    """The preset task matching an operator (SR factor ≤ 4 → sr4, larger → sr8)."""
    if isinstance(operator, ops.SuperResolution):
        return "sr4" if operator.factor <= 4 else "sr8"
    if isinstance(operator, ops.Inpainting):
        return "inpaint"
    if isinstance(operator, ops.GaussianBlur):
        return "gaussian_deblur"
    if isinstance(operator, ops.ConvolutionFFT):
        return "motion_deblur"
    if isinstance(operator, ops.Denoise):
        return "denoise"
    return "sr4"  # compositions and others: the paper's main-task settings


def preset(name: str, kind: str, operator, sigma_y: float) -> dict:
    """{"steps", "w", "lam", "start"} for preset `name` ("auto" picks the task from the operator)."""
    if name not in PRESET_NAMES or name == "custom":
        raise ValueError(f"preset: unknown preset {name!r}; choose one of {PRESET_NAMES[:-1]} (or 'custom').")
    if kind not in ("vp", "flow"):
        raise ValueError(f"model family must be 'vp' or 'flow', got {kind!r}.")
    task = detect_task(operator) if name == "auto" else name
    base = _FLOW if kind == "flow" else (_VP_NOISY if sigma_y > 0 else _VP)
    return {**base, **_TASK.get(task, {}), "task": task}
