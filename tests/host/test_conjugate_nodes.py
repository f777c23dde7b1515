"""C-ΠGDM / C-ΠGFM nodes through the real ComfyUI server on tiny random-weight models.

Graphs use stock loaders → our operator/measurement nodes → InverseSigmas + SamplerConjugate* →
stock SamplerCustomAdvanced (CFGGuider, RandomNoise) → VAEDecode → SaveImage.
SDXL is conditioned through DualCLIPLoader (tiny CLIP-L + full-size random CLIP-G).
"""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_inverse.tests.host.comfy_client import PromptExecutionError, PromptValidationError
from comfyui_inverse.tests.host.graphs import (custom_sample, loaders, node, save_outputs, sr_measurement,
                                               text_prompts)

pytestmark = pytest.mark.host

SIZE = 64  # pixels; latent 8×8


def smooth_image(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + c / 3)) * np.cos(
        2 * np.pi * yy * rng.uniform(0.5, 2)) for c in range(3)], axis=-1)
    return np.clip(image, 0.0, 1.0)


@pytest.fixture(scope="module")
def photo(comfy):
    return comfy.upload_image(smooth_image(0), name="conjugate_photo.png")


@pytest.fixture(scope="module")
def photo2(comfy):
    return comfy.upload_image(smooth_image(1), name="conjugate_photo2.png")


FAMILIES = {"sd15": "vp", "sdxl": "vp", "sd3": "flow", "flux": "flow"}  # family: prediction kind


def measurement_nodes(photo: str, size: int | None = None, batch_photo: str | None = None) -> dict:
    nodes = {"load": node("LoadImage", image=photo)}
    image = ["load", 0]
    if size is not None:  # crop to a size the test wants (e.g. not a multiple of 8)
        nodes["crop"] = node("ImageCrop", image=image, width=size, height=size, x=0, y=0)
        image = ["crop", 0]
    if batch_photo is not None:
        nodes["load2"] = node("LoadImage", image=batch_photo)
        nodes["batch"] = node("ImageBatch", image1=["load", 0], image2=["load2", 0])
        image = ["batch", 0]
    return {**nodes, **sr_measurement(image)}


def modular_prompt(tiny_models, family, photo, *, vjp="autograd", bridge="latent_surrogate", steps=2, seed=3,
                   cfg=1.5, latent_size=SIZE, batch=1, batch_photo=None, measurement_size=None, w=None, lam=None,
                   start=0.4) -> dict:
    nodes, model, clip, vae = loaders(tiny_models, family)
    kind = FAMILIES[family]
    sampler_class = "SamplerConjugatePiGDM" if kind == "vp" else "SamplerConjugatePiGFM"
    w = (15.0 if kind == "vp" else 20.0) if w is None else w
    lam = (0.0 if kind == "vp" else 0.2) if lam is None else lam
    nodes.update(measurement_nodes(photo, measurement_size, batch_photo))
    nodes.update(text_prompts(clip))
    nodes.update({
        "guider": node("CFGGuider", model=model, positive=["pos", 0], negative=["neg", 0], cfg=cfg),
        "sigmas": node("InverseSigmas", model=model, steps=steps, start=start),
        "sampler": node(sampler_class, measurement=["meas", 0], vae=vae, w=w, lam=lam, vjp=vjp, bridge_mode=bridge),
        "empty": node("EmptyLatentImage" if kind == "vp" else "EmptySD3LatentImage",
                      width=latent_size, height=latent_size, batch_size=batch),
        **custom_sample(["guider", 0], ["sampler", 0], ["sigmas", 0], ["empty", 0], seed),
        **save_outputs(["sample", 0], vae, f"cpgdm_{family}", f"cpgdm_{family}_latent"),
    })
    return nodes


