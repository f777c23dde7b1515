"""UI-format workflow -> API prompt conversion (runner/workflow_api.py), against a hand-made
/object_info, plus the CLI's pure prompt-editing helpers."""

import copy

import pytest

from comfyui_inverse.runner.cli import CliError, apply_ckpt, apply_set, find_nodes, parse_value
from comfyui_inverse.runner.workflow_api import (
    WorkflowConversionError,
    is_api_prompt,
    is_ui_workflow,
    ui_to_api,
)

# Shapes as served by ComfyUI 0.3.75's GET /object_info (V1 list combos and V3 "COMBO" specs).
OBJECT_INFO = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["tiny.safetensors", "other.safetensors"], {}]}},
        "input_order": {"required": ["ckpt_name"]},
        "output": ["MODEL", "CLIP", "VAE"],
    },
    "UNETLoader": {
        "input": {"required": {"unet_name": [["flow.safetensors"]],
                               "weight_dtype": [["default", "fp8_e4m3fn"]]}},
        "output": ["MODEL"],
    },
    "KSampler": {
        "input": {"required": {
            "model": ["MODEL"],
            "seed": ["INT", {"default": 0, "control_after_generate": True}],
            "steps": ["INT", {"default": 20}],
            "cfg": ["FLOAT", {"default": 8.0}],
            "sampler_name": [["euler", "ddim"]],
            "scheduler": ["COMBO", {"options": ["normal", "karras"]}],
            "positive": ["CONDITIONING"],
            "negative": ["CONDITIONING"],
            "latent_image": ["LATENT"],
            "denoise": ["FLOAT", {"default": 1.0}],
        }},
        "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name",
                                     "scheduler", "positive", "negative", "latent_image",
                                     "denoise"]},
        "output": ["LATENT"],
    },
    # An older schema: no control_after_generate flag, the frontend keyed on the name.
    "OldNoise": {"input": {"required": {"noise_seed": ["INT", {}], "strength": ["FLOAT", {}]}},
                 "output": ["NOISE"]},
    "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                  "output": ["IMAGE", "MASK"]},
    # input_order differs from the dict order on purpose; optional inputs come last.
    "Blend": {
        "input": {"required": {"factor": ["FLOAT", {}], "image1": ["IMAGE"], "image2": ["IMAGE"],
                               "mode": [["normal", "multiply"]]},
                  "optional": {"gain": ["FLOAT", {}], "mask": ["MASK"]}},
        "input_order": {"required": ["image1", "image2", "mode", "factor"],
                        "optional": ["mask", "gain"]},
        "output": ["IMAGE"],
    },
    "Sharpen": {"input": {"required": {"image": ["IMAGE"], "amount": ["FLOAT", {}],
                                       "weights": ["FLOATS", {"forceInput": True}]}},
                "output": ["IMAGE"]},
    "ImageToMask": {"input": {"required": {"image": ["IMAGE"], "channel": [["red", "green"]]}},
                    "output": ["MASK"]},
    "SaveImage": {"input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]},
                            "hidden": {"prompt": "PROMPT"}},
                  "output": []},
}


def node(node_id, kind, widgets=None, inputs=(), outputs=(), mode=0, title=None, **extra):
    data = {"id": node_id, "type": kind, "pos": [0, 0], "size": [200, 100], "flags": {},
            "order": node_id, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "properties": {}, "widgets_values": widgets, **extra}
    if title:
        data["title"] = title
    return data


def inp(name, kind, link=None, widget=False):
    data = {"name": name, "type": kind, "link": link}
    if widget:
        data["widget"] = {"name": name}
    return data


def out(name, kind, links=()):
    return {"name": name, "type": kind, "links": list(links)}


def workflow(nodes, links):
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {},
            "version": 0.4}


def image_chain():
    """LoadImage(1) -> Sharpen(2) -> SaveImage(3), plus a Note(4) and a MarkdownNote(5)."""
    return workflow(
        [node(1, "LoadImage", ["a.png", "image"], outputs=[out("IMAGE", "IMAGE", [1])]),
         node(2, "Sharpen", [0.5], inputs=[inp("image", "IMAGE", 1)],
              outputs=[out("IMAGE", "IMAGE", [2])], title="Sharpen it"),
         node(3, "SaveImage", ["result"], inputs=[inp("images", "IMAGE", 2)]),
         node(4, "Note", ["explains the workflow"]),
         node(5, "MarkdownNote", ["# more"])],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    )


def test_links_widgets_and_notes_dropped():
    warnings = []
    prompt = ui_to_api(image_chain(), OBJECT_INFO, warnings)
    assert warnings == []  # LoadImage's upload-button value "image" is accounted for
    assert prompt == {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"},
              "_meta": {"title": "LoadImage"}},
        "2": {"class_type": "Sharpen", "inputs": {"amount": 0.5, "image": ["1", 0]},
              "_meta": {"title": "Sharpen it"}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "result",
                                                    "images": ["2", 0]},
              "_meta": {"title": "SaveImage"}},
    }


