"""Train the small learned prior of issue #12 on CPU, in ComfyUI's own formats.

Three stages, run back to back, each resumable from its last checkpoint in --state:
  ae    TAESD-layout autoencoder (comfy.taesd.taesd Encoder/Decoder, x8, 4 latent channels)
        -> prior/inverse_prior_vae.safetensors   (one file, `taesd_encoder.*`/`taesd_decoder.*`
           keys plus vae_scale/vae_shift: VAELoader reads it from models/vae)
  eps   narrow SD1.5 UNet, epsilon objective on the SD1.5 discrete schedule
        -> prior/inverse_prior_sd15_eps.safetensors  (UNETLoader, detected as SD15)
  flow  the same architecture, rectified-flow objective as ComfyUI computes it after the stock
        ModelSamplingSD3 patch (shift 1.0)
        -> prior/inverse_prior_sd15_flow_lora.safetensors: a LoRA on the eps UNet (low-rank
           deltas of every matrix, full deltas of biases and norms) trained with the flow
           objective; use UNETLoader(eps) -> LoraLoaderModelOnly(flow, 1.0) -> ModelSamplingSD3(1.0)

Conventions are ComfyUI's by construction: the UNet losses go through `model.apply_model`, i.e.
the wrapper ComfyUI samplers call (EPS input scaling 1/sqrt(s^2+1), sigma->timestep map, CONST
denoised = x - s*v), and its training latents are `process_latent_in(vae.encode(image))` as
ComfyUI computes them at run time with the stored vae_scale/vae_shift (see `latent_transform`).

Cross-attention is inert: every attn2.to_out is zero and frozen, so the UNets' output does not
depend on the conditioning (any CLIP-L, any prompt). We cannot ship a CLIP-L within 40 MB.

Deterministic for a seed: crops, flips, noise and timesteps are drawn from generators keyed by
(seed, stage, step), so a resumed run draws what an uninterrupted one would have.

  python scripts/train_prior.py                  # all stages (skips finished ones)
  python scripts/train_prior.py --stage ae --time-steps 3   # time a few steps, save nothing
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import prior_data  # noqa: E402

OUT_DIR = REPO / "prior"
FILES = {"ae": "inverse_prior_vae.safetensors", "eps": "inverse_prior_sd15_eps.safetensors",
         "flow": "inverse_prior_sd15_flow_lora.safetensors"}
LOG_NAME = "train_log.txt"
SD15_SCALE = 0.18215  # comfy.latent_formats.SD15.scale_factor (checked at run time)
STAGE_IDS = {"ae": 1, "latents": 2, "eps": 3, "flow": 4}

# Every number that shapes the result. Step counts are fixed (not time-based) for determinism.
CONFIG = {
    "seed": 20261201,
    "image_short_sides": [128, 256],      # each training image kept at these scales (uint8)
    "ae": {"steps": 2500, "batch": 8, "crop": 64, "lr": 1e-3, "warmup": 50,
           "latent_l2": 1e-4, "ckpt_every": 50},
    "latents": {"count": 768, "crop": 128, "batch": 16},
    "unet": {"num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1],
             "transformer_depth_output": [0, 0], "transformer_depth_middle": -2},
    # UNet batches are random window x window crops of the cached 16x16 latents (cheaper steps,
    # more positions; convolutions and attention do not care about the size).
    "eps": {"steps": 1500, "batch": 12, "window": 10, "lr": 4e-4, "warmup": 50, "ckpt_every": 50},
    # The flow UNet is the eps UNet plus a low-rank delta (stored as a ComfyUI LoRA): two full
    # SD1.5-layout UNets (13.6M parameters each at the narrowest config SD15 detection accepts)
    # do not fit the 40 MB budget in fp16.
    "flow": {"steps": 600, "batch": 12, "window": 10, "lr": 1e-3, "warmup": 30, "ckpt_every": 50,
             "lora_rank": 48, "logit_normal": [0.0, 1.0]},
    "eval": {"short_side": 128, "sigmas": [0.5, 1.0, 2.0]},
}


# ----------------------------------------------------------------------------- set-up

def import_comfy(comfy_root: str):
    """ComfyUI parses its CLI args at import: set --cpu first (as tests/host/tiny_models.py)."""
    sys.path.insert(0, str(REPO / "tests" / "host"))
    import tiny_models

    argv = sys.argv
    tiny_models._import_comfy(comfy_root)
    sys.argv = argv


class Log:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def step_rng(stage: str, step: int) -> np.random.Generator:
    return np.random.default_rng([CONFIG["seed"], STAGE_IDS[stage], step])


def torch_gen(torch, stage: str, step: int):
    return torch.Generator().manual_seed(int(step_rng(stage, step).integers(2**62)))


def random_crops(images, n, size, rng):
    """n random size x size crops (random image, position, horizontal flip) as float [0,1] NCHW."""
    import torch

    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = images[rng.integers(len(images))]
        y = rng.integers(img.shape[0] - size + 1)
        x = rng.integers(img.shape[1] - size + 1)
        crop = img[y:y + size, x:x + size]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(255.0)


def center_crops(images, size):
    import torch

    out = [prior_data.centre_crop(img, size) for img in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255.0)


def optimizer_step(torch, opt, params, loss) -> None:
    """One clipped optimiser step (every stage trains the same way)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def init_weights(torch, module):
    """ComfyUI builds layers with weight init disabled (weights are loaded later): initialise
    them with torch's defaults, norms at identity."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            base = torch.nn.Conv2d if isinstance(m, torch.nn.Conv2d) else torch.nn.Linear
            base.reset_parameters(m)
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


def save_checkpoint(torch, path: Path, **state):
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(path)


def save_fp16(torch, sd: dict, path: Path, metadata: dict):
    from safetensors.torch import save_file

    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}
    tmp = path.with_name(path.name + ".partial")
    save_file(sd, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    tmp.replace(path)


def psnr(a, b):
    import torch

    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse))


# ----------------------------------------------------------------------------- autoencoder

def build_taesd(torch):
    import comfy.taesd.taesd

    torch.manual_seed(CONFIG["seed"] + STAGE_IDS["ae"])
    model = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights(torch, model)
    return model


def ae_reconstruct(model, x):
    """What ComfyUI's VAEEncode + VAEDecode compute for a TAESD (before the final clamp), with
    vae_scale/vae_shift cancelling: decoder(encoder(x))."""
    return model.taesd_decoder(model.taesd_encoder(x))


def train_ae(torch, args, log, train_images, test_images):
    cfg = CONFIG["ae"]
    model = build_taesd(torch)
    params = [p for n, p in model.named_parameters() if n.startswith("taesd_")]
    opt = torch.optim.Adam(params, lr=cfg["lr"])
    ckpt = args.state / "ae.pt"
    start = 0
    if ckpt.exists() and not args.time_steps:
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        log(f"[ae] resumed at step {start}")
    total = args.time_steps or cfg["steps"]
    t_start = time.perf_counter()
    for step in range(start, total):
        t0 = time.perf_counter()
        rng = step_rng("ae", step)
        x = random_crops(train_images, cfg["batch"], cfg["crop"], rng)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg["steps"], cfg["lr"], cfg["warmup"])
        z = model.taesd_encoder(x)
        rec = model.taesd_decoder(z)
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = mse + cfg["latent_l2"] * z.pow(2).mean()
        optimizer_step(torch, opt, params, loss)
        dt = time.perf_counter() - t0
        if step % 5 == 0 or step == total - 1:
            log(f"[ae] step {step + 1}/{total} mse {mse.item():.5f} "
                f"psnr {10 * math.log10(1 / max(mse.item(), 1e-10)):.2f} "
                f"z_std {z.std().item():.3f} lr {opt.param_groups[0]['lr']:.2e} {dt:.2f}s")
        if not args.time_steps and ((step + 1) % cfg["ckpt_every"] == 0 or step + 1 == total):
            save_checkpoint(torch, ckpt, model=model.state_dict(), opt=opt.state_dict(),
                            step=step + 1)
    if args.time_steps:
        log(f"[ae] timing: {(time.perf_counter() - t_start) / max(1, total - start):.2f} s/step")
        return None
    return finish_ae(torch, args, log, model, train_images, test_images)


def finish_ae(torch, args, log, model, train_images, test_images):
    with torch.no_grad():
        # Scalar scale/shift so the UNet's input process_in(vae.encode(x)) is ~zero-mean, unit-std
        # (ComfyUI applies them in TAESD.encode/decode; see latent_transform).
        x = random_crops(train_images, 64, 128, step_rng("latents", 10**9))
        z = torch.cat([model.taesd_encoder(c) for c in x.split(32)])
        m, s = z.mean().item(), z.std().item()
        vae_scale = SD15_SCALE * s
        vae_shift = -m / (SD15_SCALE * s)
        test = center_crops(test_images, CONFIG["eval"]["short_side"])
        rec = torch.cat([ae_reconstruct(model, c).clamp(0, 1) for c in test.split(8)])
        p = psnr(rec, test)
    metrics = {"heldout_psnr_db": round(p.mean().item(), 3), "heldout_psnr_min_db":
               round(p.min().item(), 3), "heldout_images": len(test_images),
               "latent_mean": round(m, 5), "latent_std": round(s, 5),
               "vae_scale": vae_scale, "vae_shift": vae_shift}
    log(f"[ae] done: {json.dumps(metrics)}")
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("taesd_")}
    sd["vae_scale"] = torch.tensor(vae_scale)
    sd["vae_shift"] = torch.tensor(vae_shift)
    save_fp16(torch, sd, args.out / FILES["ae"], {"stage": "ae", **metrics,
                                                  "config": json.dumps(CONFIG["ae"])})
    (args.state / "ae.done.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def load_vae_comfy(torch, path: Path):
    """The committed VAE file as ComfyUI's VAELoader loads it."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


