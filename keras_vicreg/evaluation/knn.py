"""Weighted k-nearest-neighbour classification of frozen features, and a callback for pretraining.

The protocol of Wu et al. (InstDisc, CVPR 2018) as used by DINO (Caron et al., ICCV 2021): features
are L2-normalised; each query's k most cosine-similar training examples vote for their class with
weight exp(similarity / temperature); the class with the largest total wins. Defaults k = 200,
temperature = 0.07.

The similarities are computed in `keras.ops` (on the accelerator when there is one), a block of
queries against a block of the training bank at a time, keeping a running top-k, so that memory is
(query block x bank block) however large the bank is.
"""

import keras
import numpy as np
from keras import ops

from keras_vicreg.evaluation.linear import extract_features


def knn_scores(
    train_features,
    train_labels,
    query_features,
    *,
    num_classes,
    k=200,
    temperature=0.07,
    query_block=256,
    bank_block=65_536,
):
    """The weighted votes of each query's k nearest training examples, per class.

    Args:
        train_features: (n, d) features of the labelled bank.
        train_labels: (n,) integer class labels of the bank.
        query_features: (m, d) features to classify.
        num_classes: the number of classes.
        k: neighbours per query (at most n).
        temperature: the votes are exp(cosine similarity / temperature).
        query_block, bank_block: block sizes of the similarity computation.

    Returns:
        float32 NumPy array (m, num_classes) of summed votes.
    """
    train_features = np.asarray(train_features, np.float32)
    query_features = np.asarray(query_features, np.float32)
    train_labels = np.asarray(train_labels).astype("int32").reshape(-1)
    if train_features.ndim != 2 or query_features.ndim != 2 or (
        train_features.shape[1] != query_features.shape[1]
    ) or len(train_labels) != len(train_features):
        raise ValueError(
            "kNN needs train features (n, d), n train labels and query features (m, d). "
            f"Received: train_features.shape={train_features.shape}, "
            f"train_labels.shape={train_labels.shape}, query_features.shape={query_features.shape}"
        )
    if not 1 <= k <= len(train_features) or temperature <= 0:
        raise ValueError(
            f"`k` must be in [1, {len(train_features)}] and `temperature` > 0. "
            f"Received: k={k}, temperature={temperature}"
        )
    bank = [
        (ops.convert_to_tensor(_unit(train_features[start:start + bank_block])),
         ops.convert_to_tensor(train_labels[start:start + bank_block]))
        for start in range(0, len(train_features), bank_block)
    ]
    scores = []
    for start in range(0, len(query_features), query_block):
        queries = ops.convert_to_tensor(_unit(query_features[start:start + query_block]))
        best, best_labels = None, None
        for bank_features, bank_labels in bank:
            similarity = ops.matmul(queries, ops.transpose(bank_features))
            values, indices = ops.top_k(similarity, min(k, similarity.shape[1]))
            labels = ops.take(bank_labels, indices)
            if best is not None:
                values = ops.concatenate([best, values], axis=1)
                labels = ops.concatenate([best_labels, labels], axis=1)
                values, order = ops.top_k(values, k)
                labels = ops.take_along_axis(labels, order, axis=1)
            best, best_labels = values, labels
        weights = ops.exp(best / temperature)
        votes = ops.sum(ops.one_hot(best_labels, num_classes) * weights[..., None], axis=1)
        scores.append(ops.convert_to_numpy(votes))
    return np.concatenate(scores)


def knn_accuracy(train_features, train_labels, query_features, query_labels, **kwargs):
    """Top-1 and top-5 accuracy (percent) of `knn_scores`; keyword arguments go to it.

    Returns:
        {"top1": %, "top5": %}.
    """
    scores = knn_scores(train_features, train_labels, query_features, **kwargs)
    return topk_accuracy(scores, query_labels)


def topk_accuracy(scores, labels, ks=(1, 5)):
    """{"top<k>": percent of rows whose label is among the k highest scores} for each k."""
    labels = np.asarray(labels).reshape(-1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return {
        f"top{k}": 100.0 * float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1)))
        for k in ks
    }


def _unit(features):
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN accuracy of the model's features on a labelled split, during pretraining.

    Every `every` epochs, embeds `train_data` and `val_data` with the model in inference mode (for
    a `VICReg` model: the backbone's pooled representation) and adds `knn_top1` and `knn_top5` (in
    percent) to the epoch's logs, where `keras.callbacks.TensorBoard` and the `History` see them:
    place it before those callbacks.

    Args:
        train_data: (images, labels) batches of the labelled bank (centre crops).
        val_data: (images, labels) batches to classify.
        num_classes: the number of classes.
        k, temperature: see `knn_scores`.
        every: run every this many epochs (and after the last one).
    """

    def __init__(self, train_data, val_data, *, num_classes, k=200, temperature=0.07, every=1):
        super().__init__()
        if every < 1:
            raise ValueError(f"`every` must be >= 1. Received: every={every}")
        self.train_data = train_data
        self.val_data = val_data
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.every = every
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.params.get("epochs"):
            return
        train_features, train_labels = extract_features(self.model, self.train_data)
        val_features, val_labels = extract_features(self.model, self.val_data)
        result = knn_accuracy(
            train_features, train_labels, val_features, val_labels,
            num_classes=self.num_classes, k=min(self.k, len(train_features)),
            temperature=self.temperature,
        )
        self.history.append({"epoch": epoch + 1, **result})
        if logs is not None:
            logs.update({f"knn_{name}": value for name, value in result.items()})
