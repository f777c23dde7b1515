"""Where the ComfyUI tree and the pack live on this machine."""

from __future__ import annotations

import os
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
PACK_LINK_NAME = "comfyui-inverse"


class ComfyNotFoundError(RuntimeError):
    pass


def inverse_home() -> Path:
    return Path(os.environ.get("INVERSE_HOME") or Path.home() / ".cache" / "comfyui-inverse")


def find_comfy_root(explicit: str | os.PathLike | None = None) -> Path:
    """The ComfyUI tree: `explicit`, else $COMFYUI_PATH, else $INVERSE_HOME/ComfyUI."""
    if explicit:
        candidates = [("the given path", Path(explicit))]
    elif os.environ.get("COMFYUI_PATH"):
        candidates = [("COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"]))]
    else:
        candidates = [("INVERSE_HOME", inverse_home() / "ComfyUI")]
    source, root = candidates[0]
    root = root.expanduser()
    if (root / "main.py").is_file():
        if not ((root / "comfy").is_dir() and (root / "folder_paths.py").is_file()):
            raise ComfyNotFoundError(
                f"{root} (from {source}) has a main.py but is not a ComfyUI checkout (no comfy/ "
                "package or folder_paths.py). Point it at the folder that contains ComfyUI's "
                f"main.py, or run `bash {PACK_ROOT / 'scripts' / 'setup.sh'}` to install one.")
        return root.resolve()
    raise ComfyNotFoundError(
        f"No ComfyUI found at {root} (from {source}): {root / 'main.py'} does not exist. "
        f"Run `bash {PACK_ROOT / 'scripts' / 'setup.sh'}` to install one, or set COMFYUI_PATH "
        "to your ComfyUI checkout."
    )


def default_python() -> Path:
    """The Python that runs ComfyUI: $COMFYUI_PYTHON, else the one running this code (the pack is
    installed into ComfyUI's environment, so that is normally the right one)."""
    import sys

    return Path(os.environ.get("COMFYUI_PYTHON") or sys.executable)
