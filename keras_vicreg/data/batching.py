"""What the pretraining and the labelled pipelines share: sources resolved, seeded maps, batches.

    source (tfds name, folder or tf.data.Dataset) -> shard -> shuffle -> zip with per-element seeds
      -> parallel map, per image -> skip unreadable images -> batch -> parallel map, per batch

Every random choice is a stateless function of a per-element seed drawn from
`tf.data.Dataset.random(seed)`: with the same seed a pipeline yields the same batches, whatever the
parallelism or where the augmentation runs, and a new epoch draws new views. `choose_route` is the
one place that decides how a pipeline runs.
"""

import random
import sys

import numpy as np
import tensorflow as tf

from keras_vicreg.data import sources
from keras_vicreg.data import transforms

AUTOTUNE = tf.data.AUTOTUNE
# Views of at most this many pixels are augmented per batch, where per image tf.data's cost per op
# would dominate; larger ones per image, where a batch's tensors would outgrow the CPU's caches
# (the measurements: docs/performance.md).
BATCH_AUGMENT_MAX_PIXELS = 96 * 96
ROUTES = ("in_memory", "per_batch", "per_image")


def choose_route(view, in_memory):
    """How a pipeline makes its batches: the one decision, by where the images are and their size.

    - "in_memory": images in one array of one size: batches of indices, each batch gathered and
      augmented at once (`transforms.batch_two_views`), its random draws made per batch from the
      batch's seed, since per-image draws would cost ops per image, the cost this route avoids.
    - "per_batch": per image, decode, crop and resize; per batch, the rest of the view.
    - "per_image": all of the view per image, for views over `BATCH_AUGMENT_MAX_PIXELS`. The same
      views as "per_batch" for the same seed.

    Args:
        view: the `ViewAugmentation` of the output.
        in_memory: whether the source is an array of images held in memory.

    Returns:
        One of `ROUTES`.
    """
    if in_memory:
        return "in_memory"
    return "per_batch" if view.image_size**2 <= BATCH_AUGMENT_MAX_PIXELS else "per_image"


def is_array(source):
    """Whether a source is images held in memory (a NumPy array or a tensor)."""
    return isinstance(source, (np.ndarray, tf.Tensor))


def draw_seed(seed):
    """`seed`, or a fresh one if None."""
    return random.SystemRandom().randrange(2**31) if seed is None else seed


def on_one(batch_fn, parts, *args):
    """`batch_fn(*parts, *args)` of one element, as a batch of one."""
    batch = tf.nest.map_structure(lambda part: part[None], parts)
    return tf.nest.map_structure(lambda part: part[0], batch_fn(*batch, *args))


def select_parts(dataset, keys):
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
            "WARNING keras_vicreg.data: skipped an unreadable image (it does not decode, or its "
            "header declares more pixels than the budget); images skipped in this epoch so far:",
            total,
            output_stream=sys.stderr,
        )
        return total

    total = tf.cond(skipped > 0, warn, lambda: total)
    return (index[-1], total), value


def map_and_batch(
    dataset, per_image, per_batch, route, *, seed, pipeline_id, batch_size, drop_remainder
):
    """Maps `per_image(element, seed)` in parallel, batches, and maps `per_batch` on the batches.

    On the "per_image" route (`choose_route`), `per_batch` runs inside the per-image map instead,
    on batches of one: the same numbers, elsewhere. Each element's seed is
    `[a draw of tf.data.Dataset.random(seed), pipeline_id]`, new each epoch. Elements whose map
    fails are skipped: a skip shows as a gap in the element index of the next batch, counted in a
    warning on stderr then, so skips after an epoch's last batch (or in its dropped remainder) go
    uncounted. Decoded images of a known count keep their batch count (`_known_batch_count`).
    """
    if route not in ("per_batch", "per_image"):
        raise ValueError(
            f"`route` must be 'per_batch' or 'per_image'. Received: route={route!r}"
        )
    batched = route == "per_batch"

    def indexed(element, indexed_seed):
        index, element_seed = indexed_seed
        parts = per_image(element, tf.stack([element_seed, tf.constant(pipeline_id, tf.int64)]))
        return index, (parts if batched else on_one(per_batch, parts))

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).enumerate()
    count = int(dataset.cardinality())
    decoded = tf.nest.flatten(dataset.element_spec)[0].dtype != tf.string
    dataset = tf.data.Dataset.zip(dataset, seeds)
    dataset = dataset.map(indexed, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    # Counted per batch: per element, the count would cost as much as a small image's crop.
    initial = (tf.constant(-1, tf.int64), tf.constant(0, tf.int64))
    dataset = dataset.scan(initial, _count_skipped)
    if batched:
        dataset = dataset.map(per_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _known_batch_count(dataset, count, decoded, batch_size, drop_remainder)


def _known_batch_count(dataset, count, decoded, batch_size, drop_remainder):
    """Restores the batch count that `ignore_errors` and `scan` hide, where no image can be skipped.

    Decoded images cannot fail to decode: from a source of known size, their batch count is known,
    which training loops need for their schedules (`steps_per_epoch`). Encoded ones may be skipped.
    """
    if not decoded or count < 0:
        return dataset
    batches = count // batch_size if drop_remainder else -(-count // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def resolve(
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
    """The dataset of a tfds name, a folder or a tf.data.Dataset, and how to augment it.

    Args:
        which: the purpose of the split read by default ("pretrain_split", "train_split",
            "eval_split"); tfds names outside `sources.DATASETS` need `split`.
        augmentation: a preset name, a `transforms.TwoViewAugmentation` or a
            `transforms.ViewAugmentation` (kept as it is); None: the dataset's, else "imagenet".

    Returns:
        (dataset, augmentation, sharded, builder): `sharded` whether the dataset is this input
        pipeline's shard already, `builder` the tfds builder (None for a tf.data.Dataset).
    """
    if isinstance(augmentation, transforms.ViewAugmentation):
        resolved = augmentation
    elif augmentation is not None:
        resolved = transforms.get_augmentation(augmentation)
    if isinstance(source, tf.data.Dataset):
        if augmentation is None:
            resolved = transforms.get_augmentation("imagenet")
        return source, resolved, False, None
    try:
        spec = sources.dataset_spec(source)
    except ValueError:
        if split is None:  # an unknown name has no default split: the message says what is known
            raise
        spec = None
    dataset, builder = sources.load_split(
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
        resolved = transforms.get_augmentation(
            *((spec.augmentation, spec.image_size) if spec else ("imagenet",))
        )
    return dataset, resolved, True, builder


def prepare(dataset, sharded, seed, shuffle_buffer, input_context, batch_size):
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


def check_batch_size(batch_size):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size}")


def image_array(images, what):
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
