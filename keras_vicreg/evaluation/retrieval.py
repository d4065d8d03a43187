"""Cross-modal retrieval: recall@K in both directions for paired embeddings.

As the VICReg paper reports it for image-text retrieval on MS-COCO (Section "Multi-modal
pretraining"): row i of `emb_a` and row i of `emb_b` are the two sides of one item; each row of one
side queries all the rows of the other side by cosine similarity, and recall@K is the fraction of
queries whose own pair is among the K most similar.
"""

import keras
import numpy as np

_BLOCK_ROWS = 1024  # queries scored at once: a (1024, N) similarity block, not the whole (N, N)


def _as_unit_rows(embeddings, name):
    array = np.asarray(keras.ops.convert_to_numpy(embeddings), dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array of embeddings, one row per item. "
            f"Received: {name}.shape={array.shape}"
        )
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def _recall_one_way(queries, keys, ks):
    """Recall@K of each query's own row (same index) among all `keys`; ties count against it."""
    n = queries.shape[0]
    hits = np.zeros(len(ks), dtype=np.int64)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        similarity = queries[start:stop] @ keys.T
        matched = similarity[np.arange(stop - start), np.arange(start, stop)]
        # How many other keys score at least as high as the pair: its rank, counting from 0.
        rank = np.sum(similarity >= matched[:, None], axis=1) - 1
        for index, k in enumerate(ks):
            hits[index] += np.count_nonzero(rank < k)
    return {k: float(count) / n for k, count in zip(ks, hits)}


def retrieval_recall(emb_a, emb_b, ks=(1, 5, 10)):
    """Recall@K of paired embeddings in both directions, by cosine similarity.

    Args:
        emb_a: embeddings of the items' first side (e.g. images), shape (N, d): a NumPy array or a
            tensor of any backend.
        emb_b: embeddings of their second side (e.g. captions), shape (N, d); row i pairs with
            row i of `emb_a`.
        ks: the K of each recall@K, positive integers.

    Returns:
        `{"a_to_b": {k: recall}, "b_to_a": {k: recall}}`, recalls in [0, 1]: "a_to_b" queries with
        `emb_a` and retrieves among `emb_b` (image-to-text when a is the image side). A key that
        ties with the pair counts as ranked above it, so constant (collapsed) embeddings score
        about 0, not 1; chance level is K / N.

    Example:
        >>> recall = retrieval_recall(image_embeddings, text_embeddings)
        >>> recall["a_to_b"][1], recall["b_to_a"][1]
    """
    unit_a = _as_unit_rows(emb_a, "emb_a")
    unit_b = _as_unit_rows(emb_b, "emb_b")
    if unit_a.shape != unit_b.shape:
        raise ValueError(
            "`emb_a` and `emb_b` must be paired row for row in one embedding space: the same "
            f"shape (N, d). Received: emb_a.shape={unit_a.shape}, emb_b.shape={unit_b.shape}"
        )
    if unit_a.shape[0] == 0:
        raise ValueError(f"Retrieval needs at least one pair. Received: emb_a.shape={unit_a.shape}")
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                     for k in ks):
        raise ValueError(f"`ks` must be positive integers such as (1, 5, 10). Received: ks={ks!r}")
    ks = tuple(int(k) for k in ks)
    return {
        "a_to_b": _recall_one_way(unit_a, unit_b, ks),
        "b_to_a": _recall_one_way(unit_b, unit_a, ks),
    }
