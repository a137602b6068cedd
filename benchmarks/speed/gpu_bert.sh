#!/usr/bin/env bash
# BERT-base pretraining throughput and MFU on one CUDA GPU: hfssl (sparse MLM head) vs plain
# Hugging Face BertForPreTraining, bf16 autocast, seq 128, batch 256. Unattended, < 5 minutes.
#
#   bash benchmarks/speed/gpu_bert.sh                      # H100 SXM peak (989 TFLOP/s bf16 dense)
#   PEAK_FLOPS=989e12 BATCH=256 bash benchmarks/speed/gpu_bert.sh --presets base mini
#   COMPILE=1 bash benchmarks/speed/gpu_bert.sh            # also torch.compile'd encoders (adds ~1-2 min)
#
# Python: $PYTHON if set, else ./.venv/bin/python, else python3 -- the first that imports torch
# (with CUDA) and transformers. If none does, it makes a venv in $GPU_VENV (default
# /tmp/hfssl-gpu-venv, outside the checkout) and runs `pip install -e .` into it.
# Extra arguments go to benchmarks/speed/bert_pretrain.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

PEAK_FLOPS="${PEAK_FLOPS:-989e12}"   # H200 SXM bf16 dense is also 989e12; H100 PCIe 756e12
BATCH="${BATCH:-256}"
STEPS="${STEPS:-10}"
WARMUP="${WARMUP:-3}"
LIMIT_S="${LIMIT_S:-280}"             # the benchmark itself; setup has its own time

INSTALL="."
. benchmarks/speed/gpu_python.sh  # sets PY

EXTRA=()
if [ "${COMPILE:-0}" = "1" ]; then EXTRA+=(--compile); fi

timeout "$LIMIT_S" "$PY" benchmarks/speed/bert_pretrain.py \
    --device cuda --dtype bf16 --presets base --seq_len 128 --batch_size "$BATCH" \
    --warmup "$WARMUP" --steps "$STEPS" --peak_flops "$PEAK_FLOPS" "${EXTRA[@]}" "$@"
