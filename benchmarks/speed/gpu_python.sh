# Sourced by the gpu_*.sh benchmarks: sets PY to a python that imports torch (with CUDA), transformers and the
# extra modules in $NEEDS (space-separated, e.g. "torchvision sklearn"). Tried in order: $PYTHON if set,
# ./.venv/bin/python, $GPU_VENV/bin/python, python3. If none will do, a venv is made in $GPU_VENV (default
# /tmp/hfssl-gpu-venv, outside the checkout) and `pip install -e "$INSTALL"` (default ".") runs into it.
GPU_VENV="${GPU_VENV:-/tmp/hfssl-gpu-venv}"
NEEDS="${NEEDS:-}"
INSTALL="${INSTALL:-.}"

usable() {  # usable PYTHON -> 0 when it has CUDA torch, transformers and $NEEDS
    "$1" - $NEEDS <<'PY' >/dev/null 2>&1
import importlib, sys
import torch, transformers  # noqa: F401
for name in sys.argv[1:]:
    importlib.import_module(name)
assert torch.cuda.is_available()
PY
}

PY=""
for candidate in "${PYTHON:-}" ./.venv/bin/python "$GPU_VENV/bin/python" python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
        PY="$candidate"; break
    fi
done
if [ -z "$PY" ]; then
    echo "# no python with CUDA torch + transformers${NEEDS:+ + $NEEDS} found: installing into $GPU_VENV (~2 min)"
    python3 -m venv "$GPU_VENV"
    "$GPU_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$GPU_VENV/bin/python" -m pip install --quiet -e "$INSTALL"
    PY="$GPU_VENV/bin/python"
    usable "$PY" || { echo "ERROR: torch in $GPU_VENV cannot see a CUDA GPU (nvidia-smi below)"; nvidia-smi || true; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers; print('# python', __import__('sys').version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'gpu', torch.cuda.get_device_name())"
