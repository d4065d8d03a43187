"""Tests of keras_vicreg.training.summaries: effective rank, pictures, TensorBoard and progress callbacks."""

import glob
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vicreg import LARS
from keras_vicreg import VICReg
from keras_vicreg.training import summaries
from keras_vicreg.training.callbacks import LearningRateLogger

pytestmark = pytest.mark.backend_neutral


def test_effective_rank_of_known_spectra():
    assert summaries.effective_rank(np.eye(8)) == pytest.approx(8.0, rel=1e-5)
    rank_one = np.outer(np.arange(1.0, 7.0), np.ones(5))
    assert summaries.effective_rank(rank_one) == pytest.approx(1.0, rel=1e-5)
    spectrum = np.zeros((4, 3))
    spectrum[0, 0], spectrum[1, 1] = 3.0, 1.0  # singular values 3, 1, 0: p = 3/4, 1/4, 0
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert summaries.effective_rank(spectrum) == pytest.approx(math.exp(entropy), rel=1e-5)


def test_effective_rank_ignores_rotations_and_falls_with_collapse():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert summaries.effective_rank(z @ rotation) == pytest.approx(summaries.effective_rank(z))
    collapsed = z.copy()
    collapsed[:, 4:] = 1e-3 * collapsed[:, 4:]  # 12 of 16 directions nearly gone
    assert summaries.effective_rank(collapsed) < 5.0 < summaries.effective_rank(z)


def test_effective_rank_rejects_a_vector():
    with pytest.raises(ValueError, match="Received: embeddings.shape=\\(5,\\)"):
        summaries.effective_rank(np.ones(5))


def test_feature_std_is_the_unbiased_std_of_each_feature():
    z = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    np.testing.assert_allclose(summaries.feature_std(z), [2.0, 0.0])


def test_pair_pictures_undo_the_normalisation_side_by_side():
    mean, std = (0.5,), (0.25,)
    a = np.full((2, 3, 4, 1), (0.75 - 0.5) / 0.25, np.float32)  # pixel value 0.75
    b = np.full((2, 3, 4, 1), (0.0 - 0.5) / 0.25, np.float32)  # pixel value 0.0
    pictures = summaries.pair_pictures(a, b, mean, std, gap=2)
    assert pictures.shape == (2, 3, 10, 1)
    np.testing.assert_allclose(pictures[:, :, :4], 0.75)
    np.testing.assert_allclose(pictures[:, :, 4:6], 1.0)
    np.testing.assert_allclose(pictures[:, :, 6:], 0.0)


def test_window_means_recover_the_steps_from_keras_running_means():
    values = [4.0, 2.0, 9.0, 1.0, 5.0]
    window = summaries._WindowMeans()
    window.running = {"loss"}
    reports = {}
    for batch, _ in enumerate(values):
        running_mean = float(np.mean(values[: batch + 1]))
        if batch in (1, 4):
            reports[batch] = window.report(batch, {"loss": running_mean, "learning_rate": 0.1})
    assert reports[1]["loss"] == pytest.approx(3.0)  # mean of steps 1-2
    assert reports[4]["loss"] == pytest.approx(5.0)  # mean of steps 3-5
    assert reports[4]["learning_rate"] == 0.1  # not a running mean: as logged


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = VICReg(keras.Model(inputs, x), "16-8")
    model.compile(optimizer=LARS(0.1), jit_compile=False)
    return model


def _pairs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    return a, a + 0.1 * rng.normal(size=a.shape).astype("float32")


def _events(log_dir):
    """{tag: [steps]} of the summaries in a TensorBoard directory."""
    found = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(event.step)
    return found


def test_tensorboard_summaries_write_every_summary_at_the_run_steps(tmp_path):
    pairs = _pairs()
    dataset = tf.data.Dataset.from_tensor_slices(pairs).batch(8)  # 4 steps
    weights = {}
    for with_summaries in (False, True):
        model = _tiny_model()
        callbacks = [LearningRateLogger()]
        if with_summaries:
            callbacks.append(summaries.TensorBoardSummaries(
                str(tmp_path), fixed_views=(pairs[0][:16], pairs[1][:16]), mean=(0.0,) * 3,
                std=(1.0,) * 3, scalar_every_steps=2, embedding_every_steps=4, image_pairs=2,
                initial_step=10,
            ))
        model.fit(dataset, epochs=1, callbacks=callbacks, verbose=0)
        weights[with_summaries] = [keras.ops.convert_to_numpy(w) for w in model.weights]

    events = _events(str(tmp_path))
    for term in ("loss", "invariance", "variance", "covariance", "std", "learning_rate"):
        assert events[f"train/{term}"] == [12, 14]
    for tag in ("embeddings/feature_std", "embeddings/mean_feature_std",
                "embeddings/effective_rank", "representations/effective_rank"):
        assert events[tag] == [12]  # the multiples of 4 among the run's steps 11-14
    assert events["augmented_pairs"] == [10]
    # Inference-mode forward passes only: training is unchanged by the summaries. To an ulp, not
    # bit for bit: two weights of 16 came out one float32 step apart once in a full CI run (not
    # reproduced alone); a training-mode pass or a drawn number would move them far more.
    for a, b in zip(weights[False], weights[True], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_progress_printer_prints_the_step_epoch_terms_and_speed():
    lines = []
    model = _tiny_model()
    printer = summaries.ProgressPrinter(
        every_steps=3, total_steps=8, steps_per_epoch=4, initial_step=4, print_fn=lines.append
    )
    model.fit(tf.data.Dataset.from_tensor_slices(_pairs()).batch(8), epochs=1,
              callbacks=[printer], verbose=0)
    assert [line.split("  ")[0] for line in lines] == ["step 6/8 (75.0%)", "step 8/8 (100.0%)"]
    assert all("epoch 2" in line and "loss " in line and "steps/s" in line for line in lines)


@pytest.mark.parametrize("name", ["scalar_every_steps", "embedding_every_steps"])
def test_tensorboard_summaries_reject_a_zero_interval(tmp_path, name):
    with pytest.raises(ValueError, match=f"Received: {name}=0"):
        summaries.TensorBoardSummaries(str(tmp_path), **{name: 0})
