r"""Cross-modal VICReg: Fashion-MNIST images against their rows as token sequences.

Two branches with nothing shared: a small convnet reads the 28x28 image, an Embedding + GRU reads
the 28 row tokens of the same item (see `examples.crossmodal.crossmodal`), as in the paper's image-text
experiment. Retrieval recall@K in both directions is scored on held-out test pairs.

    python -m examples.crossmodal.train --config=examples/crossmodal/config.py --workdir=/tmp/xm
    python -m examples.crossmodal.train --config=examples/crossmodal/config.py:runlocal
"""

import ml_collections


def get_config(arg=None):
    """The experiment; `arg="runlocal"` shrinks it to a smoke test of seconds."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    # tfds' data directory (None: tfds' default); Fashion-MNIST is prepared there, offline.
    config.data_dir = ml_collections.config_dict.placeholder(str)
    config.train_size = 20000  # the first images of the train split
    config.eval_size = 1000  # the first images of the test split: chance recall@1 is 1 / 1000
    # Each row average-pooled over 4 columns (7 values), each in 3 levels: 3 ** 7 = 2187 words.
    config.tokens = ml_collections.ConfigDict(dict(levels=3, pool=4))
    config.image_encoder = ml_collections.ConfigDict(dict(filters=(32, 64, 128)))
    config.token_encoder = ml_collections.ConfigDict(dict(embedding_dim=64, units=128))
    config.expander = "512-512"
    config.loss = ml_collections.ConfigDict(dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0))
    config.batch_size = 256
    config.epochs = 8  # recall rises sharply after epoch 5 and levels off by epoch 8
    config.learning_rate = 3e-3  # Adam
    config.ks = (1, 5, 10)
    config.centering_size = 5000  # training pairs whose mean embedding centres each side
    config.verbose = 2
    if arg == "runlocal":
        config.train_size = 512
        config.eval_size = 256
        config.image_encoder.filters = (8, 16)
        config.token_encoder = ml_collections.ConfigDict(dict(embedding_dim=8, units=16))
        config.expander = "32-32"
        config.batch_size = 64
        config.epochs = 1
    return config
