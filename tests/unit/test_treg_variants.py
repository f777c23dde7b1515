"""Model-family variants of adaptive negation (samplers/treg_variants.py) and the property the
standalone Adaptive Negation node relies on (an AN update is the same shift for every token row)."""

import pytest
import torch

from comfyui_inverse.samplers.treg_negation import AdaptiveNegation
from comfyui_inverse.samplers.treg_variants import choose_negation_variant, flow_model_refusal


@pytest.mark.parametrize("token_width, image_width, columns, block", [
    (768, 768, None, "CLIP-L"),            # SD1.5 + ViT-L/14: the paper's method, all columns
    (1024, 1024, None, "OpenCLIP-H"),      # SD2.x + ViT-H/14
    (2048, 768, (0, 768), "CLIP-L"),       # SDXL + ViT-L/14: the CLIP-L block
    (2048, 1280, (768, 2048), "CLIP-G"),   # SDXL + ViT-bigG/14: the CLIP-G block
    (1280, 1280, None, "CLIP-G"),          # SDXL refiner
])
def test_variant_picks_the_block_as_wide_as_the_image_embedding(token_width, image_width, columns, block):
    variant = choose_negation_variant(token_width, image_width, "Model")
    assert variant.columns == columns
    assert variant.block == block
    assert variant.stop - variant.start == image_width


def test_wrong_clip_vision_for_sd15_names_widths_and_the_fix():
    with pytest.raises(ValueError) as error:
        choose_negation_variant(768, 1024, "SD15")
    message = str(error.value)
    assert message.startswith("clip_vision:")
    assert "1024" in message and "768" in message and "SD15" in message
    assert "ViT-L/14" in message  # what to connect instead


def test_sdxl_error_offers_both_vision_models():
    with pytest.raises(ValueError) as error:
        choose_negation_variant(2048, 1024, "SDXL")
    assert "ViT-L/14" in str(error.value) and "ViT-bigG/14" in str(error.value)


def test_unknown_token_layout_is_refused():
    with pytest.raises(ValueError, match="not CLIP text-encoder states"):
        choose_negation_variant(4096, 768, "SD3")


def test_flow_refusal_names_the_model_and_the_alternative():
    message = flow_model_refusal("Flux", "TReg")
    assert "Flux" in message and "rectified-flow" in message and "C-PiGFM" in message


def _features(width, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (batch, width), generator=g) * 2 - 1
    return signs * (0.5 + 0.5 * torch.rand(batch, width, generator=g))  # |f_i| away from 0: Adam ≈ sign


def test_sdxl_variant_updates_only_its_block():
    g = torch.Generator().manual_seed(1)
    null = torch.randn(1, 77, 2048, generator=g)
    features = _features(1280)
    variant = choose_negation_variant(2048, 1280, "SDXL")
    negation = AdaptiveNegation(null, lambda pixels: features, lr=1e-3, steps=10, columns=variant.columns, method="sign")
    negation.update(torch.zeros(1, 3, 8, 8))
    after = negation.embedding
    assert torch.equal(after[..., :768], null[..., :768])  # CLIP-L block untouched
    expected = null[..., 768:] - 10 * 1e-3 * torch.sign(features)[:, None, :]
    torch.testing.assert_close(after[..., 768:], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["adam", "sign"])
def test_an_update_is_one_shift_for_all_rows_whatever_the_embedding(method):
    """The Adaptive Negation node keeps only that shift (a zero 1-row embedding) and adds it to
    whatever negative the sampler uses; this is exact for 'sign' and Adam-up-to-eps for 'adam'."""
    g = torch.Generator().manual_seed(2)
    null = torch.randn(2, 8, 768, generator=g)  # 8 token rows suffice for row independence
    features = _features(768, batch=2, seed=3)
    full = AdaptiveNegation(null, lambda pixels: features, lr=8e-4, steps=10, method=method)
    shift = AdaptiveNegation(torch.zeros(1, 1, 768), lambda pixels: features, lr=8e-4, steps=10, method=method)
    for _ in range(3):  # updates accumulate over the trajectory
        full.update(torch.zeros(2, 3, 8, 8))
        shift.update(torch.zeros(2, 3, 8, 8))
    assert shift.embedding.shape == (2, 1, 768)  # per batch item
    # Tolerance: fp32 rounding of u itself (|u| ≲ 4, ulp ≈ 5e-7) over 30 Adam steps, against a
    # total shift of 2.4e-2; eps/|g| adds < 1e-6.
    atol = 2e-5 if method == "adam" else 1e-6
    torch.testing.assert_close(full.embedding - null, shift.embedding.expand(-1, 8, -1), rtol=0, atol=atol)
    assert (full.embedding - null).abs().max() > 1e-2  # it did move (3 × 10 × 8e-4)
