"""Tests of the online linear probe (`models.online_probe`) and the held-out evaluation while
pretraining (`evaluation.online`, `training.online_eval`, the binary's `config.online_eval`).

The probe must not change pretraining: with and without it, every VICReg weight and the main
optimizer's state are bit-identical after the same steps. Its step is checked against a float64
NumPy re-derivation whose gradient is taken by central differences of the cross-entropy, not by
the closed form the layer uses.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vicreg
from keras_vicreg import data as vicreg_data
from keras_vicreg.config import pretraining
from keras_vicreg.evaluation.online import OnlineEvaluation
from keras_vicreg.models.online_probe import OnlineProbe
from keras_vicreg.training import checkpointing

ROOT = pathlib.Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
VIEWS = RNG.normal(size=(2, 48, 8, 8, 3)).astype("float32")
LABELS = RNG.integers(0, 3, 48).astype("int32")


def _model(probe, seed=0, momentum=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras_vicreg.VICReg(
        keras.Model(inputs, x), "16-16", momentum=momentum,
        online_probe=OnlineProbe(3, learning_rate=0.5) if probe else None,
    )
    model.compile(optimizer=keras_vicreg.LARS(0.1))
    return model


def _pairs(labelled):
    pairs = (VIEWS[0], VIEWS[1])
    return tf.data.Dataset.from_tensor_slices((pairs, LABELS) if labelled else pairs).batch(16)


def _numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.backend_neutral
@pytest.mark.parametrize("momentum", [None, 0.9])
def test_the_probe_leaves_every_vicreg_weight_and_the_optimizer_bit_identical(momentum):
    plain, probed = _model(False, momentum=momentum), _model(True, momentum=momentum)
    history = probed.fit(_pairs(True), epochs=1, verbose=0).history
    plain.fit(_pairs(False), epochs=1, verbose=0)
    probe_ids = {id(v) for v in probed.online_probe.weights}
    rest = [v for v in probed.weights if id(v) not in probe_ids]
    assert [v.path.split("/")[-1] for v in rest] == [v.path.split("/")[-1] for v in plain.weights]
    for ours, theirs in zip(_numpy(rest), _numpy(plain.weights)):
        np.testing.assert_array_equal(ours, theirs)
    assert len(probed.optimizer.variables) == len(plain.optimizer.variables)
    for ours, theirs in zip(_numpy(probed.optimizer.variables), _numpy(plain.optimizer.variables)):
        np.testing.assert_array_equal(ours, theirs)
    assert not any(v.trainable for v in probed.online_probe.weights)
    assert np.abs(keras.ops.convert_to_numpy(probed.online_probe.kernel)).max() > 0  # it trained
    assert {"probe_loss", "probe_train_top1"} <= set(history)


def _cross_entropy(kernel, bias, features, labels):
    logits = features @ kernel + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def _numeric_gradient(loss, value, eps=1e-6):
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        step = np.zeros_like(value)
        step[index] = eps
        grad[index] = (loss(value + step) - loss(value - step)) / (2 * eps)
    return grad


@pytest.mark.backend_neutral
def test_two_probe_steps_equal_sgd_with_momentum_on_the_numeric_cross_entropy_gradient():
    features = RNG.normal(size=(6, 4))
    labels = RNG.integers(0, 3, 6)
    lr, mu, wd = 0.3, 0.8, 0.01
    probe = OnlineProbe(3, learning_rate=lr, momentum=mu, weight_decay=wd)
    probe.build((None, 4))
    kernel, bias = RNG.normal(size=(4, 3)) * 0.5, RNG.normal(size=3) * 0.5
    probe.kernel.assign(kernel.astype("float32"))
    probe.bias.assign(bias.astype("float32"))
    v_kernel, v_bias = np.zeros_like(kernel), np.zeros_like(bias)
    for _ in range(2):
        loss = _cross_entropy(kernel, bias, features, labels)
        hits = 100.0 * np.mean((features @ kernel + bias).argmax(1) == labels)
        g_kernel = _numeric_gradient(lambda k: _cross_entropy(k, bias, features, labels), kernel)
        g_bias = _numeric_gradient(lambda b: _cross_entropy(kernel, b, features, labels), bias)
        v_kernel = mu * v_kernel + g_kernel + wd * kernel
        v_bias = mu * v_bias + g_bias + wd * bias
        kernel, bias = kernel - lr * v_kernel, bias - lr * v_bias
        result = probe.update(features.astype("float32"), labels.astype("int32"))
        np.testing.assert_allclose(float(result["probe_loss"]), loss, rtol=1e-5)
        np.testing.assert_allclose(float(result["probe_train_top1"]), hits)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(probe.kernel), kernel, atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(probe.bias), bias, atol=1e-5)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(probe.kernel_velocity), v_kernel, atol=1e-5
        )
    scored = probe.update(features.astype("float32"), labels.astype("int32"), training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probe.kernel), kernel, atol=1e-5)
    assert np.isfinite(float(scored["probe_loss"]))


@pytest.mark.backend_neutral
def test_the_probe_learns_a_linearly_separable_task_far_above_chance():
    centres = RNG.normal(size=(5, 16)) * 3.0
    labels = RNG.integers(0, 5, 2000)
    features = (centres[labels] + RNG.normal(size=(2000, 16))).astype("float32")
    probe = OnlineProbe(5, learning_rate=0.1)
    probe.build((None, 16))
    for start in range(0, 1600, 32):
        probe.update(features[start:start + 32], labels[start:start + 32].astype("int32"))
    scored = probe.update(features[1600:], labels[1600:].astype("int32"), training=False)
    assert float(scored["probe_train_top1"]) > 90.0  # chance: 20%


@pytest.mark.backend_neutral
def test_a_saved_and_loaded_model_keeps_the_probe_and_its_weights(tmp_path):
    model = _model(True)
    model.fit(_pairs(True), epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.online_probe.get_config() == model.online_probe.get_config()
    weights = zip(_numpy(model.online_probe.weights), _numpy(loaded.online_probe.weights))
    for ours, theirs in weights:
        np.testing.assert_array_equal(ours, theirs)
    again = keras_vicreg.VICReg.from_config(model.get_config())
    assert again.online_probe.num_classes == 3 and again.online_probe.learning_rate == 0.5


@pytest.mark.backend_neutral
def test_a_model_with_a_probe_refuses_unlabelled_pairs_and_bad_probes():
    with pytest.raises(ValueError, match="labelled pairs"):
        _model(True).fit(_pairs(False), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="num_classes"):
        OnlineProbe(1)
    with pytest.raises(ValueError, match="online_probe"):
        keras_vicreg.VICReg(keras.layers.Dense(4), "4", online_probe="linear")


def test_labels_ride_beside_unchanged_views():
    images = RNG.integers(0, 256, size=(64, 12, 12, 3)).astype("uint8")
    labels = RNG.integers(0, 7, 64).astype("int32")
    for source, given in ((images, labels),
                          (tf.data.Dataset.from_tensor_slices((images, labels)), "label")):
        plain_source = images if given is labels else tf.data.Dataset.from_tensor_slices(images)
        kwargs = dict(augmentation="small", seed=3, shuffle_buffer=64)
        plain = list(vicreg_data.two_view_dataset(plain_source, 16, **kwargs))
        labelled = list(vicreg_data.two_view_dataset(source, 16, labels=given, **kwargs))
        assert len(plain) == len(labelled) == 4
        for (a, b), ((la, lb), batch_labels) in zip(plain, labelled):
            np.testing.assert_array_equal(a, la)
            np.testing.assert_array_equal(b, lb)
            assert batch_labels.dtype == tf.int32 and batch_labels.shape == (16,)
        seen = np.concatenate([np.asarray(batch[1]) for batch in labelled])
        assert sorted(seen) == sorted(labels)  # every image once, with its own label


def test_probe_true_on_data_without_labels_is_an_invalid_config():
    config = pretraining.default_config()
    config.dataset, config.num_examples = "stl10", 100_000
    from keras_vicreg.config import common

    config = common.finish_pretraining(config, common.parse_arg(None))
    config.online_eval.probe = True
    with pytest.raises(ValueError, match="online_eval.probe=True needs labelled"):
        pretraining.validate(config)
    config.online_eval.probe = "auto"
    assert pretraining.validate(config).online_eval.probe is False


def test_the_callback_adds_knn_and_probe_top1_to_the_logs():
    model = _model(True)
    model.fit(_pairs(True), epochs=1, verbose=0)
    bank = tf.data.Dataset.from_tensor_slices((VIEWS[0], LABELS)).batch(16)
    callback = OnlineEvaluation(bank, bank.take(1), num_classes=3, every_steps=2, k=5)
    callback.set_model(model)
    logs = {}
    callback.on_train_batch_end(0, logs)
    assert logs == {}
    callback.on_train_batch_end(1, logs)
    assert set(logs) == {"knn_top1", "probe_top1"} and 0 <= logs["probe_top1"] <= 100
    # The probe's figure is its own argmax on the model's inference-mode features.
    features = keras.ops.convert_to_numpy(model.predict(VIEWS[0][:16], verbose=0))
    kernel, bias = _numpy([model.online_probe.kernel, model.online_probe.bias])
    expected = 100.0 * np.mean((features @ kernel + bias).argmax(1) == LABELS[:16])
    assert logs["probe_top1"] == pytest.approx(expected)


@pytest.mark.parametrize("every_steps", [0, True, 2.0])
def test_the_callback_refuses_an_every_steps_that_is_not_a_positive_int(every_steps):
    bank = tf.data.Dataset.from_tensor_slices((VIEWS[0], LABELS)).batch(16)
    with pytest.raises(ValueError, match="`every_steps` must be an int >= 1"):
        OnlineEvaluation(bank, bank, num_classes=3, every_steps=every_steps)


# Two replicas (a TensorFlow MirroredStrategy, JAX's DataParallel) in a subprocess with two logical
# CPU devices, as tests/test_distribute.py does, against one device on the same global batch.

def _torch_process_report(out_dir):
    """A torch process of two: fits on its half of each global batch, saves the probe's kernel."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rows = np.concatenate([np.arange(start + 8 * rank, start + 8 * rank + 8)
                           for start in range(0, 48, 16)])
    model = _model(True)
    data = tf.data.Dataset.from_tensor_slices(((VIEWS[0][rows], VIEWS[1][rows]), LABELS[rows]))
    model.fit(data.batch(8), epochs=1, verbose=0)
    np.save(os.path.join(out_dir, f"kernel_{rank}.npy"), _numpy([model.online_probe.kernel])[0])
    dist.destroy_process_group()