# ----------------------------------------------------------------------------- latents

def latent_cache(torch, args, log, train_images, test_images):
    """Latents of random train crops (+ centre crops of the test images), computed exactly as
    ComfyUI does at run time: SD15 latent_format.process_in(VAE.encode(image))."""
    path = args.state / "latents.pt"
    if path.exists():
        return torch.load(path)
    import comfy.latent_formats

    fmt = comfy.latent_formats.SD15()
    assert abs(fmt.scale_factor - SD15_SCALE) < 1e-9
    vae = load_vae_comfy(torch, args.out / FILES["ae"])
    cfg = CONFIG["latents"]
    t0 = time.perf_counter()

    def encode(x):  # x: NCHW [0,1] -> ComfyUI's IMAGE is NHWC
        with torch.no_grad():
            return fmt.process_in(vae.encode(x.permute(0, 2, 3, 1))).float().detach()

    rng = step_rng("latents", 0)
    train, n = [], 0
    while n < cfg["count"]:
        b = min(cfg["batch"], cfg["count"] - n)
        train.append(encode(random_crops(train_images, b, cfg["crop"], rng)))
        n += b
        if len(train) % 8 == 0:
            log(f"[latents] {n}/{cfg['count']} {time.perf_counter() - t0:.0f}s")
    test_x = center_crops(test_images, CONFIG["eval"]["short_side"])
    cache = {"train": torch.cat(train), "test": torch.cat([encode(c) for c in test_x.split(8)])}
    log(f"[latents] train {tuple(cache['train'].shape)} mean {cache['train'].mean():.4f} "
        f"std {cache['train'].std():.4f}; test {tuple(cache['test'].shape)} "
        f"({time.perf_counter() - t0:.0f}s)")
    torch.save(cache, path)
    return cache


