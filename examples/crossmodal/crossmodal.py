"""Cross-modal VICReg offline: Fashion-MNIST images against token sequences of the same items.

The paper's multi-modal experiment pairs MS-COCO images (a ResNet-152 branch) with their captions
(a word-embedding + GRU branch) and reports retrieval recall. Here the second modality is made from
each image itself: every row of pixels becomes one token, the row average-pooled over `pool`
columns and each pooled value quantised to `levels` levels, read as a number in base `levels`. An
item is then a 28-token sentence over a vocabulary of `levels ** (28 // pool)` words, read by an
Embedding + GRU branch, while the image goes through a convolutional branch with weights and
architecture of its own: the two branches of `VICReg(image_encoder, backbone_b=token_encoder)`.
Retrieval between the two held-out sides, with `retrieval_recall`, measures their alignment.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_vicreg.evaluation.retrieval import retrieval_recall
from keras_vicreg.models.vicreg import VICReg


def row_tokens(images, levels=3, pool=4):
    """Turns each image row into a token: the second modality of the cross-modal example.

    Args:
        images: uint8 images of shape (N, H, W) or (N, H, W, 1), pixel values in [0, 255].
        levels: quantisation levels of each pooled value (>= 2).
        pool: columns averaged into one value; must divide W.

    Returns:
        `(tokens, vocabulary_size)`: int32 tokens of shape (N, H), each in
        [0, levels ** (W // pool)), and that vocabulary size.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[2] % pool or levels < 2:
        raise ValueError(
            "`row_tokens` takes grayscale images (N, H, W) whose width `pool` divides, and "
            f"levels >= 2. Received: images.shape={images.shape}, pool={pool}, levels={levels}"
        )
    n, height, width = images.shape
    pooled = images.astype(np.float32).reshape(n, height, width // pool, pool).mean(-1) / 255.0
    digits = np.minimum((pooled * levels).astype(np.int64), levels - 1)
    place_values = levels ** np.arange(width // pool, dtype=np.int64)
    return (digits * place_values).sum(-1).astype(np.int32), int(levels ** (width // pool))


def image_encoder(input_shape=(28, 28, 1), filters=(32, 64, 128)):
    """A small convnet (3x3 convolutions, stride 2 after the first, BatchNorm, ReLU), pooled."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for index, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, strides=1 if index == 0 else 2, padding="same",
                                use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="image_encoder")


def token_encoder(vocabulary_size, length, embedding_dim=64, units=128):
    """Word embeddings read by a GRU, as the paper's text branch; the last state is the output."""
    inputs = keras.Input((length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim)(inputs)
    x = keras.layers.GRU(units)(x)
    return keras.Model(inputs, x, name="token_encoder")


def load_images(split, data_dir=None):
    """Fashion-MNIST's uint8 images (N, 28, 28, 1) of a split, prepared offline by tfds."""
    import tensorflow_datasets as tfds

    from keras_vicreg.data.fashion_mnist import prepare_fashion_mnist

    builder = prepare_fashion_mnist(data_dir)
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))["image"]


def _scale(images):
    images = np.asarray(images, dtype=np.float32) / 255.0 - 0.5
    return images[..., None] if images.ndim == 3 else images


def train_and_evaluate(config, train_images, eval_images):
    """Trains the two-branch model on image-token pairs and measures retrieval on held-out pairs.

    Args:
        config: a ConfigDict like `examples/crossmodal/config.py`'s.
        train_images: uint8 images (N, H, W[, 1]) to train on.
        eval_images: uint8 held-out images; retrieval is scored over all of them at once.

    Returns:
        `{"history": fit's history dict, "recall": retrieval_recall's dict, "chance": 1 / N}`,
        where "a_to_b" is image-to-tokens and "b_to_a" tokens-to-image, scored on the two
        branches' embeddings, each centred with its mean over `config.centering_size` training
        pairs.
    """
    keras.utils.set_random_seed(config.seed)
    tokens, vocabulary_size = row_tokens(train_images, config.tokens.levels, config.tokens.pool)
    eval_tokens, _ = row_tokens(eval_images, config.tokens.levels, config.tokens.pool)
    images = _scale(train_images)
    model = VICReg(
        image_encoder(images.shape[1:], tuple(config.image_encoder.filters)),
        config.expander,
        backbone_b=token_encoder(vocabulary_size, tokens.shape[1], **config.token_encoder),
        **config.loss,
    )
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    pairs = (
        tf.data.Dataset.from_tensor_slices((images, tokens))
        .shuffle(len(images), seed=config.seed)
        .batch(config.batch_size, drop_remainder=True)  # VICReg's statistics want full batches
        .prefetch(tf.data.AUTOTUNE)
    )
    history = model.fit(pairs, epochs=config.epochs, verbose=config.get("verbose", 2))
    embed_a = model.branch_model("a", embeddings=True)
    embed_b = model.branch_model("b", embeddings=True)

    def embed(branch_model, inputs):
        return branch_model.predict(inputs, batch_size=config.batch_size, verbose=0)

    # VICReg leaves the embeddings' mean free, and a mean larger than their spread swamps cosine
    # similarity; each side is centred with its mean over training pairs (never the test pairs).
    sample = slice(0, config.centering_size)
    mean_a = embed(embed_a, images[sample]).mean(axis=0)
    mean_b = embed(embed_b, tokens[sample]).mean(axis=0)
    recall = retrieval_recall(
        embed(embed_a, _scale(eval_images)) - mean_a,
        embed(embed_b, eval_tokens) - mean_b,
        ks=tuple(config.ks),
    )
    return {"history": history.history, "recall": recall, "chance": 1.0 / len(eval_images)}
