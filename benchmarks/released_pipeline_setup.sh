#!/usr/bin/env bash
# Creates .venv-released: the released VICReg code's input-pipeline stack (torch, torchvision,
# Pillow, NumPy) for benchmarks/released_pipeline.py, kept apart from the package's .venv because
# torchvision is not a dependency of keras_vicreg. torchvision 0.28.0 is the release paired with
# torch 2.13.0, the torch of the package's own environment.
#
#     bash benchmarks/released_pipeline_setup.sh [PYTHON]
#
# torch and torchvision come from PyPI itself (`--isolated`: no local wheel folders or
# constraints), as one matched pair: PyPI's torchvision 0.28.0 is built against PyPI's
# torch 2.13.0 (CUDA 13 build, which runs on CPU) and fails to load its operators
# ("operator torchvision::nms does not exist") beside the torch 2.13.0+cpu wheel. About 4.7 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-python3}"
"$python" -m venv .venv-released
.venv-released/bin/python -m pip install --isolated --quiet \
    torch==2.13.0 torchvision==0.28.0 pillow numpy
.venv-released/bin/python -c "import torch, torchvision; print('torch', torch.__version__, \
'torchvision', torchvision.__version__)"
