"""Real-browser check: the stock ComfyUI frontend, served by a real server, in headless Chromium
(Debian's package, driven by Playwright) loads every UI workflow of the pack without missing
nodes or errors; its own "Export (API)" (app.graphToPrompt) agrees with runner/workflow_api.py; and
the pack's workflows/ folder shows up in the template browser. Screenshots of the loaded graphs
go to test-artifacts/browser/ (not committed)."""

import importlib.util
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from comfyui_inverse.runner.workflow_api import is_ui_workflow, schema_inputs, ui_to_api
from comfyui_inverse.runner.server import pack_link
from comfyui_inverse.tests.host.workflow_models import install_under_names, named_files

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
INPUTS = WORKFLOWS / "inputs"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("INVERSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Server-side user settings: no first-run template dialog, and text drawn at any zoom (the
# screenshots show whole graphs, zoomed out). The missing-model warning stays on: the files the
# workflows name are installed (workflow_files), so no warning may appear on load.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": True,
            "LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.Minimap.Visible": False}
PAGE_TIMEOUT_MS = 120_000


def pack_ui_workflows() -> list[Path]:
    """UI-format JSON files directly in workflows/ (API twins are skipped)."""
    files = []
    for path in sorted(WORKFLOWS.glob("*.json")):
        if path.name.endswith(".api.json"):
            continue
        try:
            if is_ui_workflow(json.loads(path.read_text())):
                files.append(path)
        except ValueError:
            files.append(path)  # broken JSON must fail the test, not vanish from it
    return files


def _node(node_id, kind, pos, widgets, inputs=(), outputs=(), mode=0, title=None):
    node = {"id": node_id, "type": kind, "pos": pos, "size": [300, 120], "flags": {},
            "order": node_id, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "properties": {"Node name for S&R": kind}}
    if widgets is not None:  # the frontend's schema rejects "widgets_values": null
        node["widgets_values"] = widgets
    if title:
        node["title"] = title
    return node


