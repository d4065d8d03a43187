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
