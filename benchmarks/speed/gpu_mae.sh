#!/usr/bin/env bash
# MAE ViT-B/16 pretraining throughput on one CUDA GPU at ImageNet-like sizes: hfssl (JPEGs kept encoded, decoded
# and cropped in loader workers, fit()) vs transformers' run_mae.py way (load_dataset("imagefolder") + a
# per-sample torchvision transform + Trainer), same ViTMAEConfig and initial weights, bf16, 224 px, batch 256.
# The images: 20,000 JPEGs of ~500x375 made from scikit-learn's sample photographs (no download), kept in $WORK.
#
#   bash benchmarks/speed/gpu_mae.sh                            # ~5-8 minutes on an H100 / H200 (folder made once)
#   IMAGES=5000 WORKERS=16 BATCH=256 bash benchmarks/speed/gpu_mae.sh --steps 30
#
# Python: $PYTHON if set, else ./.venv/bin/python, else python3 -- the first that imports torch (with CUDA),
# transformers and torchvision. If none does, it makes a venv in $GPU_VENV (default /tmp/hfssl-gpu-venv, outside
# the checkout) and runs `pip install -e ".[dev]"` into it. Extra arguments go to benchmarks/speed/mae_step.py, whose
# CPU run at a tiny size is tests/test_gpu_mae_step.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGES="${IMAGES:-20000}"
BATCH="${BATCH:-256}"
WORKERS="${WORKERS:-$(( $(nproc) > 16 ? 16 : $(nproc) ))}"
STEPS="${STEPS:-20}"
WARMUP="${WARMUP:-5}"
LIMIT_S="${LIMIT_S:-560}"             # the benchmark itself; setup has its own time
WORK="${WORK:-/tmp/hfssl-mae-step}"

NEEDS="torchvision sklearn" INSTALL=".[dev]"
. benchmarks/speed/gpu_python.sh  # sets PY

timeout "$LIMIT_S" "$PY" benchmarks/speed/mae_step.py \
    --jpeg_images "$IMAGES" --work_dir "$WORK" --preset base --image_size 224 --patch_size 16 \
    --batch_size "$BATCH" --mixed_precision bf16 --workers "$WORKERS" --warmup "$WARMUP" --steps "$STEPS" "$@"
