"""C-ΠGDM / C-ΠGFM on the user's own ComfyUI model (category inverse/samplers).

The sampler nodes return a stock SAMPLER (comfy.samplers.KSAMPLER) whose function runs
samplers.cpgdm / samplers.cpgfm on the model's processed latents, with the measurement
mapped to the latent grid (samplers/latent_problem.py explains the approximation).
The all-in-one node builds a stock CFGGuider and calls the very same sampler function.
"""

from __future__ import annotations

import contextlib
import logging
import types
import weakref

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview

from .. import samplers as core
from ..samplers.cpgdm_noisy import problem_spectrum
from ..samplers.latent_problem import BRIDGE_MODES, make_latent_problem
from .convert import bchw_to_image, check_finite, image_to_bchw
from .limits import autograd_fits, check_solver_memory, gigabytes
from .checkpointing import autograd_forward
from .comfy_bridge import (VaeBridge, check_conditioning, grad_enabled, interrupted, is_dynamic,
                           make_differentiable, model_kind, model_sampling_of, vae_downscale)
from .presets import PRESET_NAMES, latent_preset
from .tiling import bridge_for, decode_output, latent_tiles, refuse_decoder_gradient, tile_inputs, tiled_denoiser
from .schema_extras import search_aliases
from .types import Measurement, MeasurementType, check_latent_channels, check_measurement

log = logging.getLogger("comfyui-inverse")

CATEGORY = "inverse/samplers"
VJP_MODES = ("autograd", "finite_difference", "none", "auto")
BRIDGE_CHOICES = ("auto",) + BRIDGE_MODES
START_CHOICES = ("auto", "measurement", "input_latent")
NOISY_CHOICES = ("exact", "paper")
METHODS = ("conjugate", "ddnm", "pigdm", "dps")
SAMPLER_CHOICES = ("auto",) + METHODS  # new choices go last
ENFORCE_CHOICES = ("off", "on", "auto")  # default off: a workflow saved without the widget keeps its behaviour
METHOD = {"vp": "C-ΠGDM (SamplerConjugatePiGDM)", "flow": "C-ΠGFM (SamplerConjugatePiGFM)"}
MAX_RESTARTS = 4

# Chosen by the analytic benchmark (benchmarks/latent_analytic.py): the pixel bridge changed
# the pixel measurement error by < 2% relative on every operator while costing one decode and
# two encodes per step, so "auto" is the latent surrogate everywhere. consistent_target is
# more accurate there but costs ~20 decoder passes and the decoder's gradient memory: opt-in.
AUTO_BRIDGE = "latent_surrogate"


# ---------------------------------------------------------------------------------- core

def resolve_bridge(mode: str) -> str:
    if mode == "auto":
        return AUTO_BRIDGE
    if mode not in BRIDGE_MODES:
        raise ValueError(f"bridge_mode: unknown mode {mode!r}; choose one of {BRIDGE_CHOICES}.")
    return mode


def unstable_settings_error(sigma_y: float, w: float, product: float, exact_available: bool = True,
                            note: str = "") -> ValueError:
    """Noisy C-ΠGDM refused, worded in the widgets' units (the sampler sees the latent σ_y). A plain
    ValueError (the type the UI shows), tagged so the all-in-one node can add what its preset chose.
    exact_available: the latent operator has the spectral form noisy = exact needs (without it, exact
    already fell back to this correction, so suggesting it would not help)."""
    fix = ("Choose noisy = exact (no such limit), lower w or sigma_y," if exact_available else
           "noisy = exact cannot help: this operator has no spectral form (a chain such as a circular blur "
           "then box downsampling), so it falls back to this correction. Lower w or sigma_y, raise the "
           "blur's threshold,")
    error = ValueError(
        f"measurement: sigma_y = {sigma_y:g} (the measurement node's widget) makes C-ΠGDM use its noisy "
        f"correction, which is unstable for this operator at w = {w:g} (max|c3|·‖H⁺(H⁺)ᵀ‖ = {product:.3g}, "
        f"must be < 0.5). {fix} or set sigma_y to 0 (noiseless settings).{note}")
    error.unstable_settings = (sigma_y, w, product, exact_available)
    return error


def _expand_batch(y: torch.Tensor, batch: int) -> torch.Tensor:
    return y if y.shape[0] == batch else y.expand(batch, *y.shape[1:]).contiguous()


