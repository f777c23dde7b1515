"""TReg nodes through a real ComfyUI server with the tiny random SD1.5 checkpoint and CLIP vision.

The weights are random, so the pictures mean nothing; the tests check wiring and properties that
hold for any weights: the modular graph and TReg Solve compute the same thing, errors name the
input and the fix, the server keeps serving, and the Adaptive Negation patch changes a KSampler
result exactly when it should. Few steps (one DC/AN step per run): a CPU ViT-L forward costs seconds.
"""

import numpy as np
import pytest
from safetensors.numpy import save_file
from skimage import data

from comfyui_inverse.tests.host.comfy_client import PromptExecutionError, PromptValidationError
from comfyui_inverse.tests.host.graphs import custom_sample, node, save_outputs, sdxl_loaders, sr_measurement, text_prompts

pytestmark = pytest.mark.host

SIZE = 64
STEPS = 3  # with dc_every 3: one DC + AN step (k = 0), then two plain DDIM steps
NULL_PROMPT = "out of focus, depth of field"


@pytest.fixture(scope="module")
def photos(comfy):
    crops = [data.astronaut()[100:100 + SIZE, 150:150 + SIZE], data.chelsea()[60:60 + SIZE, 120:120 + SIZE]]
    return [comfy.upload_image(crop, name=f"treg_photo_{i}.png") for i, crop in enumerate(crops)]


def base_graph(tiny_models, photos, clip_vision=None) -> dict:
    """Checkpoint, prompts, CLIP vision, and a ×4 super-resolution measurement of a batch of 2."""
    return {
        "ckpt": node("CheckpointLoaderSimple", ckpt_name=tiny_models["sd15_ckpt"]),
        **text_prompts(["ckpt", 1], negative=NULL_PROMPT),
        "cv": node("CLIPVisionLoader", clip_name=clip_vision or tiny_models["clip_vision"]),
        "vae": node("VAELoader", vae_name=tiny_models["sd15_vae"]),
        "img0": node("LoadImage", image=photos[0]),
        "img1": node("LoadImage", image=photos[1]),
        "batch": node("ImageBatch", image1=["img0", 0], image2=["img1", 0]),
        **sr_measurement(["batch", 0], sigma_y=0.01),
    }


GUIDER = {"cfg": 5.0, "an_steps": 10, "an_lr": 1e-3, "an_method": "adam"}
SAMPLER = {"dc_every": 3, "dc_until": 0.85, "cg_iters": 5, "cg_lambda": 1e-4, "use_dps": False}


def modular_graph(tiny_models, photos, seed=42, **overrides) -> dict:
    graph = base_graph(tiny_models, photos, overrides.pop("clip_vision", None))
    sampler_inputs = {"measurement": ["meas", 0], "vae": ["vae", 0], **SAMPLER, "dps_scale": 0.0}
    for key in overrides.pop("drop_sampler_inputs", ()):
        sampler_inputs.pop(key)
    graph.update({
        "guider": {"class_type": "InverseTRegGuider",
                   "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                              "clip_vision": ["cv", 0], **GUIDER}},
        "sampler": {"class_type": "InverseSamplerTReg", "inputs": sampler_inputs},
        "sigmas": {"class_type": "BasicScheduler",
                   "inputs": {"model": ["ckpt", 0], "scheduler": "ddim_uniform", "steps": STEPS, "denoise": 1.0}},
        "empty": node("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=2),
        **custom_sample(["guider", 0], ["sampler", 0], ["sigmas", 0], ["empty", 0], seed),
        **save_outputs(["sample", 0], ["vae", 0], "treg_modular", "latents/treg_modular", "save", "save_latent"),
    })
    return graph


def solve_graph(tiny_models, photos, seed=42) -> dict:
    graph = base_graph(tiny_models, photos)
    graph.update({
        "solve": {"class_type": "InverseTRegSolve",
                  "inputs": {"model": ["ckpt", 0], "measurement": ["meas", 0], "vae": ["vae", 0],
                             "positive": ["pos", 0], "negative": ["neg", 0], "clip_vision": ["cv", 0],
                             "steps": STEPS, "scheduler": "ddim_uniform", "seed": seed, **GUIDER, **SAMPLER}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["solve", 0], "filename_prefix": "treg_solve"}},
        "save_latent": {"class_type": "SaveLatent", "inputs": {"samples": ["solve", 1], "filename_prefix": "latents/treg_solve"}},
        # The adapted null embedding is a CONDITIONING: sampling with it must work.
        "ks": {"class_type": "KSampler",
               "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["solve", 2], "latent_image": ["solve", 1],
                          "seed": 0, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5}},
        "save_ks": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": "latents/treg_reuse"}},
    })
    return graph


