"""The model files a UI workflow names, and tiny stand-ins for them on the test server.

MODEL_MAP maps each file name the shipped workflows ask for to the tiny model (tiny_models.py) that
stands in for it. test_workflows.py substitutes the tiny file in the API prompt; the browser test
instead installs the tiny file under the workflow's own name (`install_under_names`), because the
frontend checks the names in the graph against the server's model lists when a workflow opens.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from comfyui_inverse.runner.workflow_api import ui_to_api
from comfyui_inverse.tests.host import tiny_models as tm

# Model file names the workflows ask for -> tiny_models key (or "lora": the LoRA built here).
MODEL_MAP = {
    "v1-5-pruned-emaonly.safetensors": "sd15_ckpt",
    "sd_xl_base_1.0.safetensors": "sdxl_ckpt",
    "sd3.5_medium.safetensors": "sd3_unet",
    "clip_l.safetensors": "clip_l",
    "sd3.5_vae.safetensors": "sd3_vae",
    "clip-vit-large-patch14.safetensors": "clip_vision",
    "your_sd15_lora.safetensors": "lora",
}
# (loader class, input) -> models/ folder, for the loaders the workflows use.
LOADER_FOLDERS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
}
IMAGE_LOADERS = {("LoadImage", "image"), ("LoadImageMask", "image")}
TINY_LORA = "tiny_sd15_lora.safetensors"


def named_files(workflow: dict, object_info: dict) -> tuple[set[tuple[str, str]], set[str]]:
    """({(models folder, file name)}, {input image name}) that the workflow's active nodes name."""
    models, images = set(), set()
    for node in ui_to_api(workflow, object_info).values():  # bypassed/muted nodes are left out
        for name, value in node["inputs"].items():
            if not isinstance(value, str):
                continue
            key = (node["class_type"], name)
            if key in LOADER_FOLDERS:
                models.add((LOADER_FOLDERS[key], value))
            elif key in IMAGE_LOADERS:
                images.add(value)
    return models, images


def tiny_lora(models_dir: Path) -> str:
    """A rank-4 LoRA on one attention projection of the tiny SD1.5 UNet (kohya key names)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    key = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    tensors = {f"{key}.lora_down.weight": rng.normal(0, 0.05, (4, 320)).astype(np.float32),
               f"{key}.lora_up.weight": rng.normal(0, 0.05, (320, 4)).astype(np.float32),
               f"{key}.alpha": np.array(4.0, np.float32)}
    (models_dir / "loras").mkdir(exist_ok=True)
    save_file(tensors, str(models_dir / "loras" / TINY_LORA))
    return TINY_LORA


def _taesd_as_vae_file(models_dir: Path, key: str, target: Path) -> None:
    """One VAE file from a TAESD encoder/decoder pair (the keys VAELoader builds for "taesd*"),
    so that a workflow's VAE file name can stand for the tiny TAESD."""
    from safetensors.torch import load_file, save_file
    import torch

    prefix = tm.TAESD[key][0]
    sd = {}
    for part in ("encoder", "decoder"):
        sd.update({f"taesd_{part}.{k}": v for k, v in
                   load_file(str(models_dir / "vae_approx" / f"{prefix}_{part}.safetensors")).items()})
    sd["vae_scale"], sd["vae_shift"] = torch.tensor(1.0), torch.tensor(0.0)
    save_file(sd, str(target))


def install_under_names(models_dir: Path, tiny: dict, files: set[tuple[str, str]]) -> list[Path]:
    """Put the tiny stand-in of each (folder, name) at models/<folder>/<name> (a symlink, or for a
    TAESD a combined VAE file); returns the paths made, for the caller to remove."""
    unknown = sorted(name for _, name in files if name not in MODEL_MAP)
    assert not unknown, f"no tiny stand-in for {unknown}: add them to MODEL_MAP in {Path(__file__).name}"
    made = []
    for folder, name in sorted(files):
        target = models_dir / folder / name
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        key = MODEL_MAP[name]
        if key == "lora":
            os.symlink(models_dir / "loras" / tiny_lora(models_dir), target)
        elif key in tm.TAESD:
            _taesd_as_vae_file(models_dir, key, target)
        else:
            source_folder, file_name = tm.FILES[key]
            assert tiny[key] == file_name, (key, tiny[key])
            os.symlink(models_dir / source_folder / file_name, target)
        made.append(target)
    return made
