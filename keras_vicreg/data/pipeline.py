"""Input pipelines: pairs of augmented views for pretraining, labelled images for evaluation.

    source (tfds name, folder or tf.data.Dataset) -> shard -> shuffle -> zip with per-element seeds
      -> parallel map: decode (fused decode-and-crop for JPEG), crop, resize, and draw the other
         random choices -> skip unreadable images -> batch (drop remainder)
      -> parallel map on batches: flip, colour jitter, grayscale, blur, solarize, normalise
      -> prefetch

Only what differs in shape per image (decoding, cropping, resizing) runs per image; the rest runs
once per batch (`transforms.apply_view_params_batch`): in tf.data an op costs about as much per call
as a small image's arithmetic, so for Fashion-MNIST or CIFAR a batch costs about 3x less CPU.
Views larger than `BATCH_AUGMENT_MAX_PIXELS` (ImageNet's 224) are augmented per image, inside the
first map, as batches of one: there the arithmetic dominates, and a batch's tensors would outgrow
the CPU's caches. The work is TensorFlow ops only (no Python), and every random choice is a
stateless function of a per-element seed drawn from `tf.data.Dataset.random(seed)`: with the same
seed the pipeline yields the same batches, whatever the parallelism or where the augmentation
runs, and a new epoch draws new views.
"""

import dataclasses
import random
import sys

import numpy as np
import tensorflow as tf

from keras_vicreg.data import transforms
from keras_vicreg.data import sources

AUTOTUNE = tf.data.AUTOTUNE
# Views of at most this many pixels are augmented per batch, where per image tf.data's cost per op
# would dominate; larger ones per image, where a batch's tensors would outgrow the CPU's caches.
# (ImageNet views' CPU time per batch, relative to per image: 0.5 at 64 pixels, 0.9 at 96, 1 at
# 128, 1.4 at 160.)
BATCH_AUGMENT_MAX_PIXELS = 96 * 96


def decode_and_crop(data, window_fn, channels):
    """Decodes an encoded image and crops it to the window `window_fn(shape)` chooses.

    A JPEG is decoded and cropped in one step (`tf.image.decode_and_crop_jpeg`, the window chosen
    from the header's shape), so that the pixels outside the crop are never decoded; any other
    format `tf.io.decode_image` reads (PNG, GIF, BMP, WebP) is decoded whole, then cropped.
    Grayscale and CMYK JPEGs come out with `channels` channels.

    Args:
        data: a scalar string tensor, the encoded image.
        window_fn: maps an image shape (height, width, channels) to an int32 window
            `[offset_y, offset_x, height, width]`.
        channels: 1 or 3.

    Returns:
        uint8 tensor of shape (height, width, channels).
    """

    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(data))
        return tf.image.decode_and_crop_jpeg(data, window, channels=channels)

    def other():
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return transforms.crop_to_window(image, window_fn(tf.shape(image)))

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def _two_view_crops(image, crop_seeds, views):
    """Both views' crops of an image, a JPEG decoded per view with its crop only.

    Only the decoding branches on the format (control flow inside tf.data functions is costly,
    nested control flow more so); both crop windows are drawn in one vectorised computation.
    """
    draws = tf.stack([tf.random.stateless_uniform([transforms.CROP_DRAWS], s) for s in crop_seeds])

    def windows(shape):
        scales, ratios = [v.crop_scale for v in views], [v.crop_ratio for v in views]
        return tf.unstack(transforms.crop_windows(shape, draws, scales, ratios))

    if image.dtype != tf.string:
        return [transforms.crop_to_window(image, window) for window in windows(tf.shape(image))]

    def fused():
        shape = tf.image.extract_jpeg_shape(image)
        return [
            tf.image.decode_and_crop_jpeg(image, window, channels=view.channels)
            for window, view in zip(windows(shape), views)
        ]

    def decode_once():
        decoded = tf.io.decode_image(image, channels=views[0].channels, expand_animations=False)
        return [transforms.crop_to_window(decoded, window) for window in windows(tf.shape(decoded))]

    return tf.cond(tf.io.is_jpeg(image), fused, decode_once)


