"""Generate the pack's example workflows: UI format in workflows/, API twins in workflows/api/,
JPEG thumbnails next to the UI files, and the sample inputs in workflows/inputs/.

    python scripts/make_workflows.py [--server URL] [--only NAME ...]

The widget order and the socket types come from a live server's /object_info (one is started
from the configured ComfyUI tree unless --server is given), so the files match what the stock
frontend saves and loads; the API twins are made by runner/workflow_api.py's ui_to_api.
Re-runnable: the output depends only on the definitions below and the server's node schemas.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
PACK_ID, PACK_VERSION = "comfyui-inverse", "0.1.0"

# Model file names the workflows ask for (the names most users have; tests map them to tiny files).
SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
SD35 = "sd3.5_medium.safetensors"
SD3_CLIP_L = "clip_l.safetensors"
SD3_VAE = "sd3.5_vae.safetensors"
CLIP_VISION_L = "clip-vit-large-patch14.safetensors"
LORA = "your_sd15_lora.safetensors"
# Sample inputs shipped in workflows/inputs/ (copy them to ComfyUI/input/).
PHOTO = "inverse_astronaut_512.jpg"
PHOTO_MASKED = "inverse_astronaut_512_masked.webp"
PHOTO_SMALL = "inverse_astronaut_128.png"
NULL_PROMPT = "out of focus, depth of field"
MASK_BOX = (110, 230, 170, 300)  # top, bottom, left, right of the hole in PHOTO_MASKED (512×512)

GROUP_COLORS = {"model": "#3f789e", "measure": "#b58b2a", "solve": "#8A8", "out": "#a1309b",
                "metrics": "#444"}
GAP, MARGIN, GROUP_TITLE, NODE_TITLE = 30, 20, 46, 30
GROUP_FONT, NODE_FONT = 24, 14  # px: LiteGraph's DEFAULT_GROUP_FONT and NODE_TEXT_SIZE
NOTE_WIDTH = 720

# The screen the saved view (extra.ds) is made for: the frontend's sidebar (~60 px) on the left, and
# its tab bar, workflow-name chip and Run toolbar (~90 px) on top cover the canvas; the whole graph
# must fit beside and below them.
SCREEN, SIDEBAR, TOPBAR, SCREEN_MARGIN = (1920, 1080), 64, 96, 16

# File name of each workflow, in the order the template browser lists them. The frontend (1.32)
# takes a custom pack's template title *and* description from the file name and shows about 26
# characters of the title on a card, so the names are short sentences. The keys are the original
# names: they fix each workflow's "id" and pick its thumbnail (renaming makes no new workflow).
TITLES = {
    "11_real_photo_upscale_x4_cpgdm": "01 Upscale your photo x4",
    "12_sdxl_upscale_x8_cpgdm": "02 Your photo x8 on SDXL",
    "01_super_resolution_x4_cpgdm": "03 Upscale x4, step by step",
    "02_super_resolution_x8_cpgdm": "04 Upscale x8 in one node",
    "03_super_resolution_x16_treg_text": "05 Upscale x16 with a prompt",
    "09_super_resolution_x4_cpgfm_sd3": "06 Upscale x4 with SD3.5",
    "04_gaussian_deblur_cpgdm": "07 Sharpen a blurred photo",
    "05_gaussian_deblur_treg": "08 Sharpen with TReg",
    "06_motion_deblur_cpgdm": "09 Remove motion blur",
    "07_inpainting_mask_editor_cpgdm": "10 Fill a masked area",
    "08_denoising_cpgdm": "11 Remove noise",
    "10_composable_lora_stock_nodes_cpgdm": "12 LoRA and stock nodes",
    "13_sdxl_upscale_x4_tiled": "13 Big photo x4 in tiles",
}

# Where the frontend's missing-model dialog sends the user (node properties.models: name = the
# loader's widget value, directory = the models/ folder). No entry: a placeholder name.
MODEL_SOURCES = {
    "v1-5-pruned-emaonly.safetensors": (
        "checkpoints", "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                       "v1-5-pruned-emaonly.safetensors"),
    "sd_xl_base_1.0.safetensors": (
        "checkpoints", "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                       "sd_xl_base_1.0.safetensors"),
    "sd3.5_medium.safetensors": (
        "diffusion_models", "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/resolve/main/"
                            "sd3.5_medium.safetensors"),
    "clip_l.safetensors": (
        "text_encoders", "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/"
                         "text_encoders/clip_l.safetensors"),
    "sd3.5_vae.safetensors": (
        "vae", "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/resolve/main/vae/"
               "diffusion_pytorch_model.safetensors"),
    "clip-vit-large-patch14.safetensors": (
        "clip_vision", "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors"),
}
MODEL_WIDGETS = ("ckpt_name", "unet_name", "clip_name", "vae_name")


def text_width(text: str, size: int) -> float:
    """Width in px of `text` at `size` px, a little wider than DejaVu Sans (what Arial falls back to
    on Linux; Arial itself is narrower), so a title that fits here fits in the frontend."""
    em = 0.0
    for ch in text:
        if ch in " .,:;'|!il":
            em += 0.34
        elif ch in "()[]/-fjrt⁺·":
            em += 0.42
        elif ch.isdigit():
            em += 0.64
        elif ch.isupper() or ch in "mwMW":
            em += 0.74
        elif ch.isascii():
            em += 0.62
        else:  # Π, ×, σ, ‖, ...
            em += 0.78
    return em * size * 1.05


# ----------------------------------------------------------------------------- graph model

@dataclass
class Out:
    node: "Node"
    slot: int


@dataclass
class Node:
    id: int
    type: str
    values: dict
    title: str | None
    group: str
    col: int
    text: str | None = None  # MarkdownNote body

    def __getitem__(self, slot: int) -> Out:
        return Out(self, slot)


@dataclass
class Group:
    key: str
    title: str
    stage: int
    color: str


@dataclass
class Workflow:
    name: str  # the original file name: the key of TITLES, the thumbnail and the workflow id
    note: str
    nodes: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The file name (without .json) and the template browser's title."""
        return TITLES[self.name]

    def group(self, key, title, stage, color):
        self.groups[key] = Group(key, title, stage, GROUP_COLORS[color])

    def node(self, kind, group, col=0, title=None, **values) -> Node:
        text = values.pop("text") if kind == "MarkdownNote" else None
        node = Node(len(self.nodes) + 1, kind, values, title, group, col, text)
        self.nodes.append(node)
        return node


# ------------------------------------------------------------------------- serialisation

def _inputs_of(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) in the frontend's order: required then optional, input_order."""
    result = []
    for section in ("required", "optional"):
        specs = (info.get("input") or {}).get(section) or {}
        order = (info.get("input_order") or {}).get(section) or list(specs)
        result += [(name, list(specs[name]), section == "optional") for name in order if name in specs]
    return result


def _is_widget(spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return not options.get("forceInput") and (
        isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"))


def _default(spec: list):
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    choices = spec[0] if isinstance(spec[0], list) else options.get("options") or []
    if choices:
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])


