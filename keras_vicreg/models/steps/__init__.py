"""One thin `train_step` / `test_step` per Keras backend, chosen by `keras.backend.backend()`.

Everything that can be backend-neutral (the forward pass, the loss, the metrics) lives in
`VICReg.compute_terms`; these modules only differ in how gradients are taken and applied: TensorFlow
records a tape, PyTorch calls `backward()`, and JAX differentiates a stateless function.

They sit beside the model, not in `keras_vicreg.training`, because they are the model's own
`train_step` split by backend (as Keras keeps its per-backend trainers under its `Model`): so the
model imports nothing from `training/`, and `training/` (strategies, optimizers, callbacks) can
depend on the model without a cycle. Each backend's module is imported on first use, so that a
program on one backend never imports another backend's framework.
"""

import importlib

import keras


def backend_steps():
    """The module holding `train_step` and `test_step` for the current Keras backend."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax", "torch"):
        raise ValueError(
            "keras-vicreg trains on the tensorflow, jax and torch backends. "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    return importlib.import_module(f"keras_vicreg.models.steps.{backend}_steps")
