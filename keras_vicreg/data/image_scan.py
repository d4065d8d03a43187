"""A scan of a source's encoded images: which ones the pipeline would skip, and why.

The pipelines skip an image that fails to decode, or whose header declares more pixels than the
budget (`image_headers`), as an error of its element (`ignore_errors`): the element is gone, and
with it which image it was and why. A skip found only while training also comes too late to act
on, and is not even stable: a truncated JPEG decodes or not depending on whether the random crop
lies in the part that is there. So `scan_images` decodes every image whole, once, before training,
in a parallel tf.data pass (the header checked first, as the pipelines do), and examines the
few failures again one at a time, eagerly, for the reason in words.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_vicreg.data import image_headers

# Keys that name an image in the elements of tfds sources: a folder's file (`tfds.ImageFolder`),
# ImageNet's file name, CIFAR's id.
NAME_KEYS = ("image/filename", "file_name", "filename", "id")
# The skipped images examined one at a time for their reason; the rest are listed without one.
MAX_EXAMINED = 1000


@dataclasses.dataclass
class ImageScan:
    """What `scan_images` found.

    Attributes:
        count: the images scanned.
        skipped: one dict per image the pipeline would skip, in the source's order: "index" (in
            the order the source was read), "file" (its name, where the source has one, else
            None) and "reason" (in words; None past the first `MAX_EXAMINED`).
    """

    count: int
    skipped: list


def check_image(data, max_pixels, channels):
    """Decodes an encoded image whole after checking its header against `max_pixels`.

    Returns its shape; fails (an error of the tf.data element) wherever a pipeline would skip it.
    """
    height, width, known = image_headers.declared_size(data)
    with tf.control_dependencies(image_headers.budget_checks(height, width, max_pixels, known)):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    return tf.shape(image)


def _reason(data, max_pixels, channels):
    reason = image_headers.over_budget_reason(data, max_pixels)
    if reason is not None:
        return reason
    try:
        check_image(data, max_pixels, channels)
    except tf.errors.OpError as error:
        return f"it does not decode: {image_headers.error_text(error)}"
    return "it failed in the scan but decoded when examined again (a read error?)"


def scan_images(dataset, count, *, max_pixels, channels=3, image_key="image"):
    """Finds the images of `dataset` that a pipeline would skip, decoding each one whole.

    Args:
        dataset: a `tf.data.Dataset` of dicts of encoded images (`image_key`), read in a fixed
            order (the indices of the result are positions in it).
        count: the number of elements of `dataset`.
        max_pixels: the pixel budget (`image_headers.budget_checks`); None: none.
        channels: the channels decoded (1 or 3).
        image_key: the image's key.

    Returns:
        An `ImageScan`.
    """
    spec = dataset.element_spec
    name_key = next((key for key in NAME_KEYS if key in spec), None)

    def parts(index, element):
        name = element[name_key] if name_key else tf.constant("")
        return index, element[image_key], name if name.dtype == tf.string else tf.as_string(name)

    indexed = dataset.enumerate().map(parts)
    decoded = indexed.map(
        lambda index, data, name: (index, check_image(data, max_pixels, channels)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    ).ignore_errors()
    found = np.zeros(count, bool)
    for indices, _ in decoded.batch(1024).as_numpy_iterator():
        found[indices[indices < count]] = True
    if found.all():
        return ImageScan(count, [])
    missing = tf.constant(np.append(~found, False))  # the last entry: any index past `count`

    def is_missing(index, *_):
        return tf.gather(missing, tf.minimum(index, count))

    skipped = []
    for index, data, name in indexed.filter(is_missing):
        examined = len(skipped) < MAX_EXAMINED
        skipped.append({
            "index": int(index),
            "file": name.numpy().decode("utf-8", "replace") if name_key else None,
            "reason": _reason(data, max_pixels, channels) if examined else None,
        })
    return ImageScan(count, skipped)
