"""The headless runner end to end: `python -m comfyui_inverse run|convert` against a real
ComfyUI server, with a stock-nodes-only workflow that needs no model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfyui_inverse.runner import ComfyServer, find_comfy_root, ui_to_api
from comfyui_inverse.runner.server import ComfyStartError

pytestmark = pytest.mark.host

CLI_TIMEOUT = 300


def ui_scale_workflow(width=64, height=48, prefix="runner_test"):
    """LoadImage -> ImageScale -> SaveImage, with a Note; as the frontend saves it."""
    return {
        "last_node_id": 4, "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [0, 0], "size": [315, 314], "flags": {},
             "order": 0, "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                         {"name": "MASK", "type": "MASK", "links": None}],
             "properties": {"Node name for S&R": "LoadImage"},
             "widgets_values": ["example.png", "image"]},
            {"id": 2, "type": "ImageScale", "pos": [360, 0], "size": [315, 130], "flags": {},
             "order": 1, "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
             "properties": {"Node name for S&R": "ImageScale"}, "title": "Resize",
             "widgets_values": ["bilinear", width, height, "disabled"]},
            {"id": 3, "type": "SaveImage", "pos": [720, 0], "size": [315, 270], "flags": {},
             "order": 2, "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [], "properties": {}, "widgets_values": [prefix]},
            {"id": 4, "type": "Note", "pos": [0, 360], "size": [300, 100], "flags": {},
             "order": 3, "mode": 0, "inputs": [], "outputs": [], "properties": {},
             "widgets_values": ["Resizes the input image."]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


@pytest.fixture(scope="module")
def server(comfy):
    """The session's ComfyServer (tests/host/conftest.py)."""
    return comfy.server


