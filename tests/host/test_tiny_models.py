"""The tiny models are what they claim to be: ComfyUI's own loaders detect each family, the stock
loader nodes accept every file through the server, and the SD1.5 / SDXL / SD3 / Flux ones sample
and decode end to end with stock nodes."""

import re

import numpy as np
import pytest

from comfyui_inverse.tests.host import tiny_models as tm
from comfyui_inverse.tests.host.graphs import loaders, node, save_outputs, sdxl_loaders, text_prompts

pytestmark = pytest.mark.host

# Warnings ComfyUI logs when a file's keys do not cover the model it builds (weights left
# uninitialised) or carry keys it does not use.
KEY_WARNING = re.compile(r"(unet|clip|vae) (missing|unexpected)|Missing VAE keys|"
                         r"missing clip vision|leftover keys", re.IGNORECASE)


@pytest.fixture(scope="module")
def detected(comfy, tiny_models):
    """What comfy.sd / comfy.clip_vision make of each file, in a fresh --cpu process."""
    return tm.detect_all(comfy.models_dir, comfy.server.comfy_root)


_LOG_START = {"offset": 0}


@pytest.fixture(autouse=True)
def _log_since_this_test(request):
    """Key warnings count from this test's start: the session's server log also holds other test
    files' deliberate bad loads (test_treg_nodes' stub CLIP vision), and file order varies."""
    if "comfy" in request.fixturenames:
        _LOG_START["offset"] = len(request.getfixturevalue("comfy").log_text())
    yield


def key_warnings(comfy) -> list:
    text = comfy.log_text()[_LOG_START["offset"]:]
    return [line for line in text.splitlines() if KEY_WARNING.search(line)]


# ------------------------------------------------------------------- in-process detection (b)

@pytest.mark.parametrize("name", sorted(tm.EXPECTED))
def test_loader_detects_family_and_prediction_type(detected, name):
    info = detected[name]
    expected = tm.EXPECTED[name]
    assert {k: info[k] for k in expected} == expected
    assert info["key_warnings"] == []


@pytest.mark.parametrize("name,clip,cond_shape,pooled_shape", [
    ("sd15_ckpt", "SD1ClipModel", [1, 77, 768], [1, 768]),
    ("sdxl_ckpt", "SDXLClipModel", [1, 77, 2048], [1, 1280]),  # CLIP-L ‖ CLIP-G tokens, CLIP-G pooled
])
def test_checkpoint_holds_full_vae_and_its_text_encoders(detected, name, clip, cond_shape, pooled_shape):
    info = detected[name]
    assert (info["vae"], info["vae_latent_channels"], info["clip"]) == ("AutoencoderKL", 4, clip)
    assert (info["cond_shape"], info["pooled_shape"]) == (cond_shape, pooled_shape)


def test_flux_file_is_stored_as_fp8(detected):
    assert detected["flux_unet"]["stored_dtype"] == "F8_E4M3"


def test_clip_l_file_encodes_as_sd1_and_sd3_text_encoder(detected):
    info = detected["clip_l"]
    assert info["key_warnings"] == []
    assert info["sd1"] == {"clip": "SD1ClipModel", "cond_shape": [1, 77, 768],
                           "pooled_shape": [1, 768], "finite": True}
    # SD3 pads CLIP-L to the T5 width (4096) and its pooled output with CLIP-G zeros (2048):
    # the widths the tiny SD3 and Flux models take.
    assert info["sd3"]["cond_shape"] == [1, 77, 4096]
    assert info["sd3"]["pooled_shape"] == [1, 2048]
    assert info["sd3"]["finite"]


def test_clip_g_with_clip_l_encodes_as_the_sdxl_text_encoder(detected):
    info = detected["clip_g"]
    assert info["key_warnings"] == []
    # SDXL concatenates CLIP-L (768) and CLIP-G (1280) tokens; the pooled vector is CLIP-G's.
    assert info == {"clip": "SDXLClipModel", "cond_shape": [1, 77, 2048], "pooled_shape": [1, 1280],
                    "finite": True, "key_warnings": [], "load_seconds": info["load_seconds"]}


def test_clip_vision_gives_768_d_image_embeds(detected):
    info = detected["clip_vision"]
    assert info["image_embeds_shape"] == [1, 768] and info["finite"]
    assert info["key_warnings"] == []


@pytest.mark.parametrize("name", sorted(tm.TAESD))
def test_taesd_files_make_a_taesd_vae_with_the_family_latent_width(detected, name):
    info = detected[name]
    assert info["vae"] == "TAESD"
    assert info["latent_channels"] == tm.TAESD[name][1]
    assert info["decoded_shape"] == [1, 64, 64, 3]  # 8x upscale of the 8x8 latent
    assert info["key_warnings"] == []


def test_build_is_deterministic(detected):
    # detect_all rebuilt these in a fresh directory and compared the bytes.
    assert detected["_rebuilt_identical"] == {"sd3_unet": True, "sd15_unet": True,
                                              "sd3_vae": True}