def all_in_one_prompt(tiny_models, family, photo, *, vjp, steps, seed, cfg, w, lam, start) -> dict:
    nodes, model, clip, vae = loaders(tiny_models, family)
    nodes.update(measurement_nodes(photo))
    nodes.update(text_prompts(clip))
    nodes.update({
        "solve": {"class_type": "InverseSolveConjugate", "inputs": {
            "model": model, "vae": vae, "positive": ["pos", 0], "negative": ["neg", 0], "measurement": ["meas", 0],
            "preset": "custom", "steps": steps, "cfg": cfg, "w": w, "lam": lam, "start": start, "seed": seed,
            "vjp": vjp, "bridge_mode": "latent_surrogate"}},
        "img": {"class_type": "SaveImage", "inputs": {"images": ["solve", 0], "filename_prefix": "cpgdm_aio"}},
        "lat": {"class_type": "SaveLatent", "inputs": {"samples": ["solve", 1], "filename_prefix": "cpgdm_aio_latent"}},
    })
    return nodes


def check_restored(comfy, history, channels, batch=1):
    images = comfy.images(history, "img")
    assert len(images) == batch
    for image in images:
        assert image.shape == (SIZE, SIZE, 3)  # the operator's full size, not the 16×16 measurement
        assert np.isfinite(image).all() and image.std() > 0
    (latent,) = comfy.latents(history, "lat")
    assert latent.shape == (batch, channels, SIZE // 8, SIZE // 8)
    assert np.isfinite(latent).all()
    return images, latent


def test_pixel_bridge_and_consistent_target_modes_run_and_differ_from_latent_surrogate(comfy, tiny_models, photo):
    runs = {}
    for bridge in ("latent_surrogate", "pixel_bridge", "consistent_target"):
        prompt = modular_prompt(tiny_models, "sd3", photo, vjp="autograd", bridge=bridge, seed=5)
        _, runs[bridge] = check_restored(comfy, comfy.run(prompt), 16)
    # pixel_bridge changes only the Jacobian term's residual, consistent_target only the target
    for bridge in ("pixel_bridge", "consistent_target"):
        assert not np.allclose(runs["latent_surrogate"], runs[bridge], atol=1e-6), bridge


@pytest.mark.parametrize("family,channels", [("sd15", 4), ("sdxl", 4), ("sd3", 16), ("flux", 16)])
def test_modular_graph_restores_full_size_image_and_all_in_one_node_matches_it(comfy, tiny_models, photo,
                                                                             family, channels):
    vp = FAMILIES[family] == "vp"
    settings = {"vjp": "autograd", "steps": 2, "seed": 11, "cfg": 1.0 if family == "flux" else 1.5,
                "w": 15.0 if vp else 20.0, "lam": 0.0 if vp else 0.2, "start": 0.4}
    modular = modular_prompt(tiny_models, family, photo, **settings)
    one = all_in_one_prompt(tiny_models, family, photo, **settings)
    log_start = len(comfy.log_text())
    images_a, latent_a = check_restored(comfy, comfy.run(modular, timeout=300), channels)
    images_b, latent_b = check_restored(comfy, comfy.run(one, timeout=300), channels)
    # exact autograd on every family, Flux included (its in-place residual adds are made out of
    # place during the VJP): no fallback to finite differences
    assert "finite-difference Jacobian" not in comfy.log_text()[log_start:]
    # Same code path and seed: equal up to float32 reduction-order noise (latents ~1, 1e-4 abs).
    np.testing.assert_allclose(latent_b, latent_a, atol=1e-4, rtol=0)
    assert np.abs(images_b[0] - images_a[0]).max() <= 1.0 / 255 + 1e-6  # 8-bit PNG rounding


def test_progress_and_live_previews_reach_the_websocket(comfy, tiny_models, photo):
    # SamplerCustomAdvanced hands our SAMPLER ComfyUI's preview callback: one progress event per
    # step and a latent2rgb preview image (the server runs with --preview-method latent2rgb).
    events = []
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="autograd", steps=3, seed=21)
    check_restored(comfy, comfy.http.run(prompt, timeout=300, progress=events.append), 4)
    steps = [e["data"] for e in events if e["type"] == "progress" and str(e["data"].get("node")) == "sample"]
    assert [d["value"] for d in steps] == [1, 2, 3] and {d["max"] for d in steps} == {3}
    previews = [e for e in events if e["type"] == "preview_image"]
    assert len(previews) >= 1 and all(e["data"]["bytes"] > 100 for e in previews)