def _size(node: Node, title: str, n_slots: int, n_widgets: int, multiline: bool) -> list[int]:
    if node.type == "MarkdownNote":
        return note_size(node.text, NOTE_WIDTH)  # final width set in layout()
    height = 34 + 22 * n_slots + 26 * n_widgets + (80 if multiline else 0)
    if node.type == "LoadImage":
        height += 270
    if node.type in ("SaveImage", "PreviewImage"):
        height = 300
    # the frontend cuts a title wider than the node minus two title heights
    width = max(330 if node.type != "LoadImage" else 300, int(text_width(title, NODE_FONT) + 2 * NODE_TITLE + 12))
    return [width, height]


def node_title(node: Node, object_info: dict) -> str:
    if node.title:
        return node.title
    return object_info[node.type].get("display_name") or node.type


def serialise(wf: Workflow, object_info: dict) -> dict:
    links, ui_nodes = [], []
    outputs_links: dict[tuple[int, int], list[int]] = {}
    per_node = {}
    for node in wf.nodes:
        if node.type == "MarkdownNote":
            per_node[node.id] = ([], [], [node.text], False)
            continue
        info = object_info.get(node.type)
        if info is None:
            raise SystemExit(f"{wf.name}: the server does not know node type {node.type!r}")
        known = {name for name, _, _ in _inputs_of(info)}
        unknown = set(node.values) - known
        if unknown:
            raise SystemExit(f"{wf.name}: {node.type} has no inputs {sorted(unknown)}; it has {sorted(known)}")
        sockets, widgets, multiline = [], [], False
        for name, spec, optional in _inputs_of(info):
            value = node.values.get(name)
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if _is_widget(spec):
                if isinstance(value, Out):
                    raise SystemExit(f"{wf.name}: keep widget inputs literal ({node.type}.{name})")
                widgets.append(_default(spec) if value is None else value)
                multiline |= bool(options.get("multiline"))
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                if options.get("image_upload"):
                    widgets.append("image")
                continue
            entry = {"name": name, "type": spec[0], "link": None}
            if optional:
                entry["shape"] = 7  # the frontend draws optional sockets hollow
            if isinstance(value, Out):
                link_id = len(links) + 1
                out_type = object_info[value.node.type]["output"][value.slot]
                links.append([link_id, value.node.id, value.slot, node.id, len(sockets), out_type])
                outputs_links.setdefault((value.node.id, value.slot), []).append(link_id)
                entry["link"] = link_id
            elif not optional:
                raise SystemExit(f"{wf.name}: {node.type}.{name} ({spec[0]}) is not connected")
            sockets.append(entry)
        per_node[node.id] = (sockets, info, widgets, multiline)

    titles = {node.id: node_title(node, object_info) for node in wf.nodes}
    positions = layout(wf, per_node, titles)
    order = _topological_order(wf, links)
    for node in wf.nodes:
        sockets, info, widgets, multiline = per_node[node.id]
        outputs = []
        if node.type != "MarkdownNote":
            names = info.get("output_name") or info["output"]
            for slot, kind in enumerate(info["output"]):
                outputs.append({"name": names[slot], "type": kind,
                                "links": outputs_links.get((node.id, slot), []), "slot_index": slot})
        pos, size = positions[node.id]
        entry = {"id": node.id, "type": node.type, "pos": pos, "size": size, "flags": {},
                 "order": order[node.id], "mode": 0, "inputs": sockets, "outputs": outputs,
                 "properties": _properties(node, object_info), "widgets_values": widgets}
        if node.title:
            entry["title"] = node.title
        if node.type == "MarkdownNote":
            entry["color"], entry["bgcolor"] = "#432", "#653"
        ui_nodes.append(entry)
    groups = _groups(wf, positions, titles)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-inverse/workflows/{wf.name}")),
        "revision": 0, "last_node_id": len(wf.nodes), "last_link_id": len(links),
        "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
        "extra": {"ds": saved_view(ui_nodes, groups)}, "version": 0.4,
    }


def saved_view(nodes: list, groups: list) -> dict:
    """extra.ds: the scale and offset that show the whole graph on SCREEN beside the sidebar and
    below the tab bar (the frontend draws canvas point p at (p + offset) · scale)."""
    rects = [(n["pos"][0], n["pos"][1] - NODE_TITLE, n["size"][0], n["size"][1] + NODE_TITLE) for n in nodes]
    rects += [tuple(g["bounding"]) for g in groups]
    left, top = min(r[0] for r in rects), min(r[1] for r in rects)
    right, bottom = max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects)
    room_x = SCREEN[0] - SIDEBAR - 2 * SCREEN_MARGIN
    room_y = SCREEN[1] - TOPBAR - 2 * SCREEN_MARGIN
    scale = round(min(1.0, room_x / (right - left), room_y / (bottom - top)), 3)
    offset = [round((SIDEBAR + SCREEN_MARGIN) / scale - left, 1), round((TOPBAR + SCREEN_MARGIN) / scale - top, 1)]
    return {"scale": scale, "offset": offset}


def _properties(node: Node, object_info: dict) -> dict:
    if node.type == "MarkdownNote":
        return {}
    python_module = object_info[node.type].get("python_module", "")
    ours = "custom_nodes" in python_module
    properties = {"cnr_id": PACK_ID if ours else "comfy-core", "ver": PACK_VERSION if ours else "0.3.75",
                  "Node name for S&R": node.type}
    models = [{"name": node.values[key], "url": MODEL_SOURCES[node.values[key]][1],
               "directory": MODEL_SOURCES[node.values[key]][0]}
              for key in MODEL_WIDGETS if node.values.get(key) in MODEL_SOURCES]
    if models:  # read by the frontend's missing-model dialog when the file is not installed
        properties["models"] = models
    return properties


def _topological_order(wf: Workflow, links: list) -> dict[int, int]:
    parents = {node.id: set() for node in wf.nodes}
    for _, origin, _, target, _, _ in links:
        parents[target].add(origin)
    order, done = {}, set()
    while len(done) < len(wf.nodes):
        for node in wf.nodes:
            if node.id not in done and parents[node.id] <= done:
                order[node.id] = len(order)
                done.add(node.id)
    return order


def group_title_width(title: str) -> int:
    return int(text_width(title, GROUP_FONT) + 2 * MARGIN)


