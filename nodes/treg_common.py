"""Shared ComfyUI glue for the TReg nodes: model-family checks, CLIP vision, measurement checks."""

from __future__ import annotations

import torch

from ..samplers.treg_variants import choose_negation_variant, flow_model_refusal
from .comfy_bridge import model_kind, model_sampling_of
from .types import Measurement, check_measurement


def model_name(model_patcher) -> str:
    config = getattr(getattr(model_patcher, "model", None), "model_config", None)
    return type(config).__name__ if config is not None else type(model_patcher).__name__


def check_vp_family(model_patcher, what: str = "TReg") -> str:
    """The model's config name; ValueError for flow (SD3/Flux) models, naming the model and the alternative."""
    name = model_name(model_patcher)
    if model_kind(model_sampling_of(model_patcher)) != "vp":
        raise ValueError(flow_model_refusal(name, what))
    return name


def text_token_width(model_patcher) -> int | None:
    """Cross-attention width the UNet expects (768 SD1.5, 1024 SD2, 2048 SDXL), if known."""
    config = getattr(getattr(model_patcher, "model", None), "model_config", None)
    unet_config = getattr(config, "unet_config", None) or {}
    width = unet_config.get("context_dim")
    return int(width) if width else None


def clip_vision_width(clip_vision) -> int:
    """Width of the projected image embedding (768 ViT-L/14, 1024 ViT-H/14, 1280 ViT-bigG/14)."""
    projection = getattr(getattr(clip_vision, "model", None), "visual_projection", None)
    weight = getattr(projection, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(
            "clip_vision: this image encoder has no CLIP projection (SigLIP / DINOv2 models are not CLIP image-text "
            "models). Adaptive negation needs a CLIP vision model: ViT-L/14 for SD1.5, ViT-L/14 or ViT-bigG/14 for SDXL."
        )
    return int(weight.shape[0])


def clip_image_embedder(clip_vision):
    """pixels B×3×H×W in [-1, 1] -> projected CLIP image embeddings B×d (fp32).

    The whole image is resized to the encoder's size (no centre crop), as the reference does.
    No gradient: AN only uses the embedding's sign (treg_spec §3).
    """

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        image = ((pixels.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)
        return clip_vision.encode_image(image, crop=False)["image_embeds"].float()

    return embed


def negation_variant(model_patcher, clip_vision, token_width: int | None = None):
    """(variant, image width): which text-token columns AN acts on for this model + CLIP vision."""
    width = clip_vision_width(clip_vision)
    token_width = token_width or text_token_width(model_patcher)
    if token_width is None:
        raise ValueError(f"model: cannot tell the text-token width of {model_name(model_patcher)}; adaptive negation needs an SD1.5/SD2/SDXL UNet.")
    return choose_negation_variant(token_width, width, model_name(model_patcher)), width


def signed_measurement(measurement: Measurement, latent_shape, downscale: int, device) -> torch.Tensor:
    """y on the [-1, 1] image scale, one per latent item; ValueError on size or batch mismatch."""
    batch = check_measurement(measurement, latent_shape, downscale)[0]
    y = measurement.to_signed().to(device=device, dtype=torch.float32)
    if batch != int(latent_shape[0]):  # one observation, several samples
        y = y.expand(int(latent_shape[0]), *y.shape[1:]).contiguous()
    return y
