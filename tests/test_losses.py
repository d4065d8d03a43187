"""vicreg_loss against an independent NumPy float64 re-derivation, values and gradients."""

import keras
import numpy as np
import pytest

from keras_vicreg import losses
from tests.backend_autodiff import value_and_grads

pytestmark = pytest.mark.backend_neutral

SIZES = [(8, 16), (16, 16), (32, 8)]  # N < d, N = d, N > d


def reference_terms(z_a, z_b, gamma=1.0, eps=1e-4):
    """The released code's loss written out in float64 with explicit loops over the covariance."""
    z_a, z_b = z_a.astype(np.float64), z_b.astype(np.float64)
    n, d = z_a.shape
    invariance = np.mean((z_a - z_b) ** 2)

    def variance(z):
        std = np.sqrt(z.var(axis=0, ddof=1) + eps)
        return np.mean(np.maximum(0.0, gamma - std))

    def covariance(z):
        zc = z - z.mean(axis=0)
        cov = np.zeros((d, d))
        for row in zc:
            cov += np.outer(row, row)
        cov /= n - 1
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    var = (variance(z_a) + variance(z_b)) / 2
    cov = covariance(z_a) + covariance(z_b)
    return {
        "loss": 25 * invariance + 25 * var + cov,
        "invariance": invariance,
        "variance": var,
        "covariance": cov,
    }


def numerical_gradient(fn, arrays, h=1e-6):
    """Central differences of a float64 function with respect to each array."""
    grads = []
    for index, array in enumerate(arrays):
        grad = np.zeros_like(array, dtype=np.float64)
        for position in np.ndindex(array.shape):
            shifted = [a.astype(np.float64).copy() for a in arrays]
            shifted[index][position] += h
            up = fn(*shifted)
            shifted[index][position] -= 2 * h
            grad[position] = (up - fn(*shifted)) / (2 * h)
        grads.append(grad)
    return grads


def embeddings(n, d, seed=0, scale=0.7):
    rng = np.random.default_rng(seed)
    z_a = rng.normal(size=(n, d)) * rng.uniform(0.2, 1.5, size=d) * scale
    z_b = z_a + 0.3 * rng.normal(size=(n, d))
    return z_a.astype("float32"), z_b.astype("float32")


def relative_error(actual, expected):
    return np.linalg.norm(np.ravel(actual - expected)) / max(np.linalg.norm(np.ravel(expected)), 1e-12)


@pytest.mark.parametrize("method", ["dense", "gram", "auto"])
@pytest.mark.parametrize("n, d", SIZES)
def test_terms_match_float64_reference(n, d, method):
    z_a, z_b = embeddings(n, d)
    terms = losses.vicreg_loss(z_a, z_b, covariance=method)
    expected = reference_terms(z_a, z_b)
    for name, value in expected.items():
        assert relative_error(keras.ops.convert_to_numpy(terms[name]), value) < 1e-5, name


@pytest.mark.parametrize("method", ["dense", "gram"])
@pytest.mark.parametrize("n, d", SIZES)
def test_gradients_match_float64_reference(n, d, method):
    z_a, z_b = embeddings(n, d, seed=1)
    value, grads = value_and_grads(
        lambda a, b: losses.vicreg_loss(a, b, covariance=method)["loss"], z_a, z_b
    )
    expected_grads = numerical_gradient(lambda a, b: reference_terms(a, b)["loss"], [z_a, z_b])
    assert relative_error(value, reference_terms(z_a, z_b)["loss"]) < 1e-5
    for grad, expected in zip(grads, expected_grads):
        assert relative_error(grad, expected) < 1e-5


def test_gram_and_dense_covariance_agree_on_wide_embeddings():
    z, _ = embeddings(64, 512, seed=2)
    dense = keras.ops.convert_to_numpy(losses.covariance_loss(z, "dense"))
    gram = keras.ops.convert_to_numpy(losses.covariance_loss(z, "gram"))
    assert relative_error(gram, dense) < 1e-5


def test_variance_hinge_is_zero_when_every_feature_has_unit_std():
    z, _ = embeddings(256, 8, seed=3, scale=5.0)
    z = (z - z.mean(0)) / z.std(0, ddof=1) * 1.5
    assert float(keras.ops.convert_to_numpy(losses.variance_loss(z))) == 0.0


def test_loss_is_symmetric_in_the_two_views():
    z_a, z_b = embeddings(16, 8, seed=4)
    ab = losses.vicreg_loss(z_a, z_b)
    ba = losses.vicreg_loss(z_b, z_a)
    for name in ab:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ab[name]), keras.ops.convert_to_numpy(ba[name]), rtol=1e-6
        )


def test_coefficients_weight_the_terms():
    z_a, z_b = embeddings(16, 8, seed=5)
    terms = losses.vicreg_loss(z_a, z_b, sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5)
    combined = {k: float(keras.ops.convert_to_numpy(v)) for k, v in terms.items()}
    expected = 2 * combined["invariance"] + 3 * combined["variance"] + 0.5 * combined["covariance"]
    assert combined["loss"] == pytest.approx(expected, rel=1e-6)


def test_low_precision_inputs_are_computed_in_float32():
    z_a, z_b = embeddings(16, 8, seed=6)
    terms = losses.vicreg_loss(z_a.astype("float16"), z_b.astype("float16"))
    assert keras.backend.standardize_dtype(terms["loss"].dtype) == "float32"
    expected = reference_terms(z_a.astype("float16"), z_b.astype("float16"))["loss"]
    assert relative_error(keras.ops.convert_to_numpy(terms["loss"]), expected) < 1e-5


def test_auto_picks_the_cheaper_form():
    assert losses.resolve_covariance_method("auto", 256, 8192) == "gram"
    assert losses.resolve_covariance_method("auto", 8192, 8192) == "dense"
    assert losses.resolve_covariance_method("auto", 2048, 128) == "dense"
    assert losses.resolve_covariance_method("auto", None, 8192) == "gram"


@pytest.mark.parametrize(
    "z_a, z_b, message",
    [
        (np.zeros((1, 4)), np.zeros((1, 4)), "at least 2 rows"),
        (np.zeros((4, 3)), np.zeros((4, 4)), "same shape"),
        (np.zeros((4,)), np.zeros((4,)), "2-D"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), "2-D"),
    ],
)
def test_bad_inputs_raise_a_clear_error(z_a, z_b, message):
    with pytest.raises(ValueError, match=message):
        losses.vicreg_loss(z_a.astype("float32"), z_b.astype("float32"))


def test_unknown_covariance_method_is_rejected():
    z_a, z_b = embeddings(4, 4)
    with pytest.raises(ValueError, match="covariance"):
        losses.vicreg_loss(z_a, z_b, covariance="fast")
