#!/usr/bin/env bash
# Install (scripts/setup.sh), run one workflow headless as a smoke check when the pack's runner
# is there, then start ComfyUI in the foreground with this pack loaded.
#
#   PORT=8188                 port for the UI (http://127.0.0.1:$PORT)
#   WORKFLOW=path.json        workflow for the headless run (default: the first workflows/*.json;
#                             none: skip). Its outputs go to $INVERSE_HOME/base/output/headless.
#                             When the default workflow's checkpoint is not in base/models, the run
#                             uses the small prior trained here (prior/, inverse_prior_sd15.safetensors
#                             assembled at first use): blurry, NOT Stable Diffusion; put a real SD1.5
#                             checkpoint there for real results.
#   INVERSE_HOME=...          where setup.sh put the venv and ComfyUI (default ~/.cache/comfyui-inverse)
#   COMFYUI_PATH=...          use your own ComfyUI tree instead
# Extra arguments go to ComfyUI's main.py.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INVERSE_HOME="${INVERSE_HOME:-$HOME/.cache/comfyui-inverse}"
export INVERSE_HOME
PORT="${PORT:-8188}"

bash "$REPO/scripts/setup.sh"

PY="$INVERSE_HOME/venv/bin/python"
COMFY="${COMFYUI_PATH:-$INVERSE_HOME/ComfyUI}"
BASE="$INVERSE_HOME/base"
mkdir -p "$BASE"/{custom_nodes,input,output} \
    "$BASE"/models/{checkpoints,vae,vae_approx,clip,clip_vision,diffusion_models,loras,text_encoders}
if [[ ! -e "$BASE/custom_nodes/comfyui-inverse" ]]; then
    ln -s "$REPO" "$BASE/custom_nodes/comfyui-inverse"
fi

# CPU-only torch: --cpu is mandatory, and fp32 text encoders (CPU fp16 matmuls are very slow).
DEVICE_ARGS=()
if [[ "$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)" != 1 ]]; then
    DEVICE_ARGS=(--cpu --fp32-text-enc)
    echo "== no CUDA device: running ComfyUI on the CPU"
fi

if [[ -f "$REPO/__main__.py" ]]; then
    workflow="${WORKFLOW-}"
    if [[ -z "${WORKFLOW+set}" ]]; then
        workflow="$(find "$REPO/workflows" -maxdepth 1 -name '*.json' ! -name '*.api.json' 2>/dev/null \
                    | sort | head -n 1)"
    fi
    if [[ -n "$workflow" ]]; then
        cp -n "$REPO"/workflows/inputs/* "$BASE/input/" 2>/dev/null || true  # the workflows' sample photo
        run_args=()
        if [[ -z "${WORKFLOW+set}" && ! -e "$BASE/models/checkpoints/v1-5-pruned-emaonly.safetensors" ]]; then
            prior_unet="$REPO/prior/inverse_prior_sd15_eps.safetensors"
            prior_ckpt="$BASE/models/checkpoints/inverse_prior_sd15.safetensors"
            if [[ -f "$prior_unet" && -f "$REPO/prior/inverse_prior_vae.safetensors" ]]; then
                echo "== no v1-5-pruned-emaonly.safetensors in $BASE/models/checkpoints: using the small" \
                     "prior trained here (prior/README.md; NOT Stable Diffusion, blurry by design)"
                # The committed files for the UI's stock loaders, and a checkpoint for the demo
                # workflow (eps UNet + VAE + a seeded random CLIP-L the UNet ignores).
                ln -sf "$REPO/prior/inverse_prior_vae.safetensors" "$BASE/models/vae/"
                ln -sf "$prior_unet" "$BASE/models/diffusion_models/"
                [[ -f "$REPO/prior/inverse_prior_sd15_flow_lora.safetensors" ]] && \
                    ln -sf "$REPO/prior/inverse_prior_sd15_flow_lora.safetensors" "$BASE/models/loras/"
                [[ "$prior_ckpt" -nt "$prior_unet" ]] || \
                    "$PY" "$REPO/scripts/train_prior.py" --comfy "$COMFY" \
                        --assemble-checkpoint "$prior_ckpt" >/dev/null
                run_args=(--ckpt inverse_prior_sd15.safetensors)
            else
                echo "== no v1-5-pruned-emaonly.safetensors in $BASE/models/checkpoints: using a tiny random-weight stand-in"
                [[ -e "$BASE/models/checkpoints/tiny_sd15.safetensors" ]] || \
                    "$PY" "$REPO/tests/host/tiny_models.py" build --comfy "$COMFY" --models "$BASE/models" \
                        --only sd15_ckpt >/dev/null
                run_args=(--ckpt tiny_sd15.safetensors)
            fi
        fi
        echo "== headless run of $workflow (python -m comfyui_inverse run)"
        if ! "$PY" -m comfyui_inverse run "$workflow" --base-dir "$BASE" "${run_args[@]}" \
                --out "$BASE/output/headless"; then
            echo "== the headless run failed (see above); starting the UI anyway" >&2
        fi
    fi
fi

echo "== ComfyUI on http://127.0.0.1:$PORT (base directory $BASE; Ctrl-C stops it)"
cd "$COMFY"
exec "$PY" main.py "${DEVICE_ARGS[@]}" --listen 127.0.0.1 --port "$PORT" \
    --base-directory "$BASE" --database-url sqlite:///:memory: "$@"