def test_widget_order_follows_input_order_required_then_optional():
    wf = workflow([node(7, "Blend", ["multiply", 0.25, 2.0],
                        inputs=[inp("image1", "IMAGE"), inp("image2", "IMAGE")])], [])
    assert ui_to_api(wf, OBJECT_INFO)["7"]["inputs"] == {"mode": "multiply", "factor": 0.25,
                                                         "gain": 2.0}


def test_control_after_generate_value_is_skipped():
    wf = workflow([node(3, "KSampler", [1234, "randomize", 7, 4.5, "ddim", "karras", 0.8])], [])
    assert ui_to_api(wf, OBJECT_INFO)["3"]["inputs"] == {
        "seed": 1234, "steps": 7, "cfg": 4.5, "sampler_name": "ddim", "scheduler": "karras",
        "denoise": 0.8}


def test_control_value_skipped_only_when_present():
    # Saved without the control value (API-like exports): nothing may be skipped.
    wf = workflow([node(3, "KSampler", [1234, 7, 4.5, "ddim", "karras", 0.8])], [])
    assert ui_to_api(wf, OBJECT_INFO)["3"]["inputs"]["steps"] == 7


@pytest.mark.parametrize("values, expected", [([99, "fixed", 0.5], {"noise_seed": 99, "strength": 0.5}),
                                              ([99, 0.5], {"noise_seed": 99, "strength": 0.5})])
def test_legacy_seed_names_get_a_control_value(values, expected):
    wf = workflow([node(1, "OldNoise", values)], [])
    assert ui_to_api(wf, OBJECT_INFO)["1"]["inputs"] == expected


def test_reroutes_are_followed():
    wf = workflow(
        [node(1, "LoadImage", ["a.png", "image"], outputs=[out("IMAGE", "IMAGE", [1])]),
         node(10, "Reroute", None, inputs=[inp("", "*", 1)], outputs=[out("", "IMAGE", [2])]),
         node(11, "Reroute", None, inputs=[inp("", "*", 2)], outputs=[out("", "IMAGE", [3])]),
         node(3, "SaveImage", ["x"], inputs=[inp("images", "IMAGE", 3)])],
        [[1, 1, 0, 10, 0, "IMAGE"], [2, 10, 0, 11, 0, "*"], [3, 11, 0, 3, 0, "IMAGE"]],
    )
    prompt = ui_to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["images"] == ["1", 0]


def test_widget_converted_to_input_takes_the_link():
    # A float from another node drives KSampler.cfg; the stale widget value must not win.
    wf = workflow(
        [node(1, "CheckpointLoaderSimple", ["tiny.safetensors"],
              outputs=[out("MODEL", "MODEL", [1]), out("CLIP", "CLIP"), out("VAE", "VAE")]),
         node(2, "OldNoise", [5, 0.5], outputs=[out("NOISE", "NOISE")]),
         node(3, "KSampler", [1, "fixed", 7, 4.5, "euler", "normal", 1.0],
              inputs=[inp("model", "MODEL", 1), inp("cfg", "FLOAT", 2, widget=True),
                      inp("steps", "INT", None, widget=True)])],
        [[1, 1, 0, 3, 0, "MODEL"], [2, 2, 0, 3, 1, "FLOAT"]],
    )
    inputs = ui_to_api(wf, OBJECT_INFO)["3"]["inputs"]
    assert inputs["cfg"] == ["2", 0]
    assert inputs["steps"] == 7  # converted but unlinked: the widget value stays
    assert inputs["model"] == ["1", 0]


def test_primitive_node_value_becomes_a_literal():
    wf = workflow(
        [node(5, "PrimitiveNode", [42, "fixed"],
              outputs=[{"name": "INT", "type": "INT", "widget": {"name": "steps"}, "links": [1]}]),
         node(3, "KSampler", [1, "fixed", 7, 4.5, "euler", "normal", 1.0],
              inputs=[inp("steps", "INT", 1, widget=True)])],
        [[1, 5, 0, 3, 0, "INT"]],
    )
    prompt = ui_to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"3"}
    assert prompt["3"]["inputs"]["steps"] == 42


def test_forced_inputs_are_not_widgets():
    wf = workflow([node(2, "Sharpen", [0.75])], [])
    assert ui_to_api(wf, OBJECT_INFO)["2"]["inputs"] == {"amount": 0.75}


def test_muted_node_is_left_out_and_its_consumers_lose_the_input():
    wf = image_chain()
    wf["nodes"][1]["mode"] = 2
    warnings = []
    prompt = ui_to_api(wf, OBJECT_INFO, warnings)
    assert set(prompt) == {"1", "3"}
    assert "images" not in prompt["3"]["inputs"]
    assert any("images" in w and "node 3" in w for w in warnings)


def test_bypassed_node_passes_its_matching_input_through():
    wf = image_chain()
    wf["nodes"][1]["mode"] = 4
    prompt = ui_to_api(wf, OBJECT_INFO)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"]["images"] == ["1", 0]


