"""retrieval_recall against a brute-force NumPy reference, ties, and its argument checks."""

import keras
import numpy as np
import pytest

from keras_vicreg.evaluation import retrieval_recall

pytestmark = pytest.mark.backend_neutral


def brute_force_recall(emb_a, emb_b, ks):
    """Ranks every key for every query with a full argsort of the cosine similarities."""
    unit_a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
    unit_b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)

    def one_way(queries, keys):
        recalls = {}
        for k in ks:
            hits = 0
            for i, query in enumerate(queries):
                order = np.argsort(-(keys @ query), kind="stable")
                hits += int(i in order[:k])
            recalls[k] = hits / len(queries)
        return recalls

    return {"a_to_b": one_way(unit_a, unit_b), "b_to_a": one_way(unit_b, unit_a)}


@pytest.mark.parametrize("n, d", [(50, 8), (300, 16)])
def test_recall_matches_brute_force_reference_in_both_directions(n, d):
    rng = np.random.default_rng(n)
    emb_a = rng.normal(size=(n, d))
    emb_b = emb_a + rng.normal(scale=1.0, size=(n, d))  # noisy pairs: recall between 0 and 1
    ks = (1, 5, 10)
    recall = retrieval_recall(emb_a, emb_b, ks=ks)
    expected = brute_force_recall(emb_a, emb_b, ks)
    for direction in ("a_to_b", "b_to_a"):
        for k in ks:
            assert recall[direction][k] == pytest.approx(expected[direction][k], abs=1e-12)
    assert 0.0 < recall["a_to_b"][1] < 1.0
    assert recall["a_to_b"] != recall["b_to_a"]  # the two directions are different rankings


def test_recall_uses_cosine_similarity_not_dot_product():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 6))
    scales = rng.uniform(0.1, 10.0, size=(40, 1))
    recall = retrieval_recall(emb * scales, emb)
    assert recall["a_to_b"][1] == 1.0 and recall["b_to_a"][1] == 1.0


def test_recall_scores_backend_tensors_like_numpy_arrays():
    rng = np.random.default_rng(1)
    emb_a = rng.normal(size=(64, 8)).astype("float32")
    emb_b = (emb_a + rng.normal(size=(64, 8))).astype("float32")
    to_tensor = keras.ops.convert_to_tensor
    tensors = retrieval_recall(to_tensor(emb_a), to_tensor(emb_b))
    assert tensors == retrieval_recall(emb_a, emb_b)


def test_collapsed_embeddings_score_zero_not_perfect_recall():
    constant = np.ones((20, 4))
    recall = retrieval_recall(constant, constant, ks=(1, 5, 19, 20))
    assert recall["a_to_b"] == {1: 0.0, 5: 0.0, 19: 0.0, 20: 1.0}


def test_recall_of_more_rows_than_one_block_matches_reference():
    rng = np.random.default_rng(2)
    emb_a = rng.normal(size=(1100, 4))  # more than the 1024 queries scored at once
    emb_b = emb_a + rng.normal(scale=0.3, size=emb_a.shape)
    recall = retrieval_recall(emb_a, emb_b, ks=(1,))
    unit_a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
    unit_b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)
    top = np.argmax(unit_a @ unit_b.T, axis=1)
    assert recall["a_to_b"][1] == pytest.approx(np.mean(top == np.arange(1100)))


@pytest.mark.parametrize(
    "emb_a, emb_b, ks, message",
    [
        (np.ones((4, 3)), np.ones((5, 3)), (1,), "same shape"),
        (np.ones((4, 3)), np.ones((4, 2)), (1,), "same shape"),
        (np.ones((4,)), np.ones((4,)), (1,), "2-D"),
        (np.ones((4, 3)), np.ones((4, 3)), (0, 5), "positive integers"),
        (np.ones((4, 3)), np.ones((4, 3)), (1.5,), "positive integers"),
        (np.ones((4, 3)), np.ones((4, 3)), (), "positive integers"),
    ],
)
def test_bad_arguments_raise_value_errors_that_say_what_to_change(emb_a, emb_b, ks, message):
    with pytest.raises(ValueError, match=message):
        retrieval_recall(emb_a, emb_b, ks=ks)


# ------------------------------------------------------------------------------------------------
# caption_retrieval_recall: several captions per image (MS-COCO's protocol).

from keras_vicreg.evaluation import caption_retrieval_recall  # noqa: E402