# ----------------------------------------------------------------------------- UNets

def build_unet(torch, flow: bool):
    """Narrow SD1.5 UNet through ComfyUI's own SD15 model config, so ComfyUI's wrapper (model
    sampling, input scaling) is the one trained. flow: ModelSamplingSD3's patch (shift 1)."""
    import comfy.model_sampling
    import comfy.supported_models

    torch.manual_seed(CONFIG["seed"] + STAGE_IDS["flow" if flow else "eps"])
    config = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True,
              "legacy": False, "adm_in_channels": None, "in_channels": 4, "out_channels": 4,
              "model_channels": 320, "use_temporal_resblock": False,
              "use_temporal_attention": False, "use_linear_in_transformer": False,
              "context_dim": 768, "dtype": torch.float32, **CONFIG["unet"]}
    model = comfy.supported_models.SD15(config).get_model({})
    unet = model.diffusion_model
    init_weights(torch, unet)
    with torch.no_grad():
        for name, m in unet.named_modules():
            # zero last layers of residual branches (standard for diffusion UNets)
            if name.endswith("out_layers") or name.endswith("proj_out"):
                last = m[-1] if isinstance(m, torch.nn.Sequential) else m
                torch.nn.init.zeros_(last.weight)
                torch.nn.init.zeros_(last.bias)
    make_cross_attention_inert(torch, unet)
    if flow:
        # What ModelSamplingSD3 (comfy_extras/nodes_model_advanced.py) patches in.
        class ModelSamplingAdvanced(comfy.model_sampling.ModelSamplingDiscreteFlow,
                                    comfy.model_sampling.CONST):
            pass

        sampling = ModelSamplingAdvanced(model.model_config)
        sampling.set_parameters(shift=1.0, multiplier=1000)
        model.model_sampling = sampling
    return model


