"""Segmentation transfer: mIoU, the feature pyramid, the tfds loaders, the config, the binary, and
a VICReg-pretrained backbone beating random weights on the generated canvases."""

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_vicreg
from configs import segmentation as segmentation_config
from keras_vicreg import data
from keras_vicreg.data import canvases
from keras_vicreg.data import segmentation_data
from keras_vicreg.data import transforms
from keras_vicreg.transfer import segmentation
from keras_vicreg.transfer.pyramid import pyramid_encoder
from keras_vicreg.models.backbones.resnet_backbone import resnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = segmentation_data.IGNORE_CLASS


class _FixedLogits:
    """A stand-in segmenter whose `predict_on_batch` returns the next of the given logits."""

    def __init__(self, logits):
        self._logits = iter(logits)

    def predict_on_batch(self, images):
        return next(self._logits)


@pytest.mark.backend_neutral
def test_miou_is_voc_miou_of_the_whole_set_confusion_matrix():
    rng = np.random.default_rng(0)
    classes = 5  # class 4 appears in neither truth nor predictions: left out of the mean
    masks = [rng.integers(0, 4, (2, 6, 7)).astype(np.int32) for _ in range(3)]
    for mask in masks:
        mask[rng.random(mask.shape) < 0.2] = IGNORE
    logits = [rng.normal(size=(*mask.shape, classes)).astype(np.float32) for mask in masks]
    for logit in logits:
        logit[..., 4] = -10.0
    batches = [(np.zeros((*mask.shape, 3), np.float32), mask) for mask in masks]
    results = segmentation.evaluate_miou(_FixedLogits(logits), batches, classes,
                                         class_names=list("abcde"))
    truth = np.concatenate([mask.ravel() for mask in masks])
    predicted = np.concatenate([logit.argmax(-1).ravel() for logit in logits])
    keep = truth != IGNORE
    confusion = np.zeros((classes, classes), np.float64)
    for true, pred in zip(truth[keep], predicted[keep]):
        confusion[true, pred] += 1
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    with np.errstate(invalid="ignore"):
        iou = np.diag(confusion) / union
    np.testing.assert_array_equal(results["confusion"], confusion)
    np.testing.assert_allclose(results["miou"], np.nanmean(iou), rtol=1e-6)
    np.testing.assert_allclose([results["iou"][name] for name in "abcd"], iou[:4], rtol=1e-6)
    assert results["iou"]["e"] is None
    np.testing.assert_allclose(results["pixel_accuracy"], np.trace(confusion) / keep.sum())


@pytest.mark.parametrize("stem, filters, levels", [
    pytest.param("small", (4, 8, 8, 8), (0, 1, 2, 3), marks=pytest.mark.backend_neutral),
    # stages laid out by this package, and a nested keras-hub ResNetBackbone (11M weights: TF only)
    pytest.param("imagenet", (4, 8, 8, 8), (2, 3, 4, 5), marks=pytest.mark.backend_neutral),
    ("imagenet", (64, 128, 256, 512), (2, 3, 4, 5)),
])
def test_pyramid_encoder_gives_each_stage_at_its_stride(stem, filters, levels):
    backbone = resnet(18, stem=stem, filters=filters, input_shape=(None, None, 3))
    encoder = pyramid_encoder(backbone)
    outputs = encoder(np.zeros((1, 32, 32, 3), np.float32))
    assert sorted(outputs) == sorted(encoder.pyramid_outputs) == [f"P{k}" for k in levels]
    for level, width in zip(levels, filters):
        assert tuple(outputs[f"P{level}"].shape) == (1, 32 // 2**level, 32 // 2**level, width)
    shared = {id(weight) for weight in backbone.weights}
    assert {id(weight) for weight in encoder.weights} <= shared


@pytest.mark.backend_neutral
def test_pyramid_encoder_refuses_a_backbone_without_resnet_stages():
    convnet = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3),
                                keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="need a ResNet's stage outputs"):
        pyramid_encoder(convnet)


def _panoptic_example(rng):
    """A 32 x 32 image, its panoptic PNG and segments: person (COCO label 0), couch (57), a stuff
    category (100) and unlabelled pixels (id 0)."""
    ids = np.zeros((32, 32), np.int64)
    ids[:10] = 5 + 256 * 3
    ids[10:20, :16] = 70_000
    ids[20:, 5:] = 12
    png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    segments = {5 + 256 * 3: 0, 70_000: 57, 12: 100}
    example = dict(
        image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), panoptic_image=png,
        panoptic_objects=dict(id=np.array(list(segments), np.int64),
                              label=np.array(list(segments.values()), np.int64)),
    )
    return example, ids, segments


@pytest.mark.backend_neutral
@pytest.mark.parametrize("name, classes", [("voc", {0: 15, 57: 18, 100: 0}),
                                           ("coco", {0: 0, 57: 57, 100: 100})])
def test_panoptic_loaders_on_mock_tfds_data(name, classes, tmp_path):
    rng = np.random.default_rng(0)
    example, ids, segments = _panoptic_example(rng)

    def as_dataset(self, split, *args, **kwargs):
        assert self.name == "coco" and self.builder_config.name == "2017_panoptic"
        return tf.data.Dataset.from_tensors(example).repeat(3)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        batches, names = segmentation_data.panoptic_dataset(
            name, "validation", image_size=32, batch_size=2, mean=(0.5,) * 3, std=(0.25,) * 3,
            train=False, data_dir=str(tmp_path),
        )
        batches = list(batches)
    expected = np.full((32, 32), IGNORE, np.int32)  # NumPy: each segment's pixels, by id
    for segment, label in segments.items():
        expected[ids == segment] = classes[label]
    assert len(names) == (21 if name == "voc" else 133) and [len(x) for x, _ in batches] == [2, 1]
    for images, masks in batches:
        np.testing.assert_array_equal(masks, np.broadcast_to(expected, masks.shape))
        np.testing.assert_allclose(images[0], (example["image"] / 255 - 0.5) / 0.25, atol=1e-4)


