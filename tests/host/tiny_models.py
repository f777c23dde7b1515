"""Tiny random-weight models in the real file formats that ComfyUI's stock loaders detect.

Built at test time from a fixed seed with ComfyUI's own module classes, so key names and shapes
follow the installed ComfyUI. Every family is narrowed as far as its detector allows:

- SD1.5: one-level UNet (model_channels 320 and context 768 are what `SD15` matches on); the
  checkpoint also holds the full AutoencoderKL and CLIP-L, whose sizes `comfy.sd` fixes.
- SDXL: `SDXL` matches model_channels 320, context 2048, adm 2816 and input transformer depths
  [0,0,2,2,10,10]; we put all six res blocks on one level with no output/middle transformers.
  As a UNet file and as a full checkpoint (UNet + AutoencoderKL + CLIP-L + CLIP-G, 1.35 GB).
- SD3: MMDiT depth 2 (hidden 128) with the real context (4096) and pooled (2048) widths.
- Flux (dev, guidance-embedded): the detector fixes hidden 3072 / 24 heads, so one double
  block and no single block; stored as float8_e4m3fn like the common fp8 Flux files. Its
  pooled-vector input is 2048 wide (real Flux: 768) so that the tiny CLIP-L loaded with
  CLIPLoader type "sd3" (context 4096, pooled 2048) conditions both SD3 and Flux: a real Flux
  text path needs T5-XXL, which has a fixed 4.7B-parameter config.
- TAESD-format VAEs for the four latent spaces (models/vae_approx/<name>_{encoder,decoder}),
  which VAELoader offers as "taesd", "taesdxl", "taesd3", "taef1".
- CLIP-L text encoder file (CLIPLoader) and a ViT-L/14 CLIP-vision file (CLIPVisionLoader picks
  a fixed config from the layer count, so this one is full size).
- CLIP-G (ViT-bigG text tower) for SDXL through DualCLIPLoader (type "sdxl") with the CLIP-L file:
  ComfyUI fixes its config (695M parameters), so it is full size, matrices stored as
  float8_e4m3fn (695 MB on disk; ComfyUI upcasts to its fp16 text-encoder dtype on load).

ComfyUI is imported only in a subprocess (`python tiny_models.py build|detect ...`) so the test
process never imports `comfy` (it needs `--cpu` set first and has global state).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

SEED = 20251123

# name -> (models/ subfolder, file name). The dict `build_all` returns maps name -> the value
# to put in the loader node's file widget.
FILES = {
    "sd15_ckpt": ("checkpoints", "tiny_sd15.safetensors"),
    "sdxl_ckpt": ("checkpoints", "tiny_sdxl.safetensors"),
    "sd15_unet": ("diffusion_models", "tiny_sd15_unet.safetensors"),
    "sdxl_unet": ("diffusion_models", "tiny_sdxl_unet.safetensors"),
    "sd3_unet": ("diffusion_models", "tiny_sd3_unet.safetensors"),
    "flux_unet": ("diffusion_models", "tiny_flux_dev_unet_fp8.safetensors"),
    "clip_l": ("text_encoders", "tiny_clip_l.safetensors"),
    "clip_g": ("text_encoders", "tiny_clip_g_fp8.safetensors"),
    "clip_vision": ("clip_vision", "tiny_clip_vision_vit_l.safetensors"),
}
# TAESD pairs live in models/vae_approx; VAELoader lists each complete pair under this name.
TAESD = {"sd15_vae": ("taesd", 4), "sdxl_vae": ("taesdxl", 4), "sd3_vae": ("taesd3", 16),
         "flux_vae": ("taef1", 16)}

# What the stock loaders must make of each file.
EXPECTED = {
    "sd15_ckpt": {"config": "SD15", "model_type": "EPS", "latent_channels": 4,
                  "sampling": "EPS"},
    "sd15_unet": {"config": "SD15", "model_type": "EPS", "latent_channels": 4, "sampling": "EPS"},
    "sdxl_unet": {"config": "SDXL", "model_type": "EPS", "latent_channels": 4, "sampling": "EPS"},
    "sdxl_ckpt": {"config": "SDXL", "model_type": "EPS", "latent_channels": 4, "sampling": "EPS"},
    "sd3_unet": {"config": "SD3", "model_type": "FLOW", "latent_channels": 16,
                 "sampling": "CONST"},
    "flux_unet": {"config": "Flux", "model_type": "FLUX", "latent_channels": 16,
                  "sampling": "CONST"},
}


def default_comfy_root() -> Path:
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"])
    home = os.environ.get("INVERSE_HOME", os.path.expanduser("~/.cache/comfyui-inverse"))
    return Path(home) / "ComfyUI"


class Job:
    """`python tiny_models.py <command>` running in the background (it imports comfy, which
    must not happen in the test process). result() waits and returns its JSON answer."""

    def __init__(self, command: str, models_dir, comfy_root=None, only=None):
        import tempfile

        self.command = command
        args = [sys.executable, str(Path(__file__).resolve()), command,
                "--comfy", str(comfy_root or default_comfy_root()), "--models", str(models_dir)]
        if only:
            args += ["--only", ",".join(only)]
        # Files, not pipes: nobody reads while it runs, and ComfyUI logs a lot on stderr.
        self._out = tempfile.TemporaryFile("w+")
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=self._err, text=True,
                                     stdin=subprocess.DEVNULL)

    def result(self, timeout: float = 900) -> dict:
        code = self.proc.wait(timeout=timeout)
        self._out.seek(0)
        self._err.seek(0)
        out, err = self._out.read(), self._err.read()
        if code != 0:
            raise RuntimeError(f"tiny_models {self.command} failed (exit {code}):\n"
                               f"{out[-3000:]}\n{err[-6000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def build_all(models_dir, comfy_root=None, only=None) -> dict:
    """Write every tiny model (or the names in `only`) under models_dir (a ComfyUI models/ dir).

    Returns {name: loader widget value}, e.g. {"sd15_ckpt": "tiny_sd15.safetensors",
    "sd15_vae": "taesd", ...}, plus "_stats": {name: {"bytes", "seconds", "params"}}.
    `Job("build", ...)` does the same in the background.
    """
    return Job("build", models_dir, comfy_root, only).result()


def detect_all(models_dir, comfy_root=None, only=None) -> dict:
    """Load each built file with the stock loading functions in a fresh --cpu process and report
    {name: {"config", "model_type", "sampling", "latent_channels", "key_warnings", ...}}, plus
    "_rebuilt_identical": {name: bool} for a few files rebuilt from scratch."""
    return Job("detect", models_dir, comfy_root, only).result()


# ----------------------------------------------------------------- inside the ComfyUI process

def _import_comfy(comfy_root: str, flags=("--cpu",)):
    sys.path.insert(0, comfy_root)
    sys.argv = [sys.argv[0], *flags]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401  (parses --cpu before model_management is imported)


class _Noise:
    """Deterministic pseudo-random values, cheap to make: windows of one pre-drawn N(0, 1) pool
    (of prime length, so long tensors wrap onto shifted windows), scaled and cast once per
    (std, dtype). Drawing ~1e9 fresh normals per test session would buy nothing."""

    SIZE = 1_000_003

    def __init__(self, name: str):
        import torch

        self.torch = torch
        self.gen = torch.Generator().manual_seed(SEED ^ zlib.crc32(name.encode()))
        self.unit = torch.randn(self.SIZE, generator=self.gen)
        self.pools = {}

    def pool(self, std: float, dtype):
        if (std, dtype) not in self.pools:
            self.pools[(std, dtype)] = _as_bytes((self.unit * std).to(dtype))
        return self.pools[(std, dtype)]

    def offset(self) -> int:
        return int(self.torch.randint(self.SIZE, (1,), generator=self.gen))


def _as_bytes(tensor) -> memoryview:
    import torch

    return memoryview(tensor.contiguous().view(torch.uint8).numpy())


class _Fill:
    """A tensor to be written: its shape, dtype and how to fill it (constant or normal)."""

    def __init__(self, shape, dtype, value=None, std=None, data=None):
        self.shape, self.dtype, self.value, self.std, self.data = tuple(shape), dtype, value, std, data

    @property
    def numel(self):
        return math.prod(self.shape)

    def chunks(self, noise: _Noise):
        torch = noise.torch
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        n = self.numel
        if self.data is not None:
            yield _as_bytes(self.data.to(self.dtype))
        elif self.std is None:
            block = _as_bytes(torch.full((min(n, noise.SIZE),), self.value, dtype=self.dtype))
            for pos in range(0, n, noise.SIZE):
                yield block[:min(noise.SIZE, n - pos) * itemsize]
        else:
            pool, pos, offset = noise.pool(self.std, self.dtype), 0, noise.offset()
            while pos < n:
                take = min(n - pos, noise.SIZE - offset)
                yield pool[offset * itemsize:(offset + take) * itemsize]
                pos, offset = pos + take, 0


def random_state_dict(module, dtype_of=None) -> dict:
    """{key: _Fill} for every entry of module.state_dict(): norm layers at identity, biases
    zero, matrices ~ N(0, 1/fan_in), embeddings and other tables ~ N(0, 0.02).
    dtype_of(key, tensor) may choose the stored dtype. Nothing is materialised here: `_save`
    streams the values to disk (touching ~2 GB of fresh memory costs seconds on a VM)."""
    import torch

    kinds = {}
    for mod_name, mod in module.named_modules():
        is_norm = "Norm" in type(mod).__name__
        is_embedding = isinstance(mod, torch.nn.Embedding)
        for p_name, _ in mod.named_parameters(recurse=False):
            kinds[f"{mod_name}.{p_name}" if mod_name else p_name] = (is_norm, is_embedding, p_name)
    out = {}
    for key, value in module.state_dict().items():
        dtype = dtype_of(key, value) if dtype_of else value.dtype
        if not value.is_floating_point():
            out[key] = _Fill(value.shape, value.dtype, data=value)
            continue
        is_norm, is_embedding, p_name = kinds.get(key, (False, True, key))  # buffers: tables
        if is_norm:
            out[key] = _Fill(value.shape, dtype, value=1.0 if p_name in ("weight", "scale") else 0.0)
        elif p_name == "bias":
            out[key] = _Fill(value.shape, dtype, value=0.0)
        elif value.ndim >= 2 and not is_embedding and "embed" not in p_name:
            out[key] = _Fill(value.shape, dtype, std=1.0 / math.sqrt(math.prod(value.shape[1:])))
        else:  # embeddings, positional tables, class tokens, scalars
            out[key] = _Fill(value.shape, dtype, std=0.02)
    return out


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16",
                       "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "int64": "I64",
                       "int32": "I32", "uint8": "U8", "bool": "BOOL"}


def _save(sd: dict, path: Path, seed_name: str):
    """Write {key: _Fill} as a .safetensors file (8-byte header length, JSON header, raw data)."""
    import struct
    import torch

    noise = _Noise(seed_name)
    header, offset = {}, 0
    for key, fill in sd.items():
        nbytes = fill.numel * torch.empty((), dtype=fill.dtype).element_size()
        header[key] = {"dtype": _SAFETENSORS_DTYPES[str(fill.dtype).replace("torch.", "")],
                       "shape": list(fill.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", "generator": "comfyui-inverse tests/host/tiny_models.py"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for fill in sd.values():
            for chunk in fill.chunks(noise):
                f.write(chunk)
    tmp.replace(path)


def _unet_config(**overrides):
    """A UNet config in the shape `detect_unet_config` returns it."""
    config = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "out_channels": 4,
        "model_channels": 320, "use_temporal_resblock": False, "use_temporal_attention": False,
        "transformer_depth_middle": -2,
    }
    config.update(overrides)
    return config


def _sd15_model(torch):
    import comfy.supported_models

    config = _unet_config(num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
                          transformer_depth_output=[0, 0], use_linear_in_transformer=False,
                          context_dim=768, dtype=torch.float16)
    return comfy.supported_models.SD15(config).get_model({})


def _sdxl_model(torch):
    import comfy.supported_models

    config = _unet_config(num_res_blocks=[6], channel_mult=[1],
                          transformer_depth=[0, 0, 2, 2, 10, 10],
                          transformer_depth_output=[0] * 7, use_linear_in_transformer=True,
                          context_dim=2048, adm_in_channels=2816, num_classes="sequential",
                          dtype=torch.float16)
    return comfy.supported_models.SDXL(config).get_model({})


def _sd3_model(torch):
    import comfy.supported_models

    depth = 2  # hidden = 64 * depth, heads = depth
    config = {
        "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": depth,
        "input_size": None, "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": 4096, "out_features": 64 * depth}},
        "num_patches": 64 * 64, "pos_embed_max_size": 64, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": [], "dtype": torch.float16,
    }
    return comfy.supported_models.SD3(config).get_model({})


def _flux_model(torch):
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.supported_models

    config = {
        "image_model": "flux", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0,
        "theta": 10000, "out_channels": 16, "qkv_bias": True, "in_channels": 16,
        "hidden_size": 3072, "context_in_dim": 4096, "patch_size": 2, "vec_in_dim": 2048,
        "depth": 1, "depth_single_blocks": 0, "guidance_embed": True, "dtype": torch.bfloat16,
    }
    # ComfyUI ≥ 0.4 requires txt_ids_dims (Flux.1 uses none; model_detection sets []); older ones reject it.
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        config["txt_ids_dims"] = []
    return comfy.supported_models.Flux(config).get_model({})


def _fp8_matrices(key, value):
    # Matrices in float8_e4m3fn, vectors (norm scales, biases) in bf16, as fp8 Flux files do.
    import torch

    return torch.float8_e4m3fn if value.ndim >= 2 else torch.bfloat16


def _convert_lazily(convert, fills: dict) -> dict:
    """Run one of ComfyUI's state-dict converters on shape-only (meta) tensors and map the result
    back to fills: renamed entries keep their fill; tensors the converter makes (SDXL's CLIP-G
    q/k/v concatenated into in_proj, transposed projection) get a fresh fill of their shape."""
    import torch

    meta = {k: torch.empty(f.shape, dtype=f.dtype, device="meta") for k, f in fills.items()}
    source = {id(tensor): fills[k] for k, tensor in meta.items()}
    out = {}
    for key, value in convert(meta).items():
        if id(value) in source:
            out[key] = source[id(value)]
        elif value.device.type != "meta":  # real values the converter adds (position ids)
            out[key] = _Fill(value.shape, value.dtype, data=value)
        elif key.endswith("bias"):
            out[key] = _Fill(value.shape, value.dtype, value=0.0)
        else:
            out[key] = _Fill(value.shape, value.dtype, std=1.0 / math.sqrt(value.shape[-1]))
    return out


def _count(sd: dict) -> int:
    return sum(v.numel for v in sd.values())


def _build(models_dir: Path, only) -> dict:
    import torch

    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.clip_vision
    import comfy.taesd.taesd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    out, stats = {}, {}
    wanted = set(only) if only else set(FILES) | set(TAESD)

    def save(name, sd, t0, files=None):
        paths = []
        for path, part in (files or [(models_dir / FILES[name][0] / FILES[name][1], sd)]):
            _save(part, path, f"{name}:{path.name}")
            paths.append(path)
        stats[name] = {"bytes": sum(p.stat().st_size for p in paths),
                       "seconds": round(time.perf_counter() - t0, 2), "params": _count(sd)}

    fp16 = lambda key, value: torch.float16  # noqa: E731

    if wanted & {"sd15_ckpt", "sdxl_ckpt", "clip_l"}:
        t0 = time.perf_counter()
        clip_sd = random_state_dict(comfy.sd1_clip.SD1ClipModel(dtype=torch.float16), fp16)
        if "clip_l" in wanted:  # the standalone file holds the text model's own keys
            prefix = "clip_l.transformer."
            save("clip_l", {k[len(prefix):]: v for k, v in clip_sd.items() if k.startswith(prefix)},
                 t0)

    if wanted & {"sdxl_ckpt", "clip_g"}:
        t0 = time.perf_counter()
        clip_g_sd = random_state_dict(comfy.sdxl_clip.SDXLClipG(dtype=torch.float16), _fp8_matrices)
        if "clip_g" in wanted:
            prefix = "transformer."
            save("clip_g", {k[len(prefix):]: v for k, v in clip_g_sd.items() if k.startswith(prefix)},
                 t0)

    def checkpoint(name, model, unet_sd, text_sd):
        """Save a full checkpoint (UNet + AutoencoderKL + text encoders) in CheckpointSave's layout."""
        t0 = time.perf_counter()
        ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3,
                    "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                    "attn_resolutions": [], "dropout": 0.0}
        vae_sd = random_state_dict(AutoencoderKL(ddconfig=ddconfig, embed_dim=4), fp16)
        config = model.model_config
        sd = config.process_unet_state_dict_for_saving(dict(unet_sd))
        sd.update(_convert_lazily(config.process_clip_state_dict_for_saving, text_sd))
        sd.update(config.process_vae_state_dict_for_saving(vae_sd))
        save(name, sd, t0)

    for family, factory in (("sd15", _sd15_model), ("sdxl", _sdxl_model)):
        unet_name, ckpt_name = f"{family}_unet", f"{family}_ckpt"
        if wanted & {unet_name, ckpt_name}:
            t0 = time.perf_counter()
            model = factory(torch)
            unet_sd = random_state_dict(model.diffusion_model, fp16)
            if unet_name in wanted:
                save(unet_name, unet_sd, t0)
            if ckpt_name in wanted:
                text_sd = clip_sd if family == "sd15" else {**clip_sd, **{f"clip_g.{k}": v for k, v in clip_g_sd.items()}}
                checkpoint(ckpt_name, model, unet_sd, text_sd)

    for name, factory, dtype_of in (("sd3_unet", _sd3_model, fp16),
                                    ("flux_unet", _flux_model, _fp8_matrices)):
        if name in wanted:
            t0 = time.perf_counter()
            save(name, random_state_dict(factory(torch).diffusion_model, dtype_of), t0)

    if "clip_vision" in wanted:
        t0 = time.perf_counter()
        config = Path(comfy.clip_vision.__file__).parent / "clip_vision_config_vitl.json"
        model = comfy.clip_vision.ClipVisionModel(str(config)).model
        save("clip_vision", random_state_dict(model, fp16), t0)

    for name, (prefix, channels) in TAESD.items():
        if name in wanted:
            t0 = time.perf_counter()
            parts = [(models_dir / "vae_approx" / f"{prefix}_{part}.safetensors",
                      random_state_dict(factory(latent_channels=channels)))
                     for part, factory in (("encoder", comfy.taesd.taesd.Encoder),
                                           ("decoder", comfy.taesd.taesd.Decoder))]
            save(name, {f"{p.name}:{k}": v for p, sd in parts for k, v in sd.items()}, t0, parts)

    for name in stats:
        out[name] = TAESD[name][0] if name in TAESD else FILES[name][1]
    out["_stats"] = stats
    return out


