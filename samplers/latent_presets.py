"""Preset auto of the all-in-one node on a LATENT model: the analytic presets (presets.py) plus
per-task overrides measured on the learned prior of prior/ (benchmarks/quality.py, log
benchmarks/results/quality.md).

Why a separate table: presets.py was tuned on analytic priors in pixel space. On a latent model the
decoded output can be no better than the VAE's reconstruction, and the latent surrogate of an operator
whose measurement is as fine as the latent grid (SR, blur) is fully determined by E(H⁺y), so what decides
PSNR and ‖Hx−y‖ there is the pixel-space correction after decoding (`enforce`, the Enforce Measurement
step x ← x + H⁺(y − Hx)). Keys besides presets.py's: `enforce` (bool; applied when the node's
enforce_measurement widget is "auto") and `bridge` (applied when bridge_mode is "auto").
"""

from __future__ import annotations

from .presets import preset

# Per task, diffusion (vp) and flow. Values from the run recorded in benchmarks/results/quality.md:
# the method the table ranks best (PSNR, then ‖Hx−y‖/‖y‖) among the pack's methods within the time of
# the default row.
LATENT_VP: dict[str, dict] = {
    task: {"enforce": True} for task in ("sr4", "sr8", "gaussian_deblur", "motion_deblur", "inpaint", "denoise",
                                         "colorize")
}
LATENT_FLOW: dict[str, dict] = {
    task: {"enforce": True} for task in ("sr4", "sr8", "gaussian_deblur", "motion_deblur", "inpaint", "denoise",
                                         "colorize")
}
_DEFAULTS = {"enforce": False, "bridge": "auto"}


def table_key(task: str, sigma_y: float) -> str:
    """The table's key: the task, or "<task>@noisy" for a measurement with σ_y > 0 (denoising is always noisy)."""
    return f"{task}@noisy" if sigma_y > 0 and task != "denoise" else task


def latent_preset(name: str, kind: str, operator, sigma_y: float, image_shape=None) -> dict:
    """presets.preset(...) with the latent-model overrides of its task, plus `enforce` and `bridge`."""
    out = {**_DEFAULTS, **preset(name, kind, operator, sigma_y, image_shape)}
    table = LATENT_VP if kind == "vp" else LATENT_FLOW
    out.update(table.get(table_key(out["task"], sigma_y), {}))
    return out