def _resized_two_views(image, seed, augmentation):
    """The per-image half of `encoded_two_views`: both views resized, and their random draws.

    Args:
        image: a scalar string tensor (encoded image), or a decoded image tensor.
        seed: int tensor of shape (2,).
        augmentation: a `TwoViewAugmentation`.

    Returns:
        (image_a, draws_a, image_b, draws_b): per view, its crop from `transforms.resize_crop` and
        the `transforms.VIEW_DRAWS` uniform draws of its other choices; `_augment_two_views` finishes
        batches of them.
    """
    views = (augmentation.view_a, augmentation.view_b)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    crop_seeds, params_seeds = zip(*(transforms.split_view_seed(s) for s in seeds))
    crops = _two_view_crops(image, crop_seeds, views)
    resized = [transforms.resize_crop(crop, view) for crop, view in zip(crops, views)]
    draws = [tf.random.stateless_uniform([transforms.VIEW_DRAWS], s) for s in params_seeds]
    return resized[0], draws[0], resized[1], draws[1]


def _augment_two_views(image_a, draws_a, image_b, draws_b, augmentation):
    """The per-batch half of `encoded_two_views`, on batches of `_resized_two_views`' outputs.

    Returns:
        (view_a, view_b), each float32 (batch, size, size, channels), normalised.
    """
    return tuple(
        transforms.apply_view_params_batch(images, transforms.view_params(draws, view), view)
        for images, draws, view in (
            (image_a, draws_a, augmentation.view_a),
            (image_b, draws_b, augmentation.view_b),
        )
    )


def encoded_two_views(image, seed, augmentation):
    """`transforms.two_views` of an encoded image: JPEGs decoded per view with their crop only.

    Args:
        image: a scalar string tensor (encoded image), or a decoded image tensor.
        seed: int tensor of shape (2,).
        augmentation: a `TwoViewAugmentation` or a preset name.

    Returns:
        (view_a, view_b); the same views as `transforms.two_views` of the decoded image.
    """
    augmentation = transforms.get_augmentation(augmentation)
    return _on_one(_augment_two_views, _resized_two_views(image, seed, augmentation), augmentation)


def _on_one(batch_fn, parts, *args):
    """`batch_fn(*parts, *args)` of one element, as a batch of one."""
    batch = tf.nest.map_structure(lambda part: part[None], parts)
    return tf.nest.map_structure(lambda part: part[0], batch_fn(*batch, *args))


def _select(dataset, keys):
    """Maps dict or tuple elements to the tuple of the given keys (or leading positions)."""
    spec = dataset.element_spec
    if isinstance(spec, dict):
        missing = [key for key in keys if key not in spec]
        if missing:
            raise ValueError(
                f"The dataset's elements lack the keys {missing}; pass `image_key`/`label_key`. "
                f"Received: element keys={sorted(spec)}"
            )
        return dataset.map(lambda element: tuple(element[key] for key in keys))
    if isinstance(spec, (tuple, list)):
        if len(spec) < len(keys):
            raise ValueError(
                f"The dataset's elements need {len(keys)} parts (image, label). "
                f"Received: element_spec={spec}"
            )
        return dataset.map(lambda *element: tuple(element[: len(keys)]))
    if len(keys) > 1:
        raise ValueError(
            f"Labelled pipelines need (image, label) elements. Received: element_spec={spec}"
        )
    return dataset.map(lambda image: (image,))


