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

# Per task (and "<task>@noisy" for σ_y > 0), diffusion (vp) and flow, from the run recorded in
# benchmarks/results/quality.md ("What preset auto should run"): the best row the node can express, PSNR first,
# ties (< 0.05 dB) to the faster row. On SR and deblurring the solvers' decoded outputs are identical (the
# latent is pinned by y, see the module doc) and Enforce Measurement decides the result, so DDNM (no backward
# pass, 10 calls) + enforce wins on time (also on denoising); on inpainting the C-ΠGDM preset + enforce is ahead
# of DDNM.
# Colorization has no latent-grid operator (the node refuses it; TReg is the pack's method there).
_DDNM = {"sampler": "ddnm", "steps": 10, "restarts": 0, "enforce": True}
LATENT_VP: dict[str, dict] = {
    "sr4": _DDNM, "sr8": _DDNM, "gaussian_deblur": _DDNM, "motion_deblur": _DDNM, "denoise": _DDNM,
    # inpainting: pixel_bridge / consistent_target + enforce were 0.7 dB better on the box hole at 2.5–5× the
    # time here (the tiny TAESD); on SD's full VAE they cost ~20× a step (benchmarks/results/comfy_overhead.md),
    # so the default stays the latent surrogate; opt in with bridge_mode.
    "inpaint": {"enforce": True},
    # σ_y > 0: enforce = the least-change step to the noise level; it lifted every noisy task measured
    **{f"{task}@noisy": {"enforce": True} for task in ("sr4", "sr8", "gaussian_deblur", "motion_deblur", "inpaint")},
}
# The flow rows: C-ΠGFM preset ± enforce (noiseless; not run with σ_y > 0 for time). Enforce Measurement acts on
# the decoded pixels, whatever model made them; C-ΠGFM's decoded outputs matched C-ΠGDM's on every task measured.
LATENT_FLOW: dict[str, dict] = {
    task: {"enforce": True} for task in ("sr4", "sr8", "gaussian_deblur", "motion_deblur", "inpaint", "denoise",
                                         "sr4@noisy", "sr8@noisy")
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
