"""API-prompt fragments shared by the host tests: {node id: {"class_type", "inputs"}} dicts to merge.

Inputs that link to another node are [node id, output index] lists. `tiny` is the tiny_models
fixture ({name: loader widget value}).
"""

from __future__ import annotations


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def sdxl_loaders(tiny) -> dict:
    """Nodes "unet", "clip", "vae" for the tiny SDXL: UNETLoader, DualCLIPLoader (CLIP-L + CLIP-G,
    type sdxl) and VAELoader (TAESDXL)."""
    return {
        "unet": node("UNETLoader", unet_name=tiny["sdxl_unet"], weight_dtype="default"),
        "clip": node("DualCLIPLoader", clip_name1=tiny["clip_l"], clip_name2=tiny["clip_g"], type="sdxl"),
        "vae": node("VAELoader", vae_name=tiny["sdxl_vae"]),
    }


def loaders(tiny, family: str) -> tuple[dict, list, list, list]:
    """(nodes, model, clip, vae) for a tiny model family: "sd15" (the checkpoint, node "ckpt"),
    "sdxl", "sd3" or "flux" (nodes "unet", "clip", "vae"; SD3/Flux with CLIP-L as type sd3 and TAESD)."""
    if family == "sd15":
        return {"ckpt": node("CheckpointLoaderSimple", ckpt_name=tiny["sd15_ckpt"])}, ["ckpt", 0], ["ckpt", 1], ["ckpt", 2]
    if family == "sdxl":
        return sdxl_loaders(tiny), ["unet", 0], ["clip", 0], ["vae", 0]
    unet, vae = {"sd3": ("sd3_unet", "sd3_vae"), "flux": ("flux_unet", "flux_vae")}[family]
    nodes = {
        "unet": node("UNETLoader", unet_name=tiny[unet], weight_dtype="default"),
        "clip": node("CLIPLoader", clip_name=tiny["clip_l"], type="sd3"),
        "vae": node("VAELoader", vae_name=tiny[vae]),
    }
    return nodes, ["unet", 0], ["clip", 0], ["vae", 0]


def text_prompts(clip, positive: str = "a photo", negative: str = "") -> dict:
    """Nodes "pos" and "neg": CLIPTextEncode of both prompts."""
    return {"pos": node("CLIPTextEncode", text=positive, clip=clip),
            "neg": node("CLIPTextEncode", text=negative, clip=clip)}


def sr_measurement(image, factor: int = 4, sigma_y: float = 0.0, seed: int = 0) -> dict:
    """Nodes "op" (bicubic ×factor super-resolution) and "meas" (Degrade Image of `image`)."""
    return {"op": node("InverseSuperResolution", factor=factor, kernel="bicubic"),
            "meas": node("InverseDegradeImage", image=image, operator=["op", 0], sigma_y=sigma_y, seed=seed)}


def custom_sample(guider, sampler, sigmas, latent, seed: int) -> dict:
    """Nodes "noise" (RandomNoise) and "sample" (SamplerCustomAdvanced)."""
    return {"noise": node("RandomNoise", noise_seed=seed),
            "sample": node("SamplerCustomAdvanced", noise=["noise", 0], guider=guider, sampler=sampler, sigmas=sigmas,
                           latent_image=latent)}


def save_outputs(samples, vae, prefix: str, latent_prefix: str, image_id: str = "img", latent_id: str = "lat") -> dict:
    """Nodes "decode" (VAEDecode), `image_id` (SaveImage) and `latent_id` (SaveLatent) of `samples`."""
    return {"decode": node("VAEDecode", samples=samples, vae=vae),
            image_id: node("SaveImage", images=["decode", 0], filename_prefix=prefix),
            latent_id: node("SaveLatent", samples=samples, filename_prefix=latent_prefix)}