def test_modular_graph_and_solve_node_agree(comfy, tiny_models, photos):
    modular = comfy.run(modular_graph(tiny_models, photos))
    solve = comfy.run(solve_graph(tiny_models, photos))
    (lat_modular,) = comfy.latents(modular, "save_latent")
    (lat_solve,) = comfy.latents(solve, "save_latent")
    assert lat_modular.shape == (2, 4, SIZE // 8, SIZE // 8)
    assert np.isfinite(lat_modular).all()
    # Same code path, same seed: equal up to float32 summation order (none expected: same process).
    np.testing.assert_allclose(lat_solve, lat_modular, rtol=0, atol=1e-5)
    images_modular, images_solve = comfy.images(modular, "save"), comfy.images(solve, "save")
    assert len(images_modular) == len(images_solve) == 2
    for a, b in zip(images_modular, images_solve):
        assert np.abs(a - b).max() <= 1.0 / 255.0 + 1e-6  # PNG quantisation
    # Batch items are independent samples (own noise, own measurement, own null embedding).
    assert not np.allclose(lat_modular[0], lat_modular[1])
    (reused,) = comfy.latents(solve, "save_ks")
    assert reused.shape == lat_solve.shape and np.isfinite(reused).all()


def on_sdxl(graph: dict, tiny_models) -> dict:
    """The same graph on the tiny SDXL UNet, DualCLIPLoader (CLIP-L + CLIP-G) and TAESDXL."""
    refs = {("ckpt", 0): ["unet", 0], ("ckpt", 1): ["clip", 0]}
    for node in graph.values():
        for key, value in node["inputs"].items():
            if isinstance(value, list) and tuple(value) in refs:
                node["inputs"][key] = refs[tuple(value)]
    del graph["ckpt"]
    graph.update(sdxl_loaders(tiny_models))  # its "vae" replaces the SD1.5 TAESD loader
    return graph


def test_sdxl_solve_negates_on_the_clip_l_block_and_its_null_embedding_is_reusable(comfy, tiny_models, photos):
    # ViT-L/14 image embeddings are 768 wide: TReg moves the CLIP-L columns (0:768) of SDXL's 2048-wide
    # null tokens; the adapted CONDITIONING keeps its pooled output, so a stock KSampler can use it.
    history = comfy.run(on_sdxl(solve_graph(tiny_models, photos), tiny_models), timeout=300)
    (latent,) = comfy.latents(history, "save_latent")
    assert latent.shape == (2, 4, SIZE // 8, SIZE // 8) and np.isfinite(latent).all()
    images = comfy.images(history, "save")
    assert len(images) == 2 and all(image.shape == (SIZE, SIZE, 3) for image in images)
    (reused,) = comfy.latents(history, "save_ks")
    assert reused.shape == latent.shape and np.isfinite(reused).all()
    assert "CLIP-L block of the 2048-wide text tokens (columns 0:768)" in comfy.log_text()


def test_wrong_clip_vision_width_is_a_clear_error_and_server_keeps_serving(comfy, tiny_models, photos):
    # CLIPVisionLoader picks its config from the layer count: a 32-layer file is a ViT-H/14
    # (1024-d embeddings, the IP-Adapter encoder). The guider rejects it before any forward, so
    # the other weights may stay unset. The projection must be in the file: newer ComfyUI (2026-08)
    # makes it an Identity when it is missing, which the guider reports as "no CLIP projection".
    stub = "stub_vit_h.safetensors"
    save_file({"vision_model.encoder.layers.30.layer_norm1.weight": np.ones(1280, np.float32),
               "visual_projection.weight": np.zeros((1024, 1280), np.float32)},
              str(comfy.models_dir / "clip_vision" / stub))
    with pytest.raises(PromptExecutionError) as error:
        comfy.run(modular_graph(tiny_models, photos, clip_vision=stub))
    message = error.value.exception_message
    assert error.value.node_type == "InverseTRegGuider"
    assert "clip_vision" in message and "1024" in message and "ViT-L/14" in message
    assert "Traceback" not in message
    # The server still runs prompts.
    stats = comfy.object_info("InverseTRegSolve")
    assert "InverseTRegSolve" in stats


def test_missing_vae_is_a_validation_error_naming_the_input(comfy, tiny_models, photos):
    graph = modular_graph(tiny_models, photos, drop_sampler_inputs=("vae",))
    with pytest.raises(PromptValidationError) as error:
        comfy.queue(graph)
    sampler_errors = error.value.node_errors.get("sampler", {}).get("errors", [])
    assert any("vae" in str(item) for item in sampler_errors), error.value.node_errors


def test_flow_model_is_refused_by_name(comfy, tiny_models, photos):
    graph = modular_graph(tiny_models, photos)
    graph["unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": tiny_models["sd3_unet"], "weight_dtype": "default"}}
    graph["guider"]["inputs"]["model"] = ["unet", 0]
    with pytest.raises(PromptExecutionError) as error:
        comfy.run(graph)
    message = error.value.exception_message
    assert "SD3" in message and "rectified-flow" in message and "C-PiGFM" in message


def ksampler_graph(tiny_models, patched: bool, an_steps=10, an_lr=0.05) -> dict:
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_models["sd15_ckpt"]}},
        **text_prompts(["ckpt", 1], negative=NULL_PROMPT),
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler",
               "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
                          "seed": 5, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["ks", 0], "filename_prefix": "latents/an_ksampler"}},
    }
    if patched:
        graph["cv"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": tiny_models["clip_vision"]}}
        graph["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": tiny_models["sd15_vae"]}}
        graph["an"] = {"class_type": "InverseAdaptiveNegation",
                       "inputs": {"model": ["ckpt", 0], "clip_vision": ["cv", 0], "vae": ["vae", 0], "an_steps": an_steps,
                                  "an_lr": an_lr, "an_method": "sign", "every": 3, "until": 0.85}}
        graph["ks"]["inputs"]["model"] = ["an", 0]
    return graph


