"""Training and held-out images for the small learned prior (issue #12), from files already installed.

Sources (no downloads):
- ComfyUI's workflow-template media packages (`comfyui_workflow_templates_media_{api,image,other,video}`,
  installed by ComfyUI's requirements): example outputs, i.e. our users' domain.
- scikit-image's bundled natural colour photos (`skimage/data`).
- The pack's sample photo `workflows/inputs/` (derived from skimage's astronaut): test set only.

`python scripts/prior_data.py split` writes `prior/split.json` (a fixed, seeded ~85/15 split, file names
relative to their package plus the package version). `load(...)` reads the images of one side of
that split into memory as uint8 RGB arrays at a fixed short side.

Other ComfyUI versions install other versions of the media packages, which drop, add and re-encode
files (ComfyUI 0.33's packages lack 9 of the 39 held-out files and changed 4 under the same name).
`heldout()` therefore returns only the held-out files that are installed byte-identical to the ones
the split was made from (SHA-256 in `prior/heldout_sha256.json`, written by
`python scripts/prior_data.py hashes` where the split's package versions are installed), and says
why each other one is left out: an evaluation on it never sees a training image.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SPLIT_FILE = REPO / "prior" / "split.json"
HELDOUT_HASHES = REPO / "prior" / "heldout_sha256.json"
PACK = "comfyui-inverse"
SPLIT_SEED = 12
TEST_FRACTION = 0.15
MIN_SIDE = 128          # smaller files are icons, not photos
MAX_TRANSPARENT = 0.2   # RGBA files with more see-through area are graphics/cut-outs

MEDIA_PACKAGES = [f"comfyui_workflow_templates_media_{p}" for p in ("api", "image", "other", "video")]
# Natural colour photos among skimage's data (no charts, microscopy, space or greyscale images).
SKIMAGE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                  "motorcycle_left.png", "motorcycle_right.png"]
ALWAYS_TEST = {("skimage", "astronaut.png")}   # the pack's sample photo is this image
PACK_INPUTS = ["inverse_astronaut_128.png", "inverse_astronaut_512.jpg"]
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def _package_dir(name: str) -> Path:
    spec = __import__(name)
    return Path(spec.__file__).resolve().parent


def _version(name: str) -> str:
    return importlib.metadata.version(name)


def to_rgb(img: Image.Image) -> Image.Image | None:
    """RGB copy of img; None if it is mostly transparent (a graphic, not a photo)."""
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        alpha = np.asarray(img)[..., 3]
        if (alpha < 250).mean() > MAX_TRANSPARENT:
            return None
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("RGB")


def candidates() -> list[dict]:
    """Every usable image: {"package", "version", "file"} (file relative to the package dir)."""
    out = []
    for pkg in MEDIA_PACKAGES:
        root = _package_dir(pkg)
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in EXTENSIONS:
                continue
            with Image.open(path) as img:
                if min(img.size) < MIN_SIDE or to_rgb(img) is None:
                    continue
            out.append({"package": pkg, "version": _version(pkg),
                        "file": path.relative_to(root).as_posix()})
    import skimage

    for name in SKIMAGE_PHOTOS:
        out.append({"package": "skimage", "version": skimage.__version__, "file": "data/" + name})
    return out


def _content_key(entry) -> str:
    """Hash of the pixels: the template packages repeat some images under several names, and a
    duplicate must not sit on both sides of the split."""
    with Image.open(path_of(entry)) as img:
        return hashlib.sha1(np.asarray(to_rgb(img)).tobytes()).hexdigest()


def make_split() -> dict:
    entries, seen = [], set()
    for entry in candidates():
        key = _content_key(entry)
        if key in seen:
            continue
        seen.add(key)
        entries.append(entry)
    forced = [e for e in entries if (e["package"], Path(e["file"]).name) in ALWAYS_TEST]
    rest = [e for e in entries if e not in forced]
    rng = random.Random(SPLIT_SEED)
    rng.shuffle(rest)
    n_test = round(TEST_FRACTION * len(entries)) - len(forced)
    test = forced + sorted(rest[:n_test], key=lambda e: (e["package"], e["file"]))
    train = sorted(rest[n_test:], key=lambda e: (e["package"], e["file"]))
    test += [{"package": PACK, "version": "repo", "file": "workflows/inputs/" + f}
             for f in PACK_INPUTS]
    return {
        "seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "min_side": MIN_SIDE,
        "counts": {"train": len(train), "test": len(test), "unique_candidates": len(entries)},
        "note": "test holds skimage astronaut and the pack's workflows/inputs photos (the same "
                "image); duplicates (same pixels) were dropped before splitting",
        "train": train, "test": test,
    }


def path_of(entry) -> Path:
    if entry["package"] == PACK:
        return REPO / entry["file"]
    if entry["package"] == "skimage":
        import skimage

        return Path(skimage.__file__).resolve().parent / entry["file"]
    return _package_dir(entry["package"]) / entry["file"]


def read_split(path: Path = SPLIT_FILE) -> dict:
    return json.loads(Path(path).read_text())


def load_rgb(entry, short_side: int | None = None) -> np.ndarray:
    """uint8 HxWx3 array; resized (Lanczos) so its short side is short_side, if given."""
    with Image.open(path_of(entry)) as img:
        img = to_rgb(img)
    if short_side is not None:
        w, h = img.size
        s = short_side / min(w, h)
        img = img.resize((max(short_side, round(w * s)), max(short_side, round(h * s))),
                         Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The size x size centre of an HxWxC array (the held-out evaluations' crop)."""
    y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[y:y + size, x:x + size]


