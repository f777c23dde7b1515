"""TReg (Kim, Park, Chung, Ye, ICLR 2025): latent diffusion inverse solver, pure torch.

Conventions (ComfyUI, VP models = EPS or V prediction):
- state x = x0 + σ·ε in the model's (scaled) latent space; ᾱ = 1/(1+σ²); the VP latent z = x·√ᾱ.
- `sigmas`: descending, usually ending in 0. Step k goes σ_k → σ_{k+1}; ᾱ_prev = 1/(1+σ_{k+1}²).
- The paper's loop is written in z (treg_spec §1.3); each update below is that formula divided
  by √ᾱ_prev, so it stays in ComfyUI's state and needs no conversion at the model call.

Injected callables (the ComfyUI layer builds them: nodes/treg_sampler.py):
- denoise(x, sigma_B, null_embedding) -> x̂0: CFG-combined prediction (positive cond captured by
  the caller, negative = `null_embedding` B×T×D fp32 or None). sigma_B is σ·ones(B).
- decode(latent) -> pixels B×3×H×W in [-1, 1], unclamped. encode(pixels, generator) -> latent
  (a seeded posterior sample). Both in the sampler's latent space (process_in/out by the caller).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .cg import conjugate_gradient
from .schedules import sigmas_to_list
from .treg_negation import AdaptiveNegation

__all__ = [
    "AdaptiveNegation",
    "SamplingAborted",
    "check_vp_prediction",
    "data_consistency",
    "dc_schedule",
    "seed_generator",
    "treg_sample",
    "AN_LR_BY_TASK",
    "PAPER_DEFAULTS",
    "PAPER_STEPS",
]

PAPER_STEPS = 200
# The official README's settings (treg_spec §5); the loop itself takes any sigmas.
PAPER_DEFAULTS = {
    "steps": PAPER_STEPS,
    "cfg": 5.0,
    "null_prompt": "out of focus, depth of field",
    "dc_every": 3,
    "dc_until": 0.85,
    "cg_iters": 5,
    "lam": 1e-4,  # λ of data consistency (AᵀA + λI); the nodes' widget is still called cg_lambda
    "an_steps": 10,
    "an_lr": 8e-4,
}
AN_LR_BY_TASK = {"super_resolution": 1e-3, "deblur": 5e-4, "default": 8e-4}
VP_PREDICTIONS = ("eps", "v", "vp")  # "vp" = nodes/comfy_bridge.model_kind for both


class SamplingAborted(RuntimeError):
    """Raised when `should_stop()` returned True (user cancel)."""


def check_vp_prediction(prediction: str) -> None:
    """TReg's blend and re-noise are VP formulas: refuse flow (CONST) models clearly."""
    if prediction not in VP_PREDICTIONS:
        raise ValueError(
            f"TReg needs a VP diffusion model (EPS or V prediction, e.g. SD1.5/SDXL); got a "
            f"'{prediction}' model. Flow models (SD3, Flux) are not supported: use the C-PiGFM "
            f"sampler for them."
        )


def dc_schedule(n_steps: int, dc_every: int = 3, dc_until: float = 0.85) -> list[bool]:
    """Which steps run data consistency: k % dc_every == 0 and k < dc_until·n_steps.

    The paper's 200 steps, every 3rd, until 0.85 give k = 0, 3, …, 168 (57 DC steps).
    """
    if dc_every < 1:
        raise ValueError(f"dc_every must be >= 1 (DC every k-th step), got {dc_every}.")
    if not 0.0 <= dc_until <= 1.0:
        raise ValueError(f"dc_until is a fraction of the steps in [0, 1], got {dc_until}.")
    stop = math.ceil(dc_until * n_steps - 1e-9)  # tolerance: 0.85·200 must mean k < 170
    return [k % dc_every == 0 and k < stop for k in range(n_steps)]