def _count_skipped(state, batch):
    """A `scan` step over batches after `ignore_errors`: gaps in the element index are skips."""
    last, total = state
    index, value = batch
    skipped = index[-1] - last - tf.size(index, tf.int64)
    total += skipped

    def warn():
        # Printed to stderr, not logged: TF_CPP_MIN_LOG_LEVEL=2, common, would hide a warning.
        tf.print(
            "WARNING keras_vicreg.data: skipped an unreadable image; images skipped in this "
            "epoch so far:",
            total,
            output_stream=sys.stderr,
        )
        return total

    total = tf.cond(skipped > 0, warn, lambda: total)
    return (index[-1], total), value


def _map_and_batch(
    dataset, per_image, per_batch, view, *, seed, pipeline_id, batch_size, drop_remainder
):
    """Maps `per_image(element, seed)` in parallel, batches, and maps `per_batch` on the batches.

    For views of more than `BATCH_AUGMENT_MAX_PIXELS`, `per_batch` runs inside the per-image map
    instead, on batches of one. Elements whose map fails are skipped: a skip shows as a gap in the
    element index of the next batch, counted in a warning on stderr then, so skips after an
    epoch's last batch (or in its dropped remainder) go uncounted.
    """
    batched = view.image_size**2 <= BATCH_AUGMENT_MAX_PIXELS

    def indexed(element, indexed_seed):
        index, element_seed = indexed_seed
        parts = per_image(element, tf.stack([element_seed, tf.constant(pipeline_id, tf.int64)]))
        return index, (parts if batched else _on_one(per_batch, parts))

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).enumerate()
    dataset = tf.data.Dataset.zip(dataset, seeds)
    dataset = dataset.map(indexed, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    # Counted per batch: per element, the count would cost as much as a small image's crop.
    initial = (tf.constant(-1, tf.int64), tf.constant(0, tf.int64))
    dataset = dataset.scan(initial, _count_skipped)
    if batched:
        dataset = dataset.map(per_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset


def _resolve(
    source,
    split,
    which,
    *,
    augmentation,
    data_dir,
    manual_dir,
    download,
    seed,
    input_context,
    shuffle_files,
):
    """Returns (dataset, augmentation, sharded) for a tfds name, a folder or a tf.data.Dataset."""
    if isinstance(source, tf.data.Dataset):
        return source, transforms.get_augmentation(augmentation or "imagenet"), False
    spec = sources.dataset_spec(source)
    dataset, _ = sources.load_split(
        source,
        split or sources.default_split(source, which),
        data_dir=data_dir,
        manual_dir=manual_dir,
        download=download,
        shuffle_files=shuffle_files,
        seed=seed,
        input_context=input_context,
    )
    if augmentation is None:
        augmentation = transforms.get_augmentation(spec.augmentation, spec.image_size)
    return dataset, transforms.get_augmentation(augmentation), True


def _prepare(dataset, sharded, seed, shuffle_buffer, input_context, batch_size):
    """Shards (unless done), shuffles; returns (dataset, per-replica batch size, pipeline id)."""
    pipeline_id = 0
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        if not sharded and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines, pipeline_id)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed + pipeline_id)
    return dataset, batch_size, pipeline_id


def _check_batch_size(batch_size):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size}")


