"""Tests of keras_vicreg.data: sources (folders, ImageNet's manual files, tfds mock data, offline
Fashion-MNIST), the fused JPEG path, bad files, sharding, determinism, and `fit` on every backend.
"""

import collections
import gzip
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from skimage import data as skimage_data

import keras_vicreg
from keras_vicreg.data import transforms
from keras_vicreg import data
from keras_vicreg.data import fashion_mnist
from keras_vicreg.data import batching
from keras_vicreg.data import sources

SMALL = transforms.get_augmentation("small")


def _encode(array, fmt="JPEG", mode=None, **kwargs):
    image = Image.fromarray(array)
    image = image.convert(mode) if mode else image
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def _count(dataset):
    return sum(int(tf.shape(tf.nest.flatten(batch)[0])[0]) for batch in dataset)


def test_jpeg_views_are_exactly_the_views_of_the_decoded_image():
    # The two views share one whole decode (decode.decode_view_crops).
    jpeg = tf.constant(_encode(skimage_data.coffee(), quality=90))
    for seed in ([0, 1], [5, 3]):
        fused = data.encoded_two_views(jpeg, tf.constant(seed), SMALL)
        decoded = transforms.two_views(tf.io.decode_jpeg(jpeg), tf.constant(seed), SMALL)
        for got, want in zip(fused, decoded):
            np.testing.assert_array_equal(got, want)


def test_png_bytes_give_exactly_the_views_of_the_decoded_image():
    png = tf.constant(_encode(skimage_data.chelsea()[:60, :90], "PNG"))
    fused = data.encoded_two_views(png, tf.constant([2, 2]), SMALL)
    decoded = transforms.two_views(tf.io.decode_png(png), tf.constant([2, 2]), SMALL)
    for got, want in zip(fused, decoded):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["CMYK", "L"])
def test_cmyk_and_grayscale_jpegs_decode_to_the_right_rgb(mode):
    photo = skimage_data.astronaut()[::4, ::4]
    encoded = _encode(photo, mode=mode, quality=95)
    expected = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), np.float32)

    def whole(shape):
        return tf.stack([0, 0, shape[0], shape[1]])

    got = data.decode_and_crop(tf.constant(encoded), whole, channels=3).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 3.0  # within a few levels of 255


def _images(sizes, channels=3):
    def generate():
        for index, (height, width) in enumerate(sizes):
            yield np.full((height, width, channels), index * 10, np.uint8)

    spec = tf.TensorSpec([None, None, channels], tf.uint8)
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


def test_two_view_dataset_batches_images_of_any_size_and_drops_the_remainder():
    sizes = [(5, 7), (300, 200), (32, 32), (17, 90), (64, 48)] * 3
    pairs = data.two_view_dataset(_images(sizes), 4, augmentation="small", seed=0)
    batches = list(pairs)
    assert len(batches) == len(sizes) // 4
    for view_a, view_b in batches:
        assert view_a.shape == view_b.shape == (4, 32, 32, 3)
        assert view_a.dtype == tf.float32


def test_two_view_dataset_is_reproducible_and_each_epoch_draws_new_views():
    sizes = [(40, 50)] * 8

    def first_epochs(seed):
        pairs = data.two_view_dataset(_images(sizes), 4, augmentation="small", seed=seed)
        return [np.concatenate([a for a, _ in pairs]) for _ in range(2)]

    epoch_1, epoch_2 = first_epochs(3)
    again_1, again_2 = first_epochs(3)
    np.testing.assert_array_equal(epoch_1, again_1)
    np.testing.assert_array_equal(epoch_2, again_2)
    assert np.abs(epoch_1 - epoch_2).max() > 0.1


def _random_images(shapes):
    """A dataset of random uint8 images of the given shapes, and the images."""
    images = [np.random.default_rng(i).integers(0, 256, s, np.uint8) for i, s in enumerate(shapes)]
    spec = tf.TensorSpec([None, None, shapes[0][2]], tf.uint8)
    return tf.data.Dataset.from_generator(lambda: iter(images), output_signature=spec), images