@pytest.fixture
def red_png(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 10, 10)).save(path)
    return path


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def cli(*args, timeout=CLI_TIMEOUT):
    return subprocess.run([sys.executable, "-m", "comfyui_inverse", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_run_ui_workflow_uploads_image_applies_set_and_saves(server, tmp_path, red_png):
    workflow = write_json(tmp_path / "scale.json", ui_scale_workflow())
    out = tmp_path / "out"
    result = cli("run", workflow, "--server", server.url, "--image", red_png,
                 "--set", "Resize.width=80", "--set", "SaveImage.filename_prefix=\"set_prefix\"",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["set_prefix_00001_.png"], result.stderr
    with Image.open(files[0]) as image:
        assert image.size == (80, 48)  # width from --set, height from the workflow
        r, g, b = image.convert("RGB").getpixel((40, 24))
    assert r > 200 and g < 30 and b < 30  # the uploaded image, not the workflow's example.png
    assert str(files[0]) in result.stdout
    assert "running node 2 (Resize)" in result.stderr  # live progress from the websocket


def test_convert_matches_the_library_and_api_prompts_run(server, tmp_path, red_png):
    ui = ui_scale_workflow(width=32, height=24, prefix="api_run")
    ui_path = write_json(tmp_path / "scale.json", ui)
    api_path = tmp_path / "scale.api.json"
    result = cli("convert", ui_path, "--server", server.url, "-o", api_path)
    assert result.returncode == 0, result.stderr
    api = json.loads(api_path.read_text())
    assert api == ui_to_api(ui, server.client.object_info())
    assert set(api) == {"1", "2", "3"}  # the Note is gone
    result = cli("run", api_path, "--server", server.url, "--image", red_png, "--out",
                 tmp_path / "out", "--quiet")
    assert result.returncode == 0, result.stderr
    [saved] = (tmp_path / "out").glob("api_run_*.png")
    with Image.open(saved) as image:
        assert image.size == (32, 24)


def test_unknown_node_type_exits_nonzero_naming_it(server, tmp_path):
    broken = ui_scale_workflow()
    broken["nodes"][1]["type"] = "NoSuchResizeNode"
    result = cli("run", write_json(tmp_path / "broken.json", broken), "--server", server.url,
                 "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "node 2" in result.stderr and "NoSuchResizeNode" in result.stderr
    assert "install the pack" in result.stderr
    assert not (tmp_path / "out").exists()


def test_validation_error_names_the_node(server, tmp_path):
    # No --image: the workflow's own file name is not in the server's input folder.
    workflow = ui_scale_workflow()
    workflow["nodes"][0]["widgets_values"][0] = "not_uploaded_anywhere.png"
    result = cli("run", write_json(tmp_path / "wf.json", workflow), "--server",
                 server.url, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "rejected the prompt" in result.stderr
    assert "node 1 (LoadImage" in result.stderr
    assert "not_uploaded_anywhere.png" in result.stderr


def test_execution_error_exits_nonzero_with_the_node_message(server, tmp_path):
    # Put straight into the server's input folder: --image would refuse it before the run.
    (server.input_dir / "corrupt_runner_test.png").write_bytes(b"this is not an image")
    workflow = ui_scale_workflow()
    workflow["nodes"][0]["widgets_values"][0] = "corrupt_runner_test.png"
    result = cli("run", write_json(tmp_path / "wf.json", workflow), "--server", server.url,
                 "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "node 1 (LoadImage) failed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_set_lists_the_node_inputs(server, tmp_path, red_png):
    result = cli("run", write_json(tmp_path / "wf.json", ui_scale_workflow()), "--server",
                 server.url, "--image", red_png, "--set", "Resize.widht=3", "--out",
                 tmp_path / "out")
    assert result.returncode == 1
    assert "no input 'widht'" in result.stderr and "width" in result.stderr


@pytest.mark.slow
def test_cli_starts_and_stops_its_own_server(tmp_path, red_png):
    find_comfy_root()  # ComfyNotFoundError says how to install it
    base = tmp_path / "base"
    result = cli("run", write_json(tmp_path / "wf.json", ui_scale_workflow(prefix="own")),
                 "--base-dir", base, "--image", red_png, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "ComfyUI ready" in result.stderr
    [saved] = (tmp_path / "out").glob("own_*.png")
    with Image.open(saved) as image:
        assert image.size == (64, 48)
    # The server is gone: its log ends with the shutdown, and the base dir has the pack link.
    assert (base / "custom_nodes" / "comfyui-inverse").resolve() == \
        Path(__file__).resolve().parents[2]


def test_pack_import_failure_is_detected(tmp_path):
    server = ComfyServer(base_dir=tmp_path, log_path=tmp_path / "fake.log")
    from comfyui_inverse.runner.server import prepare_base_dir

    prepare_base_dir(tmp_path)
    pack = tmp_path / "custom_nodes" / "comfyui-inverse"
    (tmp_path / "fake.log").write_text(
        "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
        "ImportError: cannot import name 'Foo' from 'nodes'\n"
        f"Cannot import {pack} module for custom nodes: cannot import name 'Foo'\n"
        "Import times for custom nodes:\n"
        f"   0.1 seconds (IMPORT FAILED): {pack}\n")
    error = server.pack_import_error()
    assert error and "ImportError: cannot import name 'Foo'" in error
    with pytest.raises(ComfyStartError, match="failed to import"):
        server.check_pack_imported()
    # Another node's failure (with our name elsewhere in its path) is not ours.
    (tmp_path / "fake.log").write_text(
        "Cannot import /x/comfyui-inverse/ComfyUI/comfy_extras/nodes_audio.py module for custom "
        "nodes: No module named 'torchaudio'\nImport times for custom nodes:\n"
        f"   0.0 seconds: {pack}\n")
    assert server.pack_import_error() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_real_comfyui_the_cli_started(tmp_path, red_png):
    """The unit tests check the cancel requests against a stand-in; this checks the real server goes."""
    import os
    import signal
    import time

    find_comfy_root()
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfyui_inverse", "run", write_json(tmp_path / "wf.json", ui_scale_workflow()),
             "--base-dir", tmp_path / "base", "--image", red_png, "--out", tmp_path / "out"],
            stdout=subprocess.DEVNULL, stderr=err)
    server_pid = None

    def server_gone() -> bool:
        stat = Path(f"/proc/{server_pid}/stat")
        return not stat.exists() or stat.read_text().split()[2] == "Z"  # a zombie is gone too

    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while "ComfyUI ready" not in err_path.read_text():
            assert process.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "ComfyUI did not start"
            time.sleep(0.2)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) == 1, children
        server_pid = int(children[0])
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        gone = server_gone()
        assert process.returncode == 128 + signal.SIGTERM, err_path.read_text()
        assert "Traceback" not in err_path.read_text()
        assert gone, "the ComfyUI the runner started outlived it"
    finally:  # never leave a server behind, even when the test fails
        if process.poll() is None:
            process.kill()
        if server_pid is not None and not server_gone():
            os.kill(server_pid, signal.SIGKILL)