def two_view_dataset(
    source,
    batch_size,
    *,
    augmentation=None,
    split=None,
    seed=None,
    shuffle_buffer=10_000,
    input_context=None,
    drop_remainder=True,
    image_key="image",
    data_dir=None,
    manual_dir=None,
    download=True,
):
    """Batches of two augmented views `(view_a, view_b)` for `VICReg.fit`.

    Args:
        source: a tfds name from `keras_vicreg.data.DATASETS` (e.g. "imagenet2012", "cifar10",
            "fashion_mnist"), a folder of class subfolders, a `tf.data.Dataset` of images
            (encoded bytes, or uint8 / float in [0, 1] tensors of any size), of dicts with
            `image_key`, or of tuples whose first part is the image; or the images themselves,
            an array (count, height, width, channels) in memory (uint8, or float in [0, 1]): these
            are shuffled by index and augmented a batch at a time (`transforms.batch_two_views`),
            the cheapest pipeline (about 10x less CPU time than image by image for
            Fashion-MNIST), with the same distributions of views drawn from each batch's seed
            instead of each image's.
        batch_size: the global batch size (divided among replicas with `input_context`).
        augmentation: a preset name or `transforms.TwoViewAugmentation`; default: the dataset's (see
            `DATASETS`), "imagenet" for folders and datasets.
        split: the split to read; default: the dataset's pretraining split ("unlabelled" for
            STL-10).
        seed: the seed of the shuffle and of every augmentation; None draws one.
        shuffle_buffer: size of the shuffle buffer (0: no shuffle); an array is shuffled whole
            (unless 0).
        input_context: a `tf.distribute.InputContext` (from
            `strategy.distribute_datasets_from_function`): the pipeline reads its shard and
            batches `input_context.get_per_replica_batch_size(batch_size)`.
        drop_remainder: drop the last incomplete batch (VICReg's statistics need full batches).
        image_key: the image's key in dict elements.
        data_dir, manual_dir, download: see `keras_vicreg.data.load_builder`.

    Returns:
        A `tf.data.Dataset` of `(view_a, view_b)`, each float32 of shape
        (batch, size, size, channels). Unreadable images are skipped with a warning.
    """
    _check_batch_size(batch_size)
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    if isinstance(source, (np.ndarray, tf.Tensor)):
        return _array_pairs(
            source, batch_size, transforms.get_augmentation(augmentation or "imagenet"), seed,
            shuffle=bool(shuffle_buffer), input_context=input_context,
            drop_remainder=drop_remainder,
        ).prefetch(AUTOTUNE)
    dataset, augmentation, sharded = _resolve(
        source,
        split,
        "pretrain_split",
        augmentation=augmentation,
        data_dir=data_dir,
        manual_dir=manual_dir,
        download=download,
        seed=seed,
        input_context=input_context,
        shuffle_files=bool(shuffle_buffer),
    )
    dataset = _select(dataset, (image_key,))
    dataset, batch_size, pipeline_id = _prepare(
        dataset, sharded, seed, shuffle_buffer, input_context, batch_size
    )

    def resized(element, element_seed):
        return _resized_two_views(element[0], element_seed, augmentation)

    def views(*batch):
        return _augment_two_views(*batch, augmentation)

    dataset = _map_and_batch(
        dataset,
        resized,
        views,
        augmentation.view_a,
        seed=seed,
        pipeline_id=pipeline_id,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )
    return dataset.prefetch(AUTOTUNE)


