"""Tiled mode (tile_size / tile_overlap widgets) through the real ComfyUI server on tiny models.

Small images with small tiles (64 px = 8 latent px) so that several tiles are used on a CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from comfyui_inverse.tests.host.graphs import loaders
from comfyui_inverse.tests.host.test_conjugate_nodes import expect_execution_error, modular_prompt, smooth_image

pytestmark = pytest.mark.host

SIZE = 128  # pixels: 16×16 latent, 9 tiles of 8×8 with 16 px (2 latent px) overlap


@pytest.fixture(scope="module")
def big_photo(comfy):
    return comfy.upload_image(smooth_image(2, SIZE), name="tiling_photo.png")


def tiled(prompt, node, tile=64, overlap=16):
    prompt[node]["inputs"].update({"tile_size": tile, "tile_overlap": overlap})
    return prompt


def restored(comfy, history, channels):
    images = comfy.images(history, "img")
    (latent,) = comfy.latents(history, "lat")
    assert images[0].shape == (SIZE, SIZE, 3) and np.isfinite(images[0]).all() and images[0].std() > 0
    assert latent.shape == (1, channels, SIZE // 8, SIZE // 8) and np.isfinite(latent).all()
    return images[0], latent


def test_tiled_sampler_node_restores_the_whole_image_and_reports_per_step(comfy, tiny_models, big_photo):
    events = []
    prompt = tiled(modular_prompt(tiny_models, "sd3", big_photo, vjp="autograd", steps=3, seed=2,
                                  latent_size=SIZE), "sampler")
    image, latent = restored(comfy, comfy.http.run(prompt, timeout=300, progress=events.append), 16)
    assert "tiled mode: 9 tile(s) of 8×8 latent px (overlap 2)" in comfy.log_text()
    steps = [e["data"] for e in events if e["type"] == "progress" and str(e["data"].get("node")) == "sample"]
    assert [d["value"] for d in steps] == [1, 2, 3]
    # the same graph untiled: another (nearby) result, so the widgets really switched the mode
    _, untiled = restored(comfy, comfy.run(modular_prompt(tiny_models, "sd3", big_photo, vjp="autograd", steps=3,
                                                          seed=2, latent_size=SIZE)), 16)
    assert 1e-4 < np.abs(untiled - latent).max()


@pytest.mark.parametrize("family,channels", [("sd15", 4)])
def test_tiled_all_in_one_conjugate_and_treg_solve(comfy, tiny_models, big_photo, family, channels):
    nodes, model, clip, vae = loaders(tiny_models, family)
    nodes.update({
        "load": {"class_type": "LoadImage", "inputs": {"image": big_photo}},
        "op": {"class_type": "InverseSuperResolution", "inputs": {"factor": 4, "kernel": "bicubic"}},
        "meas": {"class_type": "InverseDegradeImage",
                 "inputs": {"image": ["load", 0], "operator": ["op", 0], "sigma_y": 0.0, "seed": 0}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo", "clip": clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "solve": {"class_type": "InverseSolveConjugate", "inputs": {
            "model": model, "vae": vae, "positive": ["pos", 0], "negative": ["neg", 0], "measurement": ["meas", 0],
            "preset": "custom", "steps": 2, "cfg": 1.0, "w": 15.0, "lam": 0.0, "start": 0.4, "seed": 1,
            "vjp": "autograd", "bridge_mode": "latent_surrogate", "tile_size": 64, "tile_overlap": 16}},
        "img": {"class_type": "SaveImage", "inputs": {"images": ["solve", 0], "filename_prefix": "tiled_aio"}},
        "lat": {"class_type": "SaveLatent", "inputs": {"samples": ["solve", 1], "filename_prefix": "tiled_aio_latent"}},
    })
    restored(comfy, comfy.run(nodes, timeout=600), channels)
    treg = dict(nodes)
    treg["solve"] = {"class_type": "InverseTRegSolve", "inputs": {
        "model": model, "measurement": ["meas", 0], "vae": vae, "positive": ["pos", 0], "negative": ["neg", 0],
        "steps": 4, "scheduler": "ddim_uniform", "cfg": 1.0, "an_steps": 0, "an_lr": 0.0, "an_method": "adam",
        "dc_every": 2, "dc_until": 0.85, "cg_iters": 2, "cg_lambda": 1e-3, "use_dps": False, "seed": 1,
        "tile_size": 64, "tile_overlap": 16}}
    restored(comfy, comfy.run(treg, timeout=600), channels)
    assert "TReg in tiled mode: 9 tile(s)" in comfy.log_text()


def test_decoder_gradient_modes_are_refused_in_tiled_mode(comfy, tiny_models, big_photo):
    prompt = tiled(modular_prompt(tiny_models, "sd3", big_photo, bridge="consistent_target", latent_size=SIZE),
                   "sampler")
    expect_execution_error(comfy, prompt, "consistent_target", "tile_size")


def run_in_fresh_process(script: str, comfy, checkpoint: str, folder: str = "checkpoints") -> dict:
    """Run a script (PATH = the model file's path in models/`folder`, argv[1] = the ComfyUI root) in
    its own --cpu process, so it loads the model without the server's state; returns its last line
    as JSON."""
    code = script.replace("PATH", repr(str(comfy.models_dir / folder / checkpoint)))
    result = subprocess.run([sys.executable, "-c", code, str(comfy.server.comfy_root)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


MEMORY_CHECK = textwrap.dedent("""
    import json, sys, types
    sys.path.insert(0, sys.argv[1])
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.sd
    from comfyui_inverse.nodes.limits import check_solver_memory
    vae = comfy.sd.load_checkpoint_guess_config(PATH, output_clip=False)[2]
    meas = types.SimpleNamespace(image_shape=(1, 3, 4096, 4096))
    out = {}
    for tiled in (False, True):
        try:
            check_solver_memory(vae, meas, tiled=tiled, free_bytes=8 * 2**30)
            out[str(tiled)] = "accepted"
        except ValueError as err:
            out[str(tiled)] = str(err)
    print(json.dumps(out))
""")


def test_memory_check_accepts_4096_sr_x4_on_sdxl_only_when_tiled(comfy, tiny_models):
    """The SDXL AutoencoderKL (full size in the tiny checkpoint) at 4096², 8 GB free: refused untiled
    (whole-image VAE pass), accepted tiled (512² VAE tiles + the solver's image buffers)."""
    out = run_in_fresh_process(MEMORY_CHECK, comfy, tiny_models["sdxl_ckpt"])
    assert out["True"] == "accepted"
    assert "4096×4096" in out["False"] and "tile_size 1024" in out["False"]


def test_vjp_auto_names_its_choice_in_the_log(comfy, tiny_models, big_photo):
    prompt = modular_prompt(tiny_models, "sd3", big_photo, vjp="auto", steps=1, seed=4, latent_size=SIZE)
    restored(comfy, comfy.run(prompt), 16)
    assert "vjp auto → autograd (autograd step needs about" in comfy.log_text()  # tiny model, plenty of RAM


CHECKPOINT_VJP = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.sd, torch
    from comfyui_inverse.nodes.checkpointing import _SkipConcat, checkpointed_blocks
    from comfyui_inverse.nodes.comfy_bridge import make_differentiable
    model = comfy.sd.load_checkpoint_guess_config(PATH, output_clip=False)[0]
    dm = model.model.diffusion_model
    make_differentiable(dm, model)
    g = torch.Generator().manual_seed(0)
    x, u = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    ctx, t = torch.randn(1, 77, 768, generator=g), torch.tensor([500.0])

    def vjp(checkpointed):
        extra = {"model_options": {}}  # as the sampler's extra_args: the skip patch goes in while inside
        with torch.enable_grad(), (checkpointed_blocks(dm, extra) if checkpointed else torch.enable_grad()) as report:
            xg = x.clone().requires_grad_(True)
            options = extra["model_options"].get("transformer_options", {})
            return torch.autograd.grad(dm(xg, t, context=ctx, transformer_options=options), xg, u)[0], report, extra

    (plain, _, _), (ckpt, report, extra) = vjp(False), vjp(True)
    restored = all("forward" not in m.__dict__ for m in dm.modules()) and extra == {"model_options": {}}
    skips = _SkipConcat()  # a decoder input that is not the pending pair's concatenation is left alone
    h, s = torch.ones(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    skips.pending = (h, s)
    refused = skips.take(torch.cat([h, s + 1], 1)) is None and skips.pending is None
    skips.pending = (h, s)
    accepted = skips.take(torch.cat([h, s], 1)) is not None
    print(json.dumps({"equal": torch.equal(plain, ckpt), "patched": report.blocks, "pairs": report.pairs,
                      "decoder_blocks": len(dm.output_blocks), "restored": restored, "refused": refused,
                      "accepted": accepted, "nonzero": bool(plain.abs().sum() > 0)}))
""")


def test_checkpointed_vjp_equals_plain_backprop_bit_for_bit(comfy, tiny_models):
    """The autograd VJP with the UNet's blocks activation-checkpointed (the default during our VJP; every
    decoder block keeping the (h, skip) pair instead of their concatenation) is exactly plain backprop,
    and the patches are gone afterwards (other samplers see the model and options unchanged)."""
    out = run_in_fresh_process(CHECKPOINT_VJP, comfy, tiny_models["sd15_ckpt"])
    assert out["patched"] > 0 and out["nonzero"] and out["restored"]
    assert out["pairs"] == out["decoder_blocks"] > 0
    assert out["refused"] and out["accepted"]
    assert out["equal"]
