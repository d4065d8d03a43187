"""An encoded image's size read from its header, and a pixel budget checked before decoding.

A decoder allocates what the header declares: a PNG of a few hundred bytes can declare 24000 x
24000 pixels, 1.7 GB decoded, and a forged or broken file in a pretraining source would then take
a host's memory, once per epoch. So the pipelines read the size from the header first, inside the
tf.data graph, and refuse an image over the budget before any `decode_*` op runs: the refusal is an
error of the element, which the pipeline skips and counts like an image that does not decode.

Sizes are read from the first bytes, with no control flow beyond the JPEG / other split the
decoding already makes: JPEG with `tf.image.extract_jpeg_shape` (which finds the SOF marker), and
PNG (IHDR), GIF (logical screen), BMP (BITMAPINFOHEADER) and WebP (VP8, VP8L and VP8X) from fixed
byte positions, all in one vectorised computation. Any other format `tf.io.decode_image` reads
(JPEG XL) is refused: its size is not at a fixed position, and an image whose size is unknown
cannot be held to a budget. A GIF's frame count is not in its header either: `tf.io.decode_image`
decodes every frame, so an animated GIF within the budget can still take frames x budget.
"""

import numpy as np
import tensorflow as tf

# The default budget: 50 million pixels holds 48-megapixel camera photos (8000 x 6000) and every
# ImageNet photo, and bounds one decoded RGB image at 150 MB, so that a host decoding one image
# per core stays within a few GB; 24000 x 24000 (576 million pixels) is over ten times as large.
MAX_IMAGE_PIXELS = 50_000_000
FORMATS = ("PNG", "GIF", "BMP", "WebP VP8", "WebP VP8L", "WebP VP8X")
_HEADER_BYTES = 32
_ANY = -1  # a byte the format's signature does not fix


def _signature(pairs):
    row = np.full(16, _ANY, np.int64)
    for position, text in pairs:
        row[position : position + len(text)] = list(text)
    return row


# Per format: the bytes that identify it (positions 0 to 15).
_SIGNATURES = np.stack([
    _signature([(0, b"\x89PNG\r\n\x1a\n")]),
    _signature([(0, b"GIF8")]),
    _signature([(0, b"BM")]),
    _signature([(0, b"RIFF"), (8, b"WEBPVP8 ")]),
    _signature([(0, b"RIFF"), (8, b"WEBPVP8L")]),
    _signature([(0, b"RIFF"), (8, b"WEBPVP8X")]),
])
# Per format and (height, width): a field is `(sum of bytes[positions] * weights) // divisor %
# modulus + offset`: big- or little-endian integers, and WebP's 14-bit fields.
_BE32, _LE16, _LE24, _LE32 = (
    [2**24, 2**16, 2**8, 1], [1, 2**8, 0, 0], [1, 2**8, 2**16, 0], [1, 2**8, 2**16, 2**24]
)
_FIELDS = [  # (positions, weights, divisor, modulus, offset) of height, then width
    (([20, 21, 22, 23], _BE32, 1, 2**32, 0), ([16, 17, 18, 19], _BE32, 1, 2**32, 0)),
    (([8, 9, 0, 0], _LE16, 1, 2**16, 0), ([6, 7, 0, 0], _LE16, 1, 2**16, 0)),
    (([22, 23, 24, 25], _LE32, 1, 2**32, 0), ([18, 19, 20, 21], _LE32, 1, 2**32, 0)),
    (([28, 29, 0, 0], _LE16, 1, 2**14, 0), ([26, 27, 0, 0], _LE16, 1, 2**14, 0)),
    (([22, 23, 24, 0], _LE24, 2**6, 2**14, 1), ([21, 22, 0, 0], _LE16, 1, 2**14, 1)),
    (([27, 28, 29, 0], _LE24, 1, 2**24, 1), ([24, 25, 26, 0], _LE24, 1, 2**24, 1)),
]
_POSITIONS, _WEIGHTS, _DIVISORS, _MODULI, _OFFSETS = (
    np.array([[field[part] for field in fields] for fields in _FIELDS], np.int64)
    for part in range(5)
)
_SIGNED = np.array([name == "BMP" for name in FORMATS])  # BMP's height is negative top-down