def _array_pairs(images, batch_size, augmentation, seed, *, shuffle, input_context,
                 drop_remainder):
    """`two_view_dataset` of an in-memory array: batches of indices, each batch augmented at once.

    No op runs per image: the epoch's order is one shuffle of the indices, each batch one gather
    and one `transforms.batch_two_views` with its own seed.
    """
    images = _image_array(images, "An array of images")
    indices = tf.range(images.shape[0], dtype=tf.int64)
    pipeline_id = 0
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        pipeline_id = input_context.input_pipeline_id
        indices = indices[pipeline_id :: input_context.num_input_pipelines]
    if shuffle:
        indices = tf.random.experimental.stateless_shuffle(indices, [seed, pipeline_id])
    full = int(indices.shape[0]) // batch_size
    batches = tf.data.Dataset.from_tensor_slices(
        tf.reshape(indices[: full * batch_size], [full, batch_size])
    )
    if not drop_remainder and full * batch_size < indices.shape[0]:
        batches = batches.concatenate(tf.data.Dataset.from_tensors(indices[full * batch_size :]))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    seeds = seeds.map(lambda x: tf.stack([x, tf.constant(pipeline_id, tf.int64)]))
    return tf.data.Dataset.zip(batches, seeds).map(
        lambda batch, batch_seed: transforms.batch_two_views(
            tf.gather(images, batch), batch_seed, augmentation
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _image_array(images, what):
    """In-memory images as a host tensor, checked: uint8 or float32 (count, height, width,
    channels); `what` names them in the error."""
    with tf.device("CPU:0"):
        images = tf.convert_to_tensor(images)
    if len(images.shape) != 4 or None in images.shape or images.dtype not in (tf.uint8, tf.float32):
        raise ValueError(
            f"{what} must be uint8 (0..255) or float32 (0..1) of shape "
            f"(count, height, width, channels). Received: shape={images.shape}, "
            f"dtype={images.dtype.name}"
        )
    return images


def _evaluation_view(view, train):
    """The labelled pipelines' view: crop, flip when training, and no colour augmentation.

    Resizes are bilinear and antialiased, as torchvision's `Resize` and `RandomResizedCrop` on the
    PIL images of the released linear evaluation.
    """
    return dataclasses.replace(
        view,
        interpolation="bilinear",
        antialias=True,
        flip_prob=0.5 if train else 0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
        solarize_prob=0.0,
    )


def _labelled_image(image, seed, view, train, crop_fraction):
    """The per-image half of the evaluation preprocessing: random resized or centre crop, resized.

    Returns:
        (image, draws): the crop from `transforms.resize_crop` and the `transforms.VIEW_DRAWS` uniform
        draws of its flip; `transforms.apply_view_params_batch` finishes batches of them.
    """
    crop_seed, params_seed = transforms.split_view_seed(seed)
    if train:

        def window_fn(shape):
            return transforms.sample_crop_window(shape, crop_seed, view.crop_scale, view.crop_ratio)
    else:

        def window_fn(shape):
            return transforms.centre_crop_window(shape, crop_fraction)

    if image.dtype == tf.string:
        crop = decode_and_crop(image, window_fn, view.channels)
    else:
        crop = transforms.crop_to_window(image, window_fn(tf.shape(image)))
    draws = tf.random.stateless_uniform([transforms.VIEW_DRAWS], params_seed)
    return transforms.resize_crop(crop, view), draws


def labelled_dataset(
    source,
    batch_size,
    *,
    train=False,
    augmentation=None,
    split=None,
    crop_fraction=224.0 / 256.0,
    seed=None,
    shuffle_buffer=None,
    input_context=None,
    drop_remainder=None,
    image_key="image",
    label_key="label",
    data_dir=None,
    manual_dir=None,
    download=True,
):
    """Batches of `(image, label)` for linear evaluation, fine-tuning and kNN.

    Training (`train=True`): random resized crop (the augmentation's crop scale and ratio), bilinear
    resize, horizontal flip, normalisation. Evaluation: resize the shorter side to
    size / crop_fraction (256 for 224) and centre-crop size x size, done as one crop of the
    window then one resize; the same fraction of the image at every size (37 -> 32 for 32-pixel
    images). Resizes are antialiased, as PIL's in the released evaluation code.

    Args:
        source: as in `two_view_dataset`; tf.data elements are dicts with `image_key` and
            `label_key`, or tuples (image, label, ...). Or a pair `(images, labels)` of arrays in
            memory (images as in `two_view_dataset`, of one size): for evaluation each batch is
            cropped and resized at once, the same preprocessing image by image without its cost
            (the demo's 70,000 Fashion-MNIST images: 6 s with their decoding, against 14 s
            image by image).
        batch_size: the global batch size.
        train: training preprocessing (random crop and flip, shuffled) or evaluation (centre crop).
        augmentation: a preset name or `transforms.TwoViewAugmentation`: its view a gives the size,
            crop range, channels and normalisation; default as in `two_view_dataset`.
        split: default: the dataset's labelled training split with `train`, else its evaluation
            split ("validation" for ImageNet, "test" for CIFAR).
        crop_fraction: the centre crop's side as a fraction of the shorter side.
        seed: the seed of the shuffle and augmentation; None draws one.
        shuffle_buffer: default 10,000 with `train`, else 0 (no shuffle).
        input_context: a `tf.distribute.InputContext`, as in `two_view_dataset`.
        drop_remainder: default: `train`.
        image_key, label_key: the keys in dict elements.
        data_dir, manual_dir, download: see `keras_vicreg.data.load_builder`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 (batch, size, size, channels) and the
        labels as stored (int64 for tfds).
    """
    _check_batch_size(batch_size)
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            f"`crop_fraction` must be in (0, 1]. Received: crop_fraction={crop_fraction}"
        )
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    shuffle_buffer = (10_000 if train else 0) if shuffle_buffer is None else shuffle_buffer
    drop_remainder = train if drop_remainder is None else drop_remainder
    if isinstance(source, tuple):
        images, labels = _labelled_arrays(source)
        if not train:
            view = transforms.get_augmentation(augmentation or "imagenet").view_a
            return _array_evaluation_batches(
                images, labels, batch_size, _evaluation_view(view, False), crop_fraction,
                input_context, drop_remainder,
            ).prefetch(AUTOTUNE)
        source = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset, augmentation, sharded = _resolve(
        source,
        split,
        "train_split" if train else "eval_split",
        augmentation=augmentation,
        data_dir=data_dir,
        manual_dir=manual_dir,
        download=download,
        seed=seed,
        input_context=input_context,
        shuffle_files=train,
    )
    view = _evaluation_view(augmentation.view_a, train)
    dataset = _select(dataset, (image_key, label_key))
    dataset, batch_size, pipeline_id = _prepare(
        dataset, sharded, seed, shuffle_buffer, input_context, batch_size
    )

    def resized(element, element_seed):
        return _labelled_image(element[0], element_seed, view, train, crop_fraction), element[1]

    def finish(images_and_draws, labels):
        images, draws = images_and_draws
        params = transforms.view_params(draws, view)
        return transforms.apply_view_params_batch(images, params, view), labels

    dataset = _map_and_batch(
        dataset,
        resized,
        finish,
        view,
        seed=seed,
        pipeline_id=pipeline_id,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )
    return dataset.prefetch(AUTOTUNE)


def _labelled_arrays(source):
    """Checks a `(images, labels)` source; returns them as host tensors."""
    if len(source) != 2:
        raise ValueError(
            "A tuple source must be a pair (images, labels) of arrays. "
            f"Received: a tuple of {len(source)}"
        )
    images = _image_array(source[0], "The images of an (images, labels) source")
    with tf.device("CPU:0"):
        labels = tf.convert_to_tensor(source[1])
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(
            "An (images, labels) source needs one label (row) per image. "
            f"Received: {images.shape[0]} images, labels of shape {labels.shape}"
        )
    return images, labels


def _array_evaluation_batches(images, labels, batch_size, view, crop_fraction, input_context,
                              drop_remainder):
    """`labelled_dataset`'s evaluation batches of in-memory images: every image of a batch has
    the same centre crop, so one slice and one resize make the batch."""
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        images = images[input_context.input_pipeline_id :: input_context.num_input_pipelines]
        labels = labels[input_context.input_pipeline_id :: input_context.num_input_pipelines]
    offset_y, offset_x, side, _ = (int(v) for v in transforms.centre_crop_window(images.shape[1:3],
                                                                              crop_fraction))

    def preprocess(batch_images, batch_labels):
        crops = batch_images[:, offset_y : offset_y + side, offset_x : offset_x + side]
        resized = transforms.resize_crop(crops, view)
        # An evaluation view draws nothing (no flip, no colour): any draws give its parameters.
        params = transforms.view_params(tf.zeros([tf.shape(resized)[0], transforms.VIEW_DRAWS]), view)
        return transforms.apply_view_params_batch(resized, params, view), batch_labels

    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        batch_size, drop_remainder=drop_remainder
    )
    return batches.map(preprocess, num_parallel_calls=AUTOTUNE, deterministic=True)