def layout(wf: Workflow, per_node: dict, titles: dict) -> dict[int, tuple[list, list]]:
    """Stages left to right; in a stage, groups top to bottom; in a group, columns left to right
    and nodes top to bottom in the order they were created. The Note sits above everything.
    A group is at least as wide as its title, so titles never run into the next stage."""
    sizes = {}
    for node in wf.nodes:
        sockets, info, widgets, multiline = per_node[node.id]
        n_out = len(info["output"]) if info else 0
        sizes[node.id] = _size(node, titles[node.id], max(len(sockets), n_out), len(widgets), multiline)
    note_nodes = [n for n in wf.nodes if n.type == "MarkdownNote"]
    positions = {}
    top = 0
    stages = sorted({g.stage for g in wf.groups.values()})
    x = 0
    for stage in stages:
        y, stage_width = top, 0
        for group in [g for g in wf.groups.values() if g.stage == stage]:
            members = [n for n in wf.nodes if n.group == group.key]
            cols = sorted({n.col for n in members})
            gx, group_height = x + MARGIN, 0
            for col in cols:
                col_nodes = [n for n in members if n.col == col]
                width = max(sizes[n.id][0] for n in col_nodes)
                ny = y + GROUP_TITLE + NODE_TITLE
                for n in col_nodes:
                    positions[n.id] = ([gx, ny], sizes[n.id])
                    ny += sizes[n.id][1] + GAP + 20  # + title bar
                group_height = max(group_height, ny - y)
                gx += width + GAP
            stage_width = max(stage_width, gx - x + MARGIN - GAP, group_title_width(group.title))
            y += group_height + 40
        x += stage_width + 50
    # The Note goes on top, as wide as the graph (short lines would make it tall and the saved view,
    # which must show the whole graph, small); everything else moves down below it.
    shift = 0
    for note in note_nodes:
        size = note_size(note.text, min(max(NOTE_WIDTH, x - 50), 2 * NOTE_WIDTH))
        positions[note.id] = ([0, shift], size)
        shift += size[1] + 40
    for node_id, (pos, size) in positions.items():
        if node_id not in {n.id for n in note_nodes}:
            pos[1] += shift
    return positions


def note_size(text: str, width: int) -> list[int]:
    """A MarkdownNote that holds `text` at the frontend's default textarea font (10 px; a little
    room for 11 px): ~16 px lines, paragraph gaps, a heading."""
    per_line = int((width - 24) / (11 * 0.5))
    paragraphs = [line for line in text.split("\n") if line.strip()]
    lines = sum(1 + len(line) // per_line for line in paragraphs)
    return [width, 30 + 30 + 15 * lines + 10 * len(paragraphs)]


def _groups(wf: Workflow, positions: dict, titles: dict) -> list:
    result = []
    for index, group in enumerate(wf.groups.values(), start=1):
        members = [n for n in wf.nodes if n.group == group.key]
        left = min(positions[n.id][0][0] for n in members) - MARGIN
        top = min(positions[n.id][0][1] for n in members) - GROUP_TITLE - NODE_TITLE
        right = max(max(positions[n.id][0][0] + positions[n.id][1][0] for n in members) + MARGIN,
                    left + group_title_width(group.title))
        bottom = max(positions[n.id][0][1] + positions[n.id][1][1] for n in members) + MARGIN
        result.append({"id": index, "title": group.title, "bounding": [left, top, right - left, bottom - top],
                       "color": group.color, "font_size": 24, "flags": {}})
    return result


# ---------------------------------------------------------------------------- workflows

COMMON_NOTE = (
    "\n\nFiles: put the checkpoint in models/checkpoints (or change the loader; a missing model is "
    "listed with its download link when the workflow opens), and the sample images from this pack's "
    "workflows/inputs/ folder in ComfyUI/input/ (or load your own). "
    "Headless: `python -m comfyui_inverse run <this file> --out out/ [--image photo.png] "
    "[--ckpt your_model.safetensors]`."
)


def markdown(note: str) -> str:
    """The Note as Markdown (MarkdownNote renders it in the UI's proportional font): the first line,
    written in capitals, becomes a sentence-case heading; the rest stays as written."""
    first, _, rest = note.partition("\n\n")
    words = [w.lower() if w.isascii() and w.isupper() and w.strip(":,").replace("-", "").isalpha() and w.strip(":,") not in KEEP_CAPS
             else w for w in first.split(" ")]
    heading = " ".join(words)
    return f"### {heading[:1].upper()}{heading[1:]}\n\n{rest}"


KEEP_CAPS = {"SDXL", "LORA", "VAE", "TREG"}


def sd15_loader(wf: Workflow, prompt: str = "a high quality photo", negative: str = "", clip_vision=False):
    wf.group("model", "Model (SD1.5-family checkpoint)", 0, "model")
    ckpt = wf.node("CheckpointLoaderSimple", "model", ckpt_name=SD15, title="Load Checkpoint (SD1.5)")
    pos = wf.node("CLIPTextEncode", "model", 1, title="Prompt", text=prompt, clip=ckpt[1])
    neg = wf.node("CLIPTextEncode", "model", 1, title="Negative / null prompt", text=negative, clip=ckpt[1])
    cv = None
    if clip_vision:
        cv = wf.node("CLIPVisionLoader", "model", 0, title="Load CLIP Vision (ViT-L/14)", clip_name=CLIP_VISION_L)
    return ckpt, pos, neg, cv


def synthetic_measurement(wf: Workflow, operator: str, sigma_y=0.0, image=PHOTO, **op_values):
    """LoadImage → operator → Degrade Image (+ previews of y and H⁺y, saved measured image)."""
    wf.group("measure", "Measurement (simulated from a clean photo)", 0, "measure")
    load = wf.node("LoadImage", "measure", 0, title="Clean photo (ground truth)", image=image)
    mask_in = {"mask": load[1]} if operator == "InverseInpainting" else {}
    op = wf.node(operator, "measure", 1, **mask_in, **op_values)
    meas = wf.node("InverseDegradeImage", "measure", 1, image=load[0], operator=op[0], sigma_y=sigma_y, seed=0)
    return load, op, meas


def outputs(wf: Workflow, prefix: str, restored: Out, meas: Node | None, reference: Out | None,
            measured: Out | None, pinv: Out | None, stage=3):
    wf.group("out", "Results", stage, "out")
    wf.node("SaveImage", "out", 0, title="Save restored", images=restored, filename_prefix=f"inverse/{prefix}")
    if measured is not None:
        wf.node("SaveImage", "out", 1, title="Save measured (before)", images=measured,
                filename_prefix=f"inverse/{prefix}_measured")
    if pinv is not None:
        wf.node("PreviewImage", "out", 1, title="Pseudo-inverse H⁺y (classical baseline)", images=pinv)
    if reference is not None or meas is not None:
        wf.group("metrics", "Metrics", stage, "metrics")
    if reference is not None:
        wf.node("InversePSNR", "metrics", 0, image=restored, reference=reference)
        wf.node("InverseSSIM", "metrics", 0, image=restored, reference=reference)
        if pinv is not None:
            wf.node("InversePSNR", "metrics", 1, title="PSNR of the baseline H⁺y", image=pinv, reference=reference)
    if meas is not None:
        wf.node("InverseMeasurementConsistency", "metrics", 1, image=restored, measurement=meas[0])


def modular_cpgdm(wf, ckpt, pos, neg, meas, steps, w, lam, start, cfg=1.0, latent="empty", stage=2):
    """Our SAMPLER + sigmas inside the stock SamplerCustomAdvanced."""
    wf.group("solve", "Solver: C-ΠGDM inside the stock SamplerCustomAdvanced", stage, "solve")
    guider = wf.node("CFGGuider", "solve", 0, model=ckpt[0], positive=pos[0], negative=neg[0], cfg=cfg)
    noise = wf.node("RandomNoise", "solve", 0, noise_seed=0)
    sigmas = wf.node("InverseSigmas", "solve", 0, model=ckpt[0], steps=steps, start=start)
    sampler = wf.node("SamplerConjugatePiGDM", "solve", 1, measurement=meas[0], vae=ckpt[2], w=w, lam=lam,
                      vjp="autograd", bridge_mode="auto", start="auto")
    if latent == "empty":
        lat = wf.node("EmptyLatentImage", "solve", 1, title="Empty Latent (= restored image size)",
                      width=512, height=512, batch_size=1)
    else:
        lat = wf.node("InverseInitLatent", "solve", 1, model=ckpt[0], vae=ckpt[2], measurement=meas[0])
    sample = wf.node("SamplerCustomAdvanced", "solve", 2, noise=noise[0], guider=guider[0], sampler=sampler[0],
                     sigmas=sigmas[0], latent_image=lat[0])
    decode = wf.node("VAEDecode", "solve", 2, samples=sample[0], vae=ckpt[2])
    return decode


def sdxl_model_group(wf):
    """The SDXL checkpoint with its prompt and negative prompt (workflows 12 and 13)."""
    wf.group("model", "Model (SDXL checkpoint)", 0, "model")
    ckpt = wf.node("CheckpointLoaderSimple", "model", ckpt_name=SDXL, title="Load Checkpoint (SDXL)")
    pos = wf.node("CLIPTextEncode", "model", 1, title="Prompt", text="a sharp detailed photo", clip=ckpt[1])
    neg = wf.node("CLIPTextEncode", "model", 1, title="Negative prompt", text="blurry, jpeg artifacts",
                  clip=ckpt[1])
    return ckpt, pos, neg


def all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="auto", steps=5, w=15.0, lam=0.0, start=0.4, stage=2,
                     enforce=None):
    wf.group("solve", "Solver: Inverse Solve (C-ΠGDM, all-in-one)", stage, "solve")
    extra = {} if enforce is None else {"enforce_measurement": enforce}
    return wf.node("InverseSolveConjugate", "solve", 0, model=ckpt[0], vae=ckpt[2], positive=pos[0], negative=neg[0],
                   measurement=meas[0], preset=preset, steps=steps, cfg=1.0, w=w, lam=lam, start=start, seed=0,
                   vjp="autograd", bridge_mode="auto", **extra)


