"""Suite-wide test policy (keep this light: no torch, no comfy imports).

Tests marked `host` start a real ComfyUI server. They run by default and never skip silently:
if ComfyUI cannot be found the session stops with how to install it. Deselect them explicitly
with `-m "not host"` to run only the pure-torch tests.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what it deselects
def pytest_collection_modifyitems(config, items):
    if not any(item.get_closest_marker("host") for item in items):
        return
    from comfyui_inverse.runner import ComfyNotFoundError, find_comfy_root

    try:
        find_comfy_root()
    except ComfyNotFoundError as error:
        raise pytest.UsageError(
            f"{error}\nThe selected tests include host tests (marker `host`), which need a "
            "ComfyUI tree: run `bash scripts/setup.sh` (scripts/test.sh runs it for you), set "
            "COMFYUI_PATH, or deselect them with -m \"not host\"."
        ) from None
