"""Adapters from ComfyUI objects (MODEL, VAE, sampler internals) to the pure-torch samplers.

ComfyUI runs every prompt under torch.inference_mode(); the weights it loads are inference
tensors. Anything here that needs gradients works inside `grad_enabled()` on weights made
ordinary by `make_differentiable`.

Dynamic VRAM (ComfyUI ≥ 0.16 on NVIDIA, on by default; `--disable-dynamic-vram` or `--cpu`
turn it off): the loader keeps the weights where it likes and streams each layer's weights into
reused GPU buffers during the forward pass. Those weights are never replaced here, and nothing
backpropagates through them: a saved weight could be overwritten before the backward pass.
Gradient paths use finite differences (the UNet) or a separately loaded, non-dynamic copy of the
model that ComfyUI itself provides (`ModelPatcher.get_non_dynamic_delegate`, the VAE).
"""

from __future__ import annotations

import contextlib
import logging

import torch

import comfy.model_management
import comfy.model_sampling

log = logging.getLogger("comfyui-inverse")


def model_kind(model_sampling) -> str:
    """'vp' for ε- and v-prediction models, 'flow' for rectified-flow (CONST) models.

    Decided by the parameterisation methods actually in use, so subclasses that change
    them (X0, EDM, LCM, IMG_TO_IMG, Cosmos) are refused instead of silently mis-read.
    """
    ms = comfy.model_sampling
    cls = type(model_sampling)
    denoised = getattr(cls, "calculate_denoised", None)
    scaling = getattr(cls, "noise_scaling", None)
    if isinstance(model_sampling, ms.CONST) and denoised is ms.CONST.calculate_denoised and scaling is ms.CONST.noise_scaling:
        return "flow"
    if isinstance(model_sampling, ms.EPS) and scaling is ms.EPS.noise_scaling and denoised in (
        ms.EPS.calculate_denoised, ms.V_PREDICTION.calculate_denoised
    ) and not isinstance(model_sampling, ms.EDM):
        return "vp"
    raise ValueError(
        f"model: unsupported model type '{cls.__name__}' (its parameterisation is "
        f"{[c.__name__ for c in cls.__mro__[1:4]]}). The inverse solvers support ε- and v-prediction "
        "diffusion models (SD1.5, SD2, SDXL) and rectified-flow models (SD3, Flux). Load one of those "
        "with a stock loader, and remove ModelSampling* nodes that switch it to x0/lcm/edm."
    )


def text_width(base) -> int | None:
    """Width of the text embeddings the diffusion model takes (768 SD1.5, 2048 SDXL, 4096 SD3/Flux), if known."""
    unet_config = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    if unet_config.get("context_dim"):
        return int(unet_config["context_dim"])
    for name in ("context_embedder", "txt_in"):  # SD3 (MMDiT), Flux
        layer = getattr(getattr(base, "diffusion_model", None), name, None)
        if isinstance(layer, torch.nn.Linear):
            return int(layer.in_features)
    return None


def check_conditioning(guider, base) -> None:
    """A prompt encoded by another family's CLIP would fail deep inside the model's first attention layer
    ("mat1 and mat2 shapes cannot be multiplied"); name the input and the fix instead."""
    width = text_width(base)
    if width is None:
        return
    for name, entries in (getattr(guider, "original_conds", None) or {}).items():
        for entry in entries or []:
            text = entry.get("cross_attn") if isinstance(entry, dict) else None
            if isinstance(text, torch.Tensor) and int(text.shape[-1]) != width:
                family = type(getattr(base, "model_config", base)).__name__
                raise ValueError(
                    f"{name}: the prompt's text embedding is {int(text.shape[-1])} wide but this model ({family}) takes "
                    f"{width}-wide ones: it was encoded with another model family's text encoder. Encode it with the "
                    "CLIP that belongs to this model (Load Checkpoint's CLIP, or CLIPLoader/DualCLIPLoader of its type).")


def model_sampling_of(model_patcher):
    return model_patcher.get_model_object("model_sampling")