def wf_sr4():
    wf = Workflow("01_super_resolution_x4_cpgdm", (
        "SUPER-RESOLUTION ×4 with C-ΠGDM (5 steps)\n\n"
        "A clean 512×512 photo is shrunk ×4 (bicubic, 128×128) by Degrade Image, then restored by the "
        "conditional conjugate ΠGDM sampler running inside the stock SamplerCustomAdvanced: Inverse Sigmas "
        "gives the method's 5-step grid, the stock CFG Guider and Random Noise do the rest.\n\n"
        "Models: diffusion (ε or v) checkpoints: SD1.5, SD2.x, SDXL (use an SDXL checkpoint, 1024² latents "
        "and its own prompt encoders). For SD3/Flux use Sampler C-ΠGFM (see workflow 06).\n\n"
        "Parameters that work: steps 5–10; w 10–20 without noise (paper 15), 1–3 with noise (σ_y > 0); "
        "lambda 0 noiseless, −0.15 noisy; start 0.3–0.6 (lower stays closer to the measurement); cfg 1–3. "
        "The Empty Latent must have the restored size (512×512 here); or use Inverse Init Latent. "
        "PSNR/SSIM compare with the clean photo; consistency ‖Hx − y‖/‖y‖ should be near 0 (noiseless)."
        + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf)
    load, _, meas = synthetic_measurement(wf, "InverseSuperResolution", factor=4, kernel="bicubic")
    decode = modular_cpgdm(wf, ckpt, pos, neg, meas, steps=5, w=15.0, lam=0.0, start=0.4)
    outputs(wf, "sr4_cpgdm", decode[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_sr8():
    wf = Workflow("02_super_resolution_x8_cpgdm", (
        "SUPER-RESOLUTION ×8 with C-ΠGDM (10 steps, all-in-one node)\n\n"
        "512×512 → 64×64 → restored. Inverse Solve (C-ΠGDM) is the all-in-one form of workflow 03 (same "
        "code): preset 'custom' uses the widgets (10 steps, w 15, λ 0, start 0.5); 'auto' picks the papers' "
        "settings from the operator and the model family.\n\n"
        "Models: SD1.5 / SD2.x / SDXL checkpoints (C-ΠGDM); connect an SD3/Flux model and the same node "
        "runs C-ΠGFM.\n\nParameters that work: steps 8–20 for ×8 (more steps than ×4: less is known); "
        "w 10–20; start 0.4–0.7; cfg 1–3 with a descriptive prompt." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf)
    load, _, meas = synthetic_measurement(wf, "InverseSuperResolution", factor=8, kernel="bicubic")
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="custom", steps=10, w=15.0, lam=0.0, start=0.5)
    outputs(wf, "sr8_cpgdm", solve[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_sr16_treg():
    wf = Workflow("03_super_resolution_x16_treg_text", (
        "SUPER-RESOLUTION ×16 with TReg and a text prompt (the TReg paper's showcase)\n\n"
        "512×512 → 32×32: almost everything is unknown, so the prompt decides what is restored. TReg Guider "
        "(text regularisation: cfg with the prompt and the null prompt \"out of focus, depth of field\"; "
        "adaptive negation moves the null prompt away from what CLIP vision sees) + TReg Sampler (DDIM with "
        "pixel-space data consistency by conjugate gradients) in the stock SamplerCustomAdvanced, "
        "ddim_uniform sigmas.\n\n"
        "Models: SD1.5 / SD2.x / SDXL (VP diffusion) + a CLIP vision model (ViT-L/14 for SD1.5; ViT-L/14 or "
        "ViT-bigG/14 for SDXL). Not for SD3/Flux.\n\n"
        "Parameters that work: steps 100–200 (paper 200); cfg 3–7 (paper 5); an_steps 5–10, an_lr 1e-3 "
        "for SR (5e-4 deblur); dc_every 3, dc_until 0.85, cg_iters 3–10, cg_lambda 1e-4. "
        "Describe the subject in the prompt. Empty Latent = restored size." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, cv = sd15_loader(wf, prompt="a portrait photo of a smiling astronaut, detailed face",
                                     negative=NULL_PROMPT, clip_vision=True)
    load, _, meas = synthetic_measurement(wf, "InverseSuperResolution", sigma_y=0.01, factor=16, kernel="bicubic")
    wf.group("solve", "Solver: TReg Guider + TReg Sampler in SamplerCustomAdvanced", 2, "solve")
    guider = wf.node("InverseTRegGuider", "solve", 0, model=ckpt[0], positive=pos[0], negative=neg[0], cfg=5.0,
                     an_steps=10, an_lr=1e-3, an_method="adam", clip_vision=cv[0])
    sigmas = wf.node("BasicScheduler", "solve", 0, model=ckpt[0], scheduler="ddim_uniform", steps=200, denoise=1.0)
    noise = wf.node("RandomNoise", "solve", 0, noise_seed=0)
    sampler = wf.node("InverseSamplerTReg", "solve", 1, measurement=meas[0], vae=ckpt[2], dc_every=3, dc_until=0.85,
                      cg_iters=5, cg_lambda=1e-4, use_dps=False, dps_scale=0.0)
    lat = wf.node("EmptyLatentImage", "solve", 1, title="Empty Latent (= restored image size)",
                  width=512, height=512, batch_size=1)
    sample = wf.node("SamplerCustomAdvanced", "solve", 2, noise=noise[0], guider=guider[0], sampler=sampler[0],
                     sigmas=sigmas[0], latent_image=lat[0])
    decode = wf.node("VAEDecode", "solve", 2, samples=sample[0], vae=ckpt[2])
    outputs(wf, "sr16_treg", decode[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_gdeblur_cpgdm():
    wf = Workflow("04_gaussian_deblur_cpgdm", (
        "GAUSSIAN DEBLUR with C-ΠGDM (all-in-one, preset auto)\n\n"
        "The photo is blurred with a Gaussian of σ = 3 px (the papers' setting; frequencies whose gain is "
        "below 0.03 are treated as unknown) and restored. Preset 'auto' = the paper's deblur settings "
        "(5 steps, w 15, λ 0, start 0.4 noiseless).\n\n"
        "Models: SD1.5 / SD2.x / SDXL; SD3/Flux (C-ΠGFM) with the same node.\n\n"
        "Parameters that work: blur sigma 1–5 px; threshold 0.01–0.05 (higher = fewer, safer frequencies); "
        "boundary 'zero' for ordinary photos; preset custom: steps 5–15, w 10–20, start 0.3–0.5." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf)
    load, _, meas = synthetic_measurement(wf, "InverseGaussianBlur", sigma=3.0, kernel_size=0, threshold=0.03,
                                          boundary="zero")
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="auto")
    outputs(wf, "gdeblur_cpgdm", solve[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_gdeblur_treg():
    wf = Workflow("05_gaussian_deblur_treg", (
        "GAUSSIAN DEBLUR with TReg (all-in-one TReg Solve)\n\n"
        "Gaussian blur σ = 3 px plus a little noise (σ_y = 0.01), restored by TReg Solve = TReg Guider + "
        "TReg Sampler + SamplerCustomAdvanced in one node. It also outputs the adapted null embedding "
        "(a CONDITIONING you can reuse as a negative).\n\n"
        "Models: SD1.5 / SD2.x / SDXL + CLIP vision (ViT-L/14 for SD1.5). Not for SD3/Flux.\n\n"
        "Parameters that work: steps 100–200; cfg 3–7; an_lr 5e-4 for deblurring (1e-3 for SR); cg_iters 3–5 "
        "(few on purpose: early stopping regularises deblurring); cg_lambda 1e-4–1e-2 with more noise; "
        "dc_until 0.8–0.9." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, cv = sd15_loader(wf, prompt="a portrait photo of an astronaut", negative=NULL_PROMPT,
                                     clip_vision=True)
    load, _, meas = synthetic_measurement(wf, "InverseGaussianBlur", sigma_y=0.01, sigma=3.0, kernel_size=0,
                                          threshold=0.03, boundary="zero")
    wf.group("solve", "Solver: TReg Solve (all-in-one)", 2, "solve")
    solve = wf.node("InverseTRegSolve", "solve", 0, model=ckpt[0], measurement=meas[0], vae=ckpt[2],
                    positive=pos[0], negative=neg[0], steps=100, scheduler="ddim_uniform", cfg=5.0, an_steps=10,
                    an_lr=5e-4, an_method="adam", dc_every=3, dc_until=0.85, cg_iters=5, cg_lambda=1e-4,
                    use_dps=False, seed=0, clip_vision=cv[0])
    outputs(wf, "gdeblur_treg", solve[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_motion():
    wf = Workflow("06_motion_deblur_cpgdm", (
        "MOTION DEBLUR with C-ΠGDM (modular, started from Inverse Init Latent)\n\n"
        "Camera shake: a random trajectory of 15 px (trajectory_seed ≥ 0; −1 = a straight streak at 'angle'; "
        "or connect your own kernel image). Inverse Init Latent encodes H⁺y at the right size, so no latent "
        "size to set; the stock sampler path noises it to the start level.\n\n"
        "Models: SD1.5 / SD2.x / SDXL (for SD3/Flux: swap in Sampler C-ΠGFM and the flow loaders of "
        "workflow 06).\n\nParameters that work: length 5–25 px; threshold 0.02–0.05; steps 5–15; w 10–20; "
        "start 0.4–0.6 (longer blur → higher)." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf)
    load, _, meas = synthetic_measurement(wf, "InverseMotionBlur", length=15.0, angle=0.0, trajectory_seed=7,
                                          threshold=0.03)
    decode = modular_cpgdm(wf, ckpt, pos, neg, meas, steps=8, w=15.0, lam=0.0, start=0.5, latent="init")
    outputs(wf, "motion_deblur_cpgdm", decode[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_inpaint():
    wf = Workflow("07_inpainting_mask_editor_cpgdm", (
        "INPAINTING from the mask editor with C-ΠGDM\n\n"
        "Right-click the Load Image node → 'Open in MaskEditor', paint the part to fill, save. LoadImage's "
        "MASK output (1 = paint = unknown) drives the Inpainting Operator. The sample image already carries "
        "a painted mask (in its alpha channel). Degrade Image keeps the unmasked pixels; the solver fills "
        "the rest consistently with them.\n\n"
        "Models: SD1.5 / SD2.x / SDXL (inpainting checkpoints are not needed); SD3/Flux through the same "
        "all-in-one node (C-ΠGFM).\n\nParameters that work: preset inpaint (start 0.6) or custom: steps 8–20, "
        "w 10–20, start 0.5–0.8 (large holes need more); dilate 0–8 px hides seams; a prompt describing the "
        "hole's content helps (cfg 2–4)." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf, prompt="a portrait photo of an astronaut")
    load, _, meas = synthetic_measurement(wf, "InverseInpainting", image=PHOTO_MASKED, threshold=0.5, dilate=0,
                                          resize_mask_to_image=False)
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="inpaint")
    outputs(wf, "inpaint_cpgdm", solve[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_denoise():
    wf = Workflow("08_denoising_cpgdm", (
        "DENOISING with C-ΠGDM (σ_y given)\n\n"
        "Gaussian noise of σ_y = 0.1 (on the 0–1 scale) is added to the photo; the solver knows σ_y from the "
        "measurement. Preset 'auto' switches to the exact noisy C-ΠGDM map (noisy = exact, w 5, λ 0).\n\n"
        "Models: SD1.5 / SD2.x / SDXL; SD3/Flux via the same node (C-ΠGFM).\n\n"
        "Parameters that work: set sigma_y to the real noise level (0.02–0.2); for your own noisy photo use "
        "Measurement From Image with the Denoising Operator and that sigma_y; custom: w 1–3, λ −0.1…−0.2, "
        "start 0.3–0.5." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf)
    load, _, meas = synthetic_measurement(wf, "InverseDenoise", sigma_y=0.1)
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="auto")
    outputs(wf, "denoise_cpgdm", solve[0], meas, load[0], meas[1], None)
    return wf


def wf_flow():
    wf = Workflow("09_super_resolution_x4_cpgfm_sd3", (
        "SUPER-RESOLUTION ×4 with C-ΠGFM on a rectified-flow model (SD3.5 Medium)\n\n"
        "The flow version of workflow 03: Sampler C-ΠGFM + Inverse Sigmas (10 steps from noise 0.4, "
        "uniform in t) in the stock SamplerCustomAdvanced, with stock loaders: Load Diffusion Model "
        "(UNETLoader), Load CLIP (type sd3; CLIP-L alone is enough for restoration: use Triple CLIP Loader "
        "for full SD3 prompts) and Load VAE (the SD3 VAE; or take MODEL and VAE from Load Checkpoint "
        "if your sd3.5 file includes the VAE).\n\n"
        "Models: SD3 / SD3.5 and Flux (Flux: UNETLoader flux1-dev + DualCLIPLoader + VAELoader ae, Empty SD3 "
        "latent works for both; cfg 1). Not for SD1.5/SDXL (use C-ΠGDM).\n\n"
        "Parameters that work: steps 8–20 (paper 10); w 10–30 (paper 20); B 0.1–0.3 (paper 0.2); start 0.3–0.6; "
        "cfg 1–2 (Flux: 1). Empty SD3 Latent = restored size." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    wf.group("model", "Model (SD3.5 / rectified flow, stock loaders)", 0, "model")
    unet = wf.node("UNETLoader", "model", 0, title="Load Diffusion Model (SD3.5 Medium)", unet_name=SD35,
                   weight_dtype="default")
    clip = wf.node("CLIPLoader", "model", 0, title="Load CLIP (CLIP-L, type sd3)", clip_name=SD3_CLIP_L, type="sd3",
                   device="default")
    vae = wf.node("VAELoader", "model", 0, title="Load VAE (SD3)", vae_name=SD3_VAE)
    pos = wf.node("CLIPTextEncode", "model", 1, title="Prompt", text="a high quality photo", clip=clip[0])
    neg = wf.node("CLIPTextEncode", "model", 1, title="Negative prompt", text="", clip=clip[0])
    load, _, meas = synthetic_measurement(wf, "InverseSuperResolution", factor=4, kernel="bicubic")
    wf.group("solve", "Solver: C-ΠGFM inside the stock SamplerCustomAdvanced", 2, "solve")
    guider = wf.node("CFGGuider", "solve", 0, model=unet[0], positive=pos[0], negative=neg[0], cfg=1.0)
    noise = wf.node("RandomNoise", "solve", 0, noise_seed=0)
    sigmas = wf.node("InverseSigmas", "solve", 0, model=unet[0], steps=10, start=0.4)
    sampler = wf.node("SamplerConjugatePiGFM", "solve", 1, measurement=meas[0], vae=vae[0], w=20.0, lam=0.2,
                      vjp="autograd", bridge_mode="auto", start="auto")
    lat = wf.node("EmptySD3LatentImage", "solve", 1, title="Empty SD3 Latent (= restored image size)",
                  width=512, height=512, batch_size=1)
    sample = wf.node("SamplerCustomAdvanced", "solve", 2, noise=noise[0], guider=guider[0], sampler=sampler[0],
                     sigmas=sigmas[0], latent_image=lat[0])
    decode = wf.node("VAEDecode", "solve", 2, samples=sample[0], vae=vae[0])
    outputs(wf, "sr4_cpgfm_sd3", decode[0], meas, load[0], meas[1], meas[2])
    return wf


def wf_compose():
    wf = Workflow("10_composable_lora_stock_nodes_cpgdm", (
        "COMPOSABILITY: C-ΠGDM with stock nodes (LoRA, SamplerCustomAdvanced, ImageScale)\n\n"
        "Our sampler is an ordinary SAMPLER: the model goes through a stock Load LoRA (style or subject "
        "LoRAs steer what gets restored), the stock CFG Guider and Random Noise feed SamplerCustomAdvanced, "
        "and stock Image Scale brings any photo to a working size that the VAE accepts (multiples of 8; "
        "512×512 here). The measurement is blur then ×2 downsampling (Compose Operators).\n\n"
        "Colour matching: this ComfyUI version has no stock colour-match node (checked /object_info); "
        "the measurement term already keeps low frequencies — hence colours — consistent with the input. "
        "Add a colour-match node from another pack after VAE Decode if you want one.\n\n"
        "Models: SD1.5 checkpoint + an SD1.5 LoRA (SDXL: SDXL checkpoint + SDXL LoRA, 1024² size).\n\n"
        "Parameters that work: LoRA strength 0.3–1.0; steps 5–10; w 10–20; start 0.4–0.6; cfg 1–4 "
        "(raise cfg with a LoRA trigger word in the prompt)." + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    wf.group("model", "Model + LoRA (stock)", 0, "model")
    ckpt = wf.node("CheckpointLoaderSimple", "model", 0, ckpt_name=SD15, title="Load Checkpoint (SD1.5)")
    lora = wf.node("LoraLoader", "model", 0, model=ckpt[0], clip=ckpt[1], lora_name=LORA, strength_model=0.7,
                   strength_clip=0.7)
    pos = wf.node("CLIPTextEncode", "model", 1, title="Prompt", text="a high quality photo", clip=lora[1])
    neg = wf.node("CLIPTextEncode", "model", 1, title="Negative prompt", text="blurry, jpeg artifacts", clip=lora[1])
    wf.group("measure", "Measurement: ImageScale → blur ∘ downsample ×2", 0, "measure")
    load = wf.node("LoadImage", "measure", 0, title="Any photo", image=PHOTO)
    scale = wf.node("ImageScale", "measure", 0, title="Image Scale to working size", image=load[0],
                    upscale_method="bicubic", width=512, height=512, crop="center")
    blur = wf.node("InverseGaussianBlur", "measure", 1, sigma=1.5, kernel_size=0, threshold=0.03, boundary="zero")
    down = wf.node("InverseSuperResolution", "measure", 1, factor=2, kernel="bicubic")
    both = wf.node("InverseComposeOperators", "measure", 1, first=blur[0], second=down[0])
    meas = wf.node("InverseDegradeImage", "measure", 2, image=scale[0], operator=both[0], sigma_y=0.0, seed=0)
    ckpt_like = _Patched(lora, ckpt)
    decode = modular_cpgdm(wf, ckpt_like, pos, neg, meas, steps=6, w=15.0, lam=0.0, start=0.45, cfg=2.0,
                           latent="init")
    outputs(wf, "composed_lora_cpgdm", decode[0], meas, scale[0], meas[1], meas[2])
    return wf


class _Patched:
    """MODEL from the LoRA loader, VAE from the checkpoint (ckpt-like indexing for modular_cpgdm)."""

    def __init__(self, lora: Node, ckpt: Node):
        self.lora, self.ckpt = lora, ckpt

    def __getitem__(self, slot):
        return self.lora[0] if slot == 0 else self.ckpt[slot]


def wf_real_photo():
    wf = Workflow("11_real_photo_upscale_x4_cpgdm", (
        "YOUR OWN LOW-RESOLUTION PHOTO, upscaled ×4 (no synthetic degradation)\n\n"
        "Load the small photo you have (here 128×128 → 512×512). Measurement From Image declares how it was "
        "made (the Super-Resolution Operator: ×4 bicubic downscaling, assumed noise σ_y) and works out the "
        "full size; nothing is simulated, so there is no ground truth: only the consistency metric "
        "(‖H·restored − photo‖/‖photo‖; about σ_y·√n/‖y‖ is as good as it gets).\n\n"
        "Models: SD1.5 / SD2.x / SDXL (SD3/Flux: the same node runs C-ΠGFM).\n\n"
        "Parameters that work: factor 2–8 (the photo's sides × factor must be multiples of 8: crop first); "
        "sigma_y 0.005–0.03 for JPEG-ish photos (with σ_y > 0, preset auto uses the exact noisy map, w 5); 'box' kernel "
        "for images made by area averaging. A prompt describing the photo (cfg 2–4) sharpens faces and text. "
        "enforce_measurement auto lets the preset decide whether the decoded image is moved onto the measurement "
        "(on for upscaling: it won on the latent prior of benchmarks/results/quality.md)."
        + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg, _ = sd15_loader(wf, prompt="a sharp detailed photo")
    wf.group("measure", "Measurement from your photo (no simulation)", 0, "measure")
    load = wf.node("LoadImage", "measure", 0, title="Your low-resolution photo", image=PHOTO_SMALL)
    op = wf.node("InverseSuperResolution", "measure", 1, factor=4, kernel="bicubic")
    meas = wf.node("InverseMeasurementFromImage", "measure", 1, image=load[0], operator=op[0], sigma_y=0.01)
    # enforce_measurement auto: the preset's choice, measured on a latent prior (benchmarks/results/quality.md)
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="auto", enforce="auto")
    outputs(wf, "real_photo_x4_cpgdm", solve[0], meas, None, None, meas[1])
    return wf


def wf_sdxl():
    wf = Workflow("12_sdxl_upscale_x8_cpgdm", (
        "SDXL: YOUR OWN SMALL PHOTO upscaled ×8 to SDXL's native 1024×1024 (C-ΠGDM, all-in-one)\n\n"
        "The same graph as workflow 01 with an SDXL checkpoint: a 128×128 photo declared as ×8 bicubic "
        "downscaling (Measurement From Image) is restored at 1024×1024, the size SDXL was trained at. The "
        "stock Load Checkpoint gives MODEL, CLIP (CLIP-L + CLIP-G) and VAE; stock CLIP Text Encode works "
        "with SDXL's CLIP.\n\n"
        "Models: SDXL base and SDXL fine-tunes (also Pony/Illustrious-style SDXL checkpoints; the VAE inside "
        "the checkpoint is used). SD1.5 works too at 512² (use a 64×64 photo, or factor 4).\n\n"
        "Parameters that work: preset auto (σ_y > 0: the exact noisy map, w 5); steps 10–20 for ×8; sigma_y 0.005–0.03; "
        "cfg 1–4 with a prompt that describes the photo. CPU: minutes per step at 1024² — use a GPU."
        + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg = sdxl_model_group(wf)
    wf.group("measure", "Measurement from your photo (no simulation)", 0, "measure")
    load = wf.node("LoadImage", "measure", 0, title="Your low-resolution photo", image=PHOTO_SMALL)
    op = wf.node("InverseSuperResolution", "measure", 1, factor=8, kernel="bicubic")
    meas = wf.node("InverseMeasurementFromImage", "measure", 1, image=load[0], operator=op[0], sigma_y=0.01)
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="auto", steps=10)
    outputs(wf, "sdxl_upscale_x8_cpgdm", solve[0], meas, None, None, meas[1])
    return wf


def wf_sdxl_tiled():
    wf = Workflow("13_sdxl_upscale_x4_tiled", (
        "BIG PHOTOS: upscale your 1024×1024 photo ×4 to 4096×4096 with SDXL, in tiles (C-ΠGDM)\n\n"
        "Tiled mode (tile_size > 0) runs the model on overlapping 1024² tiles, blended smoothly, while the "
        "measurement, the operator and the conjugate update stay global and exact: the result agrees with "
        "your photo everywhere, at any size. The VAE encodes and decodes through ComfyUI's tiled VAE. About 8 GB "
        "of VRAM for 4096² with SDXL fp16 (estimate, README); untiled it would need ~40 GB.\n\n"
        "The sample photo here is the 128×128 one (→ 512×512, a single tile); load your own 1024×1024 photo "
        "for 4096×4096 (16 tiles of 1024² with 128 px overlap).\n\n"
        "Models: SDXL base and fine-tunes (tile_size 1024); SD1.5 works with tile_size 512; SD3/Flux with "
        "tile_size 1024 (the same node runs C-ΠGFM).\n\n"
        "Parameters that work: tile_size = the model's native size, tile_overlap 128 (64 for 512 tiles); "
        "preset auto; sigma_y 0.005–0.03 for JPEG-ish photos; vjp auto picks finite differences when the "
        "autograd step would not fit. bridge_mode consistent_target is not available in tiled mode."
        + COMMON_NOTE))
    wf.node("MarkdownNote", "", title="Read me", text=markdown(wf.note))
    ckpt, pos, neg = sdxl_model_group(wf)
    wf.group("measure", "Measurement from your photo (no simulation)", 0, "measure")
    load = wf.node("LoadImage", "measure", 0, title="Your photo (1024×1024 → 4096×4096)", image=PHOTO_SMALL)
    op = wf.node("InverseSuperResolution", "measure", 1, factor=4, kernel="bicubic")
    meas = wf.node("InverseMeasurementFromImage", "measure", 1, image=load[0], operator=op[0], sigma_y=0.01)
    solve = all_in_one_cpgdm(wf, ckpt, pos, neg, meas, preset="auto")
    solve.values.update(vjp="auto", tile_size=1024, tile_overlap=128)
    wf.groups["solve"].title = "Solver: Inverse Solve (C-ΠGDM, tiled: tile_size 1024, overlap 128)"
    outputs(wf, "sdxl_upscale_x4_tiled", solve[0], meas, None, None, meas[1])
    return wf


WORKFLOW_BUILDERS = [wf_sr4, wf_sr8, wf_sr16_treg, wf_gdeblur_cpgdm, wf_gdeblur_treg, wf_motion, wf_inpaint,
                     wf_denoise, wf_flow, wf_compose, wf_real_photo, wf_sdxl, wf_sdxl_tiled]


# --------------------------------------------------------------------- inputs, thumbnails

def make_inputs() -> dict:
    """The sample photo (scikit-image's astronaut: NASA, public domain) at 512, 128 and with a mask."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder = WORKFLOWS / "inputs"
    folder.mkdir(exist_ok=True)
    photo = Image.fromarray(data.astronaut())  # 512×512
    photo.save(folder / PHOTO, quality=92, optimize=True)
    photo.resize((128, 128), Image.Resampling.BICUBIC).save(folder / PHOTO_SMALL, optimize=True)
    alpha = np.full((512, 512), 255, np.uint8)
    t, b, l, r = MASK_BOX
    alpha[t:b, l:r] = 0  # a painted box over the face (alpha 0 = masked, as the mask editor saves it)
    rgba = np.dstack([data.astronaut(), alpha])
    Image.fromarray(rgba, "RGBA").save(folder / PHOTO_MASKED, quality=90, method=6)
    (folder / "README.md").write_text(
        "# Sample inputs for the example workflows\n\n"
        f"- `{PHOTO}`: scikit-image's `astronaut` (Eileen Collins, NASA Great Images; public domain).\n"
        f"- `{PHOTO_SMALL}`: the same, downscaled to 128×128 (a stand-in for your own small photo).\n"
        f"- `{PHOTO_MASKED}`: the same with a painted mask in the alpha channel (alpha 0 = fill), as "
        "ComfyUI's mask editor saves it.\n\nCopy them to `ComfyUI/input/` to run the workflows unchanged.\n")
    return {"photo": np.asarray(photo, np.float32) / 255.0, "mask_box": MASK_BOX}


THUMB_TASK = {  # workflow number -> label (ASCII: the default font has no Π or ×)
    "01": "Super-resolution x4 | C-PiGDM", "02": "Super-resolution x8 | C-PiGDM",
    "03": "Super-resolution x16 | TReg + text", "04": "Gaussian deblur | C-PiGDM", "05": "Gaussian deblur | TReg",
    "06": "Motion deblur | C-PiGDM", "07": "Inpainting (mask editor) | C-PiGDM", "08": "Denoising | C-PiGDM",
    "09": "Super-resolution x4 | C-PiGFM (SD3)", "10": "LoRA + stock nodes | C-PiGDM",
    "11": "Your own small photo, x4", "12": "SDXL: your small photo, x8 to 1024",
    "13": "SDXL tiled: your photo x4 (1024 to 4096)",
}


def make_thumbnail(name: str, title: str, inputs: dict) -> None:
    """Degraded input (left) next to the clean sample (right), made with the pack's own operators."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from comfyui_inverse import operators as ops

    x = torch.from_numpy(inputs["photo"]).permute(2, 0, 1)[None]
    gen = torch.Generator().manual_seed(0)
    key = name[:2]
    if key in ("01", "09", "11", "13"):
        operator = ops.SuperResolution(4)
    elif key in ("02", "12"):
        operator = ops.SuperResolution(8)
    elif key == "03":
        operator = ops.SuperResolution(16)
    elif key in ("04", "05"):
        operator = ops.GaussianBlur(3.0)
    elif key == "06":
        operator = ops.MotionBlur(15.0, 0.0, seed=7)
    elif key == "07":
        t, b, l, r = inputs["mask_box"]
        mask = torch.zeros(1, 512, 512)
        mask[:, t:b, l:r] = 1.0
        operator = ops.Inpainting(mask)
    elif key == "08":
        operator = ops.Denoise()
    else:
        operator = ops.Compose(ops.GaussianBlur(1.5), ops.SuperResolution(2))
    sigma = 0.1 if key == "08" else 0.0
    y = operator.measure(x, sigma_y=sigma, generator=gen)
    if key == "07":
        before = operator.forward(x)
    elif y.shape[-1] != 512:  # show the small image as the user sees it: pixelated
        before = torch.nn.functional.interpolate(y, size=(512, 512), mode="nearest")
    else:
        before = y
    to_img = lambda t: Image.fromarray((t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    canvas = Image.new("RGB", (512, 300), "#202020")
    canvas.paste(to_img(before).resize((240, 230)), (10, 46))
    canvas.paste(to_img(x).resize((240, 230)), (262, 46))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 12), THUMB_TASK[key], fill="white", font_size=24)
    draw.text((10, 280), "input", fill="#ccc", font_size=14)
    draw.text((262, 280), "clean photo (goal)" if key not in ("11", "12", "13") else "what it shows", fill="#ccc", font_size=14)
    canvas.save(WORKFLOWS / f"{title}.jpg", quality=85, optimize=True)


# ------------------------------------------------------------------------------------ main

def object_info_from(server_url: str | None):
    from comfyui_inverse.runner import ComfyClient, ComfyServer

    if server_url:
        return ComfyClient(server_url).object_info(), None
    server = ComfyServer(cpu=True, quiet=True)
    server.start()
    return server.client.object_info(), server


def main(argv=None) -> int:
    from comfyui_inverse.runner.workflow_api import ui_to_api

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="URL of a running ComfyUI with this pack (else one is started)")
    parser.add_argument("--only", nargs="*", help="workflow names (prefixes) to write")
    args = parser.parse_args(argv)
    object_info, server = object_info_from(args.server)
    try:
        inputs = make_inputs()
        (WORKFLOWS / "api").mkdir(parents=True, exist_ok=True)
        for build in WORKFLOW_BUILDERS:
            wf = build()
            if args.only and not any(wf.title.startswith(p) or wf.name.startswith(p) for p in args.only):
                continue
            ui = serialise(wf, object_info)
            warnings: list[str] = []
            api = ui_to_api(ui, object_info, warnings)
            if warnings:
                raise SystemExit(f"{wf.name}: converter warnings: {warnings}")
            (WORKFLOWS / f"{wf.title}.json").write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
            (WORKFLOWS / "api" / f"{wf.title}.json").write_text(json.dumps(api, indent=1, ensure_ascii=False) + "\n")
            make_thumbnail(wf.name, wf.title, inputs)
            print(f"wrote workflows/{wf.title}.json (+ api/, .jpg): {len(ui['nodes'])} nodes, {len(ui['links'])} links")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
