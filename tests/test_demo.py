"""End to end: the demo command on a tiny slice of Fashion-MNIST, and the plotting helpers."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vicreg import plots
from keras_vicreg.evaluation import comparison

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
ROWS = ("VICReg, exported SavedModel (serve)", "VICReg, backbone.keras at the pretraining size",
        "same backbone, random weights", "raw pixels")
# What a newcomer need not read: absl-formatted log lines ("I1202 12:00:00.000000 ..."), Python
# logging's default format, deprecation notices, tensorflow-datasets' lines.
NOISE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^(INFO|WARNING):tensorflow|DeprecationWarning|"
                   r"tensorflow_datasets|Instructions for updating|tf.function retracing")


def _between_last_epoch_and_table(output):
    """The lines a run prints after Keras' last epoch line ("3/3 - 17s - ...") before the table."""
    lines = output.splitlines()
    table = lines.index("| features | input | width | linear top-1 | kNN top-1 |")
    epochs = [i for i, line in enumerate(lines[:table]) if re.match(r"^\d+/\d+ - ", line)]
    return lines[(epochs[-1] if epochs else 0) + 1:table]


def _assert_png(path):
    image = keras.utils.img_to_array(keras.utils.load_img(path))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 1.0, f"{path} is blank"


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the demo exports a SavedModel from the TensorFlow backend")
@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION_MNIST),
                    reason="needs `apt-get install dataset-fashion-mnist`")
def test_demo_command_writes_table_plots_and_a_reloadable_export(tmp_path):
    # Fashion-MNIST is prepared once in tfds' default data directory, as the demo itself does.
    import tensorflow as tf

    workdir = tmp_path / "demo"
    command = [
        sys.executable, "-m", "trainers.demo", f"--workdir={workdir}",
        f"--config={os.path.join(ROOT, 'configs', 'fashion_mnist_demo.py')}:runlocal",
        "--config.epochs=1",
        f"--eval_config={os.path.join(ROOT, 'configs', 'fashion_mnist_demo_eval.py')}:runlocal",
    ]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]

    assert "| features | input | width | linear top-1 | kNN top-1 |" in run.stdout
    for row in ROWS:
        assert f"| {row} |" in run.stdout
    # Between the last epoch and the table: the demo's own lines, none of the libraries' logs.
    between = _between_last_epoch_and_table(run.stdout)
    assert [line for line in between if NOISE.search(line)] == [], between
    assert len(between) <= 6, between
    for name in ("results.md", "pca_test.png", "tensorboard", "saved_model", "backbone.keras"):
        assert name in run.stdout.split("| raw pixels |")[1]  # where the files are, at the end
    with open(workdir / "results.json") as file:
        results = json.load(file)
    assert list(results["rows"]) == list(ROWS)
    sizes = [row["image_size"] for row in results["rows"].values()]
    assert sizes == [44, 28, 44, 28]  # the backbones enlarged (FixRes), backbone.keras and pixels
    for row in results["rows"].values():
        assert 0.0 <= row["linear_top1"] <= 1.0 and 0.0 <= row["knn_top1"] <= 1.0
        # Ten classes: even a few hundred images and a few steps do better than chance.
        assert row["linear_top1"] > 0.15
    assert 0.0 < results["pretrain_seconds"] < results["total_seconds"]
    assert results["start_step"] == 0

    for name in ("loss_terms.png", "embedding_std.png", "pca_test.png"):
        _assert_png(workdir / name)
    assert os.listdir(workdir / "tensorboard")

    # The SavedModel reads what the table's first row scored: 44-pixel images.
    from keras_vicreg import export

    path = str(workdir / "export" / "saved_model")
    metadata = export.load_metadata(path)
    assert (metadata["image_size"], metadata["pretraining_image_size"]) == (44, 28)
    assert metadata["resize_ratio"] == 1.0  # whole images, as the table's
    exported = tf.saved_model.load(path)
    features = exported.serve(tf.zeros([2, 28, 28, 1], tf.uint8))
    assert features.shape == (2, results["rows"][ROWS[0]]["feature_width"])
    assert np.all(np.isfinite(features.numpy()))
    assert exported.serve_features(tf.zeros([1, 44, 44, 1])).shape == (1, features.shape[1])

    # --verbosity (absl's flag) brings the libraries' log lines back. The run has finished, so
    # this one only exports again and evaluates.
    verbose = subprocess.run(command + ["--verbosity=1"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=600)
    assert verbose.returncode == 0, verbose.stdout[-3000:]
    exporting = verbose.stdout.split("Saved the backbone to")[1].split("| features |")[0]
    assert len([line for line in exporting.splitlines() if NOISE.search(line)]) >= 5


@pytest.mark.backend_neutral
def test_pca_2d_keeps_the_direction_of_largest_variance():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 5)) * np.array([10.0, 3.0, 0.1, 0.1, 0.1])
    points = plots.pca_2d(features)
    assert points.shape == (500, 2)
    np.testing.assert_allclose(np.abs(np.corrcoef(points[:, 0], features[:, 0])[0, 1]), 1.0,
                               atol=1e-3)
    assert points[:, 0].std() > points[:, 1].std() > 1.0


