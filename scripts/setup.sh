#!/usr/bin/env bash
# Sets up a fresh machine: Debian's Fashion-MNIST (the offline default data), a virtual environment
# in .venv with keras-vicreg and its extras (JAX, PyTorch CPU, tests). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# PyTorch first, pinned to the CPU build that this project's machines find. A torch already in
# .venv (a CUDA build you installed, say) is kept only if it meets setup.cfg's security floor
# (2.10: torch.load(weights_only=True) bypasses fixed); an older one is replaced by the pin.
TORCH_FLOOR=2.10
if ! .venv/bin/python - "$TORCH_FLOOR" 2>/dev/null <<'PY'
import sys
import torch
version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if version >= tuple(int(part) for part in sys.argv[1].split(".")) else 1)
PY
then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[jax,torch,test]"
echo "keras-vicreg is installed in .venv"