@pytest.mark.backend_neutral
def test_voc_label_map_checks_the_prepared_datasets_names():
    names = [f"stuff{index}" for index in range(133)]
    for voc_name, (index, coco_name) in segmentation_data._VOC_IN_COCO.items():
        names[index] = coco_name
    info = types.SimpleNamespace(
        features={"panoptic_objects": {"label": types.SimpleNamespace(names=names)}})
    table = segmentation_data.label_map("voc", info)
    assert table[57] == segmentation_data.VOC_CLASSES.index("sofa") and table[7] == 0
    assert sorted(table[table > 0]) == list(range(1, 21))
    names[4] = "truck"
    with pytest.raises(ValueError, match="should be 'airplane'"):
        segmentation_data.label_map("voc", info)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("key, value, message", [
    ("dataset", "cityscapes", "`dataset` must be one of"),
    ("image_size", 500, "multiple of 32"),
    ("steps", 0, "`steps` must be a positive int"),
    ("optimizer", "lars", "`optimizer` must be one of"),
    ("backbone", "/nonexistent/backbone.keras", "does not exist"),
    ("backbone", "/tmp/backbone.h5", "must be a .keras file"),
    ("dilation_rates", (0, 2), "`dilation_rates` must be positive"),
])
def test_a_bad_config_is_refused_before_any_data_is_read(key, value, message, tmp_path):
    config = segmentation_config.get_config("voc")
    config[key] = value
    with pytest.raises(ValueError, match=message):  # "voc" would download COCO otherwise
        segmentation.run_segmentation(config, workdir=str(tmp_path), data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.backend_neutral
def test_config_argument_picks_one_dataset():
    assert segmentation_config.get_config("coco").dataset == "coco"
    assert segmentation_config.get_config("coco,runlocal").dataset == "canvases"
    with pytest.raises(ValueError, match="takes one of"):
        segmentation_config.get_config("voc,coco")


@pytest.mark.backend_neutral
def test_segmenter_trains_a_few_steps_on_this_backend():
    backbone = resnet(18, stem="small", filters=(4, 8, 8, 8), input_shape=(None, None, 3))
    segmenter = segmentation.build_segmenter(backbone, 3, image_size=16, dilation_rates=(1, 2))
    jit = keras.backend.backend() == "jax"  # eager JAX dispatches op by op: slower than XLA
    segmentation.compile_segmenter(segmenter, steps=2, learning_rate=1e-3, optimizer="adamw",
                                   jit_compile=jit)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
    masks = rng.integers(0, 3, (4, 16, 16)).astype(np.int32)
    masks[:, :2] = IGNORE
    before = [np.array(weight) for weight in backbone.trainable_weights]
    history = segmenter.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert tuple(segmenter.predict_on_batch(images).shape) == (4, 16, 16, 3)
    assert any(not np.array_equal(b, np.array(a))
               for b, a in zip(before, backbone.trainable_weights))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="one backend is enough for the binary; the library is backend_neutral")
def test_binary_voc_runlocal_writes_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-m", "trainers.segment", "--config=configs/segmentation.py:voc,runlocal",
         f"--workdir={tmp_path}", "--config.steps=3", "--config.canvas_train=48",
         "--config.canvas_test=16"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.0 <= results["miou"] <= 1.0 and 0.0 <= results["pixel_accuracy"] <= 1.0
    assert list(results["iou"]) == list(segmentation_data.CANVAS_CLASSES)
    assert results["backbone"] == "" and results["config"]["steps"] == 3
    assert np.array(results["confusion"]).sum() == 16 * 48 * 48


@pytest.fixture(scope="module")
def pretrained_backbone(tmp_path_factory):
    """A small ResNet-18 pretrained with VICReg on canvases (32-pixel views), saved as .keras."""
    keras.utils.set_random_seed(0)
    images = np.repeat(canvases.fashion_mnist_canvases(1024, canvas_size=48, seed=10)["images"],
                       3, axis=-1)
    pairs = data.two_view_dataset(
        images, 32, augmentation=transforms.get_augmentation("small", 32), seed=0)
    backbone = resnet(18, stem="small", filters=(8, 16, 32, 64), input_shape=(None, None, 3))
    model = keras_vicreg.VICReg(backbone, expander="256-256")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), jit_compile=True)
    model.fit(pairs.repeat(), steps_per_epoch=PRETRAIN_STEPS, epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("pretrained") / "backbone.keras")
    backbone.save(path)
    return path


PRETRAIN_STEPS = 100
FINETUNE_STEPS = 100


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="minutes on the other backends' CPU kernels; the steps are "
                           "backend_neutral above")
def test_vicreg_pretrained_backbone_beats_random_weights_on_canvases(pretrained_backbone,
                                                                      tmp_path):
    scores = {}
    for name, path in (("pretrained", pretrained_backbone), ("random", "")):
        config = segmentation_config.get_config("voc,runlocal")
        config.backbone, config.steps, config.jit_compile = path, FINETUNE_STEPS, True
        scores[name] = segmentation.run_segmentation(config, workdir=str(tmp_path / name))["miou"]
    print(f"mIoU after {FINETUNE_STEPS} fine-tuning steps: {scores}")  # docs/results.md, with -s
    assert scores["pretrained"] > scores["random"] + 0.02, scores
