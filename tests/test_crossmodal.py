"""The cross-modal example: row tokens, its config, and a two-branch run on generated images."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from examples.crossmodal import crossmodal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(arg=None):
    path = os.path.join(ROOT, "examples", "crossmodal", "config.py")
    spec = importlib.util.spec_from_file_location("fashion_mnist_crossmodal", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_row_tokens_pool_quantise_and_read_each_row_in_base_levels():
    image = np.zeros((1, 2, 8), dtype=np.uint8)
    image[0, 0] = [255, 255, 0, 0, 120, 120, 200, 210]  # pooled by 2: 1.0, 0.0, 0.47, 0.80
    tokens, vocabulary = crossmodal.row_tokens(image, levels=3, pool=2)
    # Levels 3: digits 2, 0, 1, 2 -> 2 + 0 * 3 + 1 * 9 + 2 * 27 = 65; the dark row is token 0.
    np.testing.assert_array_equal(tokens, [[65, 0]])
    assert tokens.dtype == np.int32 and vocabulary == 81


def test_row_tokens_accept_a_channel_axis_and_reject_a_width_pool_does_not_divide():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    tokens, vocabulary = crossmodal.row_tokens(images)
    assert tokens.shape == (3, 28) and vocabulary == 3**7 and tokens.max() < vocabulary
    with pytest.raises(ValueError, match="pool"):
        crossmodal.row_tokens(images, pool=5)


@pytest.mark.backend_neutral
def test_two_branch_run_on_generated_images_scores_retrieval_both_ways():
    config = load_config("runlocal")
    config.verbose = 0
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(192, 28, 28), dtype=np.uint8)
    results = crossmodal.train_and_evaluate(config, images[:128], images[128:])
    assert np.isfinite(results["history"]["loss"][-1])
    assert results["chance"] == 1 / 64
    for direction in ("a_to_b", "b_to_a"):
        recall = results["recall"][direction]
        assert list(recall) == [1, 5, 10]
        assert 0.0 <= recall[1] <= recall[5] <= recall[10] <= 1.0


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir("/usr/share/datasets/fashion-mnist"),
    reason="needs Debian's dataset-fashion-mnist package",
)
def test_trainer_runs_the_runlocal_config_on_fashion_mnist_and_writes_results(tmp_path):
    command = [
        sys.executable, "-m", "examples.crossmodal.train",
        f"--config={os.path.join(ROOT, 'examples', 'crossmodal', 'config.py')}:runlocal",
        f"--config.data_dir={tmp_path / 'tfds'}",
        f"--workdir={tmp_path / 'work'}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "tokens -> image: R@1" in run.stdout
    with open(tmp_path / "work" / "results.json") as f:
        results = json.load(f)
    assert set(results["recall"]) == {"a_to_b", "b_to_a"}
    assert results["chance"] == 1 / 256