def test_build_stays_within_disk_budget(tiny_models):
    assert set(tiny_models.stats) == set(tm.FILES) | set(tm.TAESD)
    total = sum(s["bytes"] for s in tiny_models.stats.values())
    # 4.5 GiB; ~4.0 GB today: the full-size CLIP-G (fixed config, 0.7 GB in fp8) is stored twice
    # (standalone for DualCLIPLoader, inside the SDXL checkpoint), as are CLIP-L and the VAE.
    assert total < 4.5 * 2 ** 30, tiny_models.stats


# ------------------------------------------------------------------ through the server (a)

def test_server_lists_the_tiny_files_in_the_loader_nodes(comfy, tiny_models):
    def options(node, field):
        return comfy.object_info(node)[node]["input"]["required"][field][0]

    assert {tiny_models["sd15_ckpt"], tiny_models["sdxl_ckpt"]} <= set(options("CheckpointLoaderSimple", "ckpt_name"))
    unets = options("UNETLoader", "unet_name")
    assert {tiny_models[n] for n in ("sd15_unet", "sdxl_unet", "sd3_unet", "flux_unet")} <= set(unets)
    assert {"taesd", "taesdxl", "taesd3", "taef1"} <= set(options("VAELoader", "vae_name"))
    assert tiny_models["clip_l"] in options("CLIPLoader", "clip_name")
    assert {tiny_models["clip_l"], tiny_models["clip_g"]} <= set(options("DualCLIPLoader", "clip_name1"))
    assert tiny_models["clip_vision"] in options("CLIPVisionLoader", "clip_name")


def sample_prompt(model, clip, vae, latent, positive_extra=None, cfg=2.0, prefix="tiny"):
    """loader nodes 1-3 (model, clip, vae given as [node, slot] refs) -> text encode -> 2 euler
    steps -> SaveLatent (node "lat") + VAEDecode -> SaveImage (node "img")."""
    prompt = {
        **text_prompts(clip),
        "empty": latent,
        "sample": node("KSampler", model=model, seed=7, steps=2, cfg=cfg, sampler_name="euler", scheduler="normal",
                       positive=["pos", 0], negative=["neg", 0], latent_image=["empty", 0], denoise=1.0),
        **save_outputs(["sample", 0], vae, prefix, f"{prefix}_latent"),
    }
    if positive_extra:
        prompt.update(positive_extra)
        prompt["sample"]["inputs"]["positive"] = [next(iter(positive_extra)), 0]
    return prompt


def check_outputs(comfy, history, channels):
    (latent,) = comfy.latents(history, "lat")
    assert latent.shape == (1, channels, 6, 8)  # 48x64 px / 8
    (image,) = comfy.images(history, "img")
    assert image.shape == (48, 64, 3)
    assert np.isfinite(latent).all() and latent.std() > 0
    assert image.std() > 0  # random weights still draw something non-constant
    assert key_warnings(comfy) == []


def test_sd15_checkpoint_samples_and_decodes(comfy, tiny_models):
    prompt = sample_prompt(
        ["ckpt", 0], ["ckpt", 1], ["ckpt", 2],
        {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        prefix="tiny_sd15")
    prompt["ckpt"] = {"class_type": "CheckpointLoaderSimple",
                      "inputs": {"ckpt_name": tiny_models["sd15_ckpt"]}}
    check_outputs(comfy, comfy.run(prompt), channels=4)


def flow_prompt(tiny_models, family, prefix, **kw):
    """sample_prompt on the tiny "sd3" or "flux" UNet with CLIP-L (type sd3) and its TAESD."""
    nodes, model, clip, vae = loaders(tiny_models, family)
    prompt = sample_prompt(model, clip, vae, node("EmptySD3LatentImage", width=64, height=48, batch_size=1),
                           prefix=prefix, **kw)
    prompt.update(nodes)
    return prompt


def test_sd3_flow_model_samples_with_tiny_clip_and_taesd3(comfy, tiny_models):
    prompt = flow_prompt(tiny_models, "sd3", "tiny_sd3")
    check_outputs(comfy, comfy.run(prompt), channels=16)


def test_flux_model_samples_with_guidance_and_taef1(comfy, tiny_models):
    guidance = {"guided": {"class_type": "FluxGuidance",
                           "inputs": {"conditioning": ["pos", 0], "guidance": 3.5}}}
    prompt = flow_prompt(tiny_models, "flux", "tiny_flux",
                         positive_extra=guidance, cfg=1.0)
    check_outputs(comfy, comfy.run(prompt, timeout=300), channels=16)


def test_sdxl_model_samples_with_dual_clip_and_taesdxl(comfy, tiny_models):
    prompt = sample_prompt(
        ["unet", 0], ["clip", 0], ["vae", 0],
        {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        prefix="tiny_sdxl")
    prompt.update(sdxl_loaders(tiny_models))
    check_outputs(comfy, comfy.run(prompt, timeout=300), channels=4)


def test_clip_vision_loads_through_its_loader_node(comfy, tiny_models):
    prompt = {
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": tiny_models["clip_vision"]}},
        "show_cv": {"class_type": "PreviewAny", "inputs": {"source": ["cv", 0]}},
    }
    history = comfy.run(prompt)
    assert "ClipVisionModel" in comfy.texts(history, "show_cv")[0]
    assert key_warnings(comfy) == []