def stock_workflow() -> dict:
    """Stock nodes only, exercising what the converter must get right: a seed with
    control_after_generate, a widget driven by a PrimitiveNode, a Reroute, a bypassed node,
    LoadImage's upload widget and a Note."""
    io = lambda name, kind, link=None, **kw: {"name": name, "type": kind, "link": link, **kw}
    out = lambda name, kind, links: {"name": name, "type": kind, "links": links}
    nodes = [
        _node(1, "CheckpointLoaderSimple", [0, 0], ["v1-5-pruned-emaonly.safetensors"],
              outputs=[out("MODEL", "MODEL", [1]), out("CLIP", "CLIP", [2, 3]),
                       out("VAE", "VAE", [8])]),
        _node(2, "CLIPTextEncode", [350, 0], ["a sharp photo"], [io("clip", "CLIP", 2)],
              [out("CONDITIONING", "CONDITIONING", [4])], title="Positive"),
        _node(3, "CLIPTextEncode", [350, 200], ["blurry"], [io("clip", "CLIP", 3)],
              [out("CONDITIONING", "CONDITIONING", [5])], title="Negative"),
        _node(4, "EmptyLatentImage", [350, 400], [64, 64, 1],
              outputs=[out("LATENT", "LATENT", [6])]),
        _node(5, "KSampler", [700, 0], [1234, "randomize", 20, 6.5, "euler", "normal", 1.0],
              [io("model", "MODEL", 1), io("positive", "CONDITIONING", 4),
               io("negative", "CONDITIONING", 5), io("latent_image", "LATENT", 6),
               io("steps", "INT", 10, widget={"name": "steps"})],
              [out("LATENT", "LATENT", [7])]),
        _node(6, "VAEDecode", [1050, 0], [], [io("samples", "LATENT", 7), io("vae", "VAE", 8)],
              [out("IMAGE", "IMAGE", [9])]),
        _node(7, "Reroute", [1250, 0], None, [io("", "*", 9)], [out("", "IMAGE", [11])]),
        _node(8, "ImageScaleBy", [1400, 0], ["bicubic", 2.0], [io("image", "IMAGE", 11)],
              [out("IMAGE", "IMAGE", [12])], mode=4),
        _node(9, "SaveImage", [1750, 0], ["inverse_stock"], [io("images", "IMAGE", 12)]),
        _node(10, "PrimitiveNode", [350, 600], [8, "fixed"],
              outputs=[{"name": "INT", "type": "INT", "links": [10],
                        "widget": {"name": "steps"}}], title="steps"),
        _node(11, "LoadImage", [0, 400], ["inverse_astronaut_128.png", "image"],
              outputs=[out("IMAGE", "IMAGE", []), out("MASK", "MASK", [])]),
        _node(12, "Note", [0, 700], ["Stock nodes only: the browser-test fixture."]),
    ]
    links = [[1, 1, 0, 5, 0, "MODEL"], [2, 1, 1, 2, 0, "CLIP"], [3, 1, 1, 3, 0, "CLIP"],
             [4, 2, 0, 5, 1, "CONDITIONING"], [5, 3, 0, 5, 2, "CONDITIONING"],
             [6, 4, 0, 5, 3, "LATENT"], [7, 5, 0, 6, 0, "LATENT"], [8, 1, 2, 6, 1, "VAE"],
             [9, 6, 0, 7, 0, "IMAGE"], [10, 10, 0, 5, 4, "INT"], [11, 7, 0, 8, 0, "IMAGE"],
             [12, 8, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 12, "last_link_id": 12, "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


CASES = [pytest.param(None, id="stock-fixture")] + [
    pytest.param(path, id=path.stem) for path in pack_ui_workflows()]


@pytest.fixture(scope="module")
def server(comfy):
    """The session's ComfyServer (tests/host/conftest.py), with UI settings for a clean page."""
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        pytest.fail("the stock frontend (pip package comfyui-frontend-package, in ComfyUI's "
                    "requirements.txt) is not installed: run scripts/setup.sh", pytrace=False)
    request = urllib.request.Request(
        comfy.url + "/api/settings", data=json.dumps(SETTINGS).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    return comfy.server


@pytest.fixture(scope="module")
def object_info(server):
    return server.client.object_info()


@pytest.fixture(scope="module")
def workflow_files(comfy, tiny_models, object_info):
    """The model files (tiny stand-ins under the workflows' own names) and the input images that the
    workflows and the stock fixture name, installed before the page loads: the frontend checks
    these names against the lists it fetched, and newer frontends (1.4x) flag every missing one,
    with or without properties.models. Removed at the end of the module."""
    models, images = set(), set()
    for workflow in [stock_workflow()] + [json.loads(p.read_text()) for p in pack_ui_workflows()]:
        more_models, more_images = named_files(workflow, object_info)
        models |= more_models
        images |= more_images
    absent = sorted(name for name in images if not (INPUTS / name).is_file())
    assert not absent, f"input images named by the workflows but not in workflows/inputs/: {absent}"
    for name in sorted(images):
        comfy.upload_image(INPUTS / name, name=name)
    made = install_under_names(comfy.models_dir, tiny_models, models)
    try:
        yield {"models": models, "images": images}
    finally:
        for path in made:
            path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def page(server, workflow_files):
    if os.environ.get("INVERSE_SKIP_BROWSER") == "1":
        pytest.skip("INVERSE_SKIP_BROWSER=1")
    if not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None:
        pytest.fail(f"the browser test needs {CHROMIUM} and the playwright package: run "
                    "scripts/install_browser.sh (or set INVERSE_SKIP_BROWSER=1)", pytrace=False)
    from playwright import sync_api
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1200})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(server.url + "/", wait_until="load")
            page.wait_for_function(
                "() => window.app && window.app.graph && window.app.extensionManager"
                " && window.LiteGraph && Object.keys(LiteGraph.registered_node_types).length > 50")
            yield page
        finally:
            (ARTIFACTS / "console.log").write_text("\n".join(console) + "\n")
            browser.close()


LOAD_JS = """async ([workflow, name]) => {
    await app.loadGraphData(workflow, true, true, name);
    const nodes = app.graph.nodes.map(n => ({
        id: n.id, type: n.type, has_errors: !!n.has_errors,
        registered: !!LiteGraph.registered_node_types[n.type]}));
    const prompt = (await app.graphToPrompt()).output;
    return {nodes, prompt};
}"""

# Dialogs, and the error overlay of newer frontends (1.4x: missing models/inputs, failed runs).
VISIBLE_DIALOGS_JS = """() => Array.from(document.querySelectorAll(
        '[role=dialog], .p-dialog, [data-testid=error-overlay]'))
    .filter(d => d.offsetParent !== null || d.getClientRects().length)
    .map(d => d.innerText.trim().slice(0, 500))"""

# Warnings too: e.g. "Invalid workflow against zod schema" is a warning toast.
PROBLEM_TOASTS_JS = """() => Array.from(document.querySelectorAll(
        '.p-toast-message-error, .p-toast-message-warn'))
    .map(t => t.innerText.trim().slice(0, 500))"""


def _without_meta_and_ui_only_inputs(prompt: dict, object_info: dict) -> dict:
    """Compare on what the server executes: drop _meta (the frontend localises titles) and
    inputs that are not in the node's schema (frontend-only widgets, ignored by the server)."""
    result = {}
    for node_id, node in prompt.items():
        known = {name for name, _ in schema_inputs(object_info.get(node["class_type"], {}))}
        result[node_id] = {"class_type": node["class_type"],
                           "inputs": {k: v for k, v in node["inputs"].items() if k in known}}
    return result


@pytest.mark.parametrize("workflow_path", CASES)
def test_frontend_loads_workflow_without_errors(page, object_info, workflow_path):
    name = workflow_path.stem if workflow_path else "stock-fixture"
    workflow = json.loads(workflow_path.read_text()) if workflow_path else stock_workflow()
    assert is_ui_workflow(workflow)
    try:
        loaded = page.evaluate(LOAD_JS, [workflow, name])
        page.wait_for_timeout(400)  # dialogs and toasts open asynchronously; layout settles
        dialogs = page.evaluate(VISIBLE_DIALOGS_JS)
        toasts = page.evaluate(PROBLEM_TOASTS_JS)
        page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    finally:
        page.keyboard.press("Escape")  # close whatever opened, for the next workflow

    missing = [f"{n['id']} {n['type']}" for n in loaded["nodes"] if not n["registered"]]
    assert not missing, f"{name}: node types the frontend does not know: {missing}"
    errors = [f"{n['id']} {n['type']}" for n in loaded["nodes"] if n["has_errors"]]
    assert not errors, f"{name}: nodes flagged with errors: {errors}"
    assert not dialogs, f"{name}: dialogs opened on load: {dialogs}"
    assert not toasts, f"{name}: warnings or errors on load: {toasts}"
    assert len(loaded["nodes"]) == len(workflow["nodes"])

    ours = ui_to_api(workflow, object_info)
    assert _without_meta_and_ui_only_inputs(ours, object_info) == \
        _without_meta_and_ui_only_inputs(loaded["prompt"], object_info), \
        f"{name}: runner/workflow_api.py disagrees with the frontend's Export (API)"


def test_stock_fixture_converts_as_the_frontend_does(page, object_info):
    """Pin the tricky parts on the fixture itself, so the comparison above cannot pass
    vacuously (e.g. both sides empty)."""
    prompt = ui_to_api(stock_workflow(), object_info)
    assert prompt["5"]["inputs"]["seed"] == 1234
    assert prompt["5"]["inputs"]["steps"] == 8  # from the PrimitiveNode
    assert prompt["5"]["inputs"]["cfg"] == 6.5  # after the skipped "randomize"
    assert prompt["9"]["inputs"]["images"] == ["6", 0]  # through the Reroute and the bypass
    assert prompt["11"]["inputs"] == {"image": "inverse_astronaut_128.png"}
    assert set(prompt) == {"1", "2", "3", "4", "5", "6", "9", "11"}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_template_browser_lists_the_pack_workflows(server):
    module = pack_link(server.base_dir / "custom_nodes").name
    listing = server.client.workflow_templates()
    expected = sorted(path.stem for path in pack_ui_workflows())
    listed = sorted(listing.get(module, []))
    assert listed == expected, (
        f"/api/workflow_templates lists {listed} for {module}; the UI workflows in workflows/ "
        f"are {expected}. Every *.json directly in workflows/ becomes a template, so API twins "
        "belong in a subfolder (e.g. workflows/api/).")
    for name in listed:
        base = f"{server.url}/api/workflow_templates/{module}/{urllib.request.quote(name)}"
        status, body = _get(base + ".json")
        assert status == 200 and json.loads(body) == json.loads(
            (WORKFLOWS / f"{name}.json").read_text())
        status, _ = _get(base + ".jpg")
        assert status == 200, (f"template {name!r} has no thumbnail: the frontend shows "
                               f"workflows/{name}.jpg (JPEG, same stem as the workflow)")


RUN_METRICS_JS = """async ([photo]) => {
    app.graph.clear();
    const add = (type, pos) => {
        const node = LiteGraph.createNode(type);
        node.pos = pos;
        app.graph.add(node);
        return node;
    };
    const load = add('LoadImage', [20, 60]);
    load.widgets.find(w => w.name === 'image').value = photo;
    const op = add('InverseSuperResolution', [20, 480]);
    const degrade = add('InverseDegradeImage', [380, 60]);
    load.connect(0, degrade, 0);
    op.connect(0, degrade, 1);
    const metrics = {};
    let y = 60;
    for (const type of ['InversePSNR', 'InverseSSIM', 'InverseMeasurementConsistency']) {
        const node = add(type, [760, y]);
        y += 220;
        degrade.connect(2, node, 0);  // pseudo_inverse
        if (type === 'InverseMeasurementConsistency') degrade.connect(0, node, 1);
        else load.connect(0, node, 1);
        metrics[type] = node.id;
    }
    app.canvas.ds.offset = [120, 60];  // clear of the sidebar
    app.canvas.ds.scale = 1;
    await app.queuePrompt(0, 1);
    return metrics;
}"""

METRIC_TEXT_JS = """([ids]) => Object.fromEntries(Object.entries(ids).map(([type, id]) => {
    const node = app.graph.getNodeById(id);
    const widget = node.widgets?.find(w => w.name === 'inverse_text');
    const box = widget?.inputEl?.getBoundingClientRect();
    return [type, {value: widget ? widget.value : null,
                   shown: !!box && box.width > 20 && box.height > 10
                          && getComputedStyle(widget.inputEl).display !== 'none'}];
}))"""


def test_metric_values_stay_on_the_canvas_after_a_run(page, comfy):
    """The PSNR, SSIM and Measurement Consistency nodes show their ui text on the node (a
    read-only text box from web/comfyui_inverse.js) once the run is over."""
    import numpy as np
    rows = np.linspace(0, 1, 48)[:, None, None]
    photo = comfy.upload_image((np.broadcast_to(rows, (48, 64, 3)) * 255).astype(np.uint8),
                               name="browser_metric_photo.png")
    try:
        ids = page.evaluate(RUN_METRICS_JS, [photo])
        page.wait_for_function(
            "([ids]) => Object.values(ids).every(id => app.graph.getNodeById(id).widgets?.some("
            "w => w.name === 'inverse_text' && w.value))", arg=[ids], timeout=120_000)
        page.wait_for_timeout(1500)  # the run has ended; nothing may clear the text
        shown = page.evaluate(METRIC_TEXT_JS, [ids])
        page.screenshot(path=str(ARTIFACTS / "metrics_after_run.png"))
    finally:
        page.keyboard.press("Escape")
    assert shown["InversePSNR"]["value"].startswith("PSNR: ")
    assert shown["InverseSSIM"]["value"].startswith("SSIM: ")
    assert shown["InverseMeasurementConsistency"]["value"].startswith("‖Hx − y‖/‖y‖: ")
    assert all(item["shown"] for item in shown.values()), shown


# What the stock frontend draws, measured with its own fonts: a node title is cut ("...") when it
# is wider than the node minus two title heights (LGraphNode.drawTitleText); a group title is
# never cut, it runs on past the group's right edge (LGraphGroup.draw).
LAYOUT_JS = """() => {
    const ctx = app.canvas.ctx;
    ctx.save();
    const nodes = app.graph.nodes.map(node => {
        ctx.font = node.titleFontStyle;
        const title = String(node.getTitle() ?? '');
        return {id: node.id, type: node.type, title, width: node.size[0],
                title_width: ctx.measureText(title).width,
                room: node.size[0] - 2 * LiteGraph.NODE_TITLE_HEIGHT,
                rect: [node.pos[0], node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT,
                       node.size[0], node.size[1] + LiteGraph.NODE_TITLE_HEIGHT]};
    });
    const groups = app.graph.groups.map(group => {
        ctx.font = `${group.font_size}px ${LiteGraph.GROUP_FONT}`;
        const [x, y, w, h] = group._bounding;
        return {title: group.title, rect: [x, y, w, h], header: [x, y, w, group.titleHeight],
                title_width: ctx.measureText(group.title).width + 2 * LGraphGroup.padding};
    });
    ctx.restore();
    const sidebar = document.querySelector('.side-tool-bar-container');
    const canvas = app.canvas.canvas.getBoundingClientRect();
    // what covers the canvas's top edge: the tab bar, the floating workflow-name chip, the Run toolbar
    const covers = Array.from(document.querySelectorAll(
            '.workflow-tabs-container, [class*=breadcrumb], .actionbar, .comfyui-menu'))
        .map(el => el.getBoundingClientRect()).filter(r => r.height > 0 && r.top < 200);
    return {nodes, groups, scale: app.canvas.ds.scale, offset: [...app.canvas.ds.offset],
            sidebar_right: sidebar ? sidebar.getBoundingClientRect().right : 0,
            top: Math.max(0, ...covers.map(r => r.bottom)),
            canvas: [canvas.left, canvas.top, canvas.width, canvas.height],
            window: [window.innerWidth, window.innerHeight]};
}"""

NOTE_STYLE_JS = """() => Array.from(document.querySelectorAll('.comfy-markdown'))
    .filter(el => el.getClientRects().length)
    .map(el => { const style = getComputedStyle(el.querySelector('p, li, div') || el);
                 return {kind: el.className, font: style.fontFamily, size: parseFloat(style.fontSize)}; })"""


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.parametrize("workflow_path", [p for p in pack_ui_workflows()], ids=lambda p: p.stem)
def test_workflow_layout_is_readable_in_the_saved_view(page, workflow_path):
    """Every node title fits its node, every group title its group, no two groups overlap, and the
    view saved in the file (extra.ds, as a user opening it gets it) shows the whole graph on a
    1920×1080 screen, clear of the sidebar and the tab bar."""
    workflow = json.loads(workflow_path.read_text())
    page.set_viewport_size({"width": 1920, "height": 1080})
    try:
        page.evaluate("async ([w, name]) => { await app.loadGraphData(w, true, true, name); }",
                      [workflow, workflow_path.stem])
        page.wait_for_timeout(500)
        layout = page.evaluate(LAYOUT_JS)
        notes = page.evaluate(NOTE_STYLE_JS)
        page.screenshot(path=str(ARTIFACTS / f"saved_view_{workflow_path.stem}.png"))
    finally:
        page.keyboard.press("Escape")
        page.set_viewport_size({"width": 1920, "height": 1200})
    (ARTIFACTS / f"layout_{workflow_path.stem}.json").write_text(json.dumps(layout, indent=1, ensure_ascii=False))

    cut = [f"{n['title']!r}: {n['title_width']:.0f} px in {n['room']:.0f}" for n in layout["nodes"]
           if n["title"] and n["title_width"] > n["room"]]
    assert not cut, f"{workflow_path.stem}: node titles cut off: {cut}"
    wide = [f"{g['title']!r}: {g['title_width']:.0f} px > group {g['rect'][2]:.0f}" for g in layout["groups"]
            if g["title_width"] > g["rect"][2]]
    assert not wide, f"{workflow_path.stem}: group titles run past their group: {wide}"
    groups = layout["groups"]
    crossing = [(a["title"], b["title"]) for i, a in enumerate(groups) for b in groups[i + 1:]
                if _overlap(a["rect"], b["rect"])]
    assert not crossing, f"{workflow_path.stem}: overlapping groups: {crossing}"

    scale, (ox, oy) = layout["scale"], layout["offset"]
    rects = [n["rect"] for n in layout["nodes"]] + [g["rect"] for g in groups]
    left = min((r[0] + ox) * scale for r in rects)
    top = min((r[1] + oy) * scale for r in rects)
    right = max((r[0] + r[2] + ox) * scale for r in rects)
    bottom = max((r[1] + r[3] + oy) * scale for r in rects)
    width, height = layout["window"]
    assert left >= layout["sidebar_right"] and top >= layout["top"], (
        f"{workflow_path.stem}: the saved view hides the graph's left/top edge ({left:.0f}, {top:.0f}) under "
        f"the sidebar ({layout['sidebar_right']:.0f}) or tab bar ({layout['top']:.0f})")
    assert right <= width and bottom <= height, (
        f"{workflow_path.stem}: the saved view cuts the graph at ({right:.0f}, {bottom:.0f}) on {width}×{height}")
    # Proportional text (MarkdownNote), at the size the user's "Textarea widget font size" setting gives.
    assert notes and all("mono" not in n["font"].lower() for n in notes), (
        f"{workflow_path.stem}: the Note is in a monospace font: {notes}")


CLOSE_DIALOGS_JS = """() => document.querySelectorAll('[role=dialog] button').forEach(b => {
    if (/close/i.test(b.getAttribute('aria-label') || '') || b.querySelector('.pi-times, [class*=lucide--x]'))
        b.click(); })"""


def _template_titles_in_the_dialog(page, module: str) -> list[str]:
    """Open the stock template browser, pick the pack's entry under Extensions, and read the card
    titles in the order shown (default sort)."""
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.locator("[role=dialog] nav [role=button]", has_text=module).first.click()
    page.wait_for_timeout(1500)
    return page.evaluate("""() => Array.from(document.querySelectorAll('[role=dialog] main h3, '
        + '[role=dialog] main [class*=line-clamp], [role=dialog] main p, [role=dialog] main span'))
        .map(el => el.innerText.trim()).filter(Boolean)""")


def test_template_browser_shows_human_titles_in_order(page, server):
    """The frontend (1.32) titles a custom pack's template with its file name: the names are short
    sentences (no snake_case), and the pack's extension lists them in file-name order."""
    module = pack_link(server.base_dir / "custom_nodes").name
    names = [path.stem for path in pack_ui_workflows()]
    assert all(re.fullmatch(r"\d\d [A-Z][\w ,.()]+", name) and "_" not in name and len(name) <= 30
               for name in names), names
    try:
        shown = _template_titles_in_the_dialog(page, module)
        page.screenshot(path=str(ARTIFACTS / "template_browser.png"))
    finally:
        page.keyboard.press("Escape")
        page.evaluate(CLOSE_DIALOGS_JS)  # Escape does not close the template browser
    first_seen = list(dict.fromkeys(text for text in shown if text in names))
    assert first_seen == names, f"template cards show {first_seen}, expected {names} in this order"


def _without_its_checkpoint(workflow: dict) -> tuple[dict, str]:
    """The workflow with its checkpoint renamed (widget and properties.models alike) to a file that
    is not installed: this module installs the shipped names (workflow_files)."""
    workflow = json.loads(json.dumps(workflow))
    node = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    old = node["widgets_values"][0]
    new = "not_installed_" + old
    node["widgets_values"][0] = new
    for model in node["properties"]["models"]:
        if model["name"] == old:
            model["name"] = new
    return workflow, new


# Where the frontend lists the missing model: 1.32 opens a dialog; 1.4x shows the error overlay,
# whose "View details" opens the Errors tab of the right side panel with one row per model.
MISSING_MODEL_SHOWN_JS = """([name]) => {
    const shown = el => el.getClientRects().length > 0;
    const dialog = Array.from(document.querySelectorAll('[role=dialog], .p-dialog'))
        .find(d => shown(d) && d.innerText.includes(name));
    if (dialog) return 'dialog';
    const overlay = document.querySelector('[data-testid=error-overlay]');
    return overlay && shown(overlay) ? 'overlay' : null;
}"""

MISSING_MODEL_ROW_JS = """([name]) => {
    const buttons = Array.from(document.querySelectorAll('[data-testid=missing-model-download]'));
    const label = Array.from(document.querySelectorAll('span, button'))
        .find(el => el.getClientRects().length && el.textContent.trim() === name);
    return {label: !!label, download: buttons.map(b => b.getAttribute('aria-label') || b.innerText)};
}"""


def test_missing_checkpoint_dialog_and_partial_run_are_visible(page, comfy):
    """Opening a workflow whose checkpoint is not installed lists it, with its download link read
    from the loader's properties.models, in the frontend's missing-model dialog (1.32) or in the
    error overlay and its Errors tab (1.4x); running it anyway shows an error toast naming the
    loader, instead of a silent partial run."""
    path = next(p for p in pack_ui_workflows() if p.name.startswith("04 "))
    workflow, name = _without_its_checkpoint(json.loads(path.read_text()))
    assert not (comfy.models_dir / "checkpoints" / name).exists()
    row = None
    try:
        page.evaluate("async ([w, n]) => { await app.loadGraphData(w, true, true, n); }", [workflow, path.stem])
        page.wait_for_function(MISSING_MODEL_SHOWN_JS, arg=[name], timeout=30_000)
        where = page.evaluate(MISSING_MODEL_SHOWN_JS, [name])
        dialog = page.evaluate(VISIBLE_DIALOGS_JS)
        if where == "overlay":
            page.click("[data-testid=error-overlay-see-errors]")
            page.wait_for_function(f"() => document.querySelector('[data-testid=missing-model-download]')"
                                   f" && document.body.innerText.includes({json.dumps(name)})", timeout=30_000)
            row = page.evaluate(MISSING_MODEL_ROW_JS, [name])
        page.screenshot(path=str(ARTIFACTS / "missing_model_dialog.png"))
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        page.evaluate("() => app.queuePrompt(0, 1)")
        page.wait_for_function("""() => Array.from(document.querySelectorAll('.p-toast-message-error'))
            .some(t => t.innerText.includes('Not run'))""", timeout=60_000)
        toasts = page.evaluate(PROBLEM_TOASTS_JS)
        page.screenshot(path=str(ARTIFACTS / "missing_model_run_toast.png"))
    finally:
        page.keyboard.press("Escape")
        page.evaluate("() => document.querySelectorAll('.p-toast-close-button, [data-testid=error-overlay-dismiss]')"
                      ".forEach(b => b.click())")
    if where == "dialog":  # the file with its Download button (the url from properties.models)
        assert any(name in text and "Download" in text for text in dialog), dialog
    else:  # the overlay names the problem; the Errors tab names the file and offers its download
        assert any("model" in text.lower() and "missing" in text.lower() for text in dialog), dialog
        assert row["label"] and any(name in label for label in row["download"]), row
    assert any("Load Checkpoint" in t and name in t for t in toasts), toasts
