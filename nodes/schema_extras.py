"""Schema fields that only newer hosts know, added by feature detection (the pack supports 0.3.64+)."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

_SCHEMA_FIELDS = {f.name for f in dataclasses.fields(io.Schema)} if dataclasses.is_dataclass(io.Schema) else set()


def search_aliases(*aliases: str) -> dict:
    """{"search_aliases": [...]} for io.Schema(**...) where the host has the field (newer ComfyUI:
    the node search also matches these words), else {}."""
    return {"search_aliases": list(aliases)} if "search_aliases" in _SCHEMA_FIELDS else {}