@pytest.mark.parametrize(
    "preset, image_size", [("grayscale", 28), ("small", None), ("imagenet", 64), ("imagenet", None)]
)
def test_two_view_dataset_yields_each_image_s_augment_two_views(preset, image_size):
    augmentation = transforms.get_augmentation(preset, image_size)
    channels = augmentation.view_a.channels
    dataset, images = _random_images([(28 + 9 * i, 30 + 5 * (i % 3), channels) for i in range(8)])
    pairs = data.two_view_dataset(
        dataset, 4, augmentation=augmentation, seed=5, shuffle_buffer=0
    )
    got = [np.concatenate(views) for views in zip(*pairs)]  # all views a, all views b
    # The pipeline's per-element seeds: the first epoch of its seed stream, pipeline id 0.
    seeds = tf.data.Dataset.random(seed=5, rerandomize_each_iteration=True)
    for index, (image, seed) in enumerate(zip(images, seeds)):
        expected = transforms.two_views(image, tf.stack([seed, 0]), augmentation)
        for views, want in zip(got, expected):
            np.testing.assert_allclose(views[index], want, atol=1e-5)


def test_pipelines_give_the_same_batches_augmented_per_batch_or_per_image(monkeypatch):
    dataset, images = _random_images([(30 + 7 * i, 40, 3) for i in range(6)])
    labelled = tf.data.Dataset.zip(dataset, tf.data.Dataset.range(6))

    def batches():
        pairs = data.two_view_dataset(dataset, 3, augmentation="small", seed=1, shuffle_buffer=0)
        train = data.labelled_dataset(labelled, 3, augmentation="small", train=True, seed=1)
        return [np.concatenate(views) for views in zip(*pairs)] + [
            np.concatenate([images for images, _ in train])
        ]

    per_batch = batches()
    monkeypatch.setattr(batching, "BATCH_AUGMENT_MAX_PIXELS", 0)  # every view per image
    for got, want in zip(batches(), per_batch):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("preset, image_size, crop_fraction, dtype", [
    ("grayscale", 28, 1.0, np.uint8), ("small", 32, 32 / 37, np.uint8),
    ("imagenet", 24, 224 / 256, np.float32),
])
def test_arrays_give_the_evaluation_batches_of_the_image_by_image_pipeline(
    preset, image_size, crop_fraction, dtype
):
    channels = transforms.get_augmentation(preset, image_size).view_a.channels
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 30, 30, 1 if channels == 1 else 3), np.uint8)
    images = images if dtype == np.uint8 else (images / 255.0).astype(dtype)
    labels = np.arange(11)

    def batches(source):
        return list(data.labelled_dataset(source, 4, augmentation=transforms.get_augmentation(
            preset, image_size), crop_fraction=crop_fraction))

    per_image = batches(tf.data.Dataset.from_tensor_slices((images, labels)))
    per_batch = batches((images, labels))
    assert [len(b[0]) for b in per_batch] == [4, 4, 3]
    for (got, got_labels), (want, want_labels) in zip(per_batch, per_image, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_array_equal(got_labels, want_labels)


def test_array_sources_shard_train_and_reject_bad_arrays():
    images = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(16)])
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, num_replicas_in_sync=2)
        batches = list(data.labelled_dataset((images, np.arange(16)), 8, augmentation="small",
                                             input_context=context))
        assert [len(labels) for _, labels in batches] == [4, 4]
        seen.append(np.concatenate([labels for _, labels in batches]))
    assert sorted(np.concatenate(seen)) == list(range(16))
    train = data.labelled_dataset((images, np.arange(16)), 5, augmentation="small", train=True,
                                  seed=0)
    assert [len(labels) for _, labels in train] == [5, 5, 5]  # shuffled, remainder dropped
    with pytest.raises(ValueError, match="one label"):
        data.labelled_dataset((images, np.arange(15)), 4, augmentation="small")
    with pytest.raises(ValueError, match="shape \\(count, height, width, channels\\)"):
        data.labelled_dataset((images[0], np.arange(8)), 4, augmentation="small")
    with pytest.raises(ValueError, match="pair"):
        data.labelled_dataset((images, np.arange(16), None), 4, augmentation="small")


