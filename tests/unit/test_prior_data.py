"""scripts/prior_data.py's held-out selection: only files that are byte-identical to the split's."""

import json

from comfyui_inverse.scripts import prior_data


def test_heldout_keeps_only_unchanged_installed_files(tmp_path, monkeypatch):
    files = {name: tmp_path / name for name in ("same.png", "changed.png", "gone.png", "pack.png")}
    for name, path in files.items():
        path.write_bytes(name.encode())
    split = {"test": [{"package": "media", "version": "1", "file": name} for name in
                      ("same.png", "changed.png", "gone.png")]
             + [{"package": prior_data.PACK, "version": "repo", "file": "pack.png"}]}
    hashes = {prior_data.entry_key(e): prior_data.file_sha256(files[e["file"]]) for e in split["test"]}
    files["changed.png"].write_bytes(b"re-encoded by a newer package")
    files["gone.png"].unlink()
    monkeypatch.setattr(prior_data, "path_of", lambda e: files[e["file"]])
    monkeypatch.setattr(prior_data, "_version", lambda package: "2")

    used, left_out = prior_data.heldout(split, hashes)
    assert [e["file"] for e in used] == ["same.png"]
    assert left_out == {"media/changed.png": "changed (media 2, split: 1)",
                        "media/gone.png": "not installed (media 2, split: 1)"}
    used, _ = prior_data.heldout(split, hashes, include_pack_inputs=True)
    assert [e["file"] for e in used] == ["same.png", "pack.png"]


def test_committed_hashes_cover_the_heldout_side_of_the_split():
    split = prior_data.read_split()
    hashes = json.loads(prior_data.HELDOUT_HASHES.read_text())["sha256"]
    assert sorted(hashes) == sorted(prior_data.entry_key(e) for e in split["test"])
    train = {prior_data.entry_key(e) for e in split["train"]}
    assert not train & set(hashes)
