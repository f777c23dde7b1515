"""Per-task × per-family starting settings for the conjugate solvers.

Diffusion (VP), noiseless: the weight schedule ω(t) = w + k/σ_t² (samplers/cpgdm.py) with w, k
per task from the sweep in benchmarks/weight_sweep.py (log: benchmarks/results/weight_sweep.md) and
checked on held-out cases (benchmarks/results/analytic_posterior.md): SR and motion blur
w = 5, k = 2; Gaussian deblur, colorization and inpainting w = 5, k = 4. Noisy (σ_y > 0): the exact noisy map (noisy="exact", w = 5, k = 2, λ = 0;
benchmarks/results/analytic_noisy.md). Flow: w = 10, B = 0.2, k = 4 (the flow analogue of the
k term; k = 1 when σ_y > 0), 10 steps from σ0 = 0.4, noisy="exact".
`start` is the noise level to start from on the method's clock (VP: VP-SDE time τ; flow:
σ0 = 1 − st). Diffusion tasks without a measured start (SR, deblurring, denoising, compositions)
take it from the operator when the image shape is known (samplers/start_policy.py); inpainting
(0.4, measured with the restart) and colorization (0.6) are fixed.
These were tuned on an analytic prior in pixel space, not on latent models: a starting point.
`sampler` is the method: "conjugate" (C-ΠGDM / C-ΠGFM) or "ddnm" (diffusion only). `restarts`:
noiseless diffusion runs 5 steps, re-noises to τ_r = `restart_start` and runs 5 more
(samplers/restarts.py; better than 10 straight steps on most cases of the benchmark); τ_r = 0.3,
inpainting 0.2 (block hole 0.054 → 0.048, random masks 0.13 → 0.07 at 10 NFE, results/weight_sweep.md);
flow runs have none (not measured).
Noisy diffusion (σ_y > 0) spends the same 10 NFE by task (benchmarks/results/accuracy_limits.md): operators with a
null space (SR, inpainting, colorization, and compositions, which fall back to SR's settings) run 5 steps +
one restart at the noiseless τ_r, because the Wiener/H⁺y start has nothing in that null space and the restart
refills it (tuned: SR×4 1.1× → 0.8× the floor, block hole 6.9× → 5.0×; held out: colorization 5.0× → 2.5×,
75% mask 5.2× → 3.4×); blurs and denoising, whose modes are all measured (weakly), run 10 straight steps: a
restart costs them the second pass's discretization error (deblur 1.6× → 2.5× at τ_r = 0.3, motion blur of
prior B worse at any τ_r), while 10 straight steps beat the old 5 (deblur 3.2× → 1.6×).
"""

from __future__ import annotations

from .. import operators as ops
from .restarts import TAU_RESTART
from .start_policy import choose_start_time

TASKS = ("sr4", "sr8", "inpaint", "gaussian_deblur", "motion_deblur", "denoise", "colorize")
PRESET_NAMES = ("auto",) + TASKS + ("custom",)

_VP = {"steps": 5, "w": 5.0, "lam": 0.0, "k": 4.0, "start": 0.4, "sampler": "conjugate", "noisy": "exact",
       "restarts": 1, "restart_start": TAU_RESTART}
_VP_NOISY = {"steps": 5, "w": 5.0, "lam": 0.0, "k": 2.0, "start": 0.4, "sampler": "conjugate", "noisy": "exact",
             "restarts": 0, "restart_start": TAU_RESTART}
_FLOW = {"steps": 10, "w": 10.0, "lam": 0.2, "k": 4.0, "start": 0.4, "sampler": "conjugate", "noisy": "exact",
         "restarts": 0, "restart_start": TAU_RESTART}
# Noisy diffusion: tasks whose operator has a null space restart once (see the module docstring); the others
# take the 10 NFE as straight steps.
_NOISY_RESTART_TASKS = ("sr4", "sr8", "inpaint", "colorize")
_VP_NOISY_STRAIGHT = {"steps": 10}
# σ_y > 0: k = 1 keeps the residual at that of exact posterior samples (k = 4 fits the noise: residual 0.2×
# theirs on SR ×4; Gaussian deblur from the Wiener start 4.6× the floor vs 7.1×; benchmarks/analytic_noisy.py)
_FLOW_NOISY = {"k": 1.0}

# Noiseless diffusion overrides on top of _VP (measured, see the module docstring).
_TASK_VP = {
    "sr4": {"w": 5.0, "k": 2.0},
    "sr8": {"w": 5.0, "k": 2.0},
    "motion_deblur": {"w": 5.0, "k": 2.0},
    "inpaint": {"w": 5.0, "k": 4.0, "start": 0.4, "restart_start": 0.2},
    "colorize": {"start": 0.6},
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
    if isinstance(operator, ops.Colorization):
        return "colorize"
    return "sr4"  # compositions and others: the main task's settings


def preset(name: str, kind: str, operator, sigma_y: float, image_shape=None) -> dict:
    """{"steps", "w", "lam", "k", "start", "sampler", "noisy", "restarts", "restart_start", "task"} for preset
    `name` ("auto" picks the task).

    With `image_shape` (B, C, H, W), a noiseless diffusion task without a measured start takes it
    from the start policy (more noise when the measurement misses most of the image's low-pass energy).
    """
    if name not in PRESET_NAMES or name == "custom":
        raise ValueError(f"preset: unknown preset {name!r}; choose one of {PRESET_NAMES[:-1]} (or 'custom').")
    if kind not in ("vp", "flow"):
        raise ValueError(f"model family must be 'vp' or 'flow', got {kind!r}.")
    task = detect_task(operator) if name == "auto" else name
    if kind == "flow":
        return {**_FLOW, **(_FLOW_NOISY if sigma_y > 0 else {}), "task": task}
    if sigma_y > 0:
        if task in _NOISY_RESTART_TASKS:
            return {**_VP_NOISY, "restarts": 1,
                    "restart_start": _TASK_VP.get(task, {}).get("restart_start", TAU_RESTART), "task": task}
        return {**_VP_NOISY, **_VP_NOISY_STRAIGHT, "task": task}
    out = {**_VP, **_TASK_VP.get(task, {}), "task": task}
    if image_shape is not None and operator is not None and "start" not in _TASK_VP.get(task, {}):
        out["start"] = choose_start_time(operator, tuple(image_shape), sigma_y)
    return out
