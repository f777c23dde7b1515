"""`python -m comfyui_inverse run|convert ...`: run ComfyUI workflows without the browser."""

from __future__ import annotations

import argparse
import difflib
import json
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from .client import (ComfyClient, ComfyError, PromptExecutionError, PromptTimeout, PromptValidationError,
                     print_progress)
from .comfy_root import ComfyNotFoundError
from .preflight import (CliError, check_image, check_out_dir, has_transparency, load_json, load_workflow,
                        normalize_server_url)
from .workflow_api import (WorkflowConversionError, combo_options, is_api_prompt, is_ui_workflow, schema_inputs,
                           ui_to_api, widget_value_problem)
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
--base-dir names another base directory; it is stopped when the run ends (also on Ctrl-C or
SIGTERM).
"""


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


def parse_assignment(assignment: str) -> tuple[str, str, str]:
    """NODE.INPUT=VALUE -> (NODE, INPUT, VALUE text); checked before a server starts."""
    target, sep, raw = assignment.partition("=")
    selector, dot, input_name = target.rpartition(".")
    if not sep or not dot or not selector.strip() or not input_name.strip():
        raise CliError(f"--set {assignment!r}: expected NODE.INPUT=VALUE, e.g. KSampler.steps=10")
    return selector, input_name, raw


def apply_set(prompt: dict, assignment: str, object_info: dict | None) -> list[str]:
    """Apply one NODE.INPUT=VALUE override; returns the changed node ids."""
    selector, input_name, raw = parse_assignment(assignment)
    ids = find_nodes(prompt, selector)
    if not ids:
        raise CliError(f"--set {assignment!r}: no node has the id, title or type {selector!r}. "
                       f"Nodes: {_node_list(prompt)}")
    value = parse_value(raw)
    for node_id in ids:
        node = prompt[node_id]
        info = (object_info or {}).get(node["class_type"])
        node_value = value
        if info is not None:
            specs = dict(schema_inputs(info))
            if input_name not in specs and input_name not in node["inputs"]:
                raise CliError(f"--set {assignment!r}: node {node_id} ({node['class_type']}) has "
                               f"no input {input_name!r}; its inputs: {', '.join(specs)}")
            spec = specs.get(input_name)
            if spec is not None and (spec[0] == "STRING" or raw in (combo_options(spec) or ())):
                node_value = value if isinstance(value, str) else raw  # 2024 stays "2024"
            elif spec is not None:
                problem = widget_value_problem(spec, value)
                if problem:
                    raise CliError(f"--set {assignment!r}: node {node_id} ({node['class_type']}) "
                                   f"input {input_name} {problem}")
        if isinstance(node["inputs"].get(input_name), list):
            print(f"note: --set replaces the link into node {node_id}.{input_name}",
                  file=sys.stderr)
        node["inputs"][input_name] = node_value
    return ids


LOADER_WIDGETS = ("ckpt_name", "unet_name")


def apply_ckpt(prompt: dict, name: str, object_info: dict) -> list[str]:
    changed, available, loaders = [], set(), 0
    for node_id, node in prompt.items():
        info = object_info.get(node["class_type"]) or {}
        for input_name, spec in schema_inputs(info):
            if input_name not in LOADER_WIDGETS:
                continue
            loaders += 1
            choices = combo_options(spec) or []
            available.update(choices)
            if name in choices:
                node["inputs"][input_name] = name
                changed.append(f"{node_id}.{input_name}")
    if not changed:
        if not loaders:
            raise CliError(f"--ckpt {name!r}: the workflow has no checkpoint or UNet loader "
                           f"({', '.join(LOADER_WIDGETS)} widget) to set")
        listing = ", ".join(sorted(available)) or "none"
        hint = ""
        close = ([Path(name).name] if Path(name).name in available
                 else difflib.get_close_matches(name, sorted(available), n=1, cutoff=0.6))
        if close:
            hint = f" Did you mean {close[0]!r}?"
        elif Path(name).expanduser().is_file():
            hint = (" --ckpt takes a file name the server lists, not a path: copy or link the "
                    "file into the server's models folder first.")
        raise CliError(f"--ckpt {name!r}: no loader node in this workflow lists that file.{hint} "
                       f"Files the server has for these loaders: {listing}. Put the file in "
                       "models/checkpoints/ (ckpt_name) or models/diffusion_models/ (unet_name).")
    return changed


def split_image_spec(spec: str) -> tuple[str | None, str]:
    """--image [NODE=]PATH -> (NODE or None, PATH); a file whose name has '=' stays a path."""
    selector, sep, path = spec.partition("=")
    if sep and selector and not Path(spec).expanduser().exists():
        return selector, path
    return None, spec


def apply_image(prompt: dict, spec: str, client: ComfyClient, upload: Path | None = None) -> list[str]:
    """Upload the --image file (or `upload`, its checked stand-in) into the chosen or all
    LoadImage nodes; returns the changed node ids."""
    selector, path = split_image_spec(spec)
    if selector is not None:
        ids = find_nodes(prompt, selector)
        if not ids:
            raise CliError(f"--image {spec!r}: no node has the id, title or type {selector!r}. "
                           f"Nodes: {_node_list(prompt)}")
    else:
        ids = [i for i, n in prompt.items() if n["class_type"] == "LoadImage"]
        if not ids:
            raise CliError("--image: the workflow has no LoadImage node; name the node that takes "
                           "the image with --image NODE=PATH")
    if upload is None:
        if not Path(path).is_file():
            raise CliError(f"--image: file not found: {path}")
        upload = Path(path)
    uploaded = client.upload_image(upload)
    for node_id in ids:
        prompt[node_id]["inputs"]["image"] = uploaded
    warn_empty_masks(prompt, ids, path, upload)
    return ids


def warn_empty_masks(prompt: dict, ids: list[str], path: str, upload: Path) -> None:
    """LoadImage's MASK is the image's transparency; an opaque picture gives an empty mask, so an
    inpainting workflow would fill nothing and hand the picture back unchanged."""
    loaders = [i for i in ids if prompt[i]["class_type"] == "LoadImage"]
    if not loaders or has_transparency(upload) is not False:
        return
    users = [f"node {i} ({n['class_type']})" for i, n in prompt.items()
             if any(value in ([lid, 1] for lid in loaders) for value in n["inputs"].values())]
    if users:
        print(f"warning: --image {path} has no transparent pixels, so the MASK of LoadImage "
              f"(node {', '.join(loaders)}) is empty and {', '.join(users)} will see no area to fill. "
              "Erase the area to fill in an image editor and save as PNG or WebP with transparency.",
              file=sys.stderr)


def _start_server(args, stack: ExitStack) -> tuple[ComfyClient, ComfyServer | None]:
    if args.server:
        client = ComfyClient(normalize_server_url(args.server))
        if not client.is_alive(timeout=30.0):  # a busy server answers slowly
            raise CliError(f"no ComfyUI server answers at {client.url} (--server): start it, or "
                           "leave --server out to start one for this run")
        return client, None
    from .comfy_root import find_comfy_root

    root = find_comfy_root(args.comfy_root)
    server = ComfyServer(comfy_root=root, base_dir=args.base_dir or root, port=args.port,
                         log_path=args.log)
    t0 = time.monotonic()
    stack.enter_context(server)
    print(f"[comfyui-inverse] ComfyUI ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return server.client, server


def prepare_prompt(workflow: dict, object_info: dict, source: str) -> dict:
    if is_ui_workflow(workflow):
        warnings: list[str] = []
        prompt = ui_to_api(workflow, object_info, warnings)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return prompt
    if is_api_prompt(workflow):
        unknown = [f"  node {i} ({n['class_type']}): unknown node type '{n['class_type']}'"
                   for i, n in workflow.items() if object_info and n["class_type"] not in object_info]
        if unknown:
            raise CliError(f"{source}: the server does not know these node types; install the pack "
                           "that provides them (or update it), then restart ComfyUI:\n"
                           + "\n".join(unknown))
        return workflow
    raise CliError(f"{source}: neither a UI workflow (nodes + links) nor an API prompt")


def validation_hints(error: PromptValidationError) -> str:
    """The runner's own options that fix the usual validation errors."""
    hints = set()
    if error.error.get("type") == "prompt_no_outputs":
        hints.add("the workflow needs an output node (SaveImage, PreviewImage); muted and bypassed "
                  "nodes do not run")
    for node_error in error.node_errors.values():
        for item in node_error.get("errors", []):
            name = (item.get("extra_info") or {}).get("input_name")
            if item.get("type") == "value_not_in_list" and name in LOADER_WIDGETS:
                hints.add("--ckpt NAME chooses one of the server's model files for the loaders; or put "
                          "the workflow's file into the server's models/ folder")
            elif name == "image" and node_error.get("class_type") == "LoadImage":
                hints.add("--image PATH uploads your image into the LoadImage nodes")
    return "".join(f"\nhint: {hint}" for hint in sorted(hints))


