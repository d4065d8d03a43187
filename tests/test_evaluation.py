"""Tests for keras_vicreg.evaluation: linear evaluation, fine-tuning, kNN, data and GroupSGD."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vicreg
from keras_vicreg.data import transforms
from keras_vicreg import evaluation
from keras_vicreg import data as vicreg_data
from keras_vicreg.evaluation import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZE = 16
NUM_CLASSES = 4


def _small_backbone(name="small_backbone"):
    """Two convolutions with BatchNorm, pooled: a backbone small enough to train in a CPU test."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name=name)


def _pretrained_backbone():
    """A backbone after a few VICReg steps: its BatchNorm statistics have left (0, 1)."""
    rng = np.random.default_rng(0)
    views = rng.normal(size=(2, 32, SIZE, SIZE, 3)).astype("float32")
    model = keras_vicreg.VICReg(_small_backbone(), expander="32-32")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    pairs = tf.data.Dataset.from_tensor_slices((views[0], views[1])).batch(16, drop_remainder=True)
    model.fit(pairs, epochs=1, verbose=0)
    return model.backbone


def _labelled_images(n=64, seed=0):
    """Images whose class sets the mean of one colour channel, so a linear probe can learn them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n).astype("int32")
    images = rng.normal(scale=0.5, size=(n, SIZE, SIZE, 3)).astype("float32")
    images[np.arange(n), :, :, labels % 3] += 2.0 * (1 + labels // 3)[:, None, None]
    return images, labels


def _batches(images, labels, batch_size=16):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def _all_weights(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


# ------------------------------------------------------------------------------------------------
# Linear evaluation.


@pytest.mark.backend_neutral
def test_linear_evaluation_leaves_backbone_weights_and_batchnorm_statistics_unchanged():
    backbone = _pretrained_backbone()
    moving = [w for w in backbone.weights if "moving" in w.path]
    assert moving and any(np.abs(keras.ops.convert_to_numpy(w)).max() > 1e-3 for w in moving)
    before = _all_weights(backbone)
    train = _batches(*_labelled_images())
    val = _batches(*_labelled_images(seed=1))
    results, classifier, history = evaluation.linear_evaluation(
        backbone, train, val, num_classes=NUM_CLASSES, epochs=2, learning_rate=0.5
    )
    for old, new in zip(before, _all_weights(backbone)):
        np.testing.assert_array_equal(old, new)
    head = classifier.get_layer("linear_head")
    assert np.abs(keras.ops.convert_to_numpy(head.bias)).max() > 0  # the head did train
    assert set(results) == {"top1", "top5", "loss"}
    assert 0 <= results["top1"] <= results["top5"] <= 100
    assert len(history.history["val_top1"]) == 2


@pytest.mark.backend_neutral
def test_linear_head_starts_from_small_gaussian_weights_and_zero_bias():
    head = evaluation.linear.linear_head(1000)
    head.build((None, 512))
    kernel = keras.ops.convert_to_numpy(head.kernel)
    assert abs(kernel.std() - 0.01) < 5e-4 and abs(kernel.mean()) < 5e-4
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.bias), 0.0)


@pytest.mark.backend_neutral
def test_sweep_on_precomputed_features_finds_a_rate_that_separates_the_classes():
    backbone = _small_backbone()
    train = evaluation.extract_features(backbone, _batches(*_labelled_images()))
    val = evaluation.extract_features(backbone, _batches(*_labelled_images(seed=1)))
    assert train[0].shape == (64, 16) and train[1].shape == (64,)
    # Ten classes separated by construction (one feature each): a head that barely moves from its
    # random start cannot get them all.
    labels = np.random.default_rng(0).integers(0, 10, size=100)
    train = val = (np.eye(10, 16, dtype="float32")[labels] * 3, labels)
    results = evaluation.linear_evaluation_on_features(
        train, val, num_classes=10, learning_rates=(1e-6, 0.5), epochs=20, batch_size=16
    )
    assert results["sweep"]["1e-06"]["top1"] < 50
    assert set(results["sweep"]) == {"1e-06", "0.5"}
    assert results["best_learning_rate"] == 0.5
    assert results["best"]["top1"] == 100.0


@pytest.mark.backend_neutral
def test_multi_label_linear_evaluation_reports_mean_average_precision():
    features = np.eye(3, 8, dtype="float32")[np.arange(30) % 3] * 3
    labels = np.stack([np.arange(30) % 3 == 0, np.arange(30) % 3 != 1, np.zeros(30)], 1)
    results = evaluation.linear_evaluation_on_features(
        (features, labels.astype("float32")), (features, labels.astype("float32")),
        num_classes=3, learning_rates=(1.0,), epochs=30, batch_size=10, multi_label=True,
    )
    assert results["best"]["map"] == 100.0


def test_mean_average_precision_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.random((50, 5)) < 0.3
    scores = rng.normal(size=(50, 5)) + labels
    expected = np.mean([metrics.average_precision_score(labels[:, c], scores[:, c])
                        for c in range(5)])
    np.testing.assert_allclose(evaluation.mean_average_precision(scores, labels), expected)


# ------------------------------------------------------------------------------------------------
# Fine-tuning and GroupSGD.


@pytest.mark.backend_neutral
def test_finetuning_with_zero_backbone_rate_moves_only_the_head_and_batchnorm_statistics():
    backbone = _pretrained_backbone()
    kernels = [keras.ops.convert_to_numpy(w).copy() for w in backbone.trainable_weights]
    moving = [keras.ops.convert_to_numpy(w).copy() for w in backbone.non_trainable_weights]
    results, _, _ = evaluation.finetune(
        backbone, _batches(*_labelled_images()), _batches(*_labelled_images(seed=1)),
        num_classes=NUM_CLASSES, epochs=1, backbone_learning_rate=0.0, head_learning_rate=0.1,
    )
    for old, variable in zip(kernels, backbone.trainable_weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(variable))
    changed = [not np.allclose(old, keras.ops.convert_to_numpy(variable))
               for old, variable in zip(moving, backbone.non_trainable_weights)]
    assert all(changed)  # the backbone ran in training mode
    assert 0 <= results["top1"] <= 100


@pytest.mark.backend_neutral
def test_finetuning_trains_the_backbone_at_its_own_rate():
    backbone = _pretrained_backbone()
    kernels = [keras.ops.convert_to_numpy(w).copy() for w in backbone.trainable_weights]
    evaluation.finetune(
        backbone, _batches(*_labelled_images()), _batches(*_labelled_images(seed=1)),
        num_classes=NUM_CLASSES, epochs=1, backbone_learning_rate=0.03, head_learning_rate=0.08,
    )
    assert all(not np.allclose(old, keras.ops.convert_to_numpy(variable))
               for old, variable in zip(kernels, backbone.trainable_weights))


@pytest.mark.backend_neutral
def test_group_sgd_matches_torch_sgd_with_two_parameter_groups():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(4)]
    torch_params = [torch.nn.Parameter(torch.tensor(w)) for w in start]
    torch_opt = torch.optim.SGD(
        [{"params": [torch_params[0]], "lr": 0.03}, {"params": [torch_params[1]], "lr": 0.08}],
        momentum=0.9, weight_decay=1e-2,
    )
    variables = [keras.Variable(w) for w in start]
    optimizer = evaluation.GroupSGD(0.08, momentum=0.9, weight_decay=1e-2)
    optimizer.set_learning_rate_multiplier([variables[0]], 0.03 / 0.08)
    for step in grads:
        for param, grad in zip(torch_params, step):
            param.grad = torch.tensor(grad)
        torch_opt.step()
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step], variables)
    for variable, param in zip(variables, torch_params):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable), param.detach().numpy(), rtol=1e-5, atol=1e-6
        )


@pytest.mark.backend_neutral
def test_group_sgd_config_round_trip_and_argument_errors():
    optimizer = evaluation.GroupSGD(0.1, momentum=0.5, weight_decay=1e-4)
    restored = evaluation.GroupSGD.from_config(optimizer.get_config())
    assert (restored.momentum, restored.coupled_weight_decay) == (0.5, 1e-4)
    with pytest.raises(ValueError, match="Received: momentum=1.0"):
        evaluation.GroupSGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Received: weight_decay=-1"):
        evaluation.GroupSGD(0.1, weight_decay=-1)


# ------------------------------------------------------------------------------------------------
# kNN.


def _numpy_knn_scores(train, labels, queries, num_classes, k, temperature):
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(queries) @ unit(train).T
    scores = np.zeros((len(queries), num_classes))
    for row, sims in enumerate(similarity):
        nearest = np.argsort(-sims, kind="stable")[:k]
        np.add.at(scores[row], labels[nearest], np.exp(sims[nearest] / temperature))
    return scores


@pytest.mark.backend_neutral
def test_knn_on_perfectly_separable_features_is_100_percent():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 32))
    train_labels, query_labels = rng.integers(0, 10, 500), rng.integers(0, 10, 200)
    train = centres[train_labels] + 0.05 * rng.normal(size=(500, 32))
    queries = centres[query_labels] + 0.05 * rng.normal(size=(200, 32))
    result = evaluation.knn_accuracy(
        train, train_labels, queries, query_labels, num_classes=10, k=20
    )
    assert result == {"top1": 100.0, "top5": 100.0}


@pytest.mark.backend_neutral
def test_knn_on_random_features_is_about_chance():
    rng = np.random.default_rng(0)
    result = evaluation.knn_accuracy(
        rng.normal(size=(2000, 32)), rng.integers(0, 10, 2000),
        rng.normal(size=(2000, 32)), rng.integers(0, 10, 2000), num_classes=10,
    )
    # Chance is 10% and 50%; the standard deviation over 2000 queries is about 0.7 and 1.1 points.
    assert 7.0 < result["top1"] < 13.0
    assert 45.0 < result["top5"] < 55.0


@pytest.mark.backend_neutral
def test_blocked_knn_scores_equal_a_brute_force_reference():
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(103, 8)), rng.integers(0, 5, 103)
    queries = rng.normal(size=(37, 8))
    got = evaluation.knn_scores(
        train, labels, queries, num_classes=5, k=10, temperature=0.5, query_block=8, bank_block=16
    )
    expected = _numpy_knn_scores(train, labels, queries, 5, 10, 0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.backend_neutral
def test_knn_rejects_mismatched_shapes_and_too_many_neighbours():
    with pytest.raises(ValueError, match="Received: train_features.shape"):
        evaluation.knn_scores(np.zeros((5, 3)), np.zeros(5), np.zeros((2, 4)), num_classes=2)
    with pytest.raises(ValueError, match="Received: k=200"):
        evaluation.knn_scores(np.ones((5, 3)), np.zeros(5), np.ones((2, 3)), num_classes=2)


@pytest.mark.backend_neutral
def test_knn_monitor_adds_knn_accuracy_to_the_pretraining_logs():
    rng = np.random.default_rng(0)
    views = rng.normal(size=(2, 16, SIZE, SIZE, 3)).astype("float32")
    pairs = tf.data.Dataset.from_tensor_slices((views[0], views[1])).batch(8, drop_remainder=True)
    monitor = evaluation.KNNMonitor(
        _batches(*_labelled_images(32)), _batches(*_labelled_images(16, seed=1)),
        num_classes=NUM_CLASSES, k=5, every=2,
    )
    model = keras_vicreg.VICReg(_small_backbone(), expander="32-32")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(pairs, epochs=3, callbacks=[monitor], verbose=0)
    assert [entry["epoch"] for entry in monitor.history] == [2, 3]
    assert 0 <= history.history["knn_top1"][-1] <= history.history["knn_top5"][-1] <= 100


# ------------------------------------------------------------------------------------------------
# Data.


def test_label_spec_finds_single_and_multi_label_classification():
    tfds = pytest.importorskip("tensorflow_datasets")
    features = tfds.features
    single = features.FeaturesDict({
        "image": features.Image(shape=(None, None, 3)),
        "label": features.ClassLabel(num_classes=7),
    })
    assert vicreg_data.label_spec(single) == vicreg_data.LabelSpec("image", "label", 7, False)
    voc_like = features.FeaturesDict({
        "image": features.Image(shape=(None, None, 3)),
        "labels": features.Sequence(features.ClassLabel(num_classes=20)),
        "labels_no_difficult": features.Sequence(features.ClassLabel(num_classes=20)),
    })
    assert vicreg_data.label_spec(voc_like) == vicreg_data.LabelSpec("image", "labels", 20, True)


def test_label_spec_rejects_datasets_that_are_not_image_classification():
    tfds = pytest.importorskip("tensorflow_datasets")
    features = tfds.features
    text = features.FeaturesDict(
        {"text": features.Text(), "label": features.ClassLabel(num_classes=2)}
    )
    with pytest.raises(ValueError, match="image classification dataset.*Received: features"):
        vicreg_data.label_spec(text)
    detection = features.FeaturesDict({
        "image": features.Image(shape=(None, None, 3)),
        "objects": features.Sequence({"bbox": features.BBoxFeature()}),
    })
    with pytest.raises(ValueError, match="image classification dataset"):
        vicreg_data.label_spec(detection)


def test_centre_crop_preprocess_resizes_crops_and_normalises_single_images_and_batches():
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 20:40] = 255  # the centre square of the shorter side
    out = vicreg_data.centre_crop_preprocess(tf.constant(image), 16, crop_fraction=0.5,
                                             mean=(0.5,) * 3, std=(0.5,) * 3).numpy()
    assert out.shape == (16, 16, 3)
    # 20 of 40 pixels kept around the centre: the white band fills the crop exactly.
    np.testing.assert_allclose(out, 1.0, atol=1e-5)
    batch = vicreg_data.centre_crop_preprocess(tf.constant(np.stack([image, image])), 16, 0.5,
                                               (0.5,) * 3, (0.5,) * 3).numpy()
    np.testing.assert_allclose(batch, np.stack([out, out]), atol=1e-6)


def test_labelled_dataset_makes_multi_hot_labels_and_augmented_training_crops():
    spec = vicreg_data.LabelSpec("image", "labels", 5, multi_label=True)
    examples = tf.data.Dataset.from_tensor_slices({
        "image": np.full((4, 20, 24, 3), 128, np.uint8),
        "labels": tf.ragged.constant([[0, 3], [1], [], [3, 3]]),
    })
    expected = [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
    view = vicreg_data.labelled_view(SIZE)
    _, labels = next(iter(vicreg_data.labelled_dataset(
        examples, 4, augmentation=view, label_spec=spec, train=False
    )))
    np.testing.assert_array_equal(labels.numpy(), expected)
    images, labels = next(iter(vicreg_data.labelled_dataset(
        examples, 4, augmentation=view, label_spec=spec, train=True
    )))
    assert images.shape == (4, SIZE, SIZE, 3)
    grey = (128 / 255 - np.array(transforms.IMAGENET_MEAN)) / np.array(transforms.IMAGENET_STD)
    np.testing.assert_allclose(images.numpy(), np.broadcast_to(grey, images.shape), atol=1e-5)
    assert sorted(map(tuple, labels.numpy())) == sorted(map(tuple, expected))


# ------------------------------------------------------------------------------------------------
# The protocols from configs: tfds datasets (mocked), folders, and the trainers end to end.


def _config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_configs_hold_the_released_recipes():
    linear = _config("linear_eval_imagenet")
    assert (linear.learning_rate, linear.batch_size, linear.epochs) == (0.02, 256, 100)
    assert (linear.momentum, linear.weight_decay, linear.image_size) == (0.9, 1e-6, 224)
    one, ten = _config("finetune_imagenet", "1pct"), _config("finetune_imagenet", "10pct")
    assert (one.dataset, one.backbone_learning_rate, one.head_learning_rate) == (
        "imagenet2012_subset/1pct", 0.03, 0.08)
    assert (ten.dataset, ten.backbone_learning_rate, ten.head_learning_rate) == (
        "imagenet2012_subset/10pct", 0.01, 0.1)
    assert one.epochs == ten.epochs == 20 and one.weight_decay == ten.weight_decay == 0.0
    voc = _config("linear_eval_imagenet", "voc2007,precompute")
    assert (voc.dataset, voc.val_split, voc.precompute_features) == ("voc/2007", "test", True)
    with pytest.raises(ValueError, match="Received: arg='cifar'"):
        _config("linear_eval_imagenet", "cifar")


def test_voc_transfer_from_tfds_is_multi_label_with_mean_average_precision(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    path = str(tmp_path / "backbone.keras")
    _small_backbone().save(path)
    config = _config("linear_eval_imagenet", "voc2007,precompute,runlocal")
    config.epochs, config.learning_rates = 2, (0.1,)
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        record = runs.run_linear_eval(config, backbone_path=path, workdir=str(tmp_path / "voc"),
                                      data_dir=str(tmp_path / "no_data"))
    assert (record["num_classes"], record["multi_label"]) == (20, True)
    assert 0 <= record["results"]["best"]["map"] <= 100
    with open(tmp_path / "voc" / "results.json") as file:
        assert json.load(file)["results"] == record["results"]


def test_a_tfds_dataset_that_is_not_image_classification_is_a_clear_error(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = _config("linear_eval_imagenet", "runlocal")
    config.dataset = "imdb_reviews"
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="need an image classification dataset"):
            runs.run_linear_eval(config, backbone_path="unused.keras", workdir=str(tmp_path),
                                 data_dir=str(tmp_path / "no_data"))


def _image_folder(root, per_class=8):
    """train/ and validation/ folders of three colour classes of PNG images."""
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for index, colour in enumerate(("red", "green", "blue")):
            os.makedirs(root / split / colour)
            for i in range(per_class):
                image = rng.integers(0, 100, (20, 24, 3)).astype(np.uint8)
                image[..., index] += 120
                tf.io.write_file(str(root / split / colour / f"{i}.png"), tf.io.encode_png(image))
    return root


def _run(*args):
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory):
    """The backbone.keras of a one-epoch pretraining with configs/tiny.py, and an image folder."""
    root = tmp_path_factory.mktemp("tiny")
    _run("trainers.pretrain", "--config=configs/tiny.py", "--config.epochs=1",
         f"--workdir={root / 'pretrain'}")
    return root / "pretrain" / "export" / "backbone.keras", _image_folder(root / "images")


@pytest.mark.slow
@pytest.mark.backend_neutral
def test_linear_evaluation_of_the_tiny_pretrained_backbone_keeps_it_unchanged(tiny_pretrained):
    backbone_path, folder = tiny_pretrained
    config = _config("linear_eval_imagenet", "runlocal")
    config.dataset = str(folder)
    backbone = runs.load_backbone(backbone_path, image_size=config.image_size)
    before = _all_weights(backbone)
    train, val, spec = runs.labelled_splits(config, backbone_path)
    results, _, _ = evaluation.linear_evaluation(
        backbone, train, val, num_classes=spec.num_classes, epochs=2, learning_rate=0.1
    )
    for old, new in zip(before, _all_weights(backbone)):
        np.testing.assert_array_equal(old, new)
    assert spec.num_classes == 3 and 0 <= results["top1"] <= 100


@pytest.mark.slow
@pytest.mark.backend_neutral
@pytest.mark.parametrize("trainer, config", [
    ("linear_eval", "linear_eval_imagenet.py:runlocal"),
    ("knn_eval", "linear_eval_imagenet.py:runlocal"),
    ("finetune", "finetune_imagenet.py:1pct,runlocal"),
])
def test_evaluation_trainers_write_results_and_tensorboard(tiny_pretrained, tmp_path, trainer,
                                                           config):
    backbone_path, folder = tiny_pretrained
    _run(f"trainers.{trainer}", f"--config=configs/{config}", f"--config.dataset={folder}",
         f"--backbone={backbone_path}", f"--workdir={tmp_path}")
    with open(tmp_path / "results.json") as file:
        record = json.load(file)
    assert record["backbone"] == str(backbone_path) and record["num_classes"] == 3
    assert 0 <= record["results"]["top1"] <= record["results"]["top5"] <= 100
    assert os.listdir(tmp_path / "tensorboard")


@pytest.mark.parametrize("trainer", ["linear_eval", "knn_eval", "finetune"])
def test_evaluation_trainers_refuse_stray_arguments_and_missing_flags_with_a_usage_error(
        tmp_path, trainer):
    def run(*args):
        done = subprocess.run([sys.executable, "-m", f"trainers.{trainer}", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr

    flags = ["--config=configs/linear_eval_imagenet.py:runlocal", "--backbone=unused.keras",
             f"--workdir={tmp_path}"]
    status, output = run("stray", *flags)
    assert status in (1, 2) and "Traceback" not in output, output[-3000:]
    assert "Unexpected arguments: ['stray']" in output
    status, output = run(f"--workdir={tmp_path}")
    assert status in (1, 2) and "Traceback" not in output, output[-3000:]
    assert "Flag --backbone must have a value other than None" in output
    assert "Flag --config must have a value other than None" in output
    assert not os.listdir(tmp_path)
