"""The real server starts with this pack loaded, and every node the pack registers is listed
with an `inverse/...` category."""

import pytest

pytestmark = pytest.mark.host

PACK_DIR_NAME = "comfyui-inverse"  # the conftest links the pack under this name


def pack_nodes(object_info: dict) -> dict:
    """The /object_info entries ComfyUI attributes to this pack's folder in custom_nodes/."""
    return {name: info for name, info in object_info.items()
            if info.get("python_module") == f"custom_nodes.{PACK_DIR_NAME}"}


def test_server_is_up_with_cpu_device(comfy):
    stats = comfy.http.system_stats()
    assert [d["type"] for d in stats["devices"]] == ["cpu"]


def test_pack_imported_without_errors(comfy):
    pack_path = str(comfy.base_dir / "custom_nodes" / PACK_DIR_NAME)
    pack_lines = [line for line in comfy.log_text().splitlines() if pack_path in line]
    assert not [line for line in pack_lines if "IMPORT FAILED" in line or "Cannot import" in line]
    # ComfyUI's "Import times for custom nodes" list names every pack it loaded.
    assert any("seconds" in line for line in pack_lines), f"{pack_path} not in the import times"
    assert comfy.server.pack_import_error() is None


def test_object_info_lists_pack_nodes_under_inverse_category(comfy):
    info = comfy.object_info()
    ours = pack_nodes(info)
    assert ours, ("no /object_info entry has python_module "
                  f"'custom_nodes.{PACK_DIR_NAME}'; stock nodes seen: {len(info)}")
    wrong = {name: n["category"] for name, n in ours.items()
             if not n["category"].startswith("inverse/")}
    assert not wrong, f"pack nodes outside the inverse/ category: {wrong}"
    # Stock nodes are attributed elsewhere (the filter is not vacuous).
    assert info["KSampler"]["python_module"] == "nodes"


def test_each_pack_node_answers_object_info_by_name(comfy):
    ours = pack_nodes(comfy.object_info())
    for name, listed in ours.items():
        single = comfy.object_info(name)
        assert single[name]["input"] == listed["input"]
        assert single[name]["output"] == listed["output"]
        assert listed["display_name"], f"{name} has no display name"