def make_cross_attention_inert(torch, unet):
    """attn2 (cross-attention) output projection zero and every attn2 parameter frozen: the
    output is exactly independent of the conditioning."""
    n = 0
    for name, m in unet.named_modules():
        if name.endswith("attn2"):
            with torch.no_grad():
                torch.nn.init.zeros_(m.to_out[0].weight)
                torch.nn.init.zeros_(m.to_out[0].bias)
            for p in m.parameters():
                p.requires_grad_(False)
            n += 1
    assert n > 0, "no cross-attention found"


def unet_state_for_file(model):
    return dict(model.diffusion_model.state_dict())


def flow_time_for_sigma(sigma: float) -> float:
    """Flow time with the same signal-to-noise ratio as EPS sigma: x_t/(1-t) = x0 + t/(1-t) eps."""
    return sigma / (1.0 + sigma)


def noisy(torch, x0, noise, s, flow):
    s4 = s.view(-1, 1, 1, 1)
    return (1 - s4) * x0 + s4 * noise if flow else x0 + s4 * noise


def denoise(torch, model, x, s, context):
    return model.apply_model(x, s, c_crossattn=context.expand(x.shape[0], -1, -1))


def eval_unet(torch, model, latents, flow):
    """Held-out latent MSE of the model's x0 estimate vs the best per-channel affine (Wiener)
    shrinkage that knows only the training latents' channel means/variances."""
    test, train = latents["test"], latents["train"]
    mu = train.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    var = train.var(dim=(0, 2, 3)).view(1, -1, 1, 1)
    gen = torch.Generator().manual_seed(CONFIG["seed"] + 99)
    noise = torch.randn(test.shape, generator=gen)
    context = torch.zeros(1, 1, 768)
    out = {}
    with torch.no_grad():
        for sigma in CONFIG["eval"]["sigmas"]:
            t = flow_time_for_sigma(sigma) if flow else sigma
            s = torch.full((test.shape[0],), t)
            x = noisy(torch, test, noise, s, flow)
            d = torch.cat([denoise(torch, model, xb, sb, context)
                           for xb, sb in zip(x.split(8), s.split(8))])
            if flow:  # x = (1-t) x0 + t e
                a = 1 - t
                base = mu + a * var / (a * a * var + t * t) * (x - a * mu)
            else:
                base = mu + var / (var + t * t) * (x - mu)
            out[f"sigma_{sigma}"] = {"t": round(t, 4),
                                     "model_mse": round(((d - test) ** 2).mean().item(), 5),
                                     "wiener_mse": round(((base - test) ** 2).mean().item(), 5)}
    return out