def test_adaptive_negation_node_in_a_plain_ksampler_workflow(comfy, tiny_models):
    plain = comfy.latents(comfy.run(ksampler_graph(tiny_models, patched=False)), "save")[0]
    adapted = comfy.latents(comfy.run(ksampler_graph(tiny_models, patched=True)), "save")[0]
    neutral = comfy.latents(comfy.run(ksampler_graph(tiny_models, patched=True, an_steps=0)), "save")[0]
    assert np.isfinite(adapted).all()
    # One AN update at step 0 shifts the negative for steps 1 and 2: the result moves.
    assert np.abs(adapted - plain).max() > 1e-4
    # With a zero update the patch (wrapper + hook) leaves KSampler's computation unchanged.
    np.testing.assert_array_equal(neutral, plain)


def test_cancel_stops_a_long_treg_run(comfy, tiny_models, photos):
    import time

    graph = solve_graph(tiny_models, photos)
    del graph["ks"], graph["save_ks"]
    # 400 DC steps without AN (no CLIP forwards): minutes of work unless Cancel stops it.
    graph["solve"]["inputs"].update({"steps": 400, "dc_every": 1, "dc_until": 1.0, "an_steps": 0, "seed": 9})
    prompt_id = comfy.queue(graph)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = comfy.http.queue().get("queue_running") or []
        if any(prompt_id in item for item in running):
            break
        time.sleep(0.2)
    time.sleep(2.0)
    started = time.monotonic()
    comfy.interrupt()
    with pytest.raises(PromptExecutionError) as error:
        comfy.wait(prompt_id, timeout=120)
    assert error.value.details.get("exception_type") == "interrupted"
    assert time.monotonic() - started < 60
    assert "InverseTRegSolve" in comfy.object_info("InverseTRegSolve")  # still serving
