"""comfyui-inverse: ComfyUI entry point only.

Importing this package outside ComfyUI (unit tests, benchmarks) must not import comfy,
so the node layer is imported lazily inside the entry point.
"""


# Frontend extension: shows the nodes' text outputs (metric values, warnings) on the canvas.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import InverseExtension

    return InverseExtension()