def _two_replicas_report():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        cpu = tf.config.list_physical_devices("CPU")[0]
        devices = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, devices)
    from keras_vicreg.training import distribute

    def fitted():
        model = _model(True)
        model.fit(_pairs(True), epochs=1, verbose=0)
        return _numpy(model.online_probe.weights)

    single = fitted()
    if backend == "tensorflow":
        with distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"]).scope():
            several = fitted()
    else:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        several = fitted()
    for ours, theirs in zip(several, single):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-5)
    print("PROBE-MATCHES", max(np.abs(w).max() for w in single))


@pytest.mark.slow
@pytest.mark.backend_neutral
def test_two_replicas_train_the_probe_as_one_device_does(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    if keras.backend.backend() == "torch":  # two processes (gloo), each on half of every batch
        _torch_two_processes(env, tmp_path)
        return
    result = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("PROBE-MATCHES")[1]) > 0  # the probe trained


def _torch_two_processes(env, out_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(out_dir)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
        )
        for rank in range(2)
    ]
    try:
        errors = [worker.communicate(timeout=240)[1] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert all(worker.returncode == 0 for worker in workers), errors[0][-3000:]
    model = _model(True)
    model.fit(_pairs(True), epochs=1, verbose=0)  # one process on the global batches
    single = _numpy([model.online_probe.kernel])[0]
    kernels = [np.load(out_dir / f"kernel_{rank}.npy") for rank in range(2)]
    np.testing.assert_array_equal(kernels[0], kernels[1])
    np.testing.assert_allclose(kernels[0], single, rtol=1e-3, atol=1e-5)
    assert np.abs(single).max() > 0


# The binary: a run with the probe, and the same run resumed from its step-10 checkpoint.

def _run(workdir):
    command = [
        sys.executable, "-m", "trainers.pretrain", "--config=configs/tiny.py",
        f"--workdir={workdir}", "--config.online_eval.probe=True",
        "--config.online_eval.every_steps=12", "--config.online_eval.held_out_examples=64",
        "--config.online_eval.bank_examples=128",
    ]
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _probe_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: arrays.update({name: item[()]})
                        if isinstance(item, h5py.Dataset) and "online_probe" in name else None)
    return arrays


