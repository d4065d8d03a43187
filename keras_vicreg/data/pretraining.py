"""The pretraining pipeline: batches of two augmented views `(view_a, view_b)`, labels optional.

    source -> shard -> shuffle -> per-element seeds
      -> per image: decode (once for both views), crop, resize, draw the other choices
      -> skip unreadable images (and those over the pixel budget) -> batch (drop remainder)
      -> per batch: flip, colour jitter, grayscale, blur, solarize, normalise -> prefetch

Views over `batching.BATCH_AUGMENT_MAX_PIXELS` (ImageNet's 224) take the per-batch half with
OpenCV's kernels where OpenCV imports (`transforms.opencv_photometric`: the same views to float
rounding, several times faster per pass at that size); smaller ones with TensorFlow's.

With `photometric_device="accelerator"` the pipeline stops at the resize and yields uint8 crops;
the per-batch half runs in the train step (`keras_vicreg.models.PhotometricAugmentation`).

Only what differs in shape per image (decoding, cropping, resizing) runs per image; the rest runs
once per batch (`transforms.apply_view_params_batch`): in tf.data an op costs about as much per call
as a small image's arithmetic. `batching.choose_route` picks how: images in memory skip the
per-image map altogether (`transforms.batch_two_views` on gathered batches, random draws per
batch), and views over `batching.BATCH_AUGMENT_MAX_PIXELS` are augmented whole per image, as
batches of one, where the arithmetic dominates and a batch's tensors would outgrow the CPU's
caches, unless OpenCV's kernels take them (above).
"""

import tensorflow as tf

from keras_vicreg.data import batching
from keras_vicreg.data import decode
from keras_vicreg.data import image_headers
from keras_vicreg.data import transforms
from keras_vicreg.data.transforms import draws
from keras_vicreg.data.transforms import opencv_photometric


# Where the photometric half of the views runs: in the pipeline, or in the train step
# (`keras_vicreg.models.PhotometricAugmentation`), the pipeline then yielding uint8 crops.
PHOTOMETRIC_DEVICES = ("host", "accelerator")


def _resized_two_views(image, seed, augmentation, max_pixels=None, photometric=True,
                       kernels="tensorflow"):
    """The per-image half of `encoded_two_views`: both views resized, and their random choices.

    Args:
        image: a scalar string tensor (encoded image), or a decoded image tensor.
        seed: int tensor of shape (2,).
        augmentation: a `TwoViewAugmentation`.
        max_pixels: the pixel budget of an encoded image, checked from its header before decoding.
        photometric: False: the crops only, as uint8 (`transforms.to_uint8`), no other draws.
        kernels: "tensorflow": the other choices as `transforms.ViewParams`; "opencv": their
            uniforms (`draws.sample_view_uniforms`), which `opencv_photometric` maps itself, and
            the crops resized but not yet scaled to [0, 1] (`transforms.resize`).

    Returns:
        (image_a, params_a, image_b, params_b): per view, its crop from `transforms.resize_crop`
        and the `transforms.ViewParams` of its other choices; `_augment_two_views` finishes batches
        of them. Without `photometric`: (crop_a, crop_b).
    """
    views = (augmentation.view_a, augmentation.view_b)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    crop_seeds, params_seeds = zip(*(transforms.split_view_seed(s) for s in seeds))
    crops = decode.decode_view_crops(image, crop_seeds, views, max_pixels)
    # OpenCV's path scales and clips the resized crops itself, in its first pass over them.
    scaled = kernels != "opencv" or not photometric
    resized = [transforms.resize_crop(crop, view, scaled) for crop, view in zip(crops, views)]
    if not photometric:
        return tuple(transforms.to_uint8(image) for image in resized)
    if kernels == "opencv":
        params = [draws.sample_view_uniforms(s) for s in params_seeds]
    else:
        params = [transforms.sample_view_params(s, view) for s, view in zip(params_seeds, views)]
    return resized[0], params[0], resized[1], params[1]