def test_input_context_gives_each_replica_its_shard_and_its_batch():
    images = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(16)])
    labelled = tf.data.Dataset.from_tensor_slices((images, np.arange(16)))
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, num_replicas_in_sync=2)
        batches = list(
            data.labelled_dataset(labelled, 8, augmentation="small", input_context=context)
        )
        assert [images.shape[0] for images, _ in batches] == [4, 4]
        seen.append(np.concatenate([labels for _, labels in batches]))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(16))
    pairs = data.two_view_dataset(labelled, 8, augmentation="small", input_context=context, seed=1)
    assert [a.shape[0] for a, _ in pairs] == [4, 4]


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """A folder of class subfolders with good, odd but readable, and unreadable files."""
    root = str(tmp_path_factory.mktemp("odd_folder"))
    photo = skimage_data.chelsea()
    for index in range(4):
        _write(f"{root}/good/{index}.jpg", _encode(photo[index * 20 :, index * 30 :]))
    _write(f"{root}/odd/png_named.jpg", _encode(photo, "PNG"))
    _write(f"{root}/odd/cmyk.jpg", _encode(photo, mode="CMYK"))
    _write(f"{root}/odd/gray.jpg", _encode(photo, mode="L"))
    _write(f"{root}/odd/tiny.jpg", _encode(photo[:5, :7]))
    _write(f"{root}/bad/truncated.jpg", _encode(photo)[:300])
    _write(f"{root}/bad/garbage.jpg", b"\xff\xd8\xff" + bytes(range(256)) * 8)
    _write(f"{root}/bad/empty.jpg", b"")
    _write(f"{root}/bad/text.png", b"not an image")
    return root


def test_odd_files_are_decoded_and_unreadable_ones_skipped_with_a_warning(odd_folder, capfd):
    pairs = data.two_view_dataset(odd_folder, 1, augmentation="small", seed=0, shuffle_buffer=0)
    assert _count(pairs) == 8  # 4 good + 4 odd; the 4 bad ones are skipped, the epoch goes on
    assert "skipped an unreadable image" in capfd.readouterr().err
    labelled = data.labelled_dataset(odd_folder, 3, augmentation="small")
    assert _count(labelled) == 8


def test_empty_folders_and_folders_without_class_subfolders_raise(tmp_path):
    with pytest.raises(ValueError, match="is empty.*Received: path="):
        data.image_folder(tmp_path)
    _write(f"{tmp_path}/flat/a.jpg", _encode(skimage_data.coffee()))
    with pytest.raises(ValueError, match="has images but no class subfolders.*Received: path="):
        data.image_folder(f"{tmp_path}/flat")
    os.makedirs(f"{tmp_path}/no_images/cat")
    with pytest.raises(ValueError, match="hold no .jpg.*Received: path="):
        data.image_folder(f"{tmp_path}/no_images")
    with pytest.raises(ValueError, match="Unknown dataset.*Received: source="):
        data.two_view_dataset(f"{tmp_path}/missing", 2)


def test_split_folders_give_their_splits_and_class_folders_one_train_split(tmp_path):
    jpeg = _encode(skimage_data.coffee()[::4, ::4])
    for split, label in [("train", "cup"), ("train", "pot"), ("val", "cup"), ("val", "pot")]:
        _write(f"{tmp_path}/splits/{split}/{label}/0.jpg", jpeg)
        _write(f"{tmp_path}/classes/{label}/{split}.jpg", jpeg)
    splits = data.image_folder(f"{tmp_path}/splits").info.splits
    assert {name: split.num_examples for name, split in splits.items()} == {"train": 2, "val": 2}
    assert sources.default_split(f"{tmp_path}/splits", "eval_split") == "val"
    builder = data.image_folder(f"{tmp_path}/classes")
    assert builder.info.splits["train"].num_examples == 4
    assert builder.info.features["label"].names == ["cup", "pot"]
    assert sources.default_split(f"{tmp_path}/classes", "eval_split") == "train"


def test_evaluation_centre_crop_matches_pil_resize_of_the_central_square():
    photo = skimage_data.astronaut()[100:160, 100:180]  # 60 x 80
    labelled = tf.data.Dataset.from_tensor_slices((photo[None], [7]))
    images, labels = next(iter(data.labelled_dataset(labelled, 1, augmentation="small")))
    assert labels.numpy().tolist() == [7]
    side = round(60 * 224 / 256)  # the central square that "resize 256, crop 224" keeps
    left, top = (80 - side) // 2, (60 - side) // 2
    box = (left, top, left + side, top + side)
    expected = Image.fromarray(photo).resize((32, 32), Image.BILINEAR, box=box)
    view = SMALL.view_a
    got = images[0].numpy() * np.array(view.std) + np.array(view.mean)
    assert np.abs(got - np.asarray(expected) / 255.0).mean() < 0.01


