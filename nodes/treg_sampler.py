"""SamplerTReg (a stock SAMPLER for SamplerCustomAdvanced) and the all-in-one TReg Solve node."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..samplers.treg import PAPER_DEFAULTS, seed_generator, treg_sample
from .comfy_bridge import (DYNAMIC_VRAM_SETTING, check_conditioning, interrupted, is_dynamic, make_differentiable,
                           model_kind, vae_downscale)
from .convert import check_finite
from .limits import check_solver_memory
from .schema_extras import search_aliases
from .tiling import bridge_for, decode_output, latent_tiles, refuse_decoder_gradient, tile_inputs, tiled_denoiser
from .treg_common import signed_measurement
from .treg_guider import (CATEGORY, build_treg_guider, clip_vision_input, guidance_inputs, null_prediction,
                          prompt_inputs)
from .types import MeasurementType, check_latent_channels, check_measurement_image
from ..samplers.treg_variants import flow_model_refusal

log = logging.getLogger("comfyui-inverse")


def treg_sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None, *, measurement, vae,
                          dc_every, dc_until, cg_iters, lam, use_dps, dps_scale, tile_size=0, tile_overlap=0):
    """KSAMPLER body: builds decode/encode/y from the model being sampled and runs the TReg core."""
    extra_args = dict(extra_args or {})
    guider = model.inner_model
    base = guider.inner_model
    kind = model_kind(base.model_sampling)
    if kind != "vp":
        raise ValueError(flow_model_refusal(type(base.model_config).__name__, "SamplerTReg"))
    check_latent_channels(x.shape, base.latent_format)
    check_conditioning(guider, base)
    if extra_args.get("denoise_mask") is not None:
        log.warning("SamplerTReg ignores the latent's noise_mask: inpainting is a measurement (Inpainting Operator) here.")
        extra_args["denoise_mask"] = None
    if use_dps and is_dynamic(guider.model_patcher):
        raise ValueError(
            "use_dps: DPS steps backpropagate through the UNet, whose weights ComfyUI's dynamic VRAM loader streams "
            f"and cannot differentiate. Turn use_dps off (data consistency alone is TReg), or start ComfyUI with "
            f"{DYNAMIC_VRAM_SETTING}.")
    tiles = latent_tiles(tile_size, tile_overlap, vae_downscale(vae))  # None = untiled
    bridge = bridge_for(vae, base.latent_format, tiles)
    y = signed_measurement(measurement, x.shape, bridge.downscale, x.device)
    # Load UNet, VAE and CLIP vision together: loading one later alone may evict another on a small GPU.
    clip_vision = getattr(guider, "treg_clip_vision", None)
    comfy.model_management.load_models_gpu(
        [guider.model_patcher, vae.patcher] + ([clip_vision.patcher] if clip_vision is not None else []))
    dps_denoise = None
    if use_dps:  # only DPS backpropagates: keep ComfyUI's inference weights otherwise
        bridge.load(grad=True, what="use_dps", fix="turn use_dps off")
        make_differentiable(base.diffusion_model, guider.model_patcher)

        def dps_denoise(x_in, sigma_b, null_embedding):
            return null_prediction(guider, x_in, sigma_b, extra_args.get("model_options", {}))

    def model_call(x_in, sigma_b, null_embedding=None):
        # the guider's CFG x̂0; it reads the null embedding from the same negation itself
        return model(x_in, sigma_b, **extra_args)

    denoise = tiled_denoiser(model_call, base, x.shape, tiles, False, x.device, "TReg")

    def report(k, x_k, x0):
        if callback is not None:
            callback({"x": x_k, "i": k, "sigma": sigmas[k], "sigma_hat": sigmas[k], "denoised": x0})

    return treg_sample(
        denoise, sigmas, x, measurement.operator, y, bridge.decode, bridge.encode,
        negation=getattr(guider, "treg_negation", None), generator=seed_generator(extra_args.get("seed")),
        callback=report, should_stop=interrupted, prediction=kind,
        dc_every=dc_every, dc_until=dc_until, cg_iters=cg_iters, lam=lam,
        use_dps=use_dps, dps_scale=(dps_scale if dps_scale > 0 else None), dps_denoise=dps_denoise,
    )


def make_treg_sampler(measurement, vae, dc_every, dc_until, cg_iters, lam, use_dps, dps_scale=0.0, tile_size=0,
                      tile_overlap=0):
    check_finite(dc_until=dc_until, cg_lambda=lam, dps_scale=dps_scale)
    if vae is None:
        raise ValueError("vae: no VAE connected (the checkpoint has none?). Connect the VAE that belongs to the model, e.g. with Load VAE.")
    check_measurement_image(measurement, vae_downscale(vae))
    tiles = latent_tiles(tile_size, tile_overlap)
    if use_dps:
        refuse_decoder_gradient(tiles, "use_dps")
    check_solver_memory(vae, measurement, with_grad=bool(use_dps), tiled=tiles is not None)
    options = dict(measurement=measurement, vae=vae, dc_every=int(dc_every), dc_until=float(dc_until),
                   cg_iters=int(cg_iters), lam=float(lam), use_dps=bool(use_dps), dps_scale=float(dps_scale),
                   tile_size=int(tile_size or 0), tile_overlap=int(tile_overlap or 0))
    return comfy.samplers.KSAMPLER(treg_sampler_function, extra_options=options)


def measurement_inputs() -> list:
    return [
        MeasurementType.Input("measurement"),
        io.Vae.Input("vae", tooltip="The model's VAE: data consistency runs on decoded pixels and re-encodes."),
    ]


def consistency_inputs() -> list:
    """Data-consistency settings (and the optional DPS steps between them)."""
    return [
        io.Int.Input("dc_every", default=PAPER_DEFAULTS["dc_every"], min=1, max=100,
                     tooltip="Data consistency (and AN) on every k-th step."),
        io.Float.Input("dc_until", default=PAPER_DEFAULTS["dc_until"], min=0.0, max=1.0, step=0.01,
                       tooltip="Fraction of the steps with data consistency; the last ones only denoise (paper: 170/200)."),
        io.Int.Input("cg_iters", default=PAPER_DEFAULTS["cg_iters"], min=0, max=100,
                     tooltip="Conjugate-gradient iterations per DC step; few on purpose (early stopping regularises deblurring)."),
        io.Float.Input("cg_lambda", default=PAPER_DEFAULTS["lam"], min=0.0, max=10.0, step=1e-5, round=1e-6,
                       # widget id kept as in saved workflows; λ is `lam` in the code
                       tooltip="λ in (AᵀA + λI)x = Aᵀy + λx̂0: how strongly DC keeps the model's estimate."),
        io.Boolean.Input("use_dps", default=False,
                         tooltip="Gradient (DPS) steps on the non-DC steps, through the VAE decoder and UNet: slower, more memory; can reduce artifacts."),
    ]


def sampler_inputs() -> list:
    return [*measurement_inputs(), *consistency_inputs()]


class SamplerTRegNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseSamplerTReg",
            display_name="TReg Sampler",
            category=CATEGORY,
            description=(
                "TReg's loop (DDIM with pixel-space data consistency: decode → CG → encode → blend → re-noise) as a "
                "SAMPLER for SamplerCustomAdvanced. Pair with the TReg Guider for adaptive negation; use stock sigmas "
                "(ddim_uniform matches the paper) and noise. VP models (SD1.5/SD2/SDXL) only."
            ),
            inputs=[*sampler_inputs(),
                    io.Float.Input("dps_scale", default=0.0, min=0.0, max=100.0, step=0.01,
                                   tooltip="DPS step size; 0 = √ᾱ of the next step, as the reference."),
                    *tile_inputs()],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, measurement, vae, dc_every, dc_until, cg_iters, cg_lambda, use_dps, dps_scale, tile_size=0,
                tile_overlap=128) -> io.NodeOutput:
        return io.NodeOutput(make_treg_sampler(measurement, vae, dc_every, dc_until, cg_iters, cg_lambda, use_dps, dps_scale,
                                               tile_size, tile_overlap))


def run_guided(model, guider, sampler, sigmas, latent: dict, seed: int) -> torch.Tensor:
    """What SamplerCustomAdvanced + RandomNoise do, so the all-in-one node matches the modular graph."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1, {})
    samples = guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=None, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return samples.to(comfy.model_management.intermediate_device())


class TRegSolveNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseTRegSolve",
            display_name="TReg Solve",
            category=CATEGORY,
            description=(
                "All-in-one TReg: restores (upscales, deblurs, fills) the image behind the measurement with data "
                "consistency, the prompt and "
                "adaptive negation. Same code as TReg Guider + TReg Sampler + SamplerCustomAdvanced (same seed, same "
                "pixels). Paper settings: 200 steps, cfg 5, null prompt \"out of focus, depth of field\"."
            ),
            **search_aliases("upscale", "restore", "deblur", "super resolution", "text guided restoration"),
            inputs=[
                io.Model.Input("model"),
                *measurement_inputs(),
                *prompt_inputs(),
                io.Int.Input("steps", default=100, min=1, max=1000, tooltip="Sampling steps (the paper uses 200)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="ddim_uniform",
                               tooltip="ddim_uniform reproduces the paper's DDIM timesteps."),
                *guidance_inputs(),
                *consistency_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                clip_vision_input(),  # optional, so after the required inputs
                *tile_inputs(),
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                io.Latent.Output(display_name="latent"),
                io.Conditioning.Output(display_name="null_embedding",
                                       tooltip="The null prompt after adaptive negation (one per image), to inspect or reuse."),
            ],
        )

    @classmethod
    def execute(cls, model, measurement, vae, positive, negative, steps, scheduler, cfg, an_steps, an_lr, an_method,
                dc_every, dc_until, cg_iters, cg_lambda, use_dps, seed, clip_vision=None, tile_size=0,
                tile_overlap=128) -> io.NodeOutput:
        guider = build_treg_guider(model, positive, negative, cfg, clip_vision, an_steps, an_lr, an_method)
        sampler = make_treg_sampler(measurement, vae, dc_every, dc_until, cg_iters, cg_lambda, use_dps, 0.0, tile_size,
                                    tile_overlap)
        batch, _, height, width = (int(v) for v in measurement.image_shape)
        factor = vae_downscale(vae)
        channels = model.model.latent_format.latent_channels
        latent = {"samples": torch.zeros([batch, channels, height // factor, width // factor],
                                         device=comfy.model_management.intermediate_device())}
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()
        samples = run_guided(model, guider, sampler, sigmas, latent, seed)
        images = decode_output(vae, samples, latent_tiles(tile_size, tile_overlap))
        null = negative
        if guider.treg_negation is not None:
            embedding = guider.treg_negation.embedding.to(comfy.model_management.intermediate_device())
            null = [[embedding, dict(negative[0][1])]]
        return io.NodeOutput(images, {"samples": samples}, null)


NODES = [SamplerTRegNode, TRegSolveNode]
