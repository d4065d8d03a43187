"""Captioned images for image-text VICReg: MS-COCO in Karpathy's splits, or generated canvases.

Both sources become one `tf.data.Dataset` of {"image": uint8 (height, width, channels),
"captions": string (captions_per_image,)}, which the rest of the pipeline reads:

- MS-COCO: tensorflow-datasets' `coco_captions/2014`, COCO 2014 with the splits of Karpathy and Li
  (2015): "train" (82,783 images), "restval" (30,504), "val" (5,000) and "test" (5,000). The
  retrieval literature (VSE++, the VICReg paper) trains on "train+restval" (113,287 images) and
  tests on "test". Its images carry 5 to 7 captions; the first `captions_per_image` (5) are kept,
  so that each image has as many as the protocol counts, and an image with fewer is left out (none
  in Karpathy's splits; tfds' mock data makes some).
- generated: `canvases.fashion_mnist_canvases` with `canvas_captions.canvas_captions`' five
  templated captions each ("a bag left of a sandal"), offline; Fashion-MNIST's train items for
  training and its test items for testing.

Captions become token ids through `keras.layers.TextVectorization` (`caption_tokenizer`), adapted on
the training captions: a word-level tokenizer, as the paper's text branch embeds words, that ships
with Keras on every backend and needs no vocabulary file to start from (keras-hub's
WordPieceTokenizer splits into sub-words and wants a vocabulary trained beforehand). Training pairs
(`training_pairs`) hold an image and one of its captions, drawn anew each epoch, read through the
one labelled pipeline (`labelled.labelled_dataset`: VSE++'s random resized crop and flip with
`augment`, else its centre crop).
"""

import re

import keras
import numpy as np
import tensorflow as tf

from keras_vicreg.data import canvas_captions
from keras_vicreg.data import canvases
from keras_vicreg.data import labelled

DATASET = "coco_captions/2014"
KARPATHY_SPLITS = ("train", "restval", "val", "test")
CAPTIONS_PER_IMAGE = 5
_SPLIT_PART = re.compile(r"^\s*([a-z]+)\s*(\[[^\]]*\])?\s*$")


def check_split(split):
    """Raises a ValueError unless `split` is tfds split syntax over Karpathy's splits.

    E.g. "train+restval", "test", "val[:1000]": parts joined by "+", each one of `KARPATHY_SPLITS`
    with an optional slice. tfds' own "validation" is not one of coco_captions' splits.
    """
    parts = str(split).split("+") if isinstance(split, str) else [None]
    for part in parts:
        match = _SPLIT_PART.match(part or "")
        if not match or match.group(1) not in KARPATHY_SPLITS:
            raise ValueError(
                f"coco_captions' splits are Karpathy's {KARPATHY_SPLITS}, joined by '+' and "
                "optionally sliced (e.g. 'train+restval' to train, 'test' to test). "
                f"Received: split={split!r}"
            )


def _first_captions(element, captions_per_image):
    return {"image": element["image"],
            "captions": element["captions"]["text"][:captions_per_image]}


def coco_split(split, *, captions_per_image=CAPTIONS_PER_IMAGE, data_dir=None, download=True,
               decode_images=True):
    """A split of tfds' coco_captions/2014 as {"image", "captions"} elements, in file order.

    Args:
        split: Karpathy's split names in tfds syntax (`check_split`), e.g. "train+restval".
        captions_per_image: the captions kept per image (the first ones); images with fewer are
            left out.
        data_dir: tensorflow-datasets' data directory.
        download: let tfds download and prepare COCO 2014 and Karpathy's split file (about 20 GB)
            when they are not in `data_dir`.
        decode_images: False leaves "image" as the encoded JPEG (tfds' `SkipDecoding`): for
            passes that read the captions only, such as adapting the tokenizer on 113,287 images.
    """
    import tensorflow_datasets as tfds

    check_split(split)
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    dataset = tfds.load(DATASET, split=split, data_dir=data_dir, download=download,
                        shuffle_files=False, decoders=decoders)
    dataset = dataset.filter(lambda e: tf.size(e["captions"]["text"]) >= captions_per_image)
    return dataset.map(lambda e: _first_captions(e, captions_per_image),
                       num_parallel_calls=tf.data.AUTOTUNE)


def canvas_split(count, *, split="train", canvas_size=64, max_items=4, seed=0, items=None):
    """`count` generated canvases and their five captions, as {"image", "captions"} elements.

    Args:
        count, canvas_size, max_items, seed, items, split: as
            `canvases.fashion_mnist_canvases` takes them ("train" or "test" items).

    Returns:
        (dataset, captions): the dataset and the (count, 5) NumPy array of its captions.
    """
    drawn = canvases.fashion_mnist_canvases(count, canvas_size=canvas_size, max_items=max_items,
                                            seed=seed, items=items, split=split)
    captions, _ = canvas_captions.canvas_captions(drawn)
    captions = np.asarray(captions, dtype=object).reshape(count,
                                                          canvas_captions.CAPTIONS_PER_CANVAS)
    dataset = tf.data.Dataset.from_tensor_slices({"image": drawn["images"],
                                                  "captions": captions.astype(str)})
    return dataset, captions