def test_linear_evaluation_training_crops_and_flips_randomly():
    photo = skimage_data.astronaut()[::8, ::8]
    labelled = tf.data.Dataset.from_tensor_slices((photo[None].repeat(8, 0), np.arange(8)))
    batches = data.labelled_dataset(labelled, 4, augmentation="small", train=True, seed=0)
    images, _ = next(iter(batches))
    assert images.shape == (4, 32, 32, 3)
    assert np.abs(images[0] - images[1]).max() > 0.1  # same photo, different crops
    assert _count(batches) == 8


def test_imagenet_error_says_which_tar_files_go_where(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"partial")
    with pytest.raises(ValueError) as error:
        data.check_imagenet_manual_dir(manual)
    message = str(error.value)
    assert f"{manual}/ILSVRC2012_img_train.tar" in message and "missing" in message
    assert f"{manual}/ILSVRC2012_img_val.tar" in message and "incomplete: 7 bytes" in message
    assert "image-net.org" in message and message.endswith(f"Received: manual_dir='{manual}'")
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar"):
        data.two_view_dataset("imagenet2012", 8, data_dir=tmp_path / "tfds")


def _imagenet_manual_dir(path):
    """ImageNet's two tar files at their real sizes, sparse (no disk used)."""
    path.mkdir()
    for name, size in sources.IMAGENET_TARS:
        with open(path / name, "wb") as f:
            f.truncate(size)
    return str(path)


def test_imagenet2012_pipelines_run_end_to_end_on_tfds_mock_data(tmp_path):
    manual = _imagenet_manual_dir(tmp_path / "manual")
    with tfds.testing.mock_data(num_examples=8):
        pairs = data.two_view_dataset(
            "imagenet2012", 4, manual_dir=manual, data_dir=tmp_path, seed=0
        )
        shapes = [(a.shape, b.shape) for a, b in pairs]
        assert shapes == [((4, 224, 224, 3), (4, 224, 224, 3))] * 2
        images, labels = next(
            iter(data.labelled_dataset("imagenet2012", 4, manual_dir=manual, data_dir=tmp_path))
        )
        assert images.shape == (4, 224, 224, 3) and labels.shape == (4,)


def _idx(name):
    with gzip.open(os.path.join(fashion_mnist.DEBIAN_DIR, name)) as f:
        content = f.read()
    offset = 16 if "images" in name else 8
    return np.frombuffer(content, np.uint8, offset=offset)


@pytest.fixture(scope="module")
def fashion_mnist_dir(tmp_path_factory):
    if not fashion_mnist.check_local_files():
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed ({fashion_mnist.DEBIAN_DIR})")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = data.prepare_fashion_mnist(data_dir)
    assert builder.is_prepared()
    return data_dir


def test_fashion_mnist_is_prepared_offline_as_the_real_tfds_dataset(fashion_mnist_dir):
    builder = tfds.builder("fashion_mnist", data_dir=fashion_mnist_dir)
    assert builder.is_prepared() and str(builder.version) == "3.0.1"
    splits = builder.info.splits
    assert (splits["train"].num_examples, splits["test"].num_examples) == (60000, 10000)
    for split, prefix, count in (("train", "train", 60000), ("test", "t10k", 10000)):
        dataset = tfds.load("fashion_mnist", split=split, data_dir=fashion_mnist_dir)
        examples = next(iter(dataset.batch(count)))
        assert examples["label"].shape == (count,)
        # tfds stores the examples in its own order: compare (image, label) pairs as multisets.
        images = _idx(f"{prefix}-images-idx3-ubyte.gz").reshape(count, 28 * 28)
        labels = _idx(f"{prefix}-labels-idx1-ubyte.gz")
        got = collections.Counter(
            zip(map(bytes, examples["image"].numpy().reshape(count, -1)), examples["label"].numpy())
        )
        assert got == collections.Counter(zip(map(bytes, images), labels))


