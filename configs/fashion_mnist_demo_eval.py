r"""The demo's evaluation (`trainers/demo.py`): one linear protocol and one kNN for every row.

    python -m trainers.demo --eval_config=configs/fashion_mnist_demo_eval.py
    python -m trainers.demo --config=configs/fashion_mnist_demo.py:runlocal \
        --eval_config=configs/fashion_mnist_demo_eval.py:runlocal

Features of whole images (no crop), standardised with the training set's mean and std; one linear
layer, SGD with momentum and a cosine schedule, a single learning rate (nothing is chosen on the
test set). kNN: cosine similarity, k = 200 votes weighted by exp(similarity / 0.07).

The backbones (pretrained and random) read the images resized to the pretraining config's
`eval_image_size` = 44 pixels (configs/fashion_mnist_demo.py; the exported SavedModel reads that
size too), raw pixels stay at 28, and the demo also reports the pretrained backbone at 28.
Deviation (FixRes, Touvron et al., NeurIPS 2019): pretraining crops 20-100% of an image's area and
resizes the crop to 28 pixels, so objects look on average about 1.4x larger there (and at most
2.2x) than in a whole 28-pixel image; at test time the whole image is enlarged to match. 44 was
chosen on the training set alone: linear classifiers on 50,000 training images scored on the other
10,000, for the backbones of two demo runs (9 and 10 epochs), at 28 / 32 / 36 / 40 / 44 / 48
pixels: 90.38 / 90.14 / 90.81 / 90.63 / 90.97 / - and 90.36 / - / 90.86 / 90.76 / 91.10 / 90.69.
`--config.eval_image_size=28` evaluates (and exports) at the pretraining size only.
"""

import ml_collections

from keras_vicreg.config import common


def get_config(arg=None):
    """The evaluation; `arg="runlocal"`: a few hundred images, a few epochs."""
    args = common.parse_arg(arg)
    config = ml_collections.ConfigDict()
    config.train_split = "train"
    config.test_split = "test"
    config.batch_size = 500  # of the feature extraction
    config.linear = ml_collections.ConfigDict(
        dict(learning_rates=(0.1,), epochs=20, batch_size=256, momentum=0.9, weight_decay=1e-6)
    )
    config.knn = ml_collections.ConfigDict(dict(k=200, temperature=0.07))
    if args.runlocal:
        config.train_split = "train[:512]"
        config.test_split = "test[:256]"
        config.linear.epochs = 5
        config.knn.k = 20
    return config