def conjugate_sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None, *, family: str,
                               measurement, vae, w: float, lam: float, vjp: str = "autograd",
                               bridge_mode: str = "auto", start: str = "auto", cancel_bias: bool = True,
                               checkpoint: bool = True, k: float = 0.0, method: str = "conjugate",
                               noisy: str = "paper", restarts: int = 0, restart_start: float = core.TAU_RESTART,
                               tile_size: int = 0, tile_overlap: int = 0):
    """KSAMPLER function: C-ΠGDM ('vp') or C-ΠGFM ('flow'), or DDNM (method="ddnm", 'vp'), on the model."""
    extra_args = dict(extra_args or {})
    guider = model.inner_model
    base = guider.inner_model
    kind = _check_family(base, family, method)
    check_latent_channels(x.shape, base.latent_format)
    check_conditioning(guider, base)
    if extra_args.pop("denoise_mask", None) is not None:
        log.warning("comfyui-inverse: the latent's noise_mask is ignored by %s; use the Inpainting Operator "
                    "to say which pixels are unknown.", METHOD[family])
    generator = torch.Generator().manual_seed(int(extra_args.get("seed") or 0))
    # noisy="exact" (the presets' choice) also takes the start policy's point and the noise-aware DDNM;
    # "paper" (the widget default, what an old saved workflow gets) keeps E(H⁺y) and the plain projection
    exact = noisy == "exact"
    tiles = latent_tiles(tile_size, tile_overlap, vae_downscale(vae))  # None = untiled
    problem = _latent_problem(guider, base, measurement, vae, x, bridge_mode, cancel_bias, generator,
                              "policy" if exact else "pinv", tiles)
    x = _start_latent(model, x, sigmas, problem, kind, start, generator)
    vjp = _choose_vjp(guider, base, vjp, family, x, tiles)

    def model_call(xx, s):
        return model(xx, s, denoise_mask=None, **extra_args)

    denoiser = tiled_denoiser(model_call, base, x.shape, tiles, vjp == "autograd", x.device, METHOD[family])
    steps = len(sigmas) - 1
    # restarts re-noise the result to τ_r and sample again on this model's grid (samplers/restarts.py)
    restart_sigmas = (inverse_sigmas(base.model_sampling, steps, restart_start).to(sigmas)
                      if restarts else None)
    current = {"sigmas": sigmas, "offset": 0}

    def report(i, xx, x0):
        if callback is not None:
            s = current["sigmas"][i]
            callback({"i": current["offset"] + i, "denoised": x0, "x": xx, "sigma": s, "sigma_hat": s})

    def sample_with(mode):
        def sample(sig, xx):
            current["offset"] = 0 if sig is sigmas else current["offset"] + steps
            current["sigmas"] = sig
            if method == "ddnm":  # no Jacobian; noise-aware per-mode gain on the latent grid when σ_y > 0 and exact
                return core.ddnm(denoiser, problem, sig, xx, sigma_y=None if exact else 0.0, callback=report,
                                 should_stop=interrupted)
            # autograd keeps every block's activations unless its blocks are checkpointed (recomputed in backward)
            with (autograd_forward(base.diffusion_model, extra_args, checkpoint) if mode == "autograd"
                  else contextlib.nullcontext()):
                if method in ("pigdm", "dps"):  # baselines (samplers/pigdm.py, dps.py): noiseless guidance
                    return _run_baseline(kind, method, denoiser, problem, sig, xx, w, lam, mode, report)
                return _run_method(kind, denoiser, problem, sig, xx, w, lam, mode, report, k, noisy)

        return core.with_restarts(sample, x, sigmas, restart_sigmas, restarts, kind, generator,
                                  should_stop=interrupted)

    try:
        return sample_with(vjp)
    except core.UnstableNoisyCorrection as err:
        exact_available = problem_spectrum(problem, problem.pinv_y) is not None
        raise unstable_settings_error(measurement.sigma_y, w, err.product, exact_available) from err
    except core.AutogradUnavailable as err:
        if _out_of_memory(err.__cause__):  # this size did not fit; a smaller run may: not remembered
            log.warning("comfyui-inverse: %s ran out of memory in the autograd VJP (%s); using the finite-difference "
                        "Jacobian for this run (two extra model calls per step). Tiled mode (tile_size) or "
                        "vjp = finite_difference avoid the attempt.", METHOD[family], err.__cause__)
        else:
            _NO_AUTOGRAD[base.diffusion_model] = True
            log.warning("comfyui-inverse: %s cannot backpropagate through this model (%s); using the "
                        "finite-difference Jacobian instead (two extra model calls per step).", METHOD[family], err)
    # outside the except block, so the failed attempt's tensors (held by its traceback) are freed first
    comfy.model_management.soft_empty_cache()
    return sample_with("finite_difference")