def test_batch_with_per_item_measurements(comfy, tiny_models, photo, photo2):
    prompt = modular_prompt(tiny_models, "sd3", photo, vjp="none", batch=2, batch_photo=photo2)
    images, _ = check_restored(comfy, comfy.run(prompt), 16, batch=2)
    assert np.abs(images[0] - images[1]).mean() > 1e-3  # each item follows its own measurement


def test_init_latent_start_through_stock_noise(comfy, tiny_models, photo):
    """InverseInitLatent's E(H⁺y), noised by the stock RandomNoise path, is the same start the
    sampler builds itself from an empty latent (both draw N(0, I) from a CPU generator seeded
    with the noise seed): same seed → same result either way."""
    prompt = modular_prompt(tiny_models, "sd3", photo, vjp="none", seed=4)
    _, from_empty = check_restored(comfy, comfy.run(prompt), 16)
    prompt["init"] = {"class_type": "InverseInitLatent",
                      "inputs": {"model": ["unet", 0], "vae": ["vae", 0], "measurement": ["meas", 0]}}
    prompt["sample"]["inputs"]["latent_image"] = ["init", 0]
    _, from_init = check_restored(comfy, comfy.run(prompt), 16)
    np.testing.assert_allclose(from_init, from_empty, atol=1e-4, rtol=0)  # raw↔processed round trip
    # the start matters: pure noise from the empty latent (start = input_latent) gives another result
    prompt = modular_prompt(tiny_models, "sd3", photo, vjp="none", seed=4)
    prompt["sampler"]["inputs"]["start"] = "input_latent"
    _, from_noise = check_restored(comfy, comfy.run(prompt), 16)
    assert np.abs(from_noise - from_empty).max() > 1e-2


def expect_execution_error(comfy, prompt, *needles):
    with pytest.raises(PromptExecutionError) as info:
        comfy.run(prompt)
    message = info.value.exception_message
    for needle in needles:
        assert needle in message, message
    return message


def test_bad_wiring_reports_the_input_and_server_keeps_serving(comfy, tiny_models, photo):
    # latent of a different size than the measurement's image
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="none", latent_size=32)
    expect_execution_error(comfy, prompt, "latent_image", "Empty Latent Image of width 64")
    # measurement whose image is not a multiple of 8 (60×60 → SR×4 of 60 is 15)
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="none", measurement_size=60, latent_size=56)
    expect_execution_error(comfy, prompt, "measurement", "multiples of 8")
    # unsupported parameterisation (x0 prediction via the stock ModelSamplingDiscrete node)
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="none")
    prompt["x0"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["ckpt", 0], "sampling": "x0",
                                                                       "zsnr": False}}
    prompt["guider"]["inputs"]["model"] = ["x0", 0]
    prompt["sigmas"]["inputs"]["model"] = ["x0", 0]
    expect_execution_error(comfy, prompt, "model: unsupported model type")
    # wrong method for the family
    prompt = modular_prompt(tiny_models, "sd3", photo, vjp="none")
    prompt["sampler"]["class_type"] = "SamplerConjugatePiGDM"
    expect_execution_error(comfy, prompt, "SamplerConjugatePiGFM")
    # VAE of another family (4-channel TAESD for a 16-channel model)
    prompt = modular_prompt(tiny_models, "sd3", photo, vjp="none")
    prompt["vae"]["inputs"]["vae_name"] = tiny_models["sd15_vae"]
    expect_execution_error(comfy, prompt, "vae:", "16")
    # VAE missing: refused at validation, naming the input
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="none")
    del prompt["sampler"]["inputs"]["vae"]
    with pytest.raises(PromptValidationError) as info:
        comfy.queue(prompt)
    assert "vae" in str(info.value)
    # and the server still serves
    check_restored(comfy, comfy.run(modular_prompt(tiny_models, "sd15", photo, vjp="none")), 4)