def add_low_rank_deltas(torch, unet, rank: int, seed: int) -> dict:
    """Make every trainable Linear/Conv2d weight W0 + up @ down (W0 frozen, up zero at start) and
    keep biases and norm weights trainable; freeze the rest. Returns {module name: delta}."""
    from torch.nn.utils import parametrize

    class LowRankDelta(torch.nn.Module):
        def __init__(self, weight):
            super().__init__()
            out_dim, fan_in = weight.shape[0], weight[0].numel()
            self.down = torch.nn.Parameter(torch.randn(rank, fan_in, generator=gen) / math.sqrt(fan_in))
            self.up = torch.nn.Parameter(torch.zeros(out_dim, rank))

        def forward(self, weight):
            return weight + (self.up @ self.down).view_as(weight)

    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    for name, m in unet.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.weight.requires_grad:
            m.weight.requires_grad_(False)
            delta = LowRankDelta(m.weight)
            parametrize.register_parametrization(m, "weight", delta, unsafe=True)
            m.parametrizations.weight.original.requires_grad_(False)
            deltas[name] = delta
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
            pass  # weight and bias stay trainable (stored as full diffs)
    return deltas


def lora_file_state(torch, unet, deltas: dict, base: dict) -> dict:
    """The trained deltas in ComfyUI's generic LoRA key format ("diffusion_model.<module>.
    lora_up/lora_down.weight", ".diff" for norm weights, ".diff_b" for biases)."""
    out = {}
    for name, delta in deltas.items():
        weight = base[name + ".weight"]
        up, down = delta.up.detach(), delta.down.detach()
        if weight.ndim == 4:  # conv: down is a rank x in x kh x kw conv, up a 1x1 conv
            down = down.view(down.shape[0], *weight.shape[1:])
            up = up.view(*up.shape, 1, 1)
        out[f"diffusion_model.{name}.lora_up.weight"] = up
        out[f"diffusion_model.{name}.lora_down.weight"] = down
    modules = dict(unet.named_modules())
    for key, value in unet.named_parameters():
        if not value.requires_grad or ".parametrizations." in key:
            continue
        owner, kind = key.rsplit(".", 1)
        diff = value.detach() - base[key]
        if kind == "bias":
            out[f"diffusion_model.{owner}.diff_b"] = diff
        elif isinstance(modules[owner], (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            out[f"diffusion_model.{owner}.diff"] = diff
        else:
            raise AssertionError(f"unexpected trainable tensor {key}")
    return out


def train_unet(torch, args, log, stage, latents):
    cfg = CONFIG[stage]
    flow = stage == "flow"
    model = build_unet(torch, flow)
    unet = model.diffusion_model
    deltas, base = {}, None
    if flow:
        # The flow model starts from the finished eps UNet and learns a low-rank delta.
        if not args.time_steps:
            eps_state = torch.load(args.state / "eps.pt", weights_only=False)
            assert eps_state["step"] == CONFIG["eps"]["steps"], "the eps stage has not finished"
            unet.load_state_dict(eps_state["model"])
        base = {k: v.detach().clone() for k, v in unet.state_dict().items()}
        deltas = add_low_rank_deltas(torch, unet, cfg["lora_rank"],
                                     CONFIG["seed"] + STAGE_IDS["flow"])
    ckpt = args.state / f"{stage}.pt"
    start = 0
    state = None
    if ckpt.exists() and not args.time_steps:
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["model"])
        start = state["step"]
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    if state is not None:
        opt.load_state_dict(state["opt"])
        log(f"[{stage}] resumed at step {start}")
    n_params = sum(p.numel() for p in base.values()) if flow else \
        sum(p.numel() for p in unet.parameters())
    log(f"[{stage}] UNet params {n_params / 1e6:.2f}M, trainable "
        f"{sum(p.numel() for p in params) / 1e6:.2f}M")
    data = latents["train"]
    context = torch.zeros(1, 1, 768)
    ms = model.model_sampling
    total = args.time_steps or cfg["steps"]
    win, full = cfg["window"], data.shape[-1]
    t_start = time.perf_counter()
    unet.train()
    for step in range(start, total):
        t0 = time.perf_counter()
        rng = step_rng(stage, step)
        g = torch_gen(torch, stage, step)
        idx = rng.integers(len(data), size=cfg["batch"])
        ys, xs = rng.integers(full - win + 1, size=(2, cfg["batch"]))
        x0 = torch.stack([data[i, :, y:y + win, x:x + win] for i, y, x in zip(idx, ys, xs)])
        noise = torch.randn(x0.shape, generator=g)
        if flow:
            mean, std = cfg["logit_normal"]
            s = torch.sigmoid(mean + std * torch.randn(cfg["batch"], generator=g))
            s = s.clamp(1e-3, 1.0)
            target = noise - x0
        else:
            t = torch.randint(0, len(ms.sigmas), (cfg["batch"],), generator=g)
            s = ms.sigmas[t].float()
            target = noise
        x = noisy(torch, x0, noise, s, flow)
        d = denoise(torch, model, x, s, context)
        pred = (x - d) / s.view(-1, 1, 1, 1)  # the network's raw eps / v output
        loss = torch.nn.functional.mse_loss(pred, target)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg["steps"], cfg["lr"], cfg["warmup"])
        optimizer_step(torch, opt, params, loss)
        dt = time.perf_counter() - t0
        if step % 5 == 0 or step == total - 1:
            log(f"[{stage}] step {step + 1}/{total} loss {loss.item():.5f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {dt:.2f}s")
        if not args.time_steps and ((step + 1) % cfg["ckpt_every"] == 0 or step + 1 == total):
            save_checkpoint(torch, ckpt, model=unet.state_dict(), opt=opt.state_dict(),
                            step=step + 1)
    if args.time_steps:
        log(f"[{stage}] timing: {(time.perf_counter() - t_start) / max(1, total - start):.2f} s/step")
        return None
    unet.eval()
    metrics = eval_unet(torch, model, latents, flow)
    log(f"[{stage}] done: {json.dumps(metrics)}")
    meta = {"stage": stage, "metrics": json.dumps(metrics), "config": json.dumps(cfg),
            "unet": json.dumps(CONFIG["unet"]),
            "note": "cross-attention inert (attn2.to_out zero): output ignores the prompt"}
    sd = lora_file_state(torch, unet, deltas, base) if flow else dict(unet.state_dict())
    save_fp16(torch, sd, args.out / FILES[stage], meta)
    (args.state / f"{stage}.done.json").write_text(json.dumps(metrics, indent=1))
    return metrics