def data_consistency(
    x0_pixels: torch.Tensor,
    operator,
    y: torch.Tensor,
    *,
    cg_iters: int = 5,
    lam: float = 1e-4,
    cg_tol: float = 1e-4,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """x_y ≈ argmin ‖y − A x‖² + λ‖x − x̂0‖²: `cg_iters` CG steps on (AᵀA+λI)x = Aᵀy + λx̂0 from x̂0.

    Everything in fp32 or wider (the reference's fp16 matmuls lose ~1e-3). Few iterations on purpose:
    for ill-conditioned A (Gaussian deblur) the early stop is part of the method (treg_spec §2.2).
    """
    dtype = torch.promote_types(x0_pixels.dtype, torch.float32)
    x0 = x0_pixels.detach().to(dtype)
    y = y.detach().to(dtype)
    operator.check_input(tuple(x0.shape), "decoded image")
    b = operator.adjoint(y) + lam * x0
    return conjugate_gradient(
        lambda v: operator.adjoint(operator.forward(v)) + lam * v,
        b,
        x0,
        cg_iters,
        tol=cg_tol,
        should_stop=should_stop,
    )


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)


def treg_sample(
    denoise: Callable,
    sigmas: torch.Tensor,
    x_init: torch.Tensor,
    operator,
    y: torch.Tensor,
    decode: Callable,
    encode: Callable,
    *,
    negation: AdaptiveNegation | None = None,
    dc_every: int = 3,
    dc_until: float = 0.85,
    cg_iters: int = 5,
    lam: float = 1e-4,
    use_dps: bool = False,
    dps_scale: float | None = None,
    dps_denoise: Callable | None = None,
    generator: torch.Generator,
    callback: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    prediction: str = "eps",
) -> torch.Tensor:
    """Run TReg over `sigmas` from the state `x_init` (already noise-scaled); returns the state at sigmas[-1].

    DC step (dc_schedule): x̂0 = denoise → x̂0_pix = decode → x_y = CG → z_y = encode →
    negation.update(x_y) → z̄ = ᾱ'·z_y + (1−ᾱ')·x̂0 → re-noise with σ² = ᾱ'(1−ᾱ') (DDIM form, fresh
    noise from `generator`). Other steps: DDIM η=0, or a DPS step if `use_dps` (step ‖y − A D(x̂0)‖
    gradient, scale `dps_scale` or √ᾱ'; `dps_denoise` defaults to `denoise`, the reference uses the
    null branch only). With sigmas ending in 0 the result is the final x̂0.
    `negation` is reset and expanded to the batch at the start; the denoiser is given its current
    embedding every call. `callback(k, x, x0)` per step (x0 = the data-consistent latent z_y on DC
    steps); `should_stop()` is polled every step and inside CG/AN; True raises SamplingAborted.
    """
    check_vp_prediction(prediction)
    sig = sigmas_to_list(sigmas, "vp", strict=False)
    n_steps = len(sig) - 1
    schedule = dc_schedule(n_steps, dc_every, dc_until)
    if cg_iters < 0:
        raise ValueError(f"cg_iters must be >= 0, got {cg_iters}.")
    if lam < 0:
        raise ValueError(f"lam must be >= 0 (Tikhonov weight), got {lam}.")
    if not isinstance(generator, torch.Generator):
        raise ValueError("generator must be a torch.Generator (all noise is seeded from it).")
    if dps_scale is not None and dps_scale < 0:
        raise ValueError(f"dps_scale must be >= 0 or None (= √ᾱ_prev), got {dps_scale}.")
    if y.shape[0] != x_init.shape[0]:
        raise ValueError(
            f"measurement batch {y.shape[0]} differs from latent batch {x_init.shape[0]}; "
            f"give one measurement per latent."
        )

    def check_stop():
        if should_stop is not None and should_stop():
            raise SamplingAborted("TReg sampling was stopped.")

    if negation is not None:
        negation.reset()
        negation.expand_to_batch(x_init.shape[0])
    # fp32 at least (fp16 models still give an fp32 loop, as ComfyUI's samplers); fp64 kept.
    x = x_init.detach().to(torch.promote_types(x_init.dtype, torch.float32))
    ones = x.new_ones(x.shape[0])
    for k in range(n_steps):
        check_stop()
        sigma, sigma_next = sig[k], sig[k + 1]
        if sigma == 0.0:  # already clean: nothing to denoise
            if callback is not None:
                callback(k, x, x)
            continue
        alpha_next = 1.0 / (1.0 + sigma_next**2)
        null = None if negation is None else negation.embedding
        if schedule[k]:
            x0 = denoise(x, sigma * ones, null).to(x.dtype)
            eps = (x - x0) / sigma
            x_y = data_consistency(
                decode(x0), operator, y, cg_iters=cg_iters, lam=lam, should_stop=should_stop
            )
            check_stop()
            z_y = encode(x_y, generator).to(x.dtype)
            if negation is not None:
                negation.update(x_y, should_stop=should_stop)  # used from the next model call on
                check_stop()
            z_bar = alpha_next * z_y + (1.0 - alpha_next) * x0
            noise = _randn_like(x, generator)
            # z' = √ᾱ'·z̄ + (1−ᾱ')·ε̂ + √(ᾱ'(1−ᾱ'))·n, divided by √ᾱ' to get back to x.
            x_next = z_bar + ((1.0 - alpha_next) / math.sqrt(alpha_next)) * eps + math.sqrt(1.0 - alpha_next) * noise
            shown = z_y
        elif use_dps:
            x0, x_next = _dps_step(
                dps_denoise or denoise, x, sigma, sigma_next, null, operator, y, decode, dps_scale
            )
            shown = x0
        else:
            x0 = denoise(x, sigma * ones, null).to(x.dtype)
            eps = (x - x0) / sigma
            x_next = x0 + sigma_next * eps  # DDIM η=0: z' = √ᾱ'ẑ0 + √(1−ᾱ')ε̂, over √ᾱ'
            shown = x0
        if callback is not None:
            callback(k, x, shown)
        x = x_next
    return x.to(x_init.dtype)