def test_ddnm_sampler_k_widget_and_enforce_measurement(comfy, tiny_models, photo):
    """The issue-13 widgets through the server: sampler=ddnm with enforce_measurement=on on the all-in-one
    node, the modular C-ΠGDM node with k, and the Enforce Measurement node on a decoded image."""
    one = all_in_one_prompt(tiny_models, "sd15", photo, vjp="none", steps=2, seed=3, cfg=1.0, w=5.0, lam=0.0,
                            start=0.4)
    one["solve"]["inputs"].update({"sampler": "ddnm", "enforce_measurement": "on"})
    one["fix"] = {"class_type": "InverseEnforceMeasurement", "inputs": {"image": ["solve", 0], "measurement": ["meas", 0]}}
    one["fiximg"] = {"class_type": "SaveImage", "inputs": {"images": ["fix", 0], "filename_prefix": "enforced"}}
    # the tiny SD1.5 decoder leaves [0, 1] after the correction: the clamp must not undo the agreement
    for name, image in (("cons", ["solve", 0]), ("cons_fix", ["fix", 0])):
        one[name] = node("InverseMeasurementConsistency", image=image, measurement=["meas", 0])
    history = comfy.run(one, timeout=300)
    check_restored(comfy, history, 4)
    (fixed,) = comfy.images(history, "fiximg")
    assert fixed.shape == (SIZE, SIZE, 3) and np.isfinite(fixed).all()
    for name in ("cons", "cons_fix"):  # one correction + clamp: ~7e-3 here
        residual = float(comfy.texts(history, name)[0].split(":")[1].split()[0])
        assert residual < 5e-4, (name, residual)
    modular = modular_prompt(tiny_models, "sd15", photo, vjp="none", steps=2, seed=3, cfg=1.0, w=5.0, lam=0.0,
                             start=0.4)
    sampler = next(n for n in modular.values() if n["class_type"] == "SamplerConjugatePiGDM")
    sampler["inputs"]["k"] = 2.0
    _, with_k = check_restored(comfy, comfy.run(modular, timeout=300), 4)
    sampler["inputs"]["k"] = 0.0
    _, without_k = check_restored(comfy, comfy.run(modular, timeout=300), 4)
    assert not np.allclose(with_k, without_k, atol=1e-6)


def test_noisy_widget_old_workflows_keep_paper_and_exact_runs_where_paper_is_refused(comfy, tiny_models, photo):
    """The issue-13 `noisy` widget: a graph without it (an old saved workflow) runs the released noisy map
    bit for bit; noisy=exact runs a different map, also on an ill-conditioned blur that paper refuses."""
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="none", steps=2, seed=3, cfg=1.0, w=2.0, lam=-0.15,
                            start=0.4)
    prompt["meas"]["inputs"]["sigma_y"] = 0.05
    sampler = prompt["sampler"]["inputs"]
    _, old = check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    sampler["noisy"] = "paper"
    _, paper = check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    assert np.array_equal(old, paper)
    sampler.update({"noisy": "exact", "w": 5.0, "lam": 0.0, "k": 2.0})
    _, exact = check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    assert not np.allclose(exact, paper, atol=1e-4)
    # Gaussian blur of 8 px keeping gains down to 0.001: the released σ_y correction diverges there
    prompt["op"] = {"class_type": "InverseGaussianBlur",
                    "inputs": {"sigma": 8.0, "kernel_size": 0, "threshold": 0.001, "boundary": "zero"}}
    check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    sampler.update({"noisy": "paper", "w": 15.0, "k": 0.0})
    expect_execution_error(comfy, prompt, "sigma_y = 0.05", "noisy = exact")


