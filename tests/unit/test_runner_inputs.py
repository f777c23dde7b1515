"""The headless runner on bad input: its own checks (runner/preflight.py, --set values), the
ComfyUI tree and port checks, and the CLI's clean-up of a server it started on Ctrl-C / SIGTERM /
the server dying, against a stand-in ComfyUI (a stdlib HTTP server), so no torch or comfy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_inverse.runner import ComfyNotFoundError, find_comfy_root
from comfyui_inverse.runner.cli import (CliError, apply_ckpt, apply_set, build_parser, prepare_prompt,
                                       split_image_spec, validation_hints, warn_empty_masks)
from comfyui_inverse.runner.preflight import (
    check_image,
    check_out_dir,
    load_workflow,
    normalize_server_url,
)
from comfyui_inverse.runner.client import ComfyClient, ComfyError, PromptValidationError
from comfyui_inverse.runner.server import ComfyServer, ComfyStartError
from comfyui_inverse.runner.workflow_api import WorkflowConversionError, ui_to_api
from comfyui_inverse.tests.unit.test_workflow_api import OBJECT_INFO, image_chain


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# --- the workflow file ---------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("", "is a folder"),
    ("{'nodes': []", "not a JSON file"),
    (b"\xff\xfe\x00 binary", "not a JSON file"),
    ([1, 2], "neither a UI workflow"),
    ({"nodes": [], "version": 0.4}, "no 'links'"),
    ({"1": {"inputs": {}}}, "neither a UI workflow"),  # an API prompt without class_type
])
def test_bad_workflow_files_are_refused_with_the_fix(tmp_path, content, message):
    path = tmp_path / "wf.json"
    if content == "":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        write(path, content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CliError, match=message) as error:
        load_workflow(str(path))
    assert str(path) in str(error.value)


def test_ui_api_and_prompt_body_files_load(tmp_path):
    ui = image_chain()
    api = ui_to_api(ui, OBJECT_INFO)
    assert load_workflow(str(write(tmp_path / "ui.json", ui))) == ui
    assert load_workflow(str(write(tmp_path / "api.json", api))) == api
    body = {"prompt": api, "client_id": "x"}  # what a POST /prompt capture holds
    assert load_workflow(str(write(tmp_path / "body.json", body))) == api


def test_api_prompt_with_an_unknown_node_type_names_it():
    api = ui_to_api(image_chain(), OBJECT_INFO)
    assert prepare_prompt(api, OBJECT_INFO, "api.json") is api
    api["2"]["class_type"] = "SuperSharpen"
    with pytest.raises(CliError) as error:
        prepare_prompt(api, OBJECT_INFO, "api.json")
    assert "node 2 (SuperSharpen)" in str(error.value) and "install the pack" in str(error.value)


@pytest.mark.parametrize("damage", ["node_without_id", "link_too_short", "node_is_a_string"])
def test_damaged_ui_workflow_is_a_conversion_error(damage):
    wf = image_chain()
    if damage == "node_without_id":
        del wf["nodes"][1]["id"]
    elif damage == "link_too_short":
        wf["links"][0] = [1, 1]
    else:
        wf["nodes"][2] = "SaveImage"
    with pytest.raises(WorkflowConversionError, match="malformed.*save it again"):
        ui_to_api(wf, OBJECT_INFO)


# --- --out, --server, --image ---------------------------------------------------------------

def test_out_dir_is_checked_without_creating_it(tmp_path):
    a_file = write(tmp_path / "file.txt", "x")
    with pytest.raises(CliError, match="is a file"):
        check_out_dir(str(a_file))
    with pytest.raises(CliError, match="cannot be created: .*file.txt is a file"):
        check_out_dir(str(a_file / "out"))
    nested = tmp_path / "new" / "out"
    assert check_out_dir(str(nested)) == nested
    assert not (tmp_path / "new").exists()  # a failing run leaves no empty folder
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(CliError, match="no permission"):
            check_out_dir(str(locked / "out"))


@pytest.mark.parametrize("option, message", [("--port=70000", "not a port number"), ("--port=http", "not a port number"),
                                             ("--timeout=0", "above 0"), ("--timeout=nan", "above 0")])
def test_port_and_timeout_out_of_range_are_usage_errors(option, message, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["run", "wf.json", "--out", "o", option])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_server_url_gets_a_scheme():
    assert normalize_server_url("127.0.0.1:8188") == "http://127.0.0.1:8188"
    assert normalize_server_url("https://host/comfy/") == "https://host/comfy"


def test_server_that_is_not_comfyui_is_named():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a web app</html>")

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Html) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            with pytest.raises(ComfyError, match="did not answer JSON.*is this a ComfyUI server"):
                ComfyClient(f"http://127.0.0.1:{web.server_address[1]}").object_info()
        finally:
            web.shutdown()


def test_image_spec_node_or_path(tmp_path):
    assert split_image_spec("photo.png") == (None, "photo.png")
    assert split_image_spec("Load photo=in/photo.png") == ("Load photo", "in/photo.png")
    odd = write(tmp_path / "a=b.png", "x")  # an existing file whose name has '='
    assert split_image_spec(str(odd)) == (None, str(odd))


def test_two_images_without_node_names_are_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "comfyui_inverse", "run", str(write(tmp_path / "wf.json", image_chain())),
         "--image", "a.png", "--image", "b.png", "--out", str(tmp_path / "out"), "--server", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "--image given several times without NODE=" in result.stderr  # before any server is asked


def test_missing_and_unreadable_images_are_refused(tmp_path):
    with pytest.raises(CliError, match="file not found"):
        check_image(str(tmp_path / "nope.png"), tmp_path)
    with pytest.raises(CliError, match="not a file"):
        check_image(str(tmp_path), tmp_path)
    text = write(tmp_path / "notes.png", "not an image")
    with pytest.raises(CliError, match="not an image Pillow can read.*PNG, JPEG"):
        check_image(str(text), tmp_path)
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(CliError, match="not an image Pillow can read"):
        check_image(str(truncated), tmp_path)


def test_image_beyond_pillows_pixel_limit_says_downscale(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (32, 32)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1024 pixels: over twice the limit
    with pytest.raises(CliError, match="too many pixels for Pillow.*downscale it first"):
        check_image(str(path), tmp_path)


@pytest.mark.parametrize("mode, suffix", [("RGB", ".png"), ("RGBA", ".png"), ("L", ".jpg")])
def test_ordinary_images_upload_unchanged(tmp_path, mode, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.new(mode, (24, 16)).save(path)
    assert check_image(str(path), tmp_path / "scratch") == path


def test_16bit_grey_png_uploads_an_8bit_copy(tmp_path, capsys):
    # Stock LoadImage turns Pillow's I;16 into RGB by clipping at 255: a white picture.
    ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
        assert np.asarray(image.convert("RGB")).mean() > 250  # what LoadImage would make of it
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    copy = check_image(str(path), scratch)
    assert copy.parent == scratch and copy.name == "scan.png"
    with Image.open(copy) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), (ramp >> 8).astype(np.uint8))
    assert "16-bit greyscale" in capsys.readouterr().err


@pytest.mark.parametrize("alpha, warned", [(None, True), (255, True), (0, False)])
def test_opaque_image_into_a_mask_workflow_is_warned(tmp_path, capsys, alpha, warned):
    # LoadImage's MASK is the image's transparency: an opaque photo gives an empty mask.
    path = tmp_path / "photo.png"
    if alpha is None:
        Image.new("RGB", (16, 16)).save(path)
    else:
        pixels = np.zeros((16, 16, 4), np.uint8)
        pixels[..., 3] = 255
        pixels[4:8, 4:8, 3] = alpha
        Image.fromarray(pixels).save(path)
    prompt = {"5": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
              "6": {"class_type": "InverseInpainting", "inputs": {"mask": ["5", 1], "threshold": 0.5}},
              "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}}}
    warn_empty_masks(prompt, ["5"], str(path), path)
    err = capsys.readouterr().err
    assert ("node 6 (InverseInpainting) will see no area to fill" in err) == warned
    del prompt["6"]  # the image alone: nothing to say
    warn_empty_masks(prompt, ["5"], str(path), path)
    assert capsys.readouterr().err == ""


def test_validation_errors_get_the_runner_option_that_fixes_them():
    # Answers as ComfyUI 0.3.75 gives them (POST /prompt, 400).
    no_outputs = {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": ""},
                  "node_errors": []}
    assert "needs an output node" in validation_hints(PromptValidationError(no_outputs))
    missing = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
               "node_errors": {
                   "2": {"class_type": "CheckpointLoaderSimple", "errors": [{
                       "type": "value_not_in_list", "message": "Value not in list",
                       "details": "ckpt_name: 'v1-5.safetensors' not in ['tiny.safetensors']",
                       "extra_info": {"input_name": "ckpt_name"}}]},
                   "5": {"class_type": "LoadImage", "errors": [{
                       "type": "custom_validation_failed", "message": "Custom validation failed for node",
                       "details": "image - Invalid image file: photo.png", "extra_info": {"input_name": "image"}}]}}}
    error = PromptValidationError(missing)
    assert "node 2 (CheckpointLoaderSimple): Value not in list: ckpt_name" in str(error)
    hints = validation_hints(error)
    assert "--ckpt NAME" in hints and "--image PATH" in hints


# --- --set values ---------------------------------------------------------------------------

INFO = {**OBJECT_INFO,
        "KSampler": {**OBJECT_INFO["KSampler"], "input": {"required": {
            **OBJECT_INFO["KSampler"]["input"]["required"],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}]}}},
        "Flags": {"input": {"required": {"tiled": ["BOOLEAN", {"default": False}],
                                         "factor": [["2", "4", "8"]]}}, "output": []}}


def sampler_prompt():
    return {"3": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
                  "inputs": {"seed": 1, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                             "scheduler": "normal", "denoise": 1.0}},
            "4": {"class_type": "Flags", "inputs": {"tiled": False, "factor": "2"}, "_meta": {"title": "Flags"}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"},
                  "_meta": {"title": "SaveImage"}}}


@pytest.mark.parametrize("assignment, message", [
    ("KSampler.steps=abc", r"steps takes an integer \(from 1 to 10000\), got 'abc'"),
    ("KSampler.steps=2.5", "takes an integer"),
    ("KSampler.steps=Infinity", r"takes an integer \(from 1 to 10000\), got inf"),  # was an OverflowError
    ("KSampler.steps=true", "takes an integer"),
    ("KSampler.steps=0", r"0 is out of range \(from 1 to 10000\)"),
    ("KSampler.cfg=NaN", "takes a number"),
    ("KSampler.cfg=1e9", "out of range"),
    ("KSampler.sampler_name=euler_a", "not one of the choices: 'euler', 'ddim'"),
    ("KSampler.scheduler=simple", "not one of the choices: 'normal', 'karras'"),
    ("Flags.tiled=yes", "takes true or false"),
])
def test_set_values_are_checked_against_the_widget(assignment, message):
    prompt = sampler_prompt()
    with pytest.raises(CliError, match=message) as error:
        apply_set(prompt, assignment, INFO)
    assert repr(assignment) in str(error.value)
    assert prompt == sampler_prompt()


def test_set_values_that_fit_are_applied():
    prompt = sampler_prompt()
    for assignment in ("KSampler.steps=12", "KSampler.cfg=4", "KSampler.scheduler=karras",
                       "Flags.tiled=true", "SaveImage.filename_prefix=2024", "3.seed=7", "Flags.factor=4"):
        apply_set(prompt, assignment, INFO)
    inputs = prompt["3"]["inputs"]
    assert (inputs["steps"], inputs["cfg"], inputs["scheduler"], inputs["seed"]) == (12, 4, "karras", 7)
    assert prompt["4"]["inputs"]["tiled"] is True
    assert prompt["4"]["inputs"]["factor"] == "4"  # a combo of number-like texts keeps the text
    assert prompt["9"]["inputs"]["filename_prefix"] == "2024"  # a STRING widget keeps the text


@pytest.mark.parametrize("assignment", ["steps=3", "KSampler.steps", ".steps=3", "KSampler.=3"])
def test_set_syntax_errors_show_the_form(assignment):
    with pytest.raises(CliError, match=r"NODE\.INPUT=VALUE"):
        apply_set(sampler_prompt(), assignment, INFO)


def test_ckpt_typos_paths_and_workflows_without_loaders():
    loader = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}}}
    with pytest.raises(CliError, match="Did you mean 'other.safetensors'"):
        apply_ckpt(loader, "othr.safetensors", OBJECT_INFO)
    with pytest.raises(CliError, match="Did you mean 'other.safetensors'"):
        apply_ckpt(loader, "/home/me/models/other.safetensors", OBJECT_INFO)
    with pytest.raises(CliError, match="no checkpoint or UNet loader"):
        apply_ckpt(sampler_prompt(), "other.safetensors", INFO)


# --- the ComfyUI tree and the port ------------------------------------------------------------

def test_comfy_root_that_is_not_comfyui(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "missing"))
    with pytest.raises(ComfyNotFoundError, match="from COMFYUI_PATH.*main.py does not exist"):
        find_comfy_root()
    write(tmp_path / "main.py", "print('another program')")
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path))
    with pytest.raises(ComfyNotFoundError, match="not a ComfyUI checkout"):
        find_comfy_root()


def fake_comfy_tree(root: Path) -> Path:
    """A tree find_comfy_root accepts, whose main.py is a stand-in server (FAKE_MAIN)."""
    (root / "comfy").mkdir(parents=True)
    write(root / "folder_paths.py", "")
    write(root / "main.py", FAKE_MAIN)
    return root


def test_port_in_use_is_refused_before_starting(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ComfyServer(comfy_root=fake_comfy_tree(tmp_path / "comfy"),
                             base_dir=tmp_path / "base", port=port, quiet=True)
        with pytest.raises(ComfyStartError, match=f"port {port} .* already in use.*--server"):
            server.start()
        assert server.process is None


def test_unusable_base_dir_log_or_python_is_named(tmp_path):
    root = fake_comfy_tree(tmp_path / "comfy")
    a_file = write(tmp_path / "file.txt", "x")
    cases = [(dict(base_dir=a_file), "cannot set up the base directory .*--base-dir"),
             (dict(base_dir=tmp_path / "base", log_path=a_file / "server.log"), "cannot write the server log .*--log"),
             (dict(base_dir=tmp_path / "base", python=tmp_path / "no-python"), "cannot run .*COMFYUI_PYTHON")]
    for options, message in cases:
        server = ComfyServer(comfy_root=root, quiet=True, cpu=True, **options)
        with pytest.raises(ComfyStartError, match=message):
            server.start()
        assert server.process is None


# --- the CLI with a started (stand-in) server -------------------------------------------------

# Answers what the runner asks; a queued prompt never finishes. Deletes and interrupts are logged.
FAKE_MAIN = textwrap.dedent('''
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    base = args[args.index("--base-directory") + 1]
    print(f"Import times for custom nodes:\\n   0.0 seconds: {base}/custom_nodes/comfyui-inverse",
          flush=True)
    INFO = {"SaveImage": {"input": {"required": {"filename_prefix": ["STRING", {}]}},
                          "output": []}}

    class Handler(BaseHTTPRequestHandler):
        def answer(self, data):
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer(INFO if self.path.startswith("/object_info") else {})

        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            print("POST", self.path, data.decode(errors="replace"), flush=True)
            if self.path != "/prompt":
                return self.answer({})
            if b'"reject"' in data:  # queued for its valid outputs only, as ComfyUI does
                return self.answer({"prompt_id": "p2", "number": 1, "node_errors": {"9": {
                    "class_type": "SaveImage", "dependent_outputs": ["9"], "errors": [{
                        "type": "value_not_in_list", "message": "Value not in list",
                        "details": "ckpt_name: 'x' not in []",
                        "extra_info": {"input_name": "ckpt_name"}}]}}})
            self.answer({"prompt_id": "p1", "number": 0, "node_errors": {}})

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')

API_PROMPT = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}


def start_cli(tmp_path, prompt) -> tuple[subprocess.Popen, Path]:
    root = fake_comfy_tree(tmp_path / "comfy")
    log = tmp_path / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "comfyui_inverse", "run", str(write(tmp_path / "api.json", prompt)),
         "--comfy-root", str(root), "--base-dir", str(tmp_path / "base"), "--log", str(log),
         "--out", str(tmp_path / "out"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COMFYUI_PYTHON": sys.executable},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    return process, log


def test_partly_valid_prompt_is_cancelled_and_explained(tmp_path):
    process, log = start_cli(tmp_path, {"9": {"class_type": "SaveImage",
                                              "inputs": {"filename_prefix": "reject"}}})
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "rejected the prompt: some nodes did not validate" in err
    assert "node 9 (SaveImage): Value not in list: ckpt_name" in err and "hint: --ckpt NAME" in err
    assert "{'prompt_id'" not in err  # not the raw answer
    assert 'POST /queue {"delete": ["p2"]}' in log.read_text()


@pytest.fixture
def waiting_cli(tmp_path):
    """The CLI running API_PROMPT on a stand-in ComfyUI it started; returns (process, log path,
    the server's pid) once the prompt is queued."""
    process, log = start_cli(tmp_path, API_PROMPT)
    deadline = time.monotonic() + 60
    while "POST /prompt" not in (log.read_text() if log.exists() else ""):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the CLI did not queue the prompt"
        time.sleep(0.1)
    server_pid = _child_pids(process.pid)
    assert len(server_pid) == 1
    yield process, log, server_pid[0]
    if process.poll() is None:
        process.kill()
    for pid in server_pid:
        _kill_quietly(pid)


def _child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] == "Z"  # a zombie is gone too


pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@pytestmark_linux
@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                        (signal.SIGINT, 130)])
def test_signal_cancels_the_prompt_and_stops_the_started_server(waiting_cli, stop, code):
    process, log, server_pid = waiting_cli
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err
    assert _gone(server_pid), "the started ComfyUI outlived the runner"
    text = log.read_text()
    assert 'POST /queue {"delete": ["p1"]}' in text and 'POST /interrupt {"prompt_id": "p1"}' in text


@pytestmark_linux
def test_server_dying_mid_run_is_reported_with_its_log(waiting_cli):
    process, log, server_pid = waiting_cli
    os.kill(server_pid, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "ComfyUI stopped while running the workflow: exit code -9" in err
    assert "out of memory" in err and str(log) in err
    assert "Traceback" not in err