def test_fashion_mnist_pipelines_read_the_prepared_dataset(fashion_mnist_dir):
    view_a, view_b = next(
        iter(data.two_view_dataset("fashion_mnist", 16, data_dir=fashion_mnist_dir))
    )
    assert view_a.shape == view_b.shape == (16, 28, 28, 1)
    images, labels = next(
        iter(data.labelled_dataset("fashion_mnist", 16, data_dir=fashion_mnist_dir))
    )
    assert images.shape == (16, 28, 28, 1) and labels.shape == (16,)


def test_fashion_mnist_without_files_or_download_raises_how_to_get_them(tmp_path, monkeypatch):
    empty = str(tmp_path / "none")
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist.*Received:"):
        data.prepare_fashion_mnist(str(tmp_path), local_dir=empty, download=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(RuntimeError, match="could not download.*dataset-fashion-mnist"):
        data.prepare_fashion_mnist(str(tmp_path), local_dir=empty)


def test_wrong_local_fashion_mnist_files_raise(tmp_path):
    for name in fashion_mnist.FILES:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(ValueError, match="idx header.*Received: local_dir="):
        fashion_mnist.check_local_files(str(tmp_path))


def _tiny_backbone():
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(8, 3, strides=4)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(features))


@pytest.mark.backend_neutral
def test_pairs_feed_fit_of_a_model_with_a_custom_train_step_on_pairs():
    photos = np.stack([skimage_data.astronaut()[i * 8 : i * 8 + 64, :64] for i in range(16)])
    pairs = data.two_view_dataset(
        tf.data.Dataset.from_tensor_slices(photos), 8, augmentation="small", seed=0
    )
    # keras_vicreg.VICReg: a keras.Model whose train_step takes (view_a, view_b) on each backend.
    model = keras_vicreg.VICReg(_tiny_backbone(), expander="16-16")
    model.compile(optimizer="sgd")
    history = model.fit(pairs, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()


def _identity_augmentation(size):
    """Views that are the images themselves (whole crops, no choices), in [0, 1]."""
    view = transforms.ViewAugmentation(
        image_size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0,
        jitter_prob=0.0, saturation=0.0, hue=0.0, grayscale_prob=0.0, blur_prob=0.0,
        solarize_prob=0.0, mean=(0.0,),
        std=(1.0,),
    )
    return transforms.TwoViewAugmentation(name="identity", view_a=view, view_b=view)


def _array_epoch(images, batch_size, **kwargs):
    """The image indices of each batch of `two_view_dataset` of an array (pixel = index)."""
    pairs = data.two_view_dataset(images, batch_size, augmentation=_identity_augmentation(4),
                                  **kwargs)
    batches = []
    for view_a, view_b in pairs:
        np.testing.assert_array_equal(view_a, view_b)
        batches.append(np.rint(np.asarray(view_a)[:, 0, 0, 0] * 255).astype(int))
    return batches


def test_arrays_are_shuffled_whole_by_seed_and_batched_without_a_per_image_op():
    images = np.broadcast_to(np.arange(50, dtype=np.uint8)[:, None, None, None], (50, 4, 4, 1))
    epoch = _array_epoch(images, 8, seed=3)
    assert len(epoch) == 6 and all(len(batch) == 8 for batch in epoch)  # remainder dropped
    seen = np.concatenate(epoch)
    assert len(set(seen)) == 48 and set(seen) <= set(range(50))  # each image at most once
    assert [list(b) for b in epoch] == [list(b) for b in _array_epoch(images, 8, seed=3)]
    assert not np.array_equal(seen, np.concatenate(_array_epoch(images, 8, seed=4)))
    unshuffled = _array_epoch(images, 8, seed=3, shuffle_buffer=0, drop_remainder=False)
    np.testing.assert_array_equal(np.concatenate(unshuffled), np.arange(50))
    assert len(unshuffled[-1]) == 2


def test_arrays_give_each_replica_its_shard_and_its_batch():
    images = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None, None], (40, 4, 4, 1))
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        shards.append(np.concatenate(_array_epoch(images, 8, seed=1, input_context=context)))
    assert [len(shard) for shard in shards] == [20, 20]  # per-replica batches of 4
    assert set(shards[0]).isdisjoint(shards[1]) and len(set(shards[0]) | set(shards[1])) == 40


