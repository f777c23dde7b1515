"""UI-format (LiteGraph) workflow -> API-format prompt, driven by the server's /object_info.

What the frontend's "Export (API)" does, for the parts that matter to running a workflow:
- widgets_values are positional: one per widget input in schema order (required, then optional),
  plus values the API does not take: the control_after_generate choice after seed-like inputs
  ("fixed"/"randomize"/...) and the "upload" button value after image/video/audio upload combos;
- an input fed by a link becomes ["<source id>", <output index>], through Reroute nodes,
  PrimitiveNode values (literals) and bypassed nodes (an output passes through the bypassed
  node's input of the same type);
- notes, reroutes and primitive nodes are UI-only; muted (mode 2) and bypassed (mode 4) nodes are
  left out, and inputs linked to a muted node are dropped (the server then names what is missing).
Not supported (clear error): subgraphs and legacy group nodes.
"""

from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Frontend-only nodes that never reach the server.
VIRTUAL_NODE_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label (rgthree)",
                      "Fast Groups Muter (rgthree)", "Fast Groups Bypasser (rgthree)"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# Older frontends added a control widget to every INT input with these names.
LEGACY_SEED_NAMES = {"seed", "noise_seed"}
UPLOAD_OPTIONS = {"image_upload", "video_upload", "audio_upload", "animated_image_upload"}
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowConversionError(ValueError):
    pass


def is_ui_workflow(data: Any) -> bool:
    """UI format (LiteGraph) has top-level "nodes" and "links"; API format maps ids to nodes."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_prompt(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "class_type" in v for v in data.values())


def schema_inputs(node_info: dict) -> list[tuple[str, list]]:
    """[(name, spec)] in the frontend's widget order: required then optional, each in
    input_order when the server gives it."""
    ordered = []
    inputs = node_info.get("input") or {}
    order = node_info.get("input_order") or {}
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = order.get(section) or list(specs)
        ordered += [(name, _as_list(specs[name])) for name in names if name in specs]
    return ordered


def _as_list(spec) -> list:
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def _options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec: list) -> list | None:
    """The choices of a combo input (V1 list or V3 "COMBO" with options), else None."""
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return list(_options(spec).get("options") or [])
    return None


def widget_value_problem(spec: list, value: Any) -> str | None:
    """Why `value` does not fit a widget input of this spec (what ComfyUI's validation would
    refuse, said with the allowed values), or None when it fits or the spec is not checked."""
    options, kind = _options(spec), spec[0]
    choices = combo_options(spec)
    if choices:  # an empty list: choices the server fills in some other way
        if value in choices:
            return None
        shown = ", ".join(map(repr, choices[:12])) + (", ..." if len(choices) > 12 else "")
        return f"{value!r} is not one of the choices: {shown}"
    if kind in ("INT", "FLOAT"):
        number = "an integer" if kind == "INT" else "a number"
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
                or (kind == "INT" and not float(value).is_integer())):  # is_integer: False for ±inf, no overflow
            return f"takes {number}{_range(options)}, got {value!r}"
        low, high = options.get("min"), options.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{value!r} is out of range{_range(options)}"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"takes true or false, got {value!r}"
    return None


def _range(options: dict) -> str:
    low, high = options.get("min"), options.get("max")
    if low is None and high is None:
        return ""
    return f" (from {low if low is not None else '-inf'} to {high if high is not None else 'inf'})"


def is_widget(spec: list) -> bool:
    kind, options = spec[0], _options(spec)
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _links_by_id(workflow: dict) -> dict[int, tuple]:
    """link id -> (origin id, origin slot, target id, target slot, type); both serialisations."""
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"],
                                 link["target_slot"], link.get("type"))
        elif link:
            links[link[0]] = tuple(link[1:6])
    return links


def _describe(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(title) if title else ''})"


def _widget_values(node: dict, node_info: dict, ui_widget_names: set[str],
                   warnings: list[str]) -> dict[str, Any]:
    """Map the node's widgets_values onto its widget inputs."""
    values = node.get("widgets_values")
    widgets = [(name, spec) for name, spec in schema_inputs(node_info)
               if is_widget(spec) or name in ui_widget_names]
    if values is None:
        return {}
    if isinstance(values, dict):  # some packs serialise widgets by name
        return {name: values[name] for name, _ in widgets if name in values}
    result: dict[str, Any] = {}
    position = 0
    for index, (name, spec) in enumerate(widgets):
        if position >= len(values):
            break
        result[name] = values[position]
        position += 1
        options = _options(spec)
        nxt = values[position] if position < len(values) else None
        widgets_after = len(widgets) - index - 1
        has_control = options.get("control_after_generate") or (
            spec[0] == "INT" and name in LEGACY_SEED_NAMES)
        if has_control and isinstance(nxt, str) and nxt in CONTROL_VALUES:
            position += 1
        elif any(options.get(key) for key in UPLOAD_OPTIONS) and (
                len(values) - position > widgets_after):
            position += 1  # the upload button's value ("image")
    if position < len(values):
        warnings.append(f"{_describe(node)}: {len(values) - position} widget value(s) left over "
                        "(the workflow was saved with a different version of this node?)")
    return result