class _LogCapture:
    """Collects ComfyUI's warnings about state-dict keys it did not use or could not fill."""

    def __init__(self):
        import logging

        class Handler(logging.Handler):
            def emit(handler, record):
                message = record.getMessage()
                if any(w in message.lower() for w in ("missing", "unexpected", "leftover")):
                    self.messages.append(message[:500])

        self.messages = []
        logging.getLogger().addHandler(Handler(logging.WARNING))

    def take(self) -> list:
        taken, self.messages[:] = list(self.messages), []
        return taken


def _detect(models_dir: Path, only) -> dict:
    """Load every built file with the functions the stock loader nodes call, in this --cpu
    process, and describe what ComfyUI made of it."""
    import torch
    import comfy.sd
    import comfy.clip_vision
    import comfy.utils

    log = _LogCapture()
    result = {}

    def describe(patcher):
        base = patcher.model
        sampling = [c.__name__ for c in type(base.model_sampling).__mro__
                    if c.__name__ in ("EPS", "V_PREDICTION", "CONST", "X0", "EDM")]
        return {"config": type(base.model_config).__name__, "model_type": base.model_type.name,
                "sampling": sampling[0] if sampling else type(base.model_sampling).__name__,
                "latent_channels": base.latent_format.latent_channels}

    wanted = set(only) if only else set(FILES) | set(TAESD)
    for name, (folder, fname) in FILES.items():
        if name not in wanted:
            continue
        path = str(models_dir / folder / fname)
        t0 = time.perf_counter()
        if name in ("sd15_ckpt", "sdxl_ckpt"):  # CheckpointLoaderSimple
            model, clip, vae = comfy.sd.load_checkpoint_guess_config(path)[:3]
            info = describe(model)
            cond, pooled = clip.encode_from_tokens(clip.tokenize("a photo"), return_pooled=True)
            info.update(clip=type(clip.cond_stage_model).__name__,
                        cond_shape=list(cond.shape), pooled_shape=list(pooled.shape),
                        vae=type(vae.first_stage_model).__name__,
                        vae_latent_channels=vae.latent_channels)
            del model, clip, vae
        elif name == "clip_l":  # CLIPLoader, type stable_diffusion and sd3
            info = {}
            for label, clip_type in (("sd1", comfy.sd.CLIPType.STABLE_DIFFUSION),
                                     ("sd3", comfy.sd.CLIPType.SD3)):
                clip = comfy.sd.load_clip([path], clip_type=clip_type)
                cond, pooled = clip.encode_from_tokens(clip.tokenize("a photo"),
                                                       return_pooled=True)
                info[label] = {"clip": type(clip.cond_stage_model).__name__,
                               "cond_shape": list(cond.shape), "pooled_shape": list(pooled.shape),
                               "finite": bool(torch.isfinite(cond).all())}
        elif name == "clip_g":  # DualCLIPLoader(clip_l, clip_g, type "sdxl")
            clip = comfy.sd.load_clip([str(models_dir / "/".join(FILES["clip_l"])), path],
                                      clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
            cond, pooled = clip.encode_from_tokens(clip.tokenize("a photo"), return_pooled=True)
            info = {"clip": type(clip.cond_stage_model).__name__, "cond_shape": list(cond.shape),
                    "pooled_shape": list(pooled.shape), "finite": bool(torch.isfinite(cond).all())}
            del clip
        elif name == "clip_vision":  # CLIPVisionLoader + CLIPVisionEncode
            clip_vision = comfy.clip_vision.load(path)
            embeds = clip_vision.encode_image(torch.rand(1, 64, 64, 3)).image_embeds
            info = {"image_embeds_shape": list(embeds.shape),
                    "finite": bool(torch.isfinite(embeds).all())}
        else:  # UNETLoader
            with open(path, "rb") as f:  # the stored dtype, from the safetensors header
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            sizes = {}
            for key, entry in header.items():
                if key != "__metadata__":
                    start, end = entry["data_offsets"]
                    sizes[entry["dtype"]] = sizes.get(entry["dtype"], 0) + end - start
            stored = max(sizes, key=sizes.get)
            # Keep the stored dtype (UNETLoader's weight_dtype "fp8_e4m3fn" for the fp8 file):
            # same detection, without converting ~400M weights to fp32. The server tests load
            # them with the default dtype.
            dtype = {"F16": torch.float16, "BF16": torch.bfloat16,
                     "F8_E4M3": torch.float8_e4m3fn}.get(stored)
            info = describe(comfy.sd.load_diffusion_model(
                path, model_options={"dtype": dtype} if dtype else {}))
            info["stored_dtype"] = stored
        info["load_seconds"] = round(time.perf_counter() - t0, 2)
        info["key_warnings"] = log.take()
        result[name] = info

    for name, (prefix, channels) in TAESD.items():  # VAELoader's "taesd*" entries
        if name not in wanted:
            continue
        sd = {}
        for part in ("encoder", "decoder"):
            part_sd = comfy.utils.load_torch_file(
                str(models_dir / "vae_approx" / f"{prefix}_{part}.safetensors"))
            sd.update({f"taesd_{part}.{k}": v for k, v in part_sd.items()})
        sd["vae_scale"], sd["vae_shift"] = torch.tensor(1.0), torch.tensor(0.0)
        vae = comfy.sd.VAE(sd=sd)
        image = vae.decode(torch.zeros(1, channels, 8, 8))
        result[name] = {"vae": type(vae.first_stage_model).__name__,
                        "latent_channels": vae.latent_channels,
                        "decoded_shape": list(image.shape),
                        "key_warnings": log.take()}

    # Same seed, same bytes: rebuild the small ones and compare with the files under test.
    import hashlib
    import tempfile

    def digest(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = [n for n in ("sd3_unet", "sd15_unet", "sd3_vae") if n in wanted]
        _build(Path(tmp), rebuilt)
        same = {}
        for name in rebuilt:
            rel = ([f"vae_approx/{TAESD[name][0]}_{p}.safetensors" for p in ("encoder", "decoder")]
                   if name in TAESD else ["/".join(FILES[name])])
            same[name] = all(digest(models_dir / r) == digest(Path(tmp) / r) for r in rel)
        result["_rebuilt_identical"] = same
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "detect"])
    parser.add_argument("--comfy", default=str(default_comfy_root()))
    parser.add_argument("--models", required=True, help="a ComfyUI models/ directory")
    parser.add_argument("--only", default="", help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    unknown = set(only) - set(FILES) - set(TAESD)
    if unknown:
        parser.error(f"unknown model names {sorted(unknown)}; choose from "
                     f"{sorted(set(FILES) | set(TAESD))}")
    # fp32 text encoders for `detect`: CPU fp16 matmuls are ~50x slower than fp32 here.
    _import_comfy(args.comfy, ("--cpu",) if args.command == "build" else ("--cpu", "--fp32-text-enc"))
    models_dir = Path(args.models).resolve()
    result = (_build if args.command == "build" else _detect)(models_dir, only)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