def interrupted() -> bool:
    """`should_stop` for the samplers: raises ComfyUI's InterruptProcessingException on Cancel, else False."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    return False


def vae_downscale(vae) -> int:
    """Pixels per latent cell of `vae`; 8 when the VAE gives no plain integer (e.g. a video VAE)."""
    ratio = getattr(vae, "downscale_ratio", 8)
    return int(ratio) if isinstance(ratio, int) else 8


@contextlib.contextmanager
def grad_enabled():
    with torch.inference_mode(False), torch.enable_grad():
        yield


DYNAMIC_VRAM_SETTING = "--disable-dynamic-vram"


def is_dynamic(patcher) -> bool:
    """True when ComfyUI's dynamic VRAM loader manages this patcher's weights (False on hosts
    before 0.16, which have no such loader)."""
    probe = getattr(patcher, "is_dynamic", None)
    return bool(probe()) if callable(probe) else False


def make_differentiable(module: torch.nn.Module, patcher=None) -> bool:
    """Replace inference-mode parameters and buffers by ordinary copies, in place; False (and
    nothing touched) when `patcher` is dynamic: those weights belong to the dynamic loader.

    Cheap when already done: it checks each tensor. `p.data = ...` is not enough (the
    Parameter object itself is an inference tensor), so the Parameter is replaced.
    """
    if is_dynamic(patcher):
        return False
    with torch.inference_mode(False):
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None and torch.is_inference(p):
                    sub._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
            for name, b in list(sub._buffers.items()):
                if b is not None and torch.is_inference(b):
                    sub._buffers[name] = b.detach().clone()
    return True


def non_dynamic_delegate(patcher, what: str, fix: str):
    """`patcher` itself when it is not dynamic; else ComfyUI's non-dynamic delegate of it (a copy
    loaded again from the model's file, kept on the patcher for later runs). ValueError naming the
    setting when the host cannot make one (a model from a custom loader that cannot reload it)."""
    if not is_dynamic(patcher):
        return patcher
    try:
        make = getattr(patcher, "get_non_dynamic_delegate", None)
        return make() if callable(make) else patcher.clone(disable_dynamic=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{what} backpropagates through the model, which ComfyUI's dynamic VRAM loader streams and "
            f"cannot differentiate, and ComfyUI could not load a separate copy ({err}). Start ComfyUI with "
            f"{DYNAMIC_VRAM_SETTING}, or {fix}."
        ) from err


class VaeBridge:
    """Decode/encode between the model's *processed* latent space and pixels in [-1, 1].

    Calls the VAE's inner model (not VAE.decode/encode, which clamp, cast and move to CPU).
    `latent_format` is the diffusion model's, so latents match what the sampler integrates.
    """

    def __init__(self, vae, latent_format, device: torch.device | None = None):
        if vae is None:
            raise ValueError("vae: no VAE connected. Connect the VAE that belongs to the model (e.g. from Load Checkpoint).")
        self.vae = vae
        self.patcher = vae.patcher
        self.model = vae.first_stage_model  # the delegate's copy after load(grad=True) on a dynamic VAE
        self.latent_format = latent_format
        self.downscale = vae_downscale(vae)
        self.device = device
        self._check_family()

    def _check_family(self) -> None:
        expected = getattr(self.latent_format, "latent_channels", None)
        if expected is not None and self.vae.latent_channels != expected:
            raise ValueError(
                f"vae: this VAE makes {self.vae.latent_channels}-channel latents but the model expects {expected}. "
                "Connect the VAE of the same model family (SD1.5/SDXL: 4 channels, SD3/Flux: 16)."
            )

    def load(self, also=(), grad: bool = False, what: str = "this setting",
             fix: str = "choose a setting that does not backpropagate through the VAE decoder") -> None:
        """Load the VAE (together with `also`, e.g. the model patcher being sampled, so neither
        evicts the other) and make its weights differentiable. A dynamic VAE is left to its
        loader; with `grad` the decoder gradient then runs on its non-dynamic delegate
        (ValueError naming `what`, the setting and `fix` when there is none)."""
        if grad:
            self.patcher = non_dynamic_delegate(self.vae.patcher, what, fix)
            self.model = self.patcher.model
        comfy.model_management.load_models_gpu([*also, self.patcher])
        make_differentiable(self.model, self.patcher)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.vae_dtype

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        raw = self.latent_format.process_out(latent.float())
        model = self.model
        out = model.decode(raw.to(device=self.vae.device, dtype=self.dtype))
        return out.float().to(latent.device)

    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior *sample* when the VAE has a Gaussian posterior and a generator is given, else its mean."""
        model = self.model
        x = pixels.to(device=self.vae.device, dtype=self.dtype)
        gaussian = type(getattr(model, "regularization", None)).__name__ == "DiagonalGaussianRegularizer"
        if generator is not None and gaussian and getattr(model, "bn", None) is None:
            moments = model.encoder(x)
            if getattr(model, "quant_conv", None) is not None:
                moments = model.quant_conv(moments)
            mean, logvar = moments.float().chunk(2, dim=1)
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            noise = torch.randn(mean.shape, generator=generator, device="cpu").to(mean.device)
            raw = mean + std * noise
        else:
            raw = model.encode(x)
            if isinstance(raw, tuple):
                raw = raw[0]
        return self.latent_format.process_in(raw.float()).to(pixels.device)

    def encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE's own (unprocessed) latent mean, as a LATENT dict carries it."""
        return self.latent_format.process_out(self.encode(pixels))

    def check_image_size(self, height: int, width: int, what: str = "measurement") -> None:
        if height % self.downscale or width % self.downscale:
            raise ValueError(
                f"{what}: the image is {width}×{height} but the VAE works on multiples of {self.downscale} pixels. "
                f"Crop or resize the image to {width - width % self.downscale}×{height - height % self.downscale} first."
            )


