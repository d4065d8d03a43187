"""Shared test setup: quiet TensorFlow logs, deterministic seeds and kernels, the backend under test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN kernels run single-threaded when called from one of its intra-op threads and
# multi-threaded otherwise (OneDnnThreadPool::get_in_parallel), so the same step could round
# differently from one run to the next even with op determinism on: an ulp in the bit-exact resume
# tests of tests/test_checkpointing.py, once in a few full CI runs. Eigen's kernels split their work
# by size alone. Set before TensorFlow is imported; the processes the tests start inherit it.
# It is not the whole story: with it, a binary's killed-and-resumed run still ended one ulp off
# an uninterrupted run once in CI, so tests that compare separate processes allow a few ulps.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    # The bit-exact resume tests compare weights to the last bit. Without this, TensorFlow's CPU
    # kernels differed by an ulp in about one run of two while the 2 cores were shared with other
    # work (tests/test_checkpointing.py: the mid-epoch resume and the stop-signal tests).
    tf.config.experimental.enable_op_determinism()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