def test_arrays_views_follow_the_augmentation():
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), np.uint8)
    augmentation = transforms.get_augmentation("grayscale", 28)
    view_a, view_b = next(iter(data.two_view_dataset(images, 32, augmentation=augmentation,
                                                      seed=0)))
    assert view_a.shape == view_b.shape == (32, 28, 28, 1)
    assert not np.allclose(view_a, view_b)
    with pytest.raises(ValueError, match="Received: shape"):
        data.two_view_dataset(images[..., 0], 32, augmentation=augmentation)


@pytest.mark.parametrize("channels, mean", [(3, transforms.IMAGENET_MEAN), (1, (0.3,))])
def test_serve_preprocessing_is_the_labelled_pipelines_evaluation_view(channels, mean):
    std = (0.25,) * len(mean)
    images = np.random.default_rng(3).integers(0, 256, (5, 37, 45, channels), np.uint8)
    view = data.labelled_view(24, mean, std)
    fraction = 24 / 28
    served = data.centre_crop_preprocess(tf.constant(images), 24, fraction, mean, std).numpy()
    one_by_one = [data.centre_crop_preprocess(image, 24, fraction, mean, std) for image in images]
    np.testing.assert_array_equal(served, np.stack(one_by_one))
    per_image = data.labelled_dataset(tf.data.Dataset.from_tensor_slices((images, np.arange(5))),
                                      5, augmentation=view, crop_fraction=fraction)
    per_batch = data.labelled_dataset((images, np.arange(5)), 5, augmentation=view,
                                      crop_fraction=fraction)
    for batches in (per_image, per_batch):
        (got, labels), = list(batches)
        np.testing.assert_allclose(got, served, atol=1e-6)
        np.testing.assert_array_equal(labels, np.arange(5))


def test_in_memory_views_are_the_per_image_views_of_the_batch_s_draws():
    # The in-memory route draws a batch's choices from the batch's seed (a draw per image would
    # cost ops per image, what the route saves); with those draws, each image's views are what the
    # per-image functions make of it.
    augmentation = transforms.get_augmentation("small", 20)
    images = np.random.default_rng(1).integers(0, 256, (12, 30, 26, 3), np.uint8)
    seed = tf.constant([4, 0], tf.int64)
    got = transforms.batch_two_views(tf.constant(images), seed, augmentation)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    for views, view, crop_seed, params_seed in zip(
        got, (augmentation.view_a, augmentation.view_b), seeds[0::2], seeds[1::2]
    ):
        crops = transforms.sample_batch_crop_draws(crop_seed, len(images))
        windows = transforms.crop_windows(images.shape[1:], crops, [view.crop_scale],
                                          [view.crop_ratio])
        params = transforms.sample_batch_view_params(params_seed, view, len(images))
        for index, image in enumerate(images):
            crop = transforms.crop_to_window(tf.constant(image), windows[index])
            one = tf.nest.map_structure(lambda value: value[index], params)
            want = transforms.apply_view_params(crop, one, view)
            np.testing.assert_allclose(views[index], want, atol=1e-4)


def test_in_memory_and_per_image_routes_draw_views_of_the_same_distribution():
    # Constant-per-column images: a view's mean brightness moves with its crop, flip, jitter and
    # solarization; both routes must give the same distribution of it.
    columns = np.linspace(0, 255, 24).astype(np.uint8)
    images = np.broadcast_to(columns[None, None, :, None], (512, 24, 24, 3)).copy()
    augmentation = transforms.get_augmentation("small", 16)

    def view_means(source):
        pairs = data.two_view_dataset(source, 128, augmentation=augmentation, seed=2)
        return np.concatenate([np.asarray(a).mean(axis=(1, 2, 3)) for a, _ in pairs])

    in_memory = view_means(images)
    per_image = view_means(tf.data.Dataset.from_tensor_slices(images))
    assert len(in_memory) == len(per_image) == 512
    assert not np.allclose(in_memory, per_image)  # other random streams
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(in_memory, q) == pytest.approx(np.quantile(per_image, q), abs=0.15)