def test_bypassed_node_without_a_matching_type_drops_the_link():
    # ImageToMask outputs a MASK and only takes an IMAGE: nothing can pass through.
    wf = workflow(
        [node(1, "LoadImage", ["a.png", "image"], outputs=[out("IMAGE", "IMAGE", [1])]),
         node(2, "ImageToMask", ["red"], inputs=[inp("image", "IMAGE", 1)],
              outputs=[out("MASK", "MASK", [2])], mode=4),
         node(7, "Blend", ["normal", 0.5, 1.0],
              inputs=[inp("image1", "IMAGE", None), inp("image2", "IMAGE", None),
                      inp("mask", "MASK", 2)])],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 7, 2, "MASK"]],
    )
    warnings = []
    assert "mask" not in ui_to_api(wf, OBJECT_INFO, warnings)["7"]["inputs"]
    assert warnings


def test_unknown_node_type_names_the_node_and_the_fix():
    wf = image_chain()
    wf["nodes"][1]["type"] = "SuperSharpen"
    wf["nodes"][1]["properties"] = {"cnr_id": "some-pack"}
    with pytest.raises(WorkflowConversionError) as error:
        ui_to_api(wf, OBJECT_INFO)
    message = str(error.value)
    assert "node 2" in message and "SuperSharpen" in message
    assert "install the pack" in message and "some-pack" in message


def test_unknown_type_in_a_muted_node_is_no_error():
    wf = image_chain()
    wf["nodes"][1].update(type="SuperSharpen", mode=2)
    assert set(ui_to_api(wf, OBJECT_INFO)) == {"1", "3"}


def test_subgraphs_are_refused_clearly():
    wf = image_chain()
    wf["definitions"] = {"subgraphs": [{"id": "3f2a-uuid", "nodes": [], "links": []}]}
    wf["nodes"][1]["type"] = "3f2a-uuid"
    with pytest.raises(WorkflowConversionError, match="Unpack Subgraph"):
        ui_to_api(wf, OBJECT_INFO)


def test_link_objects_of_the_newer_schema():
    wf = image_chain()
    wf["links"] = [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3],
                    "target_slot": l[4], "type": l[5]} for l in wf["links"]]
    assert ui_to_api(wf, OBJECT_INFO) == ui_to_api(image_chain(), OBJECT_INFO)


def test_leftover_widget_values_are_reported():
    wf = workflow([node(2, "Sharpen", [0.75, "extra"])], [])
    warnings = []
    ui_to_api(wf, OBJECT_INFO, warnings)
    assert any("left over" in w for w in warnings)


def test_format_detection():
    wf = image_chain()
    prompt = ui_to_api(wf, OBJECT_INFO)
    assert is_ui_workflow(wf) and not is_api_prompt(wf)
    assert is_api_prompt(prompt) and not is_ui_workflow(prompt)
    with pytest.raises(WorkflowConversionError, match="not a UI-format"):
        ui_to_api(prompt, OBJECT_INFO)


# --- CLI helpers -------------------------------------------------------------------------

def test_find_nodes_by_id_title_then_type():
    prompt = ui_to_api(image_chain(), OBJECT_INFO)
    assert find_nodes(prompt, "2") == ["2"]
    assert find_nodes(prompt, "Sharpen it") == ["2"]
    assert find_nodes(prompt, "SaveImage") == ["3"]
    assert find_nodes(prompt, "Nothing") == []


def test_apply_set_parses_json_values_and_validates_inputs():
    prompt = ui_to_api(image_chain(), OBJECT_INFO)
    apply_set(prompt, "Sharpen it.amount=1.5", OBJECT_INFO)
    apply_set(prompt, "3.filename_prefix=out/run", OBJECT_INFO)
    assert prompt["2"]["inputs"]["amount"] == 1.5
    assert prompt["3"]["inputs"]["filename_prefix"] == "out/run"
    assert parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    with pytest.raises(CliError, match="no input 'amout'"):
        apply_set(prompt, "Sharpen.amout=1", OBJECT_INFO)
    with pytest.raises(CliError, match="no node"):
        apply_set(prompt, "Blur.amount=1", OBJECT_INFO)
    with pytest.raises(CliError, match="NODE.INPUT=VALUE"):
        apply_set(prompt, "amount=1", OBJECT_INFO)


def test_apply_ckpt_sets_loaders_that_list_the_file():
    wf = workflow([node(1, "CheckpointLoaderSimple", ["tiny.safetensors"]),
                   node(2, "UNETLoader", ["flow.safetensors", "default"])], [])
    prompt = ui_to_api(wf, OBJECT_INFO)
    before = copy.deepcopy(prompt)
    assert apply_ckpt(prompt, "other.safetensors", OBJECT_INFO) == ["1.ckpt_name"]
    assert prompt["1"]["inputs"]["ckpt_name"] == "other.safetensors"
    assert prompt["2"] == before["2"]
    with pytest.raises(CliError, match="flow.safetensors"):
        apply_ckpt(prompt, "missing.safetensors", OBJECT_INFO)