def load_centre_crop(entry, size: int) -> np.ndarray:
    """The entry's image with its short side resized to `size`, centre-cropped to size x size."""
    return centre_crop(load_rgb(entry, size), size)


def load(side: str, short_sides=(256,), split: dict | None = None,
         include_pack_inputs: bool = False) -> list[np.ndarray]:
    """All images of one side of the split ("train" / "test") at each short side in short_sides."""
    split = split or read_split()
    out = []
    for entry in split[side]:
        if entry["package"] == PACK and not include_pack_inputs:
            continue
        for s in short_sides:
            out.append(load_rgb(entry, s))
    return out


def entry_key(entry) -> str:
    return f"{entry['package']}/{entry['file']}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _installed_version(entry) -> str | None:
    if entry["package"] == PACK:
        return entry["version"]
    if entry["package"] == "skimage":
        import skimage

        return skimage.__version__
    try:
        return _version(entry["package"])
    except importlib.metadata.PackageNotFoundError:
        return None


def write_heldout_hashes(split: dict, path: Path = HELDOUT_HASHES) -> dict:
    """SHA-256 of every held-out file, from the package versions the split was made from."""
    wrong = sorted({f"{e['package']} {_installed_version(e)} (split: {e['version']})" for e in split["test"]
                    if _installed_version(e) != e["version"]})
    if wrong:
        raise SystemExit(f"not the split's package versions: {wrong}")
    hashes = {entry_key(e): file_sha256(path_of(e)) for e in split["test"]}
    Path(path).write_text(json.dumps({"note": "SHA-256 of the held-out files of split.json, as the split "
                                      "was made; prior_data.heldout() uses a file only if it still matches",
                                      "sha256": hashes}, indent=1) + "\n")
    return hashes


def heldout(split: dict | None = None, hashes: dict | None = None,
            include_pack_inputs: bool = False) -> tuple[list[dict], dict[str, str]]:
    """(entries, left_out): the held-out entries whose file is installed byte-identical to the one the
    split was made from, and {entry key: reason} for the others."""
    split = split or read_split()
    if hashes is None:
        hashes = json.loads(HELDOUT_HASHES.read_text())["sha256"]
    entries, left_out = [], {}
    for entry in split["test"]:
        if entry["package"] == PACK and not include_pack_inputs:
            continue
        key, version = entry_key(entry), _installed_version(entry)
        try:
            path = path_of(entry)
        except ImportError:
            path = None
        if path is None or not path.is_file():
            left_out[key] = f"not installed ({entry['package']} {version or 'absent'}, split: {entry['version']})"
        elif key not in hashes or file_sha256(path) != hashes[key]:
            left_out[key] = f"changed ({entry['package']} {version}, split: {entry['version']})"
        else:
            entries.append(entry)
    return entries, left_out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["split", "hashes", "check"])
    args = parser.parse_args(argv)
    if args.command == "split":
        split = make_split()
        SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
        SPLIT_FILE.write_text(json.dumps(split, indent=1) + "\n")
        print(json.dumps(split["counts"]))
    elif args.command == "hashes":
        print(len(write_heldout_hashes(read_split())), "held-out files hashed into", HELDOUT_HASHES)
    else:  # the installed files still match the committed split
        split = read_split()
        missing = [e for e in split["train"] if not path_of(e).exists()]
        usable, left_out = heldout(split, include_pack_inputs=True)
        print(json.dumps({"counts": split["counts"], "train_missing": len(missing),
                          "heldout_usable": len(usable), "heldout_left_out": left_out}, indent=1))
        return 1 if missing or left_out else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
