"""`python -m comfyui_inverse run|convert ...`: run ComfyUI workflows without the browser."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from .client import ComfyClient, ComfyError, PromptExecutionError, print_progress
from .comfy_root import ComfyNotFoundError
from .workflow_api import WorkflowConversionError, is_api_prompt, is_ui_workflow, schema_inputs, ui_to_api
from .server import ComfyServer

USAGE_NOTES = """
node selection (--set, --image NODE=PATH): NODE is a node id, else a node title, else a node
class_type; a title or class_type may match several nodes, and all of them are changed.
VALUE is parsed as JSON when it parses (12, 0.5, true, "text", [..]), else taken as a string.

--image PATH uploads PATH to the server's input folder and puts it in every LoadImage node.
--ckpt NAME sets every model-file widget of a loader node (ckpt_name: CheckpointLoaderSimple and
other checkpoint loaders; unet_name: UNETLoader) whose list of files on the server contains NAME;
if no loader lists NAME, the run stops and prints the files the server has.

Without --server, ComfyUI is started from $COMFYUI_PATH (else ~/.cache/comfyui-inverse/ComfyUI,
made by scripts/setup.sh) using that tree's own models/ and custom_nodes/ folders, unless
--base-dir names another base directory; it is stopped when the run ends.
"""


class CliError(Exception):
    pass


def _load_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CliError(f"workflow file not found: {path}") from None
    except ValueError as error:
        raise CliError(f"{path} is not valid JSON: {error}") from None


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def find_nodes(prompt: dict, selector: str) -> list[str]:
    """Node ids matching a selector: an id, else titles, else class_types."""
    if selector in prompt:
        return [selector]
    by_title = [i for i, n in prompt.items() if (n.get("_meta") or {}).get("title") == selector]
    if by_title:
        return by_title
    return [i for i, n in prompt.items() if n.get("class_type") == selector]


def _node_list(prompt: dict) -> str:
    return ", ".join(f"{i} {n['class_type']!r}" + (
        f" (title {n['_meta']['title']!r})" if (n.get("_meta") or {}).get("title")
        not in (None, n["class_type"]) else "") for i, n in prompt.items())


def apply_set(prompt: dict, assignment: str, object_info: dict | None) -> list[str]:
    """Apply one NODE.INPUT=VALUE override; returns the changed node ids."""
    target, sep, raw = assignment.partition("=")
    selector, dot, input_name = target.rpartition(".")
    if not sep or not dot or not selector or not input_name:
        raise CliError(f"--set {assignment!r}: expected NODE.INPUT=VALUE, e.g. KSampler.steps=10")
    ids = find_nodes(prompt, selector)
    if not ids:
        raise CliError(f"--set {assignment!r}: no node has the id, title or type {selector!r}. "
                       f"Nodes: {_node_list(prompt)}")
    value = parse_value(raw)
    for node_id in ids:
        node = prompt[node_id]
        info = (object_info or {}).get(node["class_type"])
        if info is not None:
            known = [name for name, _ in schema_inputs(info)]
            if input_name not in known and input_name not in node["inputs"]:
                raise CliError(f"--set {assignment!r}: node {node_id} ({node['class_type']}) has "
                               f"no input {input_name!r}; its inputs: {', '.join(known)}")
        if isinstance(node["inputs"].get(input_name), list):
            print(f"note: --set replaces the link into node {node_id}.{input_name}",
                  file=sys.stderr)
        node["inputs"][input_name] = value
    return ids


LOADER_WIDGETS = ("ckpt_name", "unet_name")


def apply_ckpt(prompt: dict, name: str, object_info: dict) -> list[str]:
    changed, available = [], set()
    for node_id, node in prompt.items():
        info = object_info.get(node["class_type"]) or {}
        for input_name, spec in schema_inputs(info):
            if input_name not in LOADER_WIDGETS:
                continue
            choices = spec[0] if isinstance(spec[0], list) else (
                spec[1].get("options", []) if len(spec) > 1 and isinstance(spec[1], dict) else [])
            available.update(choices)
            if name in choices:
                node["inputs"][input_name] = name
                changed.append(f"{node_id}.{input_name}")
    if not changed:
        listing = ", ".join(sorted(available)) or "none"
        raise CliError(f"--ckpt {name!r}: no loader node in this workflow lists that file. "
                       f"Files the server has for these loaders: {listing}. Put the file in "
                       "models/checkpoints/ (ckpt_name) or models/diffusion_models/ (unet_name).")
    return changed


def apply_image(prompt: dict, spec: str, client: ComfyClient) -> list[str]:
    selector, sep, path = spec.partition("=")
    if sep and find_nodes(prompt, selector):
        ids = find_nodes(prompt, selector)
    else:
        path = spec
        ids = [i for i, n in prompt.items() if n["class_type"] == "LoadImage"]
        if not ids:
            raise CliError("--image: the workflow has no LoadImage node")
    if not Path(path).is_file():
        raise CliError(f"--image: file not found: {path}")
    uploaded = client.upload_image(path)
    for node_id in ids:
        prompt[node_id]["inputs"]["image"] = uploaded
    return ids


def _start_server(args, stack: ExitStack) -> ComfyClient:
    if args.server:
        client = ComfyClient(args.server)
        if not client.is_alive(timeout=30.0):  # a busy server answers slowly
            raise CliError(f"no ComfyUI server answers at {args.server}")
        return client
    from .comfy_root import find_comfy_root

    root = find_comfy_root(args.comfy_root)
    server = ComfyServer(comfy_root=root, base_dir=args.base_dir or root, port=args.port,
                         log_path=args.log)
    t0 = time.monotonic()
    stack.enter_context(server)
    print(f"[comfyui-inverse] ComfyUI ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return server.client


def prepare_prompt(workflow: dict, object_info: dict, source: str) -> dict:
    if is_ui_workflow(workflow):
        warnings: list[str] = []
        prompt = ui_to_api(workflow, object_info, warnings)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return prompt
    if is_api_prompt(workflow):
        return workflow
    raise CliError(f"{source}: neither a UI workflow (nodes + links) nor an API prompt")


def cmd_run(args) -> int:
    workflow = _load_json(args.workflow)
    with ExitStack() as stack:
        client = _start_server(args, stack)
        object_info = client.object_info()
        prompt = prepare_prompt(workflow, object_info, args.workflow)
        for assignment in args.set or []:
            apply_set(prompt, assignment, object_info)
        if args.ckpt:
            for where in apply_ckpt(prompt, args.ckpt, object_info):
                print(f"--ckpt: set {where}", file=sys.stderr)
        for image in args.image or []:
            apply_image(prompt, image, client)
        names = {i: n.get("_meta", {}).get("title") or n["class_type"] for i, n in prompt.items()}
        extra = {"extra_pnginfo": {"workflow": workflow}} if is_ui_workflow(workflow) else None
        progress = None if args.quiet else (lambda e: print_progress(e, node_names=names))
        t0 = time.monotonic()
        try:
            entry = client.run(prompt, timeout=args.timeout, progress=progress, extra_data=extra)
        except KeyboardInterrupt:
            client.interrupt()
            print("interrupted", file=sys.stderr)
            return 130
        except PromptExecutionError as error:
            print(f"error: {error}", file=sys.stderr)
            if args.verbose and error.traceback:
                print(error.traceback, file=sys.stderr)
            return 1
        kinds = ("output", "temp") if args.previews else ("output",)
        written = client.download_outputs(entry, args.out, kinds)
        print(f"done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        for path in written:
            print(path)
        if not written:
            print("note: the workflow produced no saved files (add a SaveImage node, or use "
                  "--previews for PreviewImage outputs)", file=sys.stderr)
    return 0


def cmd_convert(args) -> int:
    workflow = _load_json(args.workflow)
    with ExitStack() as stack:
        if args.object_info:
            object_info = _load_json(args.object_info)
        else:
            object_info = _start_server(args, stack).object_info()
        prompt = prepare_prompt(workflow, object_info, args.workflow)
    text = json.dumps(prompt, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m comfyui_inverse",
        description="Run ComfyUI workflows headless (comfyui-inverse runner).",
        epilog=USAGE_NOTES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def server_options(p):
        p.add_argument("--server", metavar="URL", help="use a running ComfyUI (e.g. http://127.0.0.1:8188)")
        p.add_argument("--port", type=int, help="port for the started ComfyUI (default: a free one)")
        p.add_argument("--comfy-root", metavar="DIR", help="ComfyUI tree (default: $COMFYUI_PATH)")
        p.add_argument("--base-dir", metavar="DIR",
                       help="ComfyUI --base-directory (models/, input/, output/, custom_nodes/)")
        p.add_argument("--log", metavar="FILE", help="server log file")

    run = sub.add_parser("run", help="run a workflow and save its outputs",
                         epilog=USAGE_NOTES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("workflow", help="workflow JSON (UI format as saved by ComfyUI, or API format)")
    run.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE",
                     help="override an input (repeatable)")
    run.add_argument("--image", action="append", metavar="[NODE=]PATH",
                     help="upload an image into the LoadImage node(s) (repeatable with NODE=)")
    run.add_argument("--ckpt", metavar="NAME", help="model file for the checkpoint/UNet loaders")
    run.add_argument("--out", required=True, metavar="DIR", help="where to write the outputs")
    run.add_argument("--previews", action="store_true", help="also save PreviewImage outputs")
    run.add_argument("--timeout", type=float, help="give up after this many seconds")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--verbose", action="store_true", help="print the node's traceback on error")
    server_options(run)
    run.set_defaults(handler=cmd_run)

    convert = sub.add_parser("convert", help="print the API prompt of a UI-format workflow")
    convert.add_argument("workflow")
    convert.add_argument("--object-info", metavar="FILE",
                         help="saved GET /object_info JSON (else a server is used)")
    convert.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    server_options(convert)
    convert.set_defaults(handler=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except (CliError, WorkflowConversionError, ComfyNotFoundError, ComfyError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except OSError as error:  # connection refused/reset: the server went away
        print(f"error: talking to ComfyUI failed: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
