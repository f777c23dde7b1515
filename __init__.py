"""comfyui-inverse: ComfyUI entry point only.

Importing this package outside ComfyUI (unit tests, benchmarks) must not import comfy,
so the node layer is imported lazily inside the entry point.
"""


async def comfy_entrypoint():
    from .nodes import InverseExtension

    return InverseExtension()
