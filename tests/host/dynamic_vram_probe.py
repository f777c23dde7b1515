"""What the pack does with weights that ComfyUI's dynamic VRAM loader manages, checked on CPU.

Dynamic VRAM (ComfyUI ≥ 0.16, NVIDIA) cannot be switched on here: `ModelPatcherDynamic` turns
itself into a plain ModelPatcher on a CPU device. So this script loads the tiny SD1.5 checkpoint
with the stock loader in a --cpu process and tells the pack that its UNet and VAE patchers are
dynamic (the pack's one decision function, `comfy_bridge.is_dynamic`, answers True for them; ComfyUI
itself still sees plain patchers). Where the host has ComfyUI's non-dynamic delegate (a second copy
of the model loaded again from its file), the VAE patcher gets the host's own implementation of it.
Everything else (loading, sampling, the VAE, the delegate's reload) is the real ComfyUI.

    python dynamic_vram_probe.py --comfy ROOT --checkpoint tiny_sd15.safetensors
prints one JSON line of facts for tests/host/test_dynamic_vram.py.
"""

from __future__ import annotations

import argparse
import json
import logging

from tiny_models import _import_comfy

SIZE = 64


def _weights(module) -> dict:
    return {name: p for name, p in module.named_parameters()}


def _untouched(module, before: dict) -> bool:
    """Same Parameter objects as before, still inference tensors: nothing replaced or copied."""
    import torch

    after = _weights(module)
    return after.keys() == before.keys() and all(after[k] is before[k] and torch.is_inference(after[k])
                                                 for k in before)


def _error(fn) -> str | None:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfy", required=True)
    parser.add_argument("--checkpoint", required=True)
    args = parser.parse_args(argv)
    _import_comfy(args.comfy)

    import torch
    import comfy.model_patcher
    import comfy.samplers
    import comfy.sd

    from comfyui_inverse import operators as ops
    from comfyui_inverse.nodes import comfy_bridge, conjugate_nodes, limits, treg_sampler
    from comfyui_inverse.nodes.types import Measurement

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("comfyui-inverse").addHandler(handler)
    logging.getLogger("comfyui-inverse").setLevel(logging.INFO)

    facts = {}
    with torch.inference_mode():  # as ComfyUI runs a prompt
        model, _, vae = comfy.sd.load_checkpoint_guess_config(args.checkpoint, output_clip=False)[:3]
        dynamic_models = (model.model, vae.first_stage_model)
        real_is_dynamic = comfy_bridge.is_dynamic

        def is_dynamic(patcher):
            return any(getattr(patcher, "model", None) is m for m in dynamic_models) or real_is_dynamic(patcher)

        for module in (comfy_bridge, conjugate_nodes, treg_sampler):
            module.is_dynamic = is_dynamic

        dynamic_class = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
        facts["host_has_delegate"] = dynamic_class is not None and hasattr(dynamic_class, "get_non_dynamic_delegate")
        if facts["host_has_delegate"]:
            patcher = vae.patcher
            patcher.non_dynamic_delegate_model = None

            def host_delegate():
                # ComfyUI's own method; its clone() reloads from the file only for a dynamic patcher.
                patcher.is_dynamic = lambda: True
                try:
                    return dynamic_class.get_non_dynamic_delegate(patcher)
                finally:
                    del patcher.is_dynamic

            patcher.get_non_dynamic_delegate = host_delegate

        unet_before, vae_before = _weights(model.model.diffusion_model), _weights(vae.first_stage_model)
        image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        op = ops.SuperResolution(4, kernel="bicubic")
        measurement = Measurement(y=op.forward(image), operator=op, sigma_y=0.0, image_shape=(1, 3, SIZE, SIZE))
        cond = [[torch.zeros(1, 77, 768), {}]]
        latent = torch.zeros(1, 4, SIZE // 8, SIZE // 8)

        def sample(sampler, sigmas):
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(cond, cond)
            guider.set_cfg(1.0)
            return guider.sample(torch.zeros_like(latent), latent, sampler, sigmas, disable_pbar=True, seed=0)

        sigmas = conjugate_nodes.inverse_sigmas(model.get_model_object("model_sampling"), 2, 0.4)
        runs = {}
        for bridge in ("latent_surrogate", "pixel_bridge", "consistent_target"):
            sampler = conjugate_nodes.make_sampler("vp", measurement, vae, 15.0, 0.0, "autograd", bridge)
            messages.clear()
            try:
                out = sample(sampler, sigmas)
                runs[bridge] = {"finite": bool(torch.isfinite(out).all()), "std": float(out.std()),
                                "log": list(messages)}
            except ValueError as err:
                runs[bridge] = {"error": str(err)}
        facts["conjugate"] = runs
        facts["unet_untouched"] = _untouched(model.model.diffusion_model, unet_before)
        facts["vae_untouched"] = _untouched(vae.first_stage_model, vae_before)

        # The decoder gradient through the bridge that consistent_target used (the delegate, if any).
        bridge = comfy_bridge.VaeBridge(vae, model.model.latent_format)
        facts["bridge_error"] = _error(lambda: bridge.load(grad=True, what="probe", fix="do something else"))
        if facts["bridge_error"] is None:
            facts["bridge_uses_other_model"] = bridge.model is not vae.first_stage_model
            with comfy_bridge.grad_enabled():
                z = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
                z.requires_grad_(True)
                bridge.decode(z).square().mean().backward()
                facts["decoder_grad_finite_nonzero"] = bool(torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0)
            with torch.no_grad():
                z = z.detach()
                facts["delegate_decodes_like_vae"] = float(
                    (bridge.decode(z) - comfy_bridge.VaeBridge(vae, model.model.latent_format).decode(z)).abs().max())
        facts["vae_untouched_after_grad"] = _untouched(vae.first_stage_model, vae_before)

        treg = treg_sampler.make_treg_sampler(measurement, vae, 1, 1.0, 2, 1e-4, True)
        treg_sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 2)
        facts["treg_dps_error"] = _error(lambda: sample(treg, treg_sigmas))

        # The memory pre-check asks the VAE's patcher where it can (its figure counts evictable weights).
        vae.patcher.get_free_memory = lambda device: 1
        facts["refused_with_patcher_figure"] = _error(lambda: limits.check_solver_memory(vae, measurement))
        vae.patcher.get_free_memory = lambda device: 2**50
        facts["accepted_with_patcher_figure"] = _error(lambda: limits.check_solver_memory(vae, measurement)) is None

        # Last, as a plain (non-dynamic) host runs it: DPS backpropagates through the UNet and the VAE.
        for module in (comfy_bridge, conjugate_nodes, treg_sampler):
            module.is_dynamic = real_is_dynamic
        out = sample(treg, treg_sigmas)
        facts["treg_dps_plain_host"] = {"finite": bool(torch.isfinite(out).all()), "std": float(out.std())}
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