@pytest.mark.slow
@pytest.mark.backend_neutral
def test_the_binary_logs_probe_and_knn_top1_and_a_resumed_run_restores_the_probe(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    result = _run(whole)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("step 24/24")]
    assert lines and "probe_top1" in lines[0] and "knn_top1" in lines[0]
    assert "probe_train_top1" in lines[0]
    # The same run, resumed from its step-10 checkpoint.
    shutil.copytree(whole / "checkpoints", resumed / "checkpoints")
    shutil.copy(whole / "config.json", resumed / "config.json")
    for name in os.listdir(resumed / "checkpoints"):
        if name.startswith("ckpt-") and int(name.split("-")[1].split(".")[0]) > 10:
            os.remove(resumed / "checkpoints" / name)
    result = _run(resumed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from step 10" in result.stdout
    def checkpoint(workdir, step):
        return checkpointing.checkpoint_path(str(workdir / "checkpoints"), step)

    at_ten = _probe_arrays(checkpoint(whole, 10))
    ours, theirs = _probe_arrays(checkpoint(resumed, 24)), _probe_arrays(checkpoint(whole, 24))
    assert len(ours) == 4 and set(ours) == set(theirs)
    assert any(np.abs(at_ten[name]).max() > 0 for name in at_ten)  # restored, not from zeros
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7)


if __name__ == "__main__":
    if "RANK" in os.environ:
        _torch_process_report(sys.argv[1])
    else:
        _two_replicas_report()