def test_ddnm_noisy_widget_old_workflows_keep_the_plain_projection(comfy, tiny_models, photo):
    """SamplerDDNM's `noisy` widget (issue 13): a graph without it (an old saved workflow) runs the plain
    projection from E(H⁺y) bit for bit; noisy=exact (noise-aware projection, Wiener start) differs."""
    prompt = modular_prompt(tiny_models, "sd15", photo, vjp="none", steps=2, seed=3, cfg=1.0, start=0.4)
    prompt["meas"]["inputs"]["sigma_y"] = 0.05
    prompt["sampler"] = node("SamplerDDNM", measurement=["meas", 0], vae=prompt["sampler"]["inputs"]["vae"])
    _, old = check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    prompt["sampler"]["inputs"]["noisy"] = "paper"
    _, paper = check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    assert np.array_equal(old, paper)
    prompt["sampler"]["inputs"]["noisy"] = "exact"
    _, exact = check_restored(comfy, comfy.run(prompt, timeout=300), 4)
    assert not np.allclose(exact, paper, atol=1e-4)


def test_pigdm_and_dps_sampler_choices_and_enforce_auto(comfy, tiny_models, photo):
    """The baselines as `sampler` choices of the all-in-one node: ΠGDM and DPS run, and differ from C-ΠGDM
    (the same model, measurement and seed); DPS on a flow model is refused naming the input; with
    preset auto, enforce_measurement = auto applies the latent preset's choice (samplers/latent_presets.py)."""
    one = all_in_one_prompt(tiny_models, "sd15", photo, vjp="autograd", steps=2, seed=3, cfg=1.0, w=1.0, lam=0.0,
                            start=0.4)
    results = {}
    for sampler in ("conjugate", "pigdm", "dps"):
        one["solve"]["inputs"]["sampler"] = sampler
        _, results[sampler] = check_restored(comfy, comfy.run(one, timeout=300), 4)
    assert not np.allclose(results["pigdm"], results["conjugate"], atol=1e-5)
    assert not np.allclose(results["dps"], results["conjugate"], atol=1e-5)
    assert not np.allclose(results["dps"], results["pigdm"], atol=1e-5)
    flow = all_in_one_prompt(tiny_models, "sd3", photo, vjp="none", steps=2, seed=3, cfg=1.0, w=1.0, lam=0.2,
                             start=0.4)
    flow["solve"]["inputs"]["sampler"] = "dps"
    expect_execution_error(comfy, flow, "sampler:", "diffusion models")
    # preset auto + enforce_measurement auto = the latent preset's enforce (on for SR ×4): the enforced image
    # reproduces the noiseless measurement far better than the plain decode
    one["solve"]["inputs"].update({"sampler": "auto", "preset": "auto", "vjp": "none"})
    one["cons"] = node("InverseMeasurementConsistency", image=["solve", 0], measurement=["meas", 0])
    residual = {}
    for enforce in ("off", "auto"):
        one["solve"]["inputs"]["enforce_measurement"] = enforce
        history = comfy.run(one, timeout=300)
        residual[enforce] = float(comfy.texts(history, "cons")[0].split(":")[1].split()[0])
    from comfyui_inverse.operators import SuperResolution
    from comfyui_inverse.samplers.latent_presets import latent_preset

    assert latent_preset("auto", "vp", SuperResolution(4), 0.0)["enforce"]
    assert residual["auto"] < 0.2 * residual["off"], residual


def test_noisy_auto_preset_runs_the_restart_and_wiener_start_seeded(comfy, tiny_models, photo):
    """preset auto with sigma_y > 0 (issue 13): 5 steps + one restart from E(W y) with the exact noisy map, and
    the noise-aware latent DDNM; the same seed gives the same latent, the two samplers differ."""
    prompt = all_in_one_prompt(tiny_models, "sd15", photo, vjp="none", steps=2, seed=3, cfg=1.0, w=5.0, lam=0.0,
                               start=0.4)
    prompt["meas"]["inputs"]["sigma_y"] = 0.05
    prompt["solve"]["inputs"].update({"preset": "auto", "enforce_measurement": "on"})
    _, first = check_restored(comfy, comfy.run(prompt, timeout=600), 4)
    _, again = check_restored(comfy, comfy.run(prompt, timeout=600), 4)
    assert np.array_equal(first, again)
    prompt["solve"]["inputs"]["sampler"] = "ddnm"
    _, ddnm = check_restored(comfy, comfy.run(prompt, timeout=600), 4)
    assert not np.allclose(ddnm, first, atol=1e-4)
