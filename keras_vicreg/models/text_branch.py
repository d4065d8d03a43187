"""The text branch of image-text VICReg: word embeddings read by a GRU, as in the paper.

The VICReg paper's MS-COCO retrieval experiment (its "flexibility" section) replaces VSE++'s
contrastive loss by VICReg between an image branch (a ResNet-152) and a text branch of word
embeddings and a GRU, each followed by its own expander. This module builds that text branch as a
functional `keras.Model` from token ids (0 = padding, as `keras.layers.TextVectorization` pads) to
the GRU's state after the last real word;
`VICReg(image_backbone, spec, backbone_b=text_encoder(...))` adds the expanders and the loss.
"""

import keras


def text_encoder(vocabulary_size, max_length, *, embedding_dim=300, units=1024,
                 name="text_encoder"):
    """Word embeddings and a one-layer GRU, from padded token ids to a feature vector.

    The embedding masks token 0, so the GRU skips the padding and its output is its state after
    the caption's last word (VSE++ packs its sequences to the same effect). Only the word
    embeddings and the GRU: no pretrained word vectors, as in VSE++.

    Args:
        vocabulary_size: the number of token ids, padding (0) and out-of-vocabulary (1) included
            (`TextVectorization.vocabulary_size()`).
        max_length: the (padded) length of a caption in tokens.
        embedding_dim: the width of the word embeddings (300 in VSE++).
        units: the GRU's width, the width of the features (1024 in VSE++).
        name: the model's name.

    Returns:
        A functional `keras.Model` from int32 (batch, max_length) to float (batch, units).
    """
    for arg, value, least in (("vocabulary_size", vocabulary_size, 3),
                              ("max_length", max_length, 1), ("embedding_dim", embedding_dim, 1),
                              ("units", units, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(
                f"`{arg}` must be an int of at least {least} (the vocabulary counts padding and "
                f"the out-of-vocabulary token). Received: {arg}={value!r}"
            )
    tokens = keras.Input((max_length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary_size, embedding_dim, mask_zero=True,
                               name="word_embeddings")(tokens)
    x = keras.layers.GRU(units, name="gru")(x)
    return keras.Model(tokens, x, name=name)