def ui_to_api(workflow: dict, object_info: dict, warnings: list[str] | None = None) -> dict:
    """Convert a UI-format workflow into an API prompt {id: {class_type, inputs, _meta}}.

    object_info: the server's GET /object_info. warnings (optional list) receives notes about
    dropped inputs and leftover widget values. Raises WorkflowConversionError for node types the
    server does not know, subgraphs and malformed workflows.
    """
    if not is_ui_workflow(workflow):
        raise WorkflowConversionError(
            "not a UI-format workflow (no 'nodes' and 'links'); API prompts need no conversion")
    try:
        return _convert(workflow, object_info, [] if warnings is None else warnings)
    except WorkflowConversionError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:  # a damaged file
        raise WorkflowConversionError(
            f"the UI workflow is malformed ({type(error).__name__}: {error}); open it in the "
            "ComfyUI editor and save it again") from None


def _convert(workflow: dict, object_info: dict, warnings: list[str]) -> dict:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links_by_id(workflow)
    subgraph_ids = {sg.get("id") for sg in (workflow.get("definitions") or {}).get("subgraphs", [])}
    group_nodes = set(((workflow.get("extra") or {}).get("groupNodes") or {}))

    unknown = []
    for node in nodes.values():
        kind = node.get("type")
        if kind in subgraph_ids:
            raise WorkflowConversionError(
                f"{_describe(node)} is a subgraph, which the converter does not expand: in the "
                "ComfyUI editor, right-click it and choose 'Unpack Subgraph', then save again.")
        if kind in group_nodes or str(kind).startswith("workflow>"):
            raise WorkflowConversionError(
                f"{_describe(node)} is a legacy group node: right-click it and choose "
                "'Convert to nodes', then save again.")
        if kind not in object_info and kind not in VIRTUAL_NODE_TYPES and node.get("mode") not in (
                MODE_MUTED, MODE_BYPASSED):
            unknown.append(node)
    if unknown:
        lines = []
        for node in unknown:
            props = node.get("properties") or {}
            pack = props.get("cnr_id") or props.get("aux_id")
            hint = f" (node pack '{pack}')" if pack else ""
            lines.append(f"  {_describe(node)}: unknown node type '{node.get('type')}'{hint}")
        raise WorkflowConversionError(
            "The server does not know these node types; install the pack that provides them "
            "(or update it), then restart ComfyUI:\n" + "\n".join(lines))

    def source_of(link_id, wanted_type, seen=()):
        """Follow a link back to a real node: ["id", slot], a literal (PrimitiveNode), or None."""
        if link_id is None or link_id not in links:
            return None
        origin_id, origin_slot, *_rest = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None or origin_id in seen:
            return None
        seen = (*seen, origin_id)
        kind, mode = origin.get("type"), origin.get("mode", 0)
        if kind == "Reroute":
            inputs = origin.get("inputs") or []
            return source_of(inputs[0].get("link") if inputs else None, wanted_type, seen)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("literal", values[0]) if values else None
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASSED:
            inputs = origin.get("inputs") or []
            order = ([origin_slot] if origin_slot < len(inputs) else []) + list(range(len(inputs)))
            for index in order:
                if inputs[index].get("type") == wanted_type:
                    return source_of(inputs[index].get("link"), wanted_type, seen)
            return None
        if kind in VIRTUAL_NODE_TYPES:
            return None
        return [str(origin_id), origin_slot]

    prompt: dict[str, dict] = {}
    for node_id, node in sorted(nodes.items(), key=lambda item: _sort_key(item[0])):
        kind = node.get("type")
        if kind in VIRTUAL_NODE_TYPES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        node_info = object_info[kind]
        ui_inputs = node.get("inputs") or []
        widget_names = {(inp.get("widget") or {}).get("name") for inp in ui_inputs if inp.get("widget")}
        inputs: dict[str, Any] = _widget_values(node, node_info, widget_names, warnings)
        for inp in ui_inputs:
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            if inp.get("link") is None:
                continue
            source = source_of(inp["link"], inp.get("type"))
            if isinstance(source, tuple):  # a PrimitiveNode's value
                inputs[name] = source[1]
            elif source is not None:
                inputs[name] = source
            elif inp.get("widget") is None:
                inputs.pop(name, None)
                warnings.append(f"{_describe(node)}: input '{name}' comes from a muted or "
                                "bypassed node with nothing to pass through; left unconnected")
        title = node.get("title") or node_info.get("display_name") or kind
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _sort_key(node_id):
    return (0, node_id, "") if isinstance(node_id, int) else (1, 0, str(node_id))
