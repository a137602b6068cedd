#!/usr/bin/env bash
# BERT-base pretraining throughput and MFU on one CUDA GPU: hfssl (sparse MLM head) vs plain
# Hugging Face BertForPreTraining, bf16 autocast, seq 128, batch 256. Unattended, < 5 minutes.
#
#   bash benchmarks/gpu_bert.sh                      # H100 SXM peak (989 TFLOP/s bf16 dense)
#   PEAK_FLOPS=989e12 BATCH=256 bash benchmarks/gpu_bert.sh --presets base mini
#   COMPILE=1 bash benchmarks/gpu_bert.sh            # also torch.compile'd encoders (adds ~1-2 min)
#
# Python: $PYTHON if set, else ./.venv/bin/python, else python3 -- the first that imports torch
# (with CUDA) and transformers. If none does, it makes a venv in $GPU_VENV (default
# /tmp/hfssl-gpu-venv, outside the checkout) and runs `pip install -e .` into it.
# Extra arguments go to benchmarks/bert_pretrain.py.
set -euo pipefail
cd "$(dirname "$0")/.."

PEAK_FLOPS="${PEAK_FLOPS:-989e12}"   # H200 SXM bf16 dense is also 989e12; H100 PCIe 756e12
BATCH="${BATCH:-256}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-3}"
LIMIT_S="${LIMIT_S:-280}"             # the benchmark itself; setup has its own time
GPU_VENV="${GPU_VENV:-/tmp/hfssl-gpu-venv}"

usable() {  # usable PYTHON -> 0 when it has CUDA torch and transformers
    "$1" - <<'EOF' >/dev/null 2>&1
import torch, transformers  # noqa: F401
assert torch.cuda.is_available()
EOF
}

PY=""
for candidate in "${PYTHON:-}" ./.venv/bin/python "$GPU_VENV/bin/python" python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
        PY="$candidate"; break
    fi
done
if [ -z "$PY" ]; then
    echo "# no python with CUDA torch + transformers found: installing into $GPU_VENV (~2 min)"
    python3 -m venv "$GPU_VENV"
    "$GPU_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$GPU_VENV/bin/python" -m pip install --quiet -e .
    PY="$GPU_VENV/bin/python"
    usable "$PY" || { echo "ERROR: torch in $GPU_VENV cannot see a CUDA GPU (nvidia-smi below)"; nvidia-smi || true; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('# python', __import__('sys').version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'gpu', torch.cuda.get_device_name())"

EXTRA=()
if [ "${COMPILE:-0}" = "1" ]; then EXTRA+=(--compile); fi

timeout "$LIMIT_S" "$PY" benchmarks/bert_pretrain.py \
    --device cuda --dtype bf16 --presets base --seq_len 128 --batch_size "$BATCH" \
    --warmup "$WARMUP" --steps "$STEPS" --peak_flops "$PEAK_FLOPS" "${EXTRA[@]}" "$@"
