"""Adaptive Negation as a MODEL patch, for KSampler, SamplerCustom(Advanced) and the C-ΠGDM samplers.

TReg's AN update is u_j ← u_j − Adam/sign step along f̂ for *every* null-token row j with the same
gradient f̂/T, so it is a uniform shift Δ of all rows that does not depend on u. The patch keeps
that shift Δ (per batch item, fp32; one AdaptiveNegation over a single zero row) and adds it to
whatever negative the sampler uses:
- a CALC_COND_BATCH wrapper adds Δ to the cross-attention of the negative (uncond) conds;
- a post-CFG hook, on every k-th step while step < until·steps, decodes the CFG x̂0 (optionally
  makes it data-consistent with the measurement, 5 CG steps as TReg), embeds it with CLIP vision
  and updates Δ. The new Δ acts from the next model call on;
- an OUTER_SAMPLE wrapper resets Δ at the start of every sampling run (same seed, same image).
"""

from __future__ import annotations

import logging

import comfy.conds
import comfy.model_management
import comfy.patcher_extension
import torch
from comfy_api.latest import io

from ..samplers.treg import PAPER_DEFAULTS, data_consistency, dc_schedule
from ..samplers.treg_negation import AN_METHODS, AdaptiveNegation
from .comfy_bridge import VaeBridge, interrupted
from .convert import check_finite
from .treg_common import check_vp_family, clip_image_embedder, negation_variant, signed_measurement
from .types import MeasurementType

log = logging.getLogger("comfyui-inverse")
WRAPPER_KEY = "comfyui_inverse_adaptive_negation"


class NegationPatch:
    """State shared by the three hooks of one patched MODEL."""

    def __init__(self, negation: AdaptiveNegation, columns: tuple[int, int], vae, clip_vision, every: int,
                 until: float, measurement=None):
        self.negation = negation
        self.clip_vision = clip_vision
        self.columns = columns
        self.vae = vae
        self.every = every
        self.until = until
        self.measurement = measurement
        self.updated_step = None

    def reset(self):
        self.negation.reset()
        self.updated_step = None

    # OUTER_SAMPLE wrapper
    def outer_sample(self, executor, *args, **kwargs):
        self.reset()
        return executor(*args, **kwargs)

    # CALC_COND_BATCH wrapper: conds = [positive, negative, ...]
    def calc_cond_batch(self, executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
        if self.negation.updates > 0 and len(conds) > 1 and conds[1]:
            conds = [conds[0], [self._shifted(c, x_in) for c in conds[1]], *conds[2:]]
        return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)

    def _shifted(self, cond: dict, x_in: torch.Tensor) -> dict:
        cross = cond.get("model_conds", {}).get("c_crossattn")
        if not isinstance(cross, comfy.conds.CONDCrossAttn):
            return cond
        start, stop = self.columns
        batch = x_in.shape[0]
        shift = self.negation.embedding.to(x_in.device)  # B'×1×w
        if shift.shape[0] not in (1, batch):
            return cond  # a sub-batch we cannot attribute (e.g. context windows): leave it alone
        emb = cross.cond.to(device=x_in.device, dtype=torch.float32)
        if emb.shape[0] == 1 and batch > 1:
            emb = emb.expand(batch, -1, -1)
        elif emb.shape[0] != batch:
            return cond
        emb = emb.clone()
        emb[..., start:stop] += shift
        return {**cond, "model_conds": {**cond["model_conds"], "c_crossattn": comfy.conds.CONDCrossAttn(emb)}}

    # post-CFG hook
    def post_cfg(self, args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        sample_sigmas = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
        if sample_sigmas is None or len(sample_sigmas) < 2:
            return denoised
        sigma = float(args["sigma"].flatten()[0])
        step = int(torch.argmin((sample_sigmas.detach().float().cpu() - sigma).abs()))
        schedule = dc_schedule(len(sample_sigmas) - 1, self.every, self.until)
        if step >= len(schedule) or not schedule[step] or step == self.updated_step or sigma <= 0:
            return denoised
        self.updated_step = step
        with torch.no_grad():
            base = args["model"]
            patchers = [self.vae.patcher, self.clip_vision.patcher]
            if getattr(base, "current_patcher", None) is not None:
                patchers.insert(0, base.current_patcher)  # keep the UNet loaded alongside
            comfy.model_management.load_models_gpu(patchers)
            bridge = VaeBridge(self.vae, base.latent_format)
            pixels = bridge.decode(denoised.detach().float())
            if self.measurement is not None:
                y = signed_measurement(self.measurement, denoised.shape, bridge.downscale, pixels.device)
                pixels = data_consistency(pixels, self.measurement.operator, y, cg_iters=PAPER_DEFAULTS["cg_iters"],
                                          lam=PAPER_DEFAULTS["lam"], should_stop=interrupted)
            self.negation.update(pixels, should_stop=interrupted)
        return denoised


def patch_model(model, clip_vision, vae, an_steps, an_lr, an_method, every, until, measurement=None):
    check_finite(an_lr=an_lr, until=until)  # NaN passes the widgets' min/max; it would fail only while sampling
    check_vp_family(model, "Adaptive Negation")
    if vae is None:
        raise ValueError("vae: no VAE connected. AN decodes the current estimate to pixels for CLIP vision; connect the model's VAE.")
    if clip_vision is None:
        raise ValueError("clip_vision: connect a Load CLIP Vision node (CLIP ViT-L/14 for SD1.5).")
    if an_method not in AN_METHODS:
        raise ValueError(f"an_method must be one of {AN_METHODS}, got {an_method!r}.")
    variant, width = negation_variant(model, clip_vision)
    negation = AdaptiveNegation(torch.zeros(1, 1, width), clip_image_embedder(clip_vision), lr=an_lr,
                                steps=an_steps, method=an_method)
    negation.check_image_embedding_width(width)
    state = NegationPatch(negation, (variant.start, variant.stop), vae, clip_vision, every, until, measurement)
    patched = model.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, state.outer_sample)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, state.calc_cond_batch)
    patched.set_model_sampler_post_cfg_function(state.post_cfg)
    log.info("Adaptive negation acts on the %s", variant.describe())
    return patched, state


class AdaptiveNegationNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseAdaptiveNegation",
            display_name="Adaptive Negation (TReg)",
            category="inverse/treg",
            description=(
                "Patches the model so that, during sampling, every k-th step the negative prompt is pushed away from "
                "the CLIP image embedding of the current estimate (TReg's adaptive negation). Works with KSampler, "
                "SamplerCustomAdvanced and the C-PiGDM samplers; needs CFG (cfg ≠ 1) and a negative prompt. Optional "
                "measurement: embed the data-consistent estimate, as TReg does. SD1.5/SD2/SDXL only."
            ),
            inputs=[
                io.Model.Input("model"),
                io.ClipVision.Input("clip_vision", tooltip="CLIP ViT-L/14 for SD1.5; ViT-L/14 or ViT-bigG/14 for SDXL."),
                io.Vae.Input("vae", tooltip="The model's VAE (the estimate is decoded for CLIP vision)."),
                io.Int.Input("an_steps", default=PAPER_DEFAULTS["an_steps"], min=0, max=100, tooltip="Optimiser steps per update; 0 = off."),
                io.Float.Input("an_lr", default=PAPER_DEFAULTS["an_lr"], min=0.0, max=0.1, step=1e-5, round=1e-6,
                               tooltip="Learning rate (paper: 1e-3 SR, 5e-4 deblur, 8e-4 otherwise)."),
                io.Combo.Input("an_method", options=list(AN_METHODS), default="adam"),
                io.Int.Input("every", default=PAPER_DEFAULTS["dc_every"], min=1, max=100, tooltip="Update on every k-th step."),
                io.Float.Input("until", default=PAPER_DEFAULTS["dc_until"], min=0.0, max=1.0, step=0.01,
                               tooltip="Stop updating after this fraction of the steps."),
                MeasurementType.Input("measurement", optional=True,
                                      tooltip="Optional: make the estimate consistent with this measurement (5 CG steps) before embedding it."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, clip_vision, vae, an_steps, an_lr, an_method, every, until, measurement=None) -> io.NodeOutput:
        patched, _ = patch_model(model, clip_vision, vae, an_steps, an_lr, an_method, every, until, measurement)
        return io.NodeOutput(patched)


NODES = [AdaptiveNegationNode]