def caption_tokenizer(vocabulary_size, max_length, vocabulary=None):
    """A word-level `keras.layers.TextVectorization`: lower-cased words without punctuation.

    Args:
        vocabulary_size: the most token ids, padding (0) and out-of-vocabulary (1) included: the
            `vocabulary_size - 2` most frequent words of what it is adapted on get the others.
        max_length: captions are cut or padded (with 0, after the words) to this many tokens.
        vocabulary: words in id order from 2 (`get_vocabulary()[2:]`), e.g. a saved run's;
            None: call `adapt_tokenizer` before use.
    """
    tokenizer = keras.layers.TextVectorization(
        max_tokens=vocabulary_size, standardize="lower_and_strip_punctuation", split="whitespace",
        output_mode="int", output_sequence_length=max_length, name="caption_tokenizer",
    )
    if vocabulary is not None:
        tokenizer.set_vocabulary(list(vocabulary))
    return tokenizer


def captions_only(captioned):
    """The captions of a captioned dataset, one string per element, in order."""
    return captioned.map(lambda e: e["captions"]).unbatch()


def adapt_tokenizer(tokenizer, captioned, batch_size=4096):
    """Adapts `tokenizer`'s vocabulary on every caption of a captioned dataset; returns it."""
    tokenizer.adapt(captions_only(captioned).batch(batch_size))
    return tokenizer


def _text(caption):
    """A caption as str: tf.data gives UTF-8 bytes (COCO's captions are not all ASCII)."""
    return caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)


def tokenize(tokenizer, captions, batch_size=4096):
    """int32 NumPy token ids (count, max_length) of a sequence of caption strings."""
    captions = tf.constant([_text(c) for c in np.asarray(captions, dtype=object).reshape(-1)],
                           dtype=tf.string)
    batches = tf.data.Dataset.from_tensor_slices(captions).batch(batch_size).map(tokenizer)
    parts = [batch.numpy() for batch in batches]
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros((0, 0), np.int32)


def with_random_caption(captioned, tokenizer, seed):
    """{"image", "tokens"} elements: each image with one of its captions, drawn anew each epoch.

    The draw comes from `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`, so each
    pass over the dataset (each epoch of `fit`) pairs an image with another caption, and a run
    is repeatable from its seed.
    """
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def pick(element, draw):
        count = tf.cast(tf.shape(element["captions"])[0], tf.int64)
        caption = element["captions"][tf.math.floormod(draw, count)]
        return {"image": element["image"], "tokens": tokenizer(caption[None])[0]}

    return tf.data.Dataset.zip(captioned, draws).map(pick, num_parallel_calls=tf.data.AUTOTUNE)


def training_pairs(captioned, tokenizer, batch_size, *, image_size, mean, std, augment=True,
                   crop_fraction=labelled.DEFAULT_CROP_FRACTION, seed=0, shuffle_buffer=10_000):
    """Shuffled full batches of (images, token ids) pairs for `VICReg.fit`, one caption per image.

    Args:
        captioned: {"image", "captions"} elements (`coco_split`, `canvas_split`).
        tokenizer: an adapted `caption_tokenizer`.
        batch_size: the batch size; the last partial batch is dropped (VICReg's statistics).
        image_size, mean, std: the images' side and per-channel normalisation (its channels).
        augment: VSE++'s training crop (a random resized crop and a horizontal flip); False: the
            evaluation's centre crop (for captions that say "left of", which a flip falsifies).
        crop_fraction: the centre crop's side over the shorter side, when not `augment`.
        seed: the seed of the shuffle, the crops and the caption draws.
        shuffle_buffer: elements shuffled at once.

    Returns:
        A `tf.data.Dataset` of (float32 (batch, size, size, channels), int32 (batch, max_length)).
    """
    pairs = with_random_caption(captioned, tokenizer, seed)
    view = labelled.labelled_view(image_size, mean, std)
    return labelled.labelled_dataset(
        pairs, batch_size, train=augment, augmentation=view, crop_fraction=crop_fraction,
        seed=seed, shuffle_buffer=shuffle_buffer, drop_remainder=True, label_key="tokens",
    )


def evaluation_images(captioned, batch_size, *, image_size, mean, std,
                      crop_fraction=labelled.DEFAULT_CROP_FRACTION):
    """Batches of (centre-cropped images, image index), in the dataset's order, for `predict`."""
    indexed = captioned.enumerate().map(lambda i, e: {"image": e["image"], "label": i})
    view = labelled.labelled_view(image_size, mean, std)
    return labelled.labelled_dataset(
        indexed, batch_size, train=False, augmentation=view, crop_fraction=crop_fraction,
        shuffle_buffer=0, drop_remainder=False,
    )


def all_captions(captioned):
    """(captions, caption_image): every caption as a NumPy string array, and its image's index.

    The order is the dataset's, `captions_per_image` captions per image, as
    `caption_retrieval_recall` takes them.
    """
    rows = [np.array([_text(c) for c in row], dtype=object)
            for row in captioned.map(lambda e: e["captions"]).as_numpy_iterator()]
    if not rows:
        raise ValueError("The captioned dataset is empty: no images with enough captions.")
    owner = np.concatenate([np.full(len(row), index) for index, row in enumerate(rows)])
    return np.concatenate(rows), owner.astype(np.int64)
