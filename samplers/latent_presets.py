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
# benchmarks/results/quality.md ("What preset auto should run"; retrained prior, VAE 23.1 dB): the best row the
# node can express, PSNR first, ties (< 0.05 dB) to the faster row. Enforce Measurement won or tied on every task
# measured. SR ×4, Gaussian deblur, denoising: DDNM (same PSNR as C-ΠGDM, no backward pass). SR ×8: DPS (ζ 1,
# +0.2 dB over C-ΠGDM at its time). Motion deblur: C-ΠGDM 10 steps (+0.06 dB over DDNM). Inpainting: C-ΠGDM 5
# steps without the restart (box hole 16.87 vs 16.64 dB with it; 5 > 10 > 20 steps there). The consistent
# target is within 0.2 dB on the box hole but +4–7 dB on random 70 % masks (~5× the time here); it stays opt-in
# because it backpropagates through the decoder, whose memory with a full-size VAE is not measured.
# Colorization has no latent-grid operator (the node refuses it; TReg is the pack's method there).
_DDNM = {"sampler": "ddnm", "steps": 10, "restarts": 0, "enforce": True}
LATENT_VP: dict[str, dict] = {
    "sr4": _DDNM, "gaussian_deblur": _DDNM, "denoise": _DDNM,
    "sr8": {"sampler": "dps", "steps": 10, "w": 1.0, "restarts": 0, "enforce": True},
    "motion_deblur": {"steps": 10, "restarts": 0, "enforce": True},
    "inpaint": {"steps": 5, "restarts": 0, "enforce": True},
    # σ_y > 0: enforce = the least-change step to the noise level; it lifted or kept every noisy task measured.
    # Noisy deblurring: DPS + enforce (Gaussian 24.61 vs C-ΠGDM 22.25 dB, motion 25.89 vs 24.80).
    **{f"{task}@noisy": {"enforce": True} for task in ("sr4", "sr8", "inpaint")},
    **{f"{task}@noisy": {"sampler": "dps", "steps": 10, "w": 1.0, "restarts": 0, "enforce": True}
       for task in ("gaussian_deblur", "motion_deblur")},
}
# The flow rows: C-ΠGFM preset ± enforce and the inpainting grid (5 steps ≈ 10 steps, faster; the consistent
# target +0.3 dB at 1.8× the time here, far more with a full-size VAE: opt-in).
LATENT_FLOW: dict[str, dict] = {
    **{task: {"enforce": True} for task in ("sr4", "sr8", "gaussian_deblur", "motion_deblur", "denoise")},
    **{f"{task}@noisy": {"enforce": True} for task in ("sr4", "gaussian_deblur", "motion_deblur", "inpaint")},
    "inpaint": {"steps": 5, "enforce": True},
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
