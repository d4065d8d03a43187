r"""The demo's evaluation (`trainers/demo.py`): one linear protocol and one kNN for every row.

    python -m trainers.demo --eval_config=configs/fashion_mnist_demo_eval.py
    python -m trainers.demo --config=configs/fashion_mnist_demo.py:runlocal \
        --eval_config=configs/fashion_mnist_demo_eval.py:runlocal

Features of the whole 28-pixel images (no crop), standardised with the training set's mean and
std; one linear layer, SGD with momentum and a cosine schedule, a single learning rate (nothing is
chosen on the test set). kNN: cosine similarity, k = 200 votes weighted by exp(similarity / 0.07).
"""

import ml_collections


def get_config(arg=None):
    """The evaluation; `arg="runlocal"`: a few hundred images, a few epochs."""
    config = ml_collections.ConfigDict()
    config.train_split = "train"
    config.test_split = "test"
    config.batch_size = 500  # of the feature extraction
    config.linear = ml_collections.ConfigDict(
        dict(learning_rates=(0.1,), epochs=20, batch_size=256, momentum=0.9, weight_decay=1e-6)
    )
    config.knn = ml_collections.ConfigDict(dict(k=200, temperature=0.07))
    if arg == "runlocal":
        config.train_split = "train[:512]"
        config.test_split = "test[:256]"
        config.linear.epochs = 5
        config.knn.k = 20
    elif arg:
        raise ValueError(f'The config takes no argument or "runlocal". Received: arg={arg!r}')
    return config
