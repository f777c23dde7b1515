"""Checks of the runner's own inputs (workflow file, --image files, --out, --server), done before
a ComfyUI server is started, so a typo costs a second instead of a server start-up and a run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .workflow_api import is_api_prompt, is_ui_workflow


class CliError(Exception):
    pass


SAVE_HINT = ("save the workflow from ComfyUI (Workflow menu > Save, or Export (API)) and pass "
             "that .json file")


def load_json(path: str, what: str = "workflow file") -> object:
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise CliError(f"{what} {path} is a folder; give the .json file inside it") from None
    except OSError as error:
        raise CliError(f"cannot read the {what} {path}: {error.strerror or error}") from None
    try:
        return json.loads(text)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise CliError(f"{path} is not a JSON file ({error}); {SAVE_HINT}") from None


def load_workflow(path: str) -> dict:
    """The workflow, UI or API format; anything else is refused before a server starts."""
    data = load_json(path)
    if is_ui_workflow(data) or is_api_prompt(data):
        return data
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and is_api_prompt(data["prompt"]):
        return data["prompt"]  # a POST /prompt body {"prompt": {...}, "client_id": ...}
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise CliError(f"{path}: a UI workflow needs both 'nodes' and 'links'; this file has no "
                       f"'links' (truncated or hand-edited?); {SAVE_HINT}")
    raise CliError(f"{path}: neither a UI workflow (with 'nodes' and 'links') nor an API prompt "
                   f"(node ids mapping to {{'class_type', 'inputs'}}); {SAVE_HINT}")


def check_out_dir(path: str) -> Path:
    """--out must be a folder we can create or write to: found out now, not after the run.
    Nothing is created here (a run that fails leaves no empty folder)."""
    out = Path(path).expanduser().absolute()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == out else f"cannot be created: {existing} is a file"
        raise CliError(f"--out {path}: {what}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == out else f" (in {existing})"
        raise CliError(f"--out {path}: no permission to write there{where}; choose a folder you "
                       "can write to")
    return out


def normalize_server_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else "http://" + url


def check_image(path: str, scratch: Path) -> Path:
    """The file to upload for --image PATH: PATH itself, or an 8-bit copy (written into `scratch`)
    of a 16-bit greyscale image, which ComfyUI's LoadImage reads as white (Pillow mode I;16: it
    rescales only mode I). Refuses missing files and files Pillow cannot open."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise CliError(f"--image {path}: file not found" if not source.exists() else
                       f"--image {path}: not a file; give an image file (PNG, JPEG, WebP)")
    if not os.access(source, os.R_OK):
        raise CliError(f"--image {path}: no permission to read the file")
    try:
        from PIL import Image
    except ImportError:  # a Python without Pillow: the server's LoadImage will say it
        return source
    try:
        with Image.open(source) as image:
            image.verify()
        with Image.open(source) as image:
            if not image.mode.startswith("I;16"):
                return source
            import numpy as np

            pixels = np.asarray(image).astype(np.int64)
    except Image.DecompressionBombError as error:
        raise CliError(f"--image {path}: too many pixels for Pillow, which ComfyUI's LoadImage uses "
                       f"({error}); downscale it first") from None
    except Exception as error:  # Pillow raises several types for unreadable files
        raise CliError(f"--image {path}: not an image Pillow can read ({type(error).__name__}: "
                       f"{error}); give a PNG, JPEG or WebP file") from None
    eight_bit = scratch / (source.stem + ".png")
    Image.fromarray((pixels >> 8).astype(np.uint8)).save(eight_bit)
    print(f"note: --image {path} is a 16-bit greyscale image, which ComfyUI's LoadImage reads as "
          "white; uploading an 8-bit copy", file=sys.stderr)
    return eight_bit


def has_transparency(path: Path) -> bool | None:
    """Whether LoadImage will find a non-empty mask in the file (a transparent pixel in the alpha
    channel, or a palette with a transparent colour: its rule); None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return "transparency" in image.info
            return "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255
    except Exception:  # not readable: LoadImage will report it
        return None
