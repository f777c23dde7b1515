"""The ComfyUI layer: V3 node classes over operators/ and samplers/.

Each node module exposes `NODES`, a list of io.ComfyNode classes; add new modules to `_MODULES`.
"""

from comfy_api.latest import ComfyExtension, io

from . import conjugate_nodes, metric_nodes, operator_nodes, treg_nodes

_MODULES = (operator_nodes, metric_nodes, treg_nodes, conjugate_nodes)


class InverseExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _MODULES for node in module.NODES]