@pytest.mark.backend_neutral
def test_plots_write_decodable_pngs_and_reject_empty_input(tmp_path):
    rng = np.random.default_rng(0)
    plots.plot_loss_terms([10, 20, 30], {"loss": [3.0, 2.0, 1.5], "std": [0.2, 0.6, 0.9]},
                          tmp_path / "loss.png")
    plots.plot_std_histogram(rng.normal(size=(100, 32)), tmp_path / "std.png",
                             reference=rng.normal(size=(100, 32)) * 0.1)
    plots.plot_embedding_2d(rng.normal(size=(100, 8)), np.arange(100) % 10, tmp_path / "pca.png")
    for name in ("loss.png", "std.png", "pca.png"):
        _assert_png(tmp_path / name)
    with pytest.raises(ValueError, match="Nothing to plot"):
        plots.plot_loss_terms([], {}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="One label per feature row"):
        plots.plot_embedding_2d(rng.normal(size=(10, 3)), np.zeros(9), tmp_path / "bad.png")


@pytest.mark.backend_neutral
def test_read_scalars_joins_a_resumed_runs_event_files_the_last_write_winning(tmp_path):
    import tensorflow as tf

    from keras_vicreg.training.summaries import TensorBoardSummaries

    # A run killed after step 30 resumes from its step-20 checkpoint and rewrites steps 30 and 40.
    for steps, offset in (((10, 20, 30), 0.0), ((30, 40), 100.0)):
        summaries = TensorBoardSummaries(str(tmp_path))
        for step in steps:
            summaries.step = step
            summaries.write_scalars({"loss": step + offset, "std": 1.0})
        summaries.writer.close()
        with tf.summary.create_file_writer(str(tmp_path)).as_default(step=5):
            tf.summary.scalar("embeddings/effective_rank", 3.0)  # another prefix: left out
    steps, terms = plots.read_scalars(str(tmp_path))
    assert steps == [10, 20, 30, 40]
    assert terms["loss"] == [10.0, 20.0, 130.0, 140.0]
    assert sorted(terms) == ["loss", "std"]


def test_on_halves_covers_every_row_once_in_order():
    values, labels = np.arange(7.0), np.arange(7) * 10
    halves = comparison.on_halves(lambda v, l: (v.copy(), l.copy()), values, labels)
    assert [len(v) for v, _ in halves] == [4, 3]
    np.testing.assert_array_equal(np.concatenate([v for v, _ in halves]), values)
    np.testing.assert_array_equal(np.concatenate([l for _, l in halves]), labels)


def test_threaded_features_and_knn_match_one_stream():
    import ml_collections
    from keras_vicreg.evaluation.knn import knn_accuracy
    from keras_vicreg.evaluation.linear import extract_features

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3),
                              keras.layers.GlobalAveragePooling2D()])
    images = [(rng.uniform(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n))
              for n in (61, 23)]
    evaluation = ml_collections.ConfigDict(dict(
        batch_size=10, linear=dict(learning_rates=(0.1,), epochs=2, batch_size=16, momentum=0.9,
                                   weight_decay=0.0), knn=dict(k=5, temperature=0.07)))
    threaded = comparison.features(model, images, evaluation)
    for (features, labels), (split_images, split_labels) in zip(threaded, images):
        serial = extract_features(model, [(split_images, split_labels)])
        np.testing.assert_allclose(features, serial[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(labels, split_labels)
    (train, train_labels), (test, test_labels) = threaded
    scores = comparison.score((train, train_labels), (test, test_labels), evaluation)
    knn = knn_accuracy(train, train_labels, test, test_labels, num_classes=10, k=5,
                       temperature=0.07)
    assert scores["knn_top1"] == pytest.approx(knn["top1"] / 100.0)
    assert scores["feature_width"] == 6