# ----------------------------------------------------------------------------- demo checkpoint

def assemble_checkpoint(torch, out_dir: Path, path: Path):
    """A CheckpointLoaderSimple file from the committed eps UNet + VAE and a seeded RANDOM CLIP-L
    (built at install time, never committed: the UNet ignores its conditioning). The TAESD keys
    under first_stage_model. make comfy.sd.VAE build a TAESD, with the stored scale/shift."""
    from safetensors.torch import load_file

    import comfy.sd1_clip

    sys.path.insert(0, str(REPO / "tests" / "host"))
    import tiny_models as tm

    fp16 = lambda key, value: torch.float16  # noqa: E731
    config = build_unet(torch, False).model_config
    as_fill = lambda t: tm._Fill(t.shape, torch.float16, data=t.reshape(-1))  # noqa: E731
    unet_sd = {k: as_fill(v) for k, v in load_file(str(out_dir / FILES["eps"])).items()}
    vae_sd = {k: as_fill(v) for k, v in load_file(str(out_dir / FILES["ae"])).items()}
    text_sd = tm.random_state_dict(comfy.sd1_clip.SD1ClipModel(dtype=torch.float16), fp16)
    sd = config.process_unet_state_dict_for_saving(unet_sd)
    sd.update(tm._convert_lazily(config.process_clip_state_dict_for_saving, text_sd))
    sd.update(config.process_vae_state_dict_for_saving(vae_sd))
    tm._save(sd, path, "inverse_prior_checkpoint")
    return path


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["all", "ae", "eps", "flow"], default="all")
    parser.add_argument("--state", type=Path, default=Path(os.environ.get(
        "INVERSE_PRIOR_STATE", os.path.expanduser("~/.cache/comfyui-inverse/prior_train"))))
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.join(
        os.environ.get("INVERSE_HOME", os.path.expanduser("~/.cache/comfyui-inverse")), "ComfyUI")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-steps", type=int, default=0,
                        help="run this many steps from scratch, print s/step, save nothing")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny step counts, to check the whole pipeline (use with --state/--out)")
    parser.add_argument("--assemble-checkpoint", type=Path, metavar="PATH",
                        help="write a CheckpointLoaderSimple file (committed eps UNet + VAE + a "
                             "seeded random CLIP-L) to PATH and exit")
    args = parser.parse_args(argv)
    if args.smoke:
        for stage in ("ae", "eps", "flow"):
            CONFIG[stage].update(steps=2, batch=2, warmup=1, ckpt_every=1)
        CONFIG["latents"].update(count=4, batch=2)

    import_comfy(args.comfy)
    import torch

    torch.set_num_threads(args.threads)
    if args.assemble_checkpoint:
        print(assemble_checkpoint(torch, args.out, args.assemble_checkpoint))
        return 0
    torch.use_deterministic_algorithms(True, warn_only=True)
    args.state.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.state / LOG_NAME)
    if not args.time_steps:
        log(f"== train_prior.py {time.strftime('%Y-%m-%d %H:%M:%S')} stage={args.stage} "
            f"threads={args.threads} torch={torch.__version__}")
        log(f"config {json.dumps(CONFIG)}")
    split = prior_data.read_split()
    train_images = prior_data.load("train", CONFIG["image_short_sides"], split)
    test_images = prior_data.load("test", [CONFIG["eval"]["short_side"]], split)
    if not args.time_steps:
        log(f"data: {len(split['train'])} train images x {len(CONFIG['image_short_sides'])} "
            f"scales, {len(test_images)} held-out images ({split['counts']})")

    def publish_log():
        if not args.time_steps:
            shutil.copyfile(args.state / LOG_NAME, args.out / LOG_NAME)

    stages = ["ae", "eps", "flow"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if (args.state / f"{stage}.done.json").exists() and not args.time_steps:
            log(f"[{stage}] already done: {(args.state / f'{stage}.done.json').read_text()}")
            continue
        if stage == "ae":
            train_ae(torch, args, log, train_images, test_images)
        else:
            if args.time_steps:
                g = torch.Generator().manual_seed(0)
                latents = {"train": torch.randn(64, 4, 16, 16, generator=g),
                           "test": torch.randn(8, 4, 16, 16, generator=g)}
            else:
                latents = latent_cache(torch, args, log, train_images, test_images)
            train_unet(torch, args, log, stage, latents)
        publish_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