def other_size(data):
    """(height, width, known) that a PNG, GIF, BMP or WebP header declares, without decoding.

    Args:
        data: a scalar string tensor, the encoded image (any bytes: too short or unknown ones give
            `known` False).

    Returns:
        int64 height and width (0 where unknown) and a bool, whether the format is one of
        `FORMATS`.
    """
    padded = tf.strings.join([data, tf.constant(b"\0" * _HEADER_BYTES)])
    header = tf.cast(
        tf.io.decode_raw(tf.strings.substr(padded, 0, _HEADER_BYTES), tf.uint8), tf.int64
    )
    matches = tf.reduce_all((header[:16] == _SIGNATURES) | (_SIGNATURES == _ANY), axis=-1)
    fields = tf.reduce_sum(tf.gather(header, _POSITIONS) * _WEIGHTS, axis=-1)
    fields = fields // _DIVISORS % _MODULI
    negative = tf.logical_and(tf.constant(_SIGNED)[:, None], fields >= 2**31)
    fields = tf.where(negative, 2**32 - fields, fields) + _OFFSETS
    size = tf.reduce_sum(tf.where(matches[:, None], fields, 0), axis=0)
    return size[0], size[1], tf.reduce_any(matches)


def declared_size(data):
    """(height, width, known) of any encoded image: `other_size`, or a JPEG's SOF (which raises
    for a JPEG whose header does not read)."""

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0], shape[1], tf.constant(True)

    return tf.cond(tf.io.is_jpeg(data), jpeg, lambda: other_size(data))


def budget_checks(height, width, max_pixels, known=True):
    """Ops that fail for a size over `max_pixels` (or unknown): control dependencies of a decode.

    Args:
        height, width: the declared size (`declared_size`, `other_size`).
        max_pixels: the budget, an int; None checks nothing.
        known: whether the size was read (False fails the check).

    Returns:
        A list of ops (empty for `max_pixels=None`).
    """
    if max_pixels is None:
        return []
    pixels = tf.cast(height, tf.float64) * tf.cast(width, tf.float64)  # no int64 overflow
    # Strings only in the messages: an Assert with other data wraps itself in a `tf.cond`, and
    # control flow in a tf.data function costs more than the rest of the check.
    checks = [tf.debugging.Assert(
        pixels <= max_pixels,
        [f"The image's header declares more pixels than max_image_pixels={max_pixels}: "
         "height, width", tf.strings.as_string(tf.stack([height, width]))],
    )]
    if known is not True:
        checks.append(tf.debugging.Assert(
            known, [f"The image's size cannot be read from its header: not JPEG, {FORMATS}"]
        ))
    return checks


def over_budget_reason(data, max_pixels):
    """Eagerly: why `data` is refused before decoding, or None if its header is within budget.

    For the list of skipped images, in words; the pipelines refuse with `budget_checks`.
    """
    try:
        height, width, known = (value.numpy() for value in declared_size(data))
    except tf.errors.OpError as error:
        return f"its JPEG header does not read: {error_text(error)}"
    if not known:
        return ("its first bytes are not those of an image whose size the header gives (JPEG, "
                f"{', '.join(FORMATS)}): not an image, or another format")
    if max_pixels is not None and float(height) * float(width) > max_pixels:
        return (f"its header declares {height} x {width} = {int(height) * int(width)} pixels, over "
                f"max_image_pixels={max_pixels}; not decoded")
    return None


def error_text(error):
    """A TensorFlow error's message without the function-node prefix and the op suffix."""
    text = error.message.split("}}")[-1].strip()
    return text.split(" [Op:")[0].strip()
