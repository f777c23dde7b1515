"""TReg Guider: ComfyUI's CFG guider whose negative is TReg's adaptive null embedding."""

from __future__ import annotations

import logging

import comfy.conds
import comfy.samplers
import torch
from comfy_api.latest import io

from ..samplers.treg import PAPER_DEFAULTS
from ..samplers.treg_negation import AN_METHODS, AdaptiveNegation
from .convert import check_finite
from .treg_common import check_vp_family, clip_image_embedder, negation_variant

log = logging.getLogger("comfyui-inverse")
CATEGORY = "inverse/treg"


def with_null_embedding(conds, null_uuid, embedding: torch.Tensor, device) -> list:
    """Copy of the processed negative conds with the null entry's cross-attention set to `embedding`."""
    out = []
    for cond in conds:
        if cond.get("uuid") == null_uuid:
            model_conds = dict(cond["model_conds"])
            model_conds["c_crossattn"] = comfy.conds.CONDCrossAttn(embedding.to(device))
            cond = {**cond, "model_conds": model_conds}
        out.append(cond)
    return out


class TRegGuider(comfy.samplers.CFGGuider):
    """CFG between the positive prompt and the null prompt, whose embedding AN updates during sampling.

    `treg_negation` (AdaptiveNegation or None) is read on every model call: SamplerTReg updates it
    after each data-consistency step. With other samplers it stays at the encoded null prompt.
    """

    def __init__(self, model_patcher, negation: AdaptiveNegation | None = None):
        super().__init__(model_patcher)
        self.treg_negation = negation
        self.treg_clip_vision = None  # loaded together with the UNet and VAE by SamplerTReg
        self.treg_null_uuid = None

    def set_conds(self, positive, negative):
        super().set_conds(positive, negative)
        self.treg_null_uuid = self.original_conds["negative"][0]["uuid"]

    def negative_conds(self, device) -> list | None:
        negative = self.conds.get("negative", None)
        if negative is None or self.treg_negation is None:
            return negative
        return with_null_embedding(negative, self.treg_null_uuid, self.treg_negation.embedding, device)

    def predict_noise(self, x, timestep, model_options={}, seed=None, **kwargs):
        return comfy.samplers.sampling_function(
            self.inner_model, x, timestep, self.negative_conds(x.device), self.conds.get("positive", None),
            self.cfg, model_options=model_options, seed=seed,
        )


def null_prediction(guider, x, sigma, model_options) -> torch.Tensor:
    """x̂0 of the null (negative) branch alone, cfg 0: what the reference's DPS steps use."""
    negative = guider.negative_conds(x.device) if isinstance(guider, TRegGuider) else guider.conds.get("negative")
    if not negative:
        raise ValueError("negative: DPS steps use the null prompt's prediction; connect a negative (null prompt) conditioning.")
    return comfy.samplers.calc_cond_batch(guider.inner_model, [negative], x, sigma, model_options)[0]


def build_treg_guider(model, positive, negative, cfg, clip_vision, an_steps, an_lr, an_method) -> TRegGuider:
    check_finite(cfg=cfg, an_lr=an_lr)
    check_vp_family(model, "TReg")
    if not negative:
        raise ValueError(
            "negative: empty conditioning. Connect a CLIP Text Encode of the null prompt "
            f"(the paper uses \"{PAPER_DEFAULTS['null_prompt']}\")."
        )
    if len(negative) != 1:
        raise ValueError(
            f"negative: TReg adapts one null-prompt embedding, but this conditioning has {len(negative)} entries "
            "(from Conditioning Combine, timestep ranges or areas). Connect a single CLIP Text Encode."
        )
    if not positive:
        raise ValueError("positive: empty conditioning. Connect a CLIP Text Encode of the prompt describing the image.")
    if an_method not in AN_METHODS:
        raise ValueError(f"an_method must be one of {AN_METHODS}, got {an_method!r}.")
    null = negative[0][0]
    negation = None
    if an_steps > 0 and an_lr > 0:
        if clip_vision is None:
            raise ValueError(
                "clip_vision: adaptive negation needs a CLIP vision model (CLIP ViT-L/14 for SD1.5). "
                "Connect a Load CLIP Vision node, or set an_steps to 0 to run TReg without adaptive negation."
            )
        variant, width = negation_variant(model, clip_vision, token_width=int(null.shape[-1]))
        negation = AdaptiveNegation(
            null, clip_image_embedder(clip_vision), lr=an_lr, steps=an_steps, columns=variant.columns, method=an_method
        )
        negation.check_image_embedding_width(width)
        log.info("TReg adaptive negation acts on the %s", variant.describe())
    guider = TRegGuider(model, negation)
    guider.treg_clip_vision = clip_vision if negation is not None else None
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


def prompt_inputs() -> list:
    """The prompt and the null prompt (TReg's text regularisation)."""
    return [
        io.Conditioning.Input("positive", tooltip="The text describing the image (TReg's text regularisation)."),
        io.Conditioning.Input(
            "negative",
            tooltip=f"The null prompt that adaptive negation adapts; the paper uses \"{PAPER_DEFAULTS['null_prompt']}\".",
        ),
    ]


def guidance_inputs() -> list:
    """CFG scale and the adaptive-negation settings."""
    return [
        io.Float.Input("cfg", default=PAPER_DEFAULTS["cfg"], min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="CFG scale between the prompt and the (adapted) null prompt; 0 = null prompt only."),
        io.Int.Input("an_steps", default=PAPER_DEFAULTS["an_steps"], min=0, max=100,
                     tooltip="Adaptive-negation optimiser steps per data-consistency step; 0 turns AN off."),
        io.Float.Input("an_lr", default=PAPER_DEFAULTS["an_lr"], min=0.0, max=0.1, step=1e-5, round=1e-6,
                       tooltip="AN learning rate. Paper: 1e-3 super-resolution, 5e-4 deblurring, 8e-4 otherwise; lower it if artifacts appear."),
        io.Combo.Input("an_method", options=list(AN_METHODS), default="adam",
                       tooltip="adam: the paper's 10 fresh Adam steps. sign: their closed form (lr·steps·sign of the image embedding)."),
    ]


def clip_vision_input():
    return io.ClipVision.Input("clip_vision", optional=True,
                               tooltip="CLIP vision model for AN: ViT-L/14 for SD1.5; for SDXL ViT-L/14 (CLIP-L part) or ViT-bigG/14 (CLIP-G part).")


def guider_inputs() -> list:
    return [*prompt_inputs(), *guidance_inputs(), clip_vision_input()]


class TRegGuiderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseTRegGuider",
            display_name="TReg Guider",
            category=CATEGORY,
            description=(
                "CFG guider for TReg (text regularisation): guides between the prompt and a null prompt whose "
                "embedding adaptive negation pushes away from the current reconstruction's CLIP image embedding. "
                "Use with the TReg sampler in SamplerCustomAdvanced. SD1.5/SD2/SDXL only."
            ),
            inputs=[io.Model.Input("model"), *guider_inputs()],
            outputs=[io.Guider.Output(display_name="guider")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, an_steps, an_lr, an_method, clip_vision=None) -> io.NodeOutput:
        return io.NodeOutput(build_treg_guider(model, positive, negative, cfg, clip_vision, an_steps, an_lr, an_method))