def cmd_run(args) -> int:
    # Everything that can be checked without a server is checked first.
    workflow = load_workflow(args.workflow)
    for assignment in args.set or []:
        parse_assignment(assignment)
    if sum(split_image_spec(spec)[0] is None for spec in args.image or []) > 1:
        raise CliError("--image given several times without NODE=: each would replace the last in every "
                       "LoadImage node. Name the node for each: --image NODE=PATH (id, title or type)")
    out = check_out_dir(args.out)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="comfyui-inverse-")))
        uploads = [(spec, check_image(split_image_spec(spec)[1], scratch)) for spec in args.image or []]
        client, server = _start_server(args, stack)
        try:
            return _run_prompt(args, workflow, client, uploads, out)
        except OSError as error:
            if server is not None and server.exit_report():
                raise ComfyError(server.exit_report()) from None
            raise


def _run_prompt(args, workflow: dict, client: ComfyClient, uploads: list, out: Path) -> int:
    object_info = client.object_info()
    prompt = prepare_prompt(workflow, object_info, args.workflow)
    for assignment in args.set or []:
        apply_set(prompt, assignment, object_info)
    if args.ckpt:
        for where in apply_ckpt(prompt, args.ckpt, object_info):
            print(f"--ckpt: set {where}", file=sys.stderr)
    for spec, upload in uploads:
        apply_image(prompt, spec, client, upload)
    names = {i: n.get("_meta", {}).get("title") or n["class_type"] for i, n in prompt.items()}
    extra = {"extra_pnginfo": {"workflow": workflow}} if is_ui_workflow(workflow) else None
    progress = None if args.quiet else (lambda e: print_progress(e, node_names=names))
    t0 = time.monotonic()
    try:
        entry = client.run(prompt, timeout=args.timeout, progress=progress, extra_data=extra)
    except KeyboardInterrupt:  # client.run has cancelled the prompt
        print("interrupted: the prompt was cancelled", file=sys.stderr)
        raise
    except PromptValidationError as error:
        raise ComfyError(str(error) + validation_hints(error)) from None
    except PromptTimeout:
        print(f"error: the workflow did not finish within --timeout {args.timeout:g} s; "
              "it was cancelled", file=sys.stderr)
        return 1
    except PromptExecutionError as error:
        print(f"error: {error}", file=sys.stderr)
        if args.verbose and error.traceback:
            print(error.traceback, file=sys.stderr)
        return 1
    kinds = ("output", "temp") if args.previews else ("output",)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        files = ", ".join(item["filename"] for item in client.output_files(entry, kinds))
        raise CliError(f"--out {args.out}: cannot create the folder ({error.strerror or error}); "
                       f"the outputs stay in the server's output folder: {files or 'none'}") from None
    written = client.download_outputs(entry, out, kinds)
    print(f"done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    for path in written:
        print(path)
    if not written:
        print("note: the workflow produced no saved files (add a SaveImage node, or use "
              "--previews for PreviewImage outputs)", file=sys.stderr)
    return 0


def cmd_convert(args) -> int:
    workflow = load_workflow(args.workflow)
    if is_api_prompt(workflow) and not is_ui_workflow(workflow):
        print(f"note: {args.workflow} is already an API prompt; written unchanged", file=sys.stderr)
    with ExitStack() as stack:
        if args.object_info:
            object_info = load_json(args.object_info, "--object-info file")
            if not (isinstance(object_info, dict) and object_info and all(
                    isinstance(v, dict) and "input" in v for v in object_info.values())):
                raise CliError(f"--object-info {args.object_info}: not a saved GET /object_info "
                               "answer (a map of node types to their 'input' specs)")
        elif is_ui_workflow(workflow):
            object_info = _start_server(args, stack)[0].object_info()
        else:
            object_info = {}
        prompt = prepare_prompt(workflow, object_info, args.workflow)
    text = json.dumps(prompt, indent=2) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as error:
            raise CliError(f"-o {args.output}: cannot write the file ({error.strerror or error})") from None
    else:
        sys.stdout.write(text)
    return 0


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m comfyui_inverse",
        description="Run ComfyUI workflows headless (comfyui-inverse runner).",
        epilog=USAGE_NOTES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def server_options(p):
        p.add_argument("--server", metavar="URL", help="use a running ComfyUI (e.g. http://127.0.0.1:8188)")
        p.add_argument("--port", type=_port, help="port for the started ComfyUI (default: a free one)")
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
    run.add_argument("--timeout", type=_seconds, help="give up after this many seconds")
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


class Stopped(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised like Ctrl-C so that the started server is stopped."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on_signals() -> None:
    # An ignored signal stays ignored (nohup ignores SIGHUP, background jobs SIGINT).
    handled = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
               if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]

    def first(signum, frame):
        for number in handled:  # the clean-up takes seconds: a second Ctrl-C must not cut it short
            signal.signal(number, later)
        raise Stopped(signum) if signum != signal.SIGINT else KeyboardInterrupt

    def later(signum, frame):
        print("stopping ComfyUI, please wait...", file=sys.stderr, flush=True)

    for number in handled:
        signal.signal(number, first)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _stop_on_signals()
    try:
        code = args.handler(args)
    except (CliError, WorkflowConversionError, ComfyNotFoundError, ComfyError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except OSError as error:  # connection refused/reset: the server went away
        print(f"error: talking to ComfyUI failed: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as stop:
        code = 128 + stop.signum if isinstance(stop, Stopped) else 130
    sys.exit(code)