def _augment_two_views(image_a, params_a, image_b, params_b, augmentation, kernels="tensorflow",
                       input_scale=1.0):
    """The per-batch half of `encoded_two_views`, on batches of `_resized_two_views`' outputs.

    Args:
        kernels: "tensorflow" (`transforms.apply_view_params_batch`) or "opencv"
            (`opencv_photometric.apply_two_views`, the same views to float rounding).
        input_scale: with "opencv", what maps the resized crops to [0, 1]
            (`transforms.input_scale` of the decoded images' dtype).

    Returns:
        (view_a, view_b), each float32 (batch, size, size, channels), normalised.
    """
    if kernels == "opencv":
        return opencv_photometric.apply_two_views(image_a, params_a, image_b, params_b,
                                                  augmentation, input_scale)
    return (
        transforms.apply_view_params_batch(image_a, params_a, augmentation.view_a),
        transforms.apply_view_params_batch(image_b, params_b, augmentation.view_b),
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
    parts = _resized_two_views(image, seed, augmentation)
    return batching.on_one(_augment_two_views, parts, augmentation)


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
    max_image_pixels=image_headers.MAX_IMAGE_PIXELS,
    labels=None,
    photometric_device="host",
):
    """Batches of two augmented views `(view_a, view_b)` for `VICReg.fit`.

    Args:
        source: a tfds name from `keras_vicreg.data.DATASETS` (e.g. "imagenet2012", "cifar10",
            "fashion_mnist"), a folder of class subfolders, a `tf.data.Dataset` of images
            (encoded bytes, or uint8 / float in [0, 1] tensors of any size), of dicts with
            `image_key`, or of tuples whose first part is the image; or the images themselves,
            an array (count, height, width, channels) in memory (uint8, or float in [0, 1]): these
            are shuffled by index and augmented a batch at a time (`transforms.batch_two_views`),
            the cheapest route, with the same distributions of views drawn from each batch's seed
            instead of each image's (`batching.choose_route`).
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
        max_image_pixels: an encoded image whose header declares more pixels is skipped without
            being decoded (`image_headers`); None: no budget.
        labels: None (no labels), or the labels to carry beside the views, for a model's online
            probe (`keras_vicreg.models.online_probe`): for an array source, an array of one int
            label per image; for other sources, the label's key in dict elements (e.g. "label";
            tuple elements: their second part). The views are the same with and without labels.
        photometric_device: "host" (default): the whole view here; "accelerator": only the crop
            and resize here, the views yielded as uint8 crops for a model with a
            `keras_vicreg.models.PhotometricAugmentation`, which does the rest in its train step.
            The crops are those of "host" for the same seed, rounded to 1/255.

    Returns:
        A `tf.data.Dataset` of `(view_a, view_b)`, each float32 of shape
        (batch, size, size, channels), or with `labels` of `((view_a, view_b), labels)`, labels
        int32 (batch,). Unreadable images, and images over `max_image_pixels`, are skipped with a
        warning. With `photometric_device="accelerator"` the views are uint8 crops.
    """
    batching.check_batch_size(batch_size)
    if photometric_device not in PHOTOMETRIC_DEVICES:
        raise ValueError(
            f"`photometric_device` must be one of {PHOTOMETRIC_DEVICES}. "
            f"Received: photometric_device={photometric_device!r}"
        )
    photometric = photometric_device == "host"
    seed = batching.draw_seed(seed)
    if batching.is_array(source):
        augmentation, dataset = transforms.get_augmentation(augmentation or "imagenet"), None
    else:
        dataset, augmentation, sharded, _ = batching.resolve(
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
    route = batching.choose_route(augmentation.view_a, in_memory=dataset is None)
    kernels = "tensorflow"
    if route == "per_image" and photometric and opencv_photometric.available():
        # Large views with OpenCV's kernels, a batch per call: fewer handovers of Python's lock
        # between tf.data's threads than a call per image (docs/performance.md).
        route, kernels = "per_batch", "opencv"
    if route == "in_memory":
        return _array_pairs(
            source, batch_size, augmentation, seed, shuffle=bool(shuffle_buffer),
            input_context=input_context, drop_remainder=drop_remainder, labels=labels,
            photometric=photometric,
        ).prefetch(batching.AUTOTUNE)
    labelled = labels is not None
    dataset = batching.select_parts(dataset, (image_key, labels) if labelled else (image_key,))
    dataset, batch_size, pipeline_id = batching.prepare(
        dataset, sharded, seed, shuffle_buffer, input_context, batch_size
    )

    image_dtype = tf.nest.flatten(dataset.element_spec)[0].dtype
    input_scale = transforms.input_scale(tf.uint8 if image_dtype == tf.string else image_dtype)

    def resized(element, element_seed):
        parts = _resized_two_views(
            element[0], element_seed, augmentation, max_image_pixels, photometric, kernels
        )
        return (*parts, tf.cast(element[1], tf.int32)) if labelled else parts

    def views(*batch):
        count = 4 if photometric else 2
        if not photometric:
            pair = batch[:2]
        else:
            pair = _augment_two_views(*batch[:4], augmentation, kernels, input_scale)
        return (pair, batch[count]) if labelled else pair

    dataset = batching.map_and_batch(
        dataset,
        resized,
        views,
        route,
        seed=seed,
        pipeline_id=pipeline_id,
        batch_size=batch_size,
        drop_remainder=drop_remainder,
    )
    return dataset.prefetch(batching.AUTOTUNE)


def _array_pairs(images, batch_size, augmentation, seed, *, shuffle, input_context,
                 drop_remainder, labels=None, photometric=True):
    """`two_view_dataset` of an in-memory array: batches of indices, each batch augmented at once.

    No op runs per image: the epoch's order is one shuffle of the indices, each batch one gather
    and one `transforms.batch_two_views` with its own seed, `[a draw of
    tf.data.Dataset.random(seed), pipeline_id]`; with `labels` (an array), each batch's labels
    ride beside its views.
    """
    images = batching.image_array(images, "An array of images")
    if labels is not None:
        with tf.device("CPU:0"):
            labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
        if tuple(labels.shape) != tuple(images.shape[:1]):
            raise ValueError(
                "`labels` of an array of images must hold one int label per image. "
                f"Received: {images.shape[0]} images, labels of shape {labels.shape}"
            )
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

    def pairs(batch, batch_seed):
        views = transforms.batch_two_views(
            tf.gather(images, batch), batch_seed, augmentation, photometric
        )
        return views if labels is None else (views, tf.gather(labels, batch))

    return tf.data.Dataset.zip(batches, seeds).map(
        pairs,
        num_parallel_calls=batching.AUTOTUNE,
        deterministic=True,
    )
