#!/usr/bin/env bash
# Runs the test suite: everything on TensorFlow, then the backend-neutral tests on JAX and PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1

for backend in jax torch; do
  echo "=== KERAS_BACKEND=$backend: backend-neutral tests"
  KERAS_BACKEND=$backend "$PY" -m pytest -q -m "backend_neutral and not slow" -p no:cacheprovider "$@"
done
echo "=== KERAS_BACKEND=tensorflow: the whole suite"
KERAS_BACKEND=tensorflow "$PY" -m pytest -q -p no:cacheprovider --durations=15 "$@"
