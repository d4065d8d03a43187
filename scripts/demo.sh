#!/usr/bin/env bash
# The main job: set up, then VICReg on Fashion-MNIST end to end on the CPU (16-20 minutes measured
# on two cores, see docs/results.md): pretraining, export, linear and kNN evaluation against
# raw pixels and random weights, the table, plots and TensorBoard logs in the work directory.
# Arguments go to trainers/demo.py, e.g.
#   bash scripts/demo.sh --workdir=/tmp/my_demo --config=configs/fashion_mnist_demo.py:runlocal
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}
exec .venv/bin/python -m trainers.demo --workdir=/tmp/vicreg_demo "$@"