def _out_of_memory(err) -> bool:
    return isinstance(err, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(err).lower()


def _check_family(base, family: str, method: str = "conjugate") -> str:
    """The model's family ('vp' or 'flow'); an error naming the right sampler if it is not `family`."""
    kind = model_kind(base.model_sampling)
    if kind != family and method == "ddnm":
        raise ValueError("sampler: DDNM (SamplerDDNM) works with diffusion models (SD1.5/SDXL) but the model is a "
                         f"rectified-flow (SD3/Flux) model. Use {METHOD['flow']} instead.")
    if kind != family:
        raise ValueError(
            f"sampler: {METHOD[family]} was connected but the model is a "
            f"{'rectified-flow (SD3/Flux)' if kind == 'flow' else 'diffusion (SD1.5/SDXL)'} model. "
            f"Use {METHOD[kind]} instead."
        )
    return kind


def _latent_problem(guider, base, measurement, vae, x, bridge_mode: str, cancel_bias: bool, generator,
                    start_point: str = "pinv", tiles=None):
    """The measurement mapped to the latent grid of `x` (samplers/latent_problem.py), VAE loaded."""
    bridge = bridge_for(vae, base.latent_format, tiles)
    mode = resolve_bridge(bridge_mode)
    bridge.load(also=[guider.model_patcher], grad=(mode == "consistent_target"), what="bridge_mode consistent_target",
                fix="choose bridge_mode latent_surrogate or pixel_bridge")
    check_measurement(measurement, tuple(x.shape), bridge.downscale)
    y = _expand_batch(measurement.to_signed(), x.shape[0]).to(device=x.device, dtype=torch.float32)
    half_vae = bridge.dtype in (torch.float16, torch.bfloat16)
    try:
        with grad_enabled():  # consistent_target backpropagates through the decoder once
            return make_latent_problem(mode, measurement.operator, y, bridge.decode,
                                       bridge.encode, sigma_y_signed=2.0 * measurement.sigma_y,
                                       downscale=bridge.downscale, cancel_bias=cancel_bias, generator=generator,
                                       fd_rel_step=3e-2 if half_vae else 1e-3, should_stop=interrupted,
                                       start_point=start_point)
    except ValueError as err:
        raise ValueError(f"measurement: {err}") from err


def _start_latent(model, x, sigmas, problem, kind: str, start: str, generator) -> torch.Tensor:
    """The latent to start from: the stock noised latent, or the problem's start point (E(H⁺y), or E(W y) by
    the start policy) + seeded noise (see START_CHOICES)."""
    latent_image = getattr(model, "latent_image", None)
    from_latent = latent_image is not None and bool(torch.count_nonzero(latent_image))
    if start == "measurement" or (start == "auto" and not from_latent):
        # data-dependent start from E(H⁺y); the stock path only made seeded noise
        sigma0 = float(sigmas.detach().cpu()[0])
        shim = types.SimpleNamespace(pinv_y=problem.start_latent)
        return core.measurement_start(shim, sigma0, kind, generator=generator, dtype=torch.float32).to(x.dtype)
    return x


def _choose_vjp(guider, base, vjp: str, family: str, x=None, tiles=None) -> str:
    """The Jacobian mode to run with: finite differences for a model whose autograd failed before, or
    whose weights ComfyUI's dynamic VRAM loader streams (nothing can backpropagate through those);
    "auto" = autograd when its estimated step memory fits in free memory, else finite differences."""
    if vjp == "auto":
        fits, needed, free = autograd_fits(base, x.shape, x.device, tiles[0] if tiles else None)
        vjp = "autograd" if fits else "finite_difference"
        log.info("comfyui-inverse: vjp auto → %s (autograd step needs about %s%s, %s free).", vjp, gigabytes(needed),
                 " per tile" if tiles else "", gigabytes(free))
    if vjp == "autograd" and base.diffusion_model in _NO_AUTOGRAD:  # failed before: do not pay the try again
        log.info("comfyui-inverse: %s uses the finite-difference Jacobian for this model (autograd failed on an "
                 "earlier run).", METHOD[family])
        vjp = "finite_difference"
    if vjp == "autograd" and is_dynamic(guider.model_patcher):
        log.info("comfyui-inverse: %s uses the finite-difference Jacobian: ComfyUI's dynamic VRAM streams the "
                 "model's weights, so it cannot be backpropagated (start ComfyUI with --disable-dynamic-vram for "
                 "the exact autograd Jacobian).", METHOD[family])
        vjp = "finite_difference"
    if vjp == "autograd":
        make_differentiable(base.diffusion_model, guider.model_patcher)
    return vjp


def _run_method(kind: str, denoiser, problem, sigmas, x, w: float, lam: float, vjp: str, report, k: float = 0.0,
                noisy: str = "paper"):
    kw = dict(vjp=vjp, callback=report, should_stop=interrupted, noisy=noisy)
    if kind == "vp":
        released = problem.sigma_y > 0 and noisy == "paper"  # the released noisy map has the constant weight only
        schedule = "paper" if k == 0 or released else "consistent"
        return core.cpgdm(denoiser, problem, sigmas, x, w=w, lam=lam, k=0.0 if released else k, schedule=schedule, **kw)
    return core.cpgfm(denoiser, problem, sigmas, x, w=w, lam=lam, k=k, **kw)


def _run_baseline(kind: str, method: str, denoiser, problem, sigmas, x, w: float, lam: float, vjp: str, report):
    """ΠGDM / ΠGFM (w, λ as for C-ΠGDM) or DPS (w = its step size ζ) on the same latent problem."""
    kw = dict(vjp=vjp, callback=report, should_stop=interrupted)
    if method == "dps":
        return core.dps(denoiser, problem, sigmas, x, zeta=w, **kw)
    if kind == "vp":
        return core.pigdm(denoiser, problem, sigmas, x, w=w, lam=lam, **kw)
    return core.pigfm(denoiser, problem, sigmas, x, w=w, **kw)


# Diffusion models whose forward broke autograd (an in-place op the VJP cannot make out of place;
# Flux's `img += …` it can, samplers/out_of_place.py), so later runs go straight to finite
# differences. Weak: an unloaded model leaves the table.
_NO_AUTOGRAD: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def make_sampler(family: str, measurement, vae, w: float, lam: float, vjp: str, bridge_mode: str, start: str = "auto",
                 k: float = 0.0, method: str = "conjugate", noisy: str = "paper", restarts: int = 0,
                 restart_start: float = core.TAU_RESTART, tile_size: int = 0, tile_overlap: int = 0):
    check_finite(w=w, lam=lam, k=k)
    if isinstance(restarts, bool) or int(restarts) != restarts or not 0 <= restarts <= MAX_RESTARTS:
        raise ValueError(f"restarts: must be an integer from 0 to {MAX_RESTARTS}, got {restarts}.")
    tiles = latent_tiles(tile_size, tile_overlap)
    if noisy not in NOISY_CHOICES:
        raise ValueError(f"noisy: unknown choice {noisy!r}; choose one of {NOISY_CHOICES}.")
    if not k >= 0:
        raise ValueError(f"k: must be >= 0 (0 = the paper's weight), got {k}.")
    if method not in METHODS:
        raise ValueError(f"sampler: unknown method {method!r}; choose one of {METHODS}.")
    if method in ("ddnm", "dps") and family != "vp":
        raise ValueError(f"sampler: {method.upper()} is implemented for diffusion models (SD1.5/SDXL); use C-ΠGFM "
                         "(conjugate) or ΠGFM (pigdm) for SD3/Flux.")
    if vjp not in VJP_MODES:
        raise ValueError(f"vjp: unknown mode {vjp!r}; choose one of {VJP_MODES}.")
    resolve_bridge(bridge_mode)
    if start not in START_CHOICES:
        raise ValueError(f"start: unknown choice {start!r}; choose one of {START_CHOICES}.")
    if vae is None:
        raise ValueError("vae: no VAE connected. Connect the VAE of the model (e.g. from Load Checkpoint or Load VAE).")
    if isinstance(measurement, Measurement):
        bridge = resolve_bridge(bridge_mode)  # both keep a decoder graph: consistent_target once, pixel_bridge per step
        if bridge == "consistent_target":
            refuse_decoder_gradient(tiles, "bridge_mode consistent_target")
        check_solver_memory(vae, measurement, with_grad=(bridge == "consistent_target"
                                                         or (vjp == "autograd" and bridge == "pixel_bridge")),
                            tiled=tiles is not None)
    options = {"family": family, "measurement": measurement, "vae": vae, "w": float(w), "lam": float(lam),
               "vjp": vjp, "bridge_mode": bridge_mode, "start": start, "k": float(k), "method": method, "noisy": noisy,
               "restarts": int(restarts), "restart_start": float(restart_start),
               "tile_size": int(tile_size or 0), "tile_overlap": int(tile_overlap or 0)}
    return comfy.samplers.KSAMPLER(conjugate_sampler_function, extra_options=options)


def inverse_sigmas(model_sampling, steps: int, start: float) -> torch.Tensor:
    """The method's grid, uniform in its own time, as ComfyUI σ for this model.

    VP: VP-SDE time from τ = start down to 0.001 (σ = √(e^{b(t)} − 1)); every σ the model is
    evaluated at is clamped into [sigma_min, sigma_max] of the model's table, the last
    (never evaluated) σ stays at t = 0.001 as in the paper.
    Flow: σ = 1 − t with t uniform from 1 − start to 1 (σ0 = start, ends at 0). The model's
    shift is *not* applied: the conjugate coefficients use the actual σ values, and the
    paper's tuned settings assume uniform t; use a stock scheduler for shifted spacing.
    """
    kind = model_kind(model_sampling)
    if kind == "vp":
        if not 0.0 < start <= 1.0:
            raise ValueError(f"start: diffusion start time must be in (0, 1], got {start}.")
        sig = core.vp_sigmas_uniform_t(int(steps), t_start=float(start), t_end=0.001, dtype=torch.float64)
        lo, hi = float(model_sampling.sigma_min), float(model_sampling.sigma_max)
        vals = [min(max(float(s), lo), hi) for s in sig[:-1]] + [min(float(sig[-1]), lo)]
        out = [vals[0]]
        for v in vals[1:]:
            if v < out[-1]:
                out.append(v)
        if len(out) < 2:
            raise ValueError(f"start: {start} maps to this model's smallest noise level; use a larger start.")
        return torch.tensor(out, dtype=torch.float32)
    if not 0.0 < start < 1.0:
        raise ValueError(f"start: flow start noise must be in (0, 1), got {start}.")
    return core.flow_sigmas_uniform_t(int(steps), t_start=1.0 - float(start), dtype=torch.float32)


# ----------------------------------------------------------------------------------- nodes

def _method_inputs(default_w: float, default_lam: float, lam_name: str):
    return [
        MeasurementType.Input("measurement"),
        io.Vae.Input("vae", tooltip="The VAE of the model being sampled: it maps the measurement into latent space."),
        io.Float.Input("w", default=default_w, min=0.0, max=100.0, step=0.1,
                       tooltip="Guidance weight: larger = closer to the measurement (paper: 15 noiseless / 2 noisy for "
                               "diffusion, 20 for flow)."),
        io.Float.Input("lam", default=default_lam, min=-2.0, max=2.0, step=0.01, display_name=lam_name,
                       tooltip="Scalar part of the conjugate map (diffusion λ: 0 noiseless, −0.15 noisy; flow B: 0.2)."),
        io.Combo.Input("vjp", options=list(VJP_MODES), default="autograd",
                       tooltip="Jacobian term: autograd (exact, one backward pass per step; falls back to "
                               "finite_difference for a model it cannot backpropagate through, or whose weights "
                               "dynamic VRAM streams), finite_difference (two extra model calls), "
                               "none (Jacobian-free, fastest), auto (autograd when its memory estimate fits in free "
                               "memory, else finite_difference; the log names the choice)."),
        io.Combo.Input("bridge_mode", options=list(BRIDGE_CHOICES), default="auto",
                       tooltip="latent_surrogate: operator and measurement mapped to the latent grid (fast). "
                               "consistent_target: the same, with the encoded measurement first corrected so that "
                               "it decodes to an image consistent with the measurement (10 CG steps through the VAE "
                               "decoder, once per run; more accurate on the analytic benchmark, costs ~20 decoder "
                               "passes — seconds on a GPU, ~10 minutes at 512² on a CPU — and the decoder's "
                               "gradient memory). pixel_bridge: the Jacobian term's "
                               "residual is measured in pixels through the VAE (one decode + two encodes per step). "
                               "auto = latent_surrogate."),
        io.Combo.Input("start", options=list(START_CHOICES), default="auto", optional=True,
                       tooltip="auto: start from the measurement (encoded H⁺y + seeded noise) unless the latent is "
                               "non-empty (e.g. from Inverse Init Latent). measurement / input_latent force one."),
        _k_input(),
        _noisy_input(),
        _restarts_input(),
        *tile_inputs(),
    ]


def _noisy_input(custom_only: bool = False):
    """Appended last (after k): old workflows' positional widget values keep their meaning. Its default
    "paper" is what a saved workflow without the widget gets (the frontend fills the schema default),
    i.e. its old behaviour; the all-in-one presets choose "exact"."""
    return io.Combo.Input(
        "noisy", options=list(NOISY_CHOICES), default="paper", optional=True,
        tooltip=("Used with preset = custom (the presets use exact). " if custom_only else "")
        + "Only matters when the measurement has noise (sigma_y > 0). exact: the noisy ΠGDM/ΠGFM guidance "
          "solved exactly per singular mode of the operator (upscale, blur, inpainting, colorization, denoise; "
          "other operators fall back to paper with a console note); measured 3–10× closer to the exact posterior "
          "than paper and never refused (use w = 5, k = 2); it also starts from the Wiener estimate W y (damps the "
          "operator's weak modes, where H⁺y is mostly amplified noise) instead of H⁺y. paper: the released method "
          "(C-ΠGDM's σ_y correction, refused when unstable, e.g. deblurring; C-ΠGFM ignores sigma_y), the old "
          "behaviour.")


def _restarts_input(used_with: str = ""):  # appended last, default 0 = old behaviour
    return io.Int.Input(
        "restarts", default=0, min=0, max=MAX_RESTARTS, optional=True,
        tooltip="Stochastic restarts: after sampling, re-noise the result to VP time 0.3 (flow: noise 0.3) and "
                "sample again with the same number of steps (each restart costs the steps again). The first "
                "pass fills what the measurement misses (holes, colour) far better than H⁺y, so the restart starts "
                "from a better point: on the analytic benchmark 5 + 5 steps beat 10 straight steps on SR, "
                "colorization and deblurring, not on a single block hole or with noisy measurements. "
                "0 = off." + used_with)


def _k_input():  # appended last: old workflows' positional widget values keep their meaning, and get k = 0
    return io.Float.Input(
        "k", default=0.0, min=0.0, max=50.0, step=0.1, optional=True,
        tooltip="Weight schedule ω(t) = w + k/σ_t²: the k term makes the guidance enforce the measurement as the "
                "noise vanishes (the paper's constant weight never does). 0 = the paper's weight (old behaviour). "
                "Measured on the analytic benchmark: k = 2–4 with w = 5 cut the error 3–40× on SR, deblurring, "
                "inpainting and colorization (the all-in-one presets use it). Noiseless measurements only.")


class SamplerConjugatePiGDM(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SamplerConjugatePiGDM",
            display_name="Sampler C-ΠGDM (inverse)",
            category=CATEGORY,
            description="Conditional conjugate ΠGDM for ε/v diffusion models (SD1.5, SD2, SDXL): restores the "
                        "measurement in a few steps. Use with SamplerCustomAdvanced and Inverse Sigmas.",
            inputs=_method_inputs(15.0, 0.0, "lambda"),
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, measurement, vae, w, lam, vjp, bridge_mode, start="auto", k=0.0, noisy="paper",
                restarts=0, tile_size=0, tile_overlap=128) -> io.NodeOutput:
        return io.NodeOutput(make_sampler("vp", measurement, vae, w, lam, vjp, bridge_mode, start, k, noisy=noisy,
                                          restarts=restarts, tile_size=tile_size, tile_overlap=tile_overlap))


class SamplerConjugatePiGFM(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SamplerConjugatePiGFM",
            display_name="Sampler C-ΠGFM (inverse)",
            category=CATEGORY,
            description="Conditional conjugate ΠGFM for rectified-flow models (SD3, Flux): restores the measurement "
                        "in a few steps. Use with SamplerCustomAdvanced and Inverse Sigmas.",
            inputs=_method_inputs(20.0, 0.2, "B"),
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, measurement, vae, w, lam, vjp, bridge_mode, start="auto", k=0.0, noisy="paper",
                restarts=0, tile_size=0, tile_overlap=128) -> io.NodeOutput:
        return io.NodeOutput(make_sampler("flow", measurement, vae, w, lam, vjp, bridge_mode, start, k, noisy=noisy,
                                          restarts=restarts, tile_size=tile_size, tile_overlap=tile_overlap))


class InverseSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseSigmas",
            display_name="Inverse Sigmas",
            category=CATEGORY,
            description="The conjugate samplers' time grid (uniform in the method's t) for the connected model.",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("steps", default=5, min=1, max=200, tooltip="Paper: 5 for diffusion, 10 for flow."),
                io.Float.Input("start", default=0.4, min=0.01, max=1.0, step=0.01,
                               tooltip="Noise level to start from: diffusion VP-SDE time τ (paper 0.4), flow σ0 = 1 − st "
                                       "(paper st = 0.6 → 0.4). Lower = stay closer to the measurement."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps, start) -> io.NodeOutput:
        return io.NodeOutput(inverse_sigmas(model_sampling_of(model), steps, start))


class InverseInitLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseInitLatent",
            display_name="Inverse Init Latent",
            category=CATEGORY,
            description="LATENT of the pseudo-inverse H⁺y (VAE-encoded) at the restored image's size. With "
                        "RandomNoise and Inverse Sigmas, the stock sampler path noises it to the start level "
                        "(x = E(H⁺y) + σ0·ε, or (1−σ0)E(H⁺y) + σ0·ε for flow): the C-ΠGDM start.",
            inputs=[io.Model.Input("model"), io.Vae.Input("vae"), MeasurementType.Input("measurement")],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, vae, measurement) -> io.NodeOutput:
        model_kind(model_sampling_of(model))
        base = model.model
        bridge = VaeBridge(vae, base.latent_format)
        b, _, h, w = measurement.image_shape if isinstance(measurement, Measurement) else (0, 0, 0, 0)
        check_measurement(measurement, (b, 0, h // bridge.downscale, w // bridge.downscale), bridge.downscale)
        check_solver_memory(vae, measurement)
        bridge.load()
        pixels = measurement.operator.pinv(measurement.to_signed()).to(bridge.vae.device)
        with torch.no_grad():
            raw = bridge.encode_raw(pixels)
        return io.NodeOutput({"samples": raw.to(comfy.model_management.intermediate_device())})


class InverseSolveConjugate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseSolveConjugate",
            display_name="Inverse Solve (C-ΠGDM)",
            category=CATEGORY,
            description="All-in-one restoration (upscale, deblur, inpaint, denoise) with the loaded model: C-ΠGDM for SD1.5/SDXL, C-ΠGFM for SD3/Flux. "
                        "Same code as SamplerConjugatePiGDM/PiGFM + Inverse Sigmas + SamplerCustomAdvanced.",
            **search_aliases("upscale", "restore", "deblur", "inpaint", "denoise", "super resolution"),
            inputs=[
                io.Model.Input("model"),
                io.Vae.Input("vae"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                MeasurementType.Input("measurement"),
                io.Combo.Input("preset", options=list(PRESET_NAMES), default="auto",
                               tooltip="Task settings (steps, w, λ, start) from the papers; auto picks the task from the "
                                       "operator and the family from the model. custom = use the widgets below."),
                io.Int.Input("steps", default=5, min=1, max=200, tooltip="Used with preset = custom."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1),
                io.Float.Input("w", default=15.0, min=0.0, max=100.0, step=0.1, tooltip="Used with preset = custom."),
                io.Float.Input("lam", default=0.0, min=-2.0, max=2.0, step=0.01, display_name="lambda",
                               tooltip="λ (diffusion) or B (flow). Used with preset = custom."),
                io.Float.Input("start", default=0.4, min=0.01, max=1.0, step=0.01, tooltip="Used with preset = custom."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Combo.Input("vjp", options=list(VJP_MODES), default="autograd", optional=True),
                io.Combo.Input("bridge_mode", options=list(BRIDGE_CHOICES), default="auto", optional=True),
                # new inputs go last: an old workflow's positional widget values keep their meaning
                io.Combo.Input("sampler", options=list(SAMPLER_CHOICES), default="auto", optional=True,
                               tooltip="auto: the preset's method (C-ΠGDM / C-ΠGFM; measured best on every task of "
                                       "the analytic benchmark). conjugate: C-ΠGDM for SD1.5/SDXL, C-ΠGFM for SD3/Flux. "
                                       "ddnm: DDIM with null-space projection (Wang et al. 2023): one model call per "
                                       "step and no backward pass, diffusion models only. pigdm: ΠGDM (ΠGFM for "
                                       "flow models), the non-conjugate baseline, noiseless guidance. dps: diffusion "
                                       "posterior sampling (Chung et al. 2023), w = its step size ζ, diffusion models "
                                       "only; baselines for comparison (benchmarks/quality.py)."),
                _k_input(),
                io.Combo.Input("enforce_measurement", options=list(ENFORCE_CHOICES), default="off", optional=True,
                               tooltip="on: after decoding, move the image onto the measurement in pixel space "
                                       "(x ← x + H⁺(y − Hx), exact agreement for a noiseless measurement; with "
                                       "sigma_y > 0 the smallest change that brings the residual to the noise level). Same as the "
                                       "Enforce Measurement node. The result stays in [0, 1] (the correction and the clamp are "
                                       "alternated, so the clamp does not undo the agreement). auto: the "
                                       "preset decides (measured on a latent prior, benchmarks/results/quality.md; "
                                       "off with preset = custom)."),
                _noisy_input(custom_only=True),
                _restarts_input(" Used with preset = custom (the presets set it)."),
                *tile_inputs(),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, measurement, preset, steps, cfg, w, lam, start, seed,
                vjp="autograd", bridge_mode="auto", sampler="auto", k=0.0,
                enforce_measurement="off", noisy="paper", restarts=0, tile_size=0,
                tile_overlap=128) -> io.NodeOutput:
        image, latent = solve(model, vae, positive, negative, measurement, preset, steps, cfg, w, lam, start, seed,
                              vjp, bridge_mode, sampler, k, enforce_measurement, noisy, restarts, tile_size,
                              tile_overlap)
        return io.NodeOutput(image, latent)


def solve(model, vae, positive, negative, measurement, preset_name, steps, cfg, w, lam, start, seed,
          vjp="autograd", bridge_mode="auto", sampler="auto", k=0.0, enforce_measurement="off", noisy="paper",
          restarts=0, tile_size=0, tile_overlap=0):
    """The all-in-one path: stock CFGGuider + our SAMPLER + sigmas, as SamplerCustomAdvanced runs them."""
    check_finite(cfg=cfg, w=w, lam=lam, start=start, k=k)
    if sampler not in SAMPLER_CHOICES:
        raise ValueError(f"sampler: unknown choice {sampler!r}; choose one of {SAMPLER_CHOICES}.")
    if enforce_measurement not in ENFORCE_CHOICES:
        raise ValueError(f"enforce_measurement: choose one of {ENFORCE_CHOICES}, got {enforce_measurement!r}.")
    ms = model_sampling_of(model)
    kind = model_kind(ms)
    if not isinstance(measurement, Measurement):
        check_measurement(measurement, (1, 1, 1, 1), 8)
    method = "conjugate" if sampler == "auto" else sampler
    restart_start = core.TAU_RESTART  # the presets may choose another
    enforce = enforce_measurement == "on"
    if preset_name != "custom":
        p = latent_preset(preset_name, kind, measurement.operator, measurement.sigma_y, measurement.image_shape)
        steps, w, lam, start, k, noisy = p["steps"], p["w"], p["lam"], p["start"], p["k"], p["noisy"]
        restarts, restart_start = p["restarts"], p["restart_start"]
        method = p["sampler"] if sampler == "auto" else sampler
        if enforce_measurement == "auto":
            enforce = p["enforce"]
        if bridge_mode == "auto":
            bridge_mode = p["bridge"]
    sigmas = inverse_sigmas(ms, steps, start)
    ksampler = make_sampler(kind, measurement, vae, w, lam, vjp, bridge_mode, k=k, method=method, noisy=noisy,
                            restarts=restarts, restart_start=restart_start, tile_size=tile_size,
                            tile_overlap=tile_overlap)
    base = model.model
    down = VaeBridge(vae, base.latent_format).downscale
    b, _, h, wd = measurement.image_shape
    check_measurement(measurement, (b, base.latent_format.latent_channels, h // down, wd // down), down)
    latent = torch.zeros(b, base.latent_format.latent_channels, h // down, wd // down)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    x0_output = {}
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1, x0_output)
    noise = torch.zeros_like(latent)  # the sampler draws its own seeded start (extra_args["seed"])
    try:
        samples = guider.sample(noise, latent, ksampler, sigmas, callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    except ValueError as err:
        if preset_name == "custom" or not hasattr(err, "unstable_settings"):
            raise
        raise unstable_settings_error(*err.unstable_settings, note=(
            f" Preset {preset_name!r} chose these noisy settings (w = {w:g}, lambda = {lam:g}) because sigma_y > 0: "
            "set sigma_y to 0, or choose preset 'custom' with a smaller w.")) from err.__cause__
    samples = samples.to(comfy.model_management.intermediate_device())
    image = decode_output(vae, samples, latent_tiles(tile_size, tile_overlap))
    if enforce:
        image = enforce_on_image(image, measurement)
    return image, {"samples": samples}


def enforce_on_image(image: torch.Tensor, measurement) -> torch.Tensor:
    """samplers.enforce_measurement_in_range on a ComfyUI IMAGE, on the measurement's [0, 1] scale (H is linear)."""
    if not isinstance(measurement, Measurement):
        check_measurement(measurement, (1, 1, 1, 1), 8)
    x = image_to_bchw(image, "image")
    want = tuple(measurement.image_shape[1:])
    if tuple(x.shape[1:]) != want:
        raise ValueError(f"image: its size {tuple(x.shape[1:])} (C×H×W) does not match the measurement's unknown "
                         f"image {want}: connect the restored image of this measurement.")
    y = measurement.y.to(torch.float32)
    if y.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"image: batch {x.shape[0]} does not match the measurement's batch {y.shape[0]}.")
    out = core.enforce_measurement_in_range(measurement.operator, x, y, measurement.sigma_y)
    return bchw_to_image(out).to(image.device)


class SamplerDDNM(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SamplerDDNM",
            display_name="Sampler DDNM (inverse)",
            category=CATEGORY,
            description="DDIM with null-space projection (Wang et al., ICLR 2023) for ε/v diffusion models: each step "
                        "replaces the model's clean estimate by one that agrees with the measurement. One model call "
                        "per step, no backward pass. Use with SamplerCustomAdvanced and Inverse Sigmas.",
            inputs=[
                MeasurementType.Input("measurement"),
                io.Vae.Input("vae", tooltip="The VAE of the model being sampled: it maps the measurement into latent "
                                            "space."),
                io.Combo.Input("start", options=list(START_CHOICES), default="auto", optional=True,
                               tooltip="auto: start from the measurement (encoded H⁺y + seeded noise) unless the "
                                       "latent is non-empty. measurement / input_latent force one."),
                _restarts_input(),
                io.Combo.Input(  # last, default = the old behaviour (plain projection, E(H⁺y) start)
                    "noisy", options=list(NOISY_CHOICES), default="paper", optional=True,
                    tooltip="Only matters when the measurement has noise (sigma_y > 0). exact: the noise-aware "
                            "projection (each singular mode of the operator corrected by s²r²/(s²r² + σ_y²), so "
                            "weak modes do not copy the noise) and, for upscale/blur/inpainting/colorization/denoise, "
                            "the start from the Wiener estimate W y instead of H⁺y (the presets' choice). paper: the "
                            "plain projection x̂0 + H⁺(y − Hx̂0) of the DDNM paper, the old behaviour."),
                *tile_inputs(),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, measurement, vae, start="auto", restarts=0, noisy="paper", tile_size=0,
                tile_overlap=128) -> io.NodeOutput:
        return io.NodeOutput(make_sampler("vp", measurement, vae, 0.0, 0.0, "none", "auto", start, method="ddnm",
                                          restarts=restarts, noisy=noisy, tile_size=tile_size,
                                          tile_overlap=tile_overlap))


class EnforceMeasurement(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseEnforceMeasurement",
            display_name="Enforce Measurement",
            category=CATEGORY,
            description="Moves a restored image onto its measurement: x ← x + H⁺(y − Hx), so that it reproduces a "
                        "noiseless measurement exactly; with sigma_y > 0 the smallest change that brings the residual "
                        "to the noise level (x ← x + (HᵀH + αI)⁻¹Hᵀ(y − Hx), α by the discrepancy principle: "
                        "weak modes, where H⁺ would amplify the noise, are barely touched). Use after VAE Decode of a latent model, whose decoder never agrees with y exactly.",
            inputs=[
                io.Image.Input("image", tooltip="The restored image (the unknown image of this measurement)."),
                MeasurementType.Input("measurement"),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image, measurement) -> io.NodeOutput:
        return io.NodeOutput(enforce_on_image(image, measurement))


NODES = [SamplerConjugatePiGDM, SamplerConjugatePiGFM, SamplerDDNM, InverseSigmas, InverseInitLatent,
         InverseSolveConjugate, EnforceMeasurement]