def brute_force_caption_recall(images, captions, owner, ks):
    """Sorts every key for every query by score, relevant keys after irrelevant ones at ties."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    captions = captions / np.linalg.norm(captions, axis=1, keepdims=True)

    def one_way(queries, keys, relevant):
        hits = dict.fromkeys(ks, 0)
        for query, wanted in zip(queries, relevant):
            order = sorted(range(len(keys)), key=lambda j: (-float(query @ keys[j]), wanted[j]))
            first = next(position for position, j in enumerate(order) if wanted[j])
            for k in ks:
                hits[k] += first < k
        return {k: hits[k] / len(queries) for k in ks}

    relevant = owner[None, :] == np.arange(len(images))[:, None]
    return one_way(images, captions, relevant), one_way(captions, images, relevant.T)


def _captioned(rng, num_images, per_image=5, width=8, noise=1.0):
    images = rng.normal(size=(num_images, width))
    owner = np.repeat(np.arange(num_images), per_image)
    captions = images[owner] + noise * rng.normal(size=(owner.size, width))
    order = rng.permutation(owner.size)  # captions in any order
    return images, captions[order], owner[order]


@pytest.mark.parametrize("protocol, fold_images", [("5k", 1000), ("1k", 6)])
def test_caption_recall_equals_a_brute_force_count(protocol, fold_images):
    rng = np.random.default_rng(0)
    images, captions, owner = _captioned(rng, 18)
    ks = (1, 2, 5, 10)
    result = caption_retrieval_recall(images, captions, owner, ks, protocol=protocol,
                                      fold_images=fold_images)
    folds = [np.arange(18)] if protocol == "5k" else np.split(np.arange(18), 3)
    expected = {"image_to_text": dict.fromkeys(ks, 0.0), "text_to_image": dict.fromkeys(ks, 0.0)}
    for fold in folds:
        keep = np.isin(owner, fold)
        remap = {image: row for row, image in enumerate(fold)}
        to_text, to_image = brute_force_caption_recall(
            images[fold], captions[keep], np.array([remap[o] for o in owner[keep]]), ks)
        for k in ks:
            expected["image_to_text"][k] += to_text[k] / len(folds)
            expected["text_to_image"][k] += to_image[k] / len(folds)
    for direction in expected:
        for k in ks:
            assert result[direction][k] == pytest.approx(expected[direction][k], abs=1e-12)
    # Neither trivial nor perfect at K=1: the count had something to get right.
    assert 0.0 < result["image_to_text"][1] < 1.0 and 0.0 < result["text_to_image"][1] < 1.0


def test_an_image_counts_as_found_when_any_of_its_captions_is_nearest():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(4, 6))
    owner = np.repeat(np.arange(4), 5)
    captions = rng.normal(size=(20, 6)) * 10.0  # far from every image
    captions[3] = images[0]  # image 0's fourth caption is image 0 itself
    result = caption_retrieval_recall(images, captions, owner, ks=(1,))
    assert result["image_to_text"][1] >= 0.25  # image 0 found at rank 0 by its fourth caption
    found = brute_force_caption_recall(images, captions, owner, (1,))[0][1]
    assert result["image_to_text"][1] == pytest.approx(found)


def test_collapsed_embeddings_score_zero_not_one():
    images, owner = np.ones((5, 3)), np.repeat(np.arange(5), 2)
    result = caption_retrieval_recall(images, np.ones((10, 3)), owner, ks=(1, 4, 5))
    # Every key ties, and the 4 other images rank ahead of a caption's own (at K=5, all 5 images
    # are retrieved: a hit by definition).
    assert result == {"image_to_text": {1: 0.0, 4: 0.0, 5: 0.0},
                      "text_to_image": {1: 0.0, 4: 0.0, 5: 1.0}}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"caption_image": np.array([0, 1, 2])}, "one integer image row per caption"),
        ({"caption_image": np.array([0, 0, 1, 1, 1, 1])}, "images without a caption: [2]"),
        ({"caption_image": np.array([0, 1, 2, 2, 2, 7])}, "in [0, num_images)"),
        ({"protocol": "10k"}, "`protocol` must be '1k' or '5k'"),
        ({"protocol": "1k", "fold_images": 2}, "multiple of fold_images=2"),
        ({"caption_embeddings": np.ones((6, 4))}, "share one embedding space"),
    ],
)
def test_caption_recall_rejects_bad_input_with_what_to_change(kwargs, message):
    arguments = {"image_embeddings": np.eye(3), "caption_embeddings": np.ones((6, 3)),
                 "caption_image": np.array([0, 0, 1, 1, 2, 2])}
    arguments.update(kwargs)
    with pytest.raises(ValueError) as error:
        caption_retrieval_recall(**arguments)
    assert message in str(error.value)
