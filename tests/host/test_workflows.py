"""Every example workflow in workflows/ runs through the real ComfyUI server.

The UI file is converted with runner/workflow_api.py against the server's /object_info, the
model files it names are replaced by the tiny random-weight models (MODEL_MAP in
workflow_models.py, plus a tiny LoRA), the sample photo is uploaded under the workflow's own
file name but small (64×64, the low-resolution one 16×16), and the few size/step widgets that
must follow are overridden; the graph itself is unchanged. The pictures mean nothing (random
weights): the tests check that every node runs, the saved images have the sizes the operators
imply, the metrics report, and that each API twin in workflows/api/ is exactly what the
converter makes of the UI file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_inverse.runner.workflow_api import (VIRTUAL_NODE_TYPES, is_ui_workflow, schema_inputs, ui_to_api,
                                                 widget_value_problem, is_widget)
from comfyui_inverse.tests.host.workflow_models import MODEL_MAP, tiny_lora

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
INPUTS = WORKFLOWS / "inputs"
SIZE = 64  # restored image side in the tests (the workflows use 512)
MODEL_INPUTS = ("ckpt_name", "unet_name", "vae_name", "clip_name", "lora_name")

# Sample inputs: file name -> side in the tests (the shipped files are 512 and 128).
SAMPLES = {"inverse_astronaut_512.jpg": SIZE, "inverse_astronaut_512_masked.webp": SIZE,
           "inverse_astronaut_128.png": SIZE // 4}

# Expected SaveImage outputs per workflow: title -> side of the saved (square) image.
# "measured" is y at its own size: SIZE / factor for super-resolution.
RESTORED, MEASURED = "Save restored", "Save measured (before)"
EXPECTED_SAVES = {
    "01 Upscale your photo x4": {RESTORED: SIZE},
    "02 Your photo x8 on SDXL": {RESTORED: 2 * SIZE},  # the 16 px sample × 8
    "03 Upscale x4, step by step": {RESTORED: SIZE, MEASURED: SIZE // 4},
    "04 Upscale x8 in one node": {RESTORED: SIZE, MEASURED: SIZE // 8},
    "05 Upscale x16 with a prompt": {RESTORED: SIZE, MEASURED: SIZE // 16},
    "06 Upscale x4 with SD3.5": {RESTORED: SIZE, MEASURED: SIZE // 4},
    "07 Sharpen a blurred photo": {RESTORED: SIZE, MEASURED: SIZE},
    "08 Sharpen with TReg": {RESTORED: SIZE, MEASURED: SIZE},
    "09 Remove motion blur": {RESTORED: SIZE, MEASURED: SIZE},
    "10 Fill a masked area": {RESTORED: SIZE, MEASURED: SIZE},
    "11 Remove noise": {RESTORED: SIZE, MEASURED: SIZE},
    "12 LoRA and stock nodes": {RESTORED: SIZE, MEASURED: SIZE // 2},
    "13 Big photo x4 in tiles": {RESTORED: SIZE},  # the 16 px sample × 4 (TILE_OVERRIDE)
}
# Speed: TReg's paper step counts would take minutes on CPU. 3 steps with dc_every 3 still run
# one data-consistency + adaptive-negation step.
STEP_OVERRIDES = {"BasicScheduler": 3, "InverseTRegSolve": 3}
# Tiled mode at test sizes: one 64 px tile (the tiled VAE and the tile path run; several tiles are
# tested in test_tiling_nodes.py — 3×3 tiles of the tiny SDXL take minutes on a busy CPU).
TILE_OVERRIDE = {"tile_size": 64, "tile_overlap": 16}
SIZE_NODES = ("EmptyLatentImage", "EmptySD3LatentImage", "ImageScale")
METRIC_NODES = ("InversePSNR", "InverseSSIM", "InverseMeasurementConsistency")


def ui_workflow_paths() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


NAMES = [path.stem for path in ui_workflow_paths()]


# --------------------------------------------------------------------------- static checks

def test_workflow_set_is_complete():
    assert NAMES == sorted(EXPECTED_SAVES), "add new workflows to EXPECTED_SAVES (and MODEL_MAP in workflow_models.py)"
    for name in NAMES:
        assert is_ui_workflow(load(WORKFLOWS / f"{name}.json")), f"{name}: not UI format"
        assert (WORKFLOWS / "api" / f"{name}.json").is_file(), f"{name}: no API twin in workflows/api/"
        with Image.open(WORKFLOWS / f"{name}.jpg") as thumb:  # the frontend asks for <name>.jpg
            assert thumb.format == "JPEG" and thumb.width >= 256


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_documented_and_uses_named_models(name):
    workflow = load(WORKFLOWS / f"{name}.json")
    notes = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]  # proportional font, not "Note"
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    for needed in ("Models:", "Parameters that work:"):
        assert needed in text, f"{name}: the Note lacks '{needed}'"
    for sample in re.findall(r"inverse_astronaut[\w.]*", json.dumps(workflow)):
        assert (INPUTS / sample).is_file(), f"{name}: sample {sample} is not shipped in workflows/inputs/"
    ours = [n for n in workflow["nodes"] if (n.get("properties") or {}).get("cnr_id") == "comfyui-inverse"]
    assert ours, f"{name}: uses none of the pack's nodes"
    assert not any(n["type"] in ("Reroute", "PrimitiveNode") for n in workflow["nodes"])
    # Every model file the loaders name has a download entry for the frontend's missing-model
    # dialog (properties.models, matched by name against the widget values) -- except the LoRA,
    # which stands for the user's own file.
    for node in workflow["nodes"]:
        for value in node.get("widgets_values") or []:
            if isinstance(value, str) and value in MODEL_MAP and MODEL_MAP[value] != "lora":
                models = {m["name"]: m for m in (node.get("properties") or {}).get("models", [])}
                assert value in models, f"{name}: {node['type']} names {value} without properties.models"
                assert models[value]["url"].startswith("https://huggingface.co/")
                assert models[value]["directory"] in ("checkpoints", "diffusion_models", "text_encoders", "vae",
                                                      "clip_vision")


# ------------------------------------------------------------------------ server fixtures

@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.object_info()


@pytest.fixture(scope="module")
def model_files(comfy, tiny_models):
    files = {name: tiny_models[key] for name, key in MODEL_MAP.items() if key != "lora"}
    files["your_sd15_lora.safetensors"] = tiny_lora(comfy.models_dir)
    return files


@pytest.fixture(scope="module")
def samples(comfy):
    """Upload the shipped samples, shrunk, under their own names (what LoadImage asks for)."""
    for name, side in SAMPLES.items():
        with Image.open(INPUTS / name) as image:
            small = image.resize((side, side), Image.Resampling.LANCZOS)
            small.load()
        assert comfy.upload_image(small, name=name) == name
    return SAMPLES


def test_samples_carry_what_the_workflows_need():
    with Image.open(INPUTS / "inverse_astronaut_512_masked.webp") as masked:
        alpha = np.asarray(masked.convert("RGBA"))[..., 3]
    hole = (alpha < 128).mean()
    assert 0.02 < hole < 0.3, f"the masked sample should have a painted hole (alpha 0); {hole:.1%} masked"
    with Image.open(INPUTS / "inverse_astronaut_512.jpg") as photo:
        assert photo.size == (512, 512)
    with Image.open(INPUTS / "inverse_astronaut_128.png") as small:
        assert small.size == (128, 128)


def prepare(workflow: dict, object_info: dict, model_files: dict) -> dict:
    """UI workflow -> API prompt with tiny models and test sizes; the graph is unchanged."""
    prompt = ui_to_api(workflow, object_info)
    for node in prompt.values():
        inputs = node["inputs"]
        for key in MODEL_INPUTS:
            if key in inputs and not isinstance(inputs[key], list):
                assert inputs[key] in model_files, (
                    f"{node['class_type']}.{key} = {inputs[key]!r} has no tiny stand-in: add it to MODEL_MAP")
                inputs[key] = model_files[inputs[key]]
        if node["class_type"] in SIZE_NODES:
            inputs["width"] = inputs["height"] = SIZE
        if node["class_type"] in STEP_OVERRIDES:
            inputs["steps"] = STEP_OVERRIDES[node["class_type"]]
        if inputs.get("tile_size"):
            inputs.update(TILE_OVERRIDE)
    return prompt


# -------------------------------------------------------------------------- the runs

@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_with_tiny_models(comfy, object_info, model_files, samples, name):
    workflow = load(WORKFLOWS / f"{name}.json")
    prompt = prepare(workflow, object_info, model_files)
    history = comfy.run(prompt, timeout=600)  # SDXL at 128²: ~1 min alone, minutes on a loaded machine

    saves = {node["_meta"]["title"]: node_id for node_id, node in prompt.items()
             if node["class_type"] == "SaveImage"}
    assert sorted(saves) == sorted(EXPECTED_SAVES[name])
    for title, side in EXPECTED_SAVES[name].items():
        images = comfy.images(history, saves[title])
        assert len(images) == 1, f"{name}: {title} saved {len(images)} images"
        assert images[0].shape == (side, side, 3), f"{name}: {title} is {images[0].shape}"
        assert np.isfinite(images[0]).all() and images[0].std() > 1e-3
    for node_id, node in prompt.items():
        if node["class_type"] in METRIC_NODES:
            (text,) = comfy.texts(history, node_id)
            value = float(re.search(r":\s*(-?[\d.]+(?:e-?\d+)?)", text).group(1))
            assert np.isfinite(value), f"{name}: {node['_meta']['title']} reported {text!r}"
    if "LoRA" in name:
        assert "lora key not loaded" not in comfy.log_text()


@pytest.mark.parametrize("name", NAMES)
def test_ui_widget_values_fit_the_node_schemas(object_info, name):
    """widgets_values line up with today's widgets: none left over, none missing, each one a value the
    server accepts (the model files and the photo aside: those are the user's)."""
    workflow = load(WORKFLOWS / f"{name}.json")
    warnings = []
    prompt = ui_to_api(workflow, object_info, warnings)
    assert warnings == [], f"{name}: {warnings}"
    for node_id, node in prompt.items():
        specs = schema_inputs(object_info[node["class_type"]])
        where = f"{name}: node {node_id} ({node['class_type']})"
        for key, spec in specs:
            if not is_widget(spec) or key in MODEL_INPUTS + ("image",):
                continue
            assert key in node["inputs"], f"{where} has no value for its widget {key}: regenerate the workflow"
            value = node["inputs"][key]
            if not isinstance(value, list):  # a link
                assert widget_value_problem(spec, value) is None, f"{where}.{key}: {widget_value_problem(spec, value)}"


# The pack's nodes as the first workflows saved them (commit deb66c4, before the k, noisy, restarts,
# sampler, enforce_measurement and tile widgets were appended): widgets_values -> the API inputs of then.
OLD_SAVED = {
    "InverseSuperResolution": ([4, "bicubic"], {"factor": 4, "kernel": "bicubic"}),
    "InverseDegradeImage": ([0.0, 0, "fixed"], {"sigma_y": 0.0, "seed": 0}),
    "InverseSigmas": ([5, 0.4], {"steps": 5, "start": 0.4}),
    "SamplerConjugatePiGDM": ([15.0, 0.0, "autograd", "auto", "auto"],
                              {"w": 15.0, "lam": 0.0, "vjp": "autograd", "bridge_mode": "auto", "start": "auto"}),
    "SamplerConjugatePiGFM": ([20.0, 0.2, "autograd", "auto", "auto"],
                              {"w": 20.0, "lam": 0.2, "vjp": "autograd", "bridge_mode": "auto", "start": "auto"}),
    "InverseSolveConjugate": (["custom", 10, 1.0, 15.0, 0.0, 0.5, 0, "fixed", "autograd", "auto"],
                              {"preset": "custom", "steps": 10, "cfg": 1.0, "w": 15.0, "lam": 0.0, "start": 0.5,
                               "seed": 0, "vjp": "autograd", "bridge_mode": "auto"}),
    "InverseTRegGuider": ([5.0, 10, 0.001, "adam"], {"cfg": 5.0, "an_steps": 10, "an_lr": 0.001, "an_method": "adam"}),
    "InverseSamplerTReg": ([3, 0.85, 5, 0.0001, False, 0.0],
                           {"dc_every": 3, "dc_until": 0.85, "cg_iters": 5, "cg_lambda": 0.0001, "use_dps": False,
                            "dps_scale": 0.0}),
    "InverseTRegSolve": ([100, "ddim_uniform", 5.0, 10, 0.0005, "adam", 3, 0.85, 5, 0.0001, False, 0, "fixed"],
                         {"steps": 100, "scheduler": "ddim_uniform", "cfg": 5.0, "an_steps": 10, "an_lr": 0.0005,
                          "an_method": "adam", "dc_every": 3, "dc_until": 0.85, "cg_iters": 5, "cg_lambda": 0.0001,
                          "use_dps": False, "seed": 0}),
    "InverseGaussianBlur": ([3.0, 0, 0.03, "zero"], {"sigma": 3.0, "kernel_size": 0, "threshold": 0.03, "boundary": "zero"}),
    "InverseMotionBlur": ([15.0, 0.0, 7, 0.03], {"length": 15.0, "angle": 0.0, "trajectory_seed": 7, "threshold": 0.03}),
    "InverseInpainting": ([0.5, 0, False], {"threshold": 0.5, "dilate": 0, "resize_mask_to_image": False}),
    "InverseMeasurementFromImage": ([0.01], {"sigma_y": 0.01}),
}
# What a widget appended since then must default to, so that the old graph keeps its behaviour
# (sampler auto = conjugate under preset custom; the old graphs ran untiled, without restarts).
OLD_BEHAVIOUR_DEFAULTS = {"k": 0.0, "noisy": "paper", "restarts": 0, "sampler": "auto",
                          "enforce_measurement": "off", "tile_size": 0}


@pytest.mark.parametrize("kind", sorted(OLD_SAVED))
def test_workflow_saved_before_widgets_were_appended_keeps_its_values(object_info, kind):
    values, inputs_then = OLD_SAVED[kind]
    old = {"nodes": [{"id": 1, "type": kind, "mode": 0, "inputs": [], "outputs": [], "widgets_values": values}],
           "links": [], "version": 0.4}
    warnings = []
    converted = ui_to_api(old, object_info, warnings)["1"]["inputs"]
    assert warnings == []
    assert converted == inputs_then  # no value moved to another widget
    required = (object_info[kind]["input"].get("required") or {})
    for key, spec in schema_inputs(object_info[kind]):
        if is_widget(spec) and key not in inputs_then:
            assert key not in required, f"{kind}.{key} is required: a workflow saved before it fails validation"
            if key in OLD_BEHAVIOUR_DEFAULTS:
                assert spec[1].get("default") == OLD_BEHAVIOUR_DEFAULTS[key], f"{kind}.{key}"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_equals_the_converted_ui_workflow(object_info, name):
    workflow = load(WORKFLOWS / f"{name}.json")
    converted = json.loads(json.dumps(ui_to_api(workflow, object_info)))  # tuples, int keys as in the file
    twin = load(WORKFLOWS / "api" / f"{name}.json")
    # A node without its own title gets the host's display name, which changes between ComfyUI
    # versions (CFGGuider is "CFG Guider" since 0.22): such a title may be the running host's or the
    # one written into the twin. Everything the server reads, and every title the workflow sets, must match.
    untitled = {str(n["id"]) for n in workflow["nodes"] if not n.get("title")}
    for node_id in untitled & set(converted) & set(twin):
        kind = converted[node_id]["class_type"]
        if converted[node_id]["_meta"]["title"] == (object_info[kind].get("display_name") or kind):
            converted[node_id]["_meta"] = twin[node_id]["_meta"]
    assert converted == twin, f"{name}: workflows/api/{name}.json is stale; run scripts/make_workflows.py"
    ui_nodes = {str(n["id"]) for n in workflow["nodes"] if n["type"] not in VIRTUAL_NODE_TYPES}
    assert set(twin) == ui_nodes
