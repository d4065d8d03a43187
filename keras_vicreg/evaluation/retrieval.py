"""Cross-modal retrieval: recall@K in both directions, by cosine similarity.

`retrieval_recall`: row i of `emb_a` and row i of `emb_b` are the two sides of one item; each row
of one side queries all the rows of the other side, and recall@K is the fraction of queries whose
own pair is among the K most similar.

`caption_retrieval_recall`: MS-COCO's protocol (the VICReg paper's image-text retrieval, after
VSE++), where each image has several captions (five in COCO). An image query is a hit when any of
its captions is among the K nearest captions; a caption query when its image is among the K nearest
images. "1k" averages the recalls over the 5 folds of 1,000 test images (each with its captions);
"5k" scores all 5,000 at once.
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


def _first_hit_ranks(similarity, relevant):
    """Per query row: the rank (from 0) of its best-scoring relevant key; ties count against it."""
    best = np.max(np.where(relevant, similarity, -np.inf), axis=1)
    return np.sum(similarity > best[:, None], axis=1) + np.sum(
        (similarity == best[:, None]) & ~relevant, axis=1)


def _many_to_one_recall(images, captions, owner, ks):
    """(image->caption, caption->image) recall@K of one set of images and their captions."""
    relevant = owner[None, :] == np.arange(images.shape[0])[:, None]  # (images, captions)
    similarity = images @ captions.T
    image_ranks = _first_hit_ranks(similarity, relevant)
    caption_ranks = _first_hit_ranks(similarity.T, relevant.T)
    return ({k: float(np.mean(image_ranks < k)) for k in ks},
            {k: float(np.mean(caption_ranks < k)) for k in ks})


def caption_retrieval_recall(image_embeddings, caption_embeddings, caption_image, ks=(1, 5, 10),
                             protocol="5k", fold_images=1000):
    """Recall@K of images and their several captions in both directions (MS-COCO's protocol).

    Args:
        image_embeddings: (num_images, d), NumPy or any backend's tensor.
        caption_embeddings: (num_captions, d).
        caption_image: (num_captions,) ints: the row of `image_embeddings` each caption describes;
            every image needs at least one caption.
        ks: the K of each recall@K.
        protocol: "5k", every image and caption at once, or "1k", the mean over consecutive folds
            of `fold_images` images, each fold's captions retrieved among themselves.
        fold_images: the images of a "1k" fold (1,000 in COCO's 5,000-image test split); the
            number of images must be a multiple of it.

    Returns:
        `{"image_to_text": {k: recall}, "text_to_image": {k: recall}}`, recalls in [0, 1]. A key
        that ties with the best relevant one counts as ranked above it, as in `retrieval_recall`.
    """
    images = _as_unit_rows(image_embeddings, "image_embeddings")
    captions = _as_unit_rows(caption_embeddings, "caption_embeddings")
    owner = np.asarray(caption_image)
    if owner.shape != (captions.shape[0],) or not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(
            "`caption_image` must hold one integer image row per caption. Received: shape "
            f"{owner.shape} and dtype {owner.dtype} for {captions.shape[0]} captions")
    if images.shape[1] != captions.shape[1]:
        raise ValueError(
            "Images and captions must share one embedding space. Received: image_embeddings "
            f"width {images.shape[1]}, caption_embeddings width {captions.shape[1]}")
    uncaptioned = np.setdiff1d(np.arange(images.shape[0]), owner)
    if owner.size and (owner.min() < 0 or owner.max() >= images.shape[0]) or uncaptioned.size:
        raise ValueError(
            "Every caption must name an image row in [0, num_images) and every image needs a "
            f"caption. Received: caption_image in [{owner.min() if owner.size else None}, "
            f"{owner.max() if owner.size else None}] for {images.shape[0]} images; images without "
            f"a caption: {uncaptioned[:10].tolist()}")
    ks = tuple(int(k) for k in ks)
    if protocol == "5k":
        folds = [np.arange(images.shape[0])]
    elif protocol == "1k":
        if fold_images < 1 or images.shape[0] % fold_images:
            raise ValueError(
                f"protocol='1k' needs a number of images that is a multiple of fold_images="
                f"{fold_images}. Received: {images.shape[0]} images")
        folds = np.split(np.arange(images.shape[0]), images.shape[0] // fold_images)
    else:
        raise ValueError(f"`protocol` must be '1k' or '5k'. Received: protocol={protocol!r}")
    totals = {"image_to_text": dict.fromkeys(ks, 0.0), "text_to_image": dict.fromkeys(ks, 0.0)}
    for fold in folds:
        in_fold = np.isin(owner, fold)
        remap = np.full(images.shape[0], -1)
        remap[fold] = np.arange(fold.size)
        to_text, to_image = _many_to_one_recall(images[fold], captions[in_fold],
                                                remap[owner[in_fold]], ks)
        for k in ks:
            totals["image_to_text"][k] += to_text[k] / len(folds)
            totals["text_to_image"][k] += to_image[k] / len(folds)
    return totals