def _dps_step(denoise, x, sigma, sigma_next, null, operator, y, decode, scale):
    """DDIM step minus scale·∂‖y − A D(x̂0)‖/∂z (per item, non-squared norm as the reference).

    The reference differentiates w.r.t. the VP latent z = x·√ᾱ; ∂/∂z = (∂/∂x)/√ᾱ, and the update
    is divided by √ᾱ' to return to x.
    """
    alpha = 1.0 / (1.0 + sigma**2)
    alpha_next = 1.0 / (1.0 + sigma_next**2)
    if scale is None:
        scale = math.sqrt(alpha_next)
    with torch.inference_mode(False), torch.enable_grad():
        x_leaf = x.detach().clone().requires_grad_(True)
        null_in = None if null is None else null.detach().clone()
        x0 = denoise(x_leaf, sigma * x_leaf.new_ones(x.shape[0]), null_in).to(x.dtype)
        pixels = decode(x0)
        pixels = pixels.to(torch.promote_types(pixels.dtype, torch.float32))
        residual = y.detach().clone().to(pixels.dtype) - operator.forward(pixels)
        loss = residual.flatten(1).norm(dim=1).sum()  # per-item norms: items stay independent
        (grad,) = torch.autograd.grad(loss, x_leaf)
        x0 = x0.detach()
        grad = grad.detach()
    eps = (x - x0) / sigma
    x_next = x0 + sigma_next * eps - (scale / math.sqrt(alpha * alpha_next)) * grad
    return x0, x_next


def seed_generator(seed: int | None) -> torch.Generator:
    """CPU generator for TReg's own noise, decorrelated from ComfyUI's initial noise of the same seed."""
    seed = 0 if seed is None else int(seed)
    return torch.Generator(device="cpu").manual_seed((seed * 6364136223846793005 + 1442695040888963407) % 2**63)
