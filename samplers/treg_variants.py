"""Which part of a model's text-token embedding adaptive negation acts on (model-family variants).

AN pushes the null-token rows away from the CLIP *image* embedding of the current image
(treg_spec §3). That needs the image embedding to be as wide as the text-encoder block it is
subtracted from, and both from the same CLIP family:

- SD1.5: 768-wide tokens from CLIP-L; CLIP ViT-L/14 image embeds are 768-d: the paper's method.
- SD2.x: 1024-wide tokens from OpenCLIP ViT-H; a ViT-H/14 CLIP vision (1024-d) matches them.
- SDXL: 2048-wide tokens = CLIP-L (columns 0:768) ‖ CLIP-G (768:2048). A ViT-L/14 vision model
  acts on the CLIP-L block, a ViT-bigG/14 (1280-d) on the CLIP-G block; the other block and the
  pooled embedding stay as encoded.
- SDXL refiner: 1280-wide CLIP-G tokens: ViT-bigG/14.
- SD3 / Flux: rectified-flow models; refused by the callers (TReg's DC loop is a VP formula).
Pure Python: the ComfyUI layer passes in the widths it read from the loaded models.
"""

from __future__ import annotations

from dataclasses import dataclass

# Token width -> the text-encoder blocks it is made of: (name, start, stop).
TEXT_ENCODER_BLOCKS = {
    768: (("CLIP-L", 0, 768),),
    1024: (("OpenCLIP-H", 0, 1024),),
    1280: (("CLIP-G", 0, 1280),),
    2048: (("CLIP-L", 0, 768), ("CLIP-G", 768, 2048)),
}
# Image-embedding width -> the CLIP vision model that produces it (for error messages).
CLIP_VISION_BY_WIDTH = {
    768: "CLIP ViT-L/14 (e.g. clip_vision_l / openai clip-vit-large-patch14)",
    1024: "CLIP ViT-H/14 (the SD1.5 IP-Adapter image encoder)",
    1280: "CLIP ViT-bigG/14 (clip_vision_g)",
}


@dataclass(frozen=True)
class NegationVariant:
    """AN acts on token columns [start, stop) of the null embedding."""

    start: int
    stop: int
    block: str
    token_width: int

    @property
    def columns(self) -> tuple[int, int] | None:
        """None (= all columns) when the block is the whole token width, else (start, stop)."""
        if (self.start, self.stop) == (0, self.token_width):
            return None
        return self.start, self.stop

    def describe(self) -> str:
        part = "all" if self.columns is None else f"{self.start}:{self.stop}"
        return f"{self.block} block of the {self.token_width}-wide text tokens (columns {part})"


def choose_negation_variant(token_width: int, image_width: int, model_name: str = "model") -> NegationVariant:
    """The text-encoder block AN acts on, or a ValueError naming the widths and what to connect."""
    blocks = TEXT_ENCODER_BLOCKS.get(int(token_width))
    if blocks is None:
        raise ValueError(
            f"model: {model_name} has {token_width}-wide text tokens, which are not CLIP text-encoder "
            f"states (known layouts: {sorted(TEXT_ENCODER_BLOCKS)}). Adaptive negation works with "
            f"SD1.5, SD2.x and SDXL models; set an_steps to 0 to sample without it."
        )
    for name, start, stop in blocks:
        if stop - start == image_width:
            return NegationVariant(start, stop, name, int(token_width))
    wanted = " or ".join(
        f"{CLIP_VISION_BY_WIDTH.get(stop - start, f'a {stop - start}-d CLIP vision model')} for its {name} block"
        for name, start, stop in blocks
    )
    got = CLIP_VISION_BY_WIDTH.get(int(image_width), "a CLIP vision model")
    raise ValueError(
        f"clip_vision: its image embedding is {image_width}-d ({got}), but {model_name}'s text tokens "
        f"are {token_width} wide ({' + '.join(f'{n} {b - a}' for n, a, b in blocks)}), so adaptive negation "
        f"cannot act on them. Connect {wanted}."
    )


def flow_model_refusal(model_name: str, what: str = "TReg") -> str:
    """The message for SD3/Flux-type (rectified-flow) models."""
    return (
        f"model: {what} does not support {model_name}: it is a rectified-flow model with T5-based text "
        f"tokens, while TReg's data-consistency/re-noise loop and adaptive negation are defined for VP "
        f"latent diffusion with CLIP text tokens (SD1.5, SD2.x, SDXL). For SD3/Flux use the C-PiGFM "
        f"nodes with the same measurement: 'Inverse Solve (C-ΠGDM)' or 'Sampler C-ΠGFM (inverse)' (inverse/samplers)."
    )
