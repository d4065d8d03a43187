"""The ablation table's loss variants: the cosine invariance, the symmetrised loss, BYOL's momentum
ramp, and collapse without regularisation against none with it, as in the paper's table."""

import importlib.util
import math
import pathlib

import keras
import numpy as np
import pytest

from keras_vicreg import VICReg
from keras_vicreg import losses
from keras_vicreg.data.synthetic import synthetic_images
from keras_vicreg.models import branches
from keras_vicreg.training import recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]


def vector_encoder(width=16):
    inputs = keras.Input((width,))
    x = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, x, name="vector_encoder")


def vector_views(n=64, width=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype("float32")
    noise = 0.3 * rng.normal(size=(2, n, width)).astype("float32")
    return x + noise[0], x + noise[1]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.backend_neutral
def test_cosine_invariance_matches_a_float64_numpy_rederivation():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(2, 32, 24))
    z[3] = 0.0  # a zero row: no division by zero, a cosine of 0
    expected_rows = 2.0 - 2.0 * np.sum(p * z, 1) / (
        np.linalg.norm(p, axis=1) * np.maximum(np.linalg.norm(z, axis=1), 1e-300))
    expected_rows[3] = 2.0
    got = float(losses.cosine_invariance_loss(p.astype("float32"), z.astype("float32")))
    np.testing.assert_allclose(got, expected_rows.mean(), rtol=1e-5)
    terms = losses.vicreg_loss(p.astype("float32"), z.astype("float32"), invariance="cosine",
                               std_coeff=0.0, cov_coeff=0.0)
    np.testing.assert_allclose(float(terms["loss"]), 25.0 * expected_rows.mean(), rtol=1e-5)
    aligned = float(losses.cosine_invariance_loss(p.astype("float32"), 3.0 * p.astype("float32")))
    assert abs(aligned) < 1e-5  # only directions count
    with pytest.raises(ValueError, match="`invariance` must be one of"):
        losses.vicreg_loss(p, z, invariance="l2")


@pytest.mark.backend_neutral
def test_the_symmetrised_loss_averages_both_directions():
    keras.utils.set_random_seed(0)
    model = VICReg(vector_encoder(), "16-16", predictor="8-16", stop_gradient_b=True,
                   invariance="cosine", symmetric=True)
    view_a, view_b = vector_views(16)
    terms = model.compute_terms((view_a, view_b))
    z_a, z_b = numpy(model.embed(view_a)), numpy(model.embed(view_b))
    p_a, p_b = numpy(model.predictor(z_a)), numpy(model.predictor(z_b))
    directions = [losses.vicreg_loss(p_a, z_b, invariance="cosine"),
                  losses.vicreg_loss(p_b, z_a, invariance="cosine")]
    for name in ("loss", "invariance", "variance", "covariance"):
        expected = (float(directions[0][name]) + float(directions[1][name])) / 2.0
        np.testing.assert_allclose(float(terms[name]), expected, rtol=1e-5, atol=1e-6)
    one_way = VICReg(vector_encoder(), "16-16", predictor="8-16", invariance="cosine")
    one_way.set_weights(model.get_weights())
    np.testing.assert_allclose(float(one_way.compute_terms((view_a, view_b))["loss"]),
                               float(directions[0]["loss"]), rtol=1e-5)  # the control
    with pytest.raises(ValueError, match="feeds both views to both sides"):
        VICReg(vector_encoder(), "16-16", backbone_b=vector_encoder(), symmetric=True)


@pytest.mark.backend_neutral
def test_the_momentum_ramps_to_one_on_byols_cosine_schedule():
    base, ramp = 0.9, 4
    keras.utils.set_random_seed(0)
    model = VICReg(vector_encoder(), "16-16", momentum=base, momentum_ramp_steps=ramp,
                   predictor="8-16", symmetric=True, invariance="cosine")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    online = model.backbone.weights + model.expander.weights
    target = model.backbone_b.weights + model.expander_b.weights
    pairs = [(a, b) for a, b in zip(online, target) if a.trainable]
    expected = [numpy(b.value).astype("float64") for _, b in pairs]
    view_a, view_b = vector_views()
    for step in range(ramp + 2):
        rows = slice((step % 4) * 16, (step % 4 + 1) * 16)
        model.train_on_batch(x=(view_a[rows], view_b[rows]))
        rate = 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, ramp) / ramp) + 1.0) / 2.0
        new_online = [numpy(a.value).astype("float64") for a, _ in pairs]
        expected = [rate * e + (1.0 - rate) * o for e, o in zip(expected, new_online)]
        for want, (_, b) in zip(expected, pairs):
            np.testing.assert_allclose(numpy(b.value), want, rtol=1e-5, atol=1e-6)
    assert int(numpy(model.momentum_step.value)) == ramp + 2
    assert np.isclose(float(numpy(branches.momentum_rate(base, 0, ramp))), base)
    assert np.isclose(float(numpy(branches.momentum_rate(base, 3 * ramp, ramp))), 1.0)
    moved = [not np.allclose(e, o) for e, o in zip(expected, new_online)]
    assert any(moved)  # the target lags behind the online weights: the test is not vacuous


@pytest.mark.backend_neutral
def test_the_momentum_step_round_trips_through_a_keras_file(tmp_path):
    model = VICReg(vector_encoder(), "16-16", momentum=0.99, momentum_ramp_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    view_a, view_b = vector_views()
    model.fit(x=(view_a, view_b), batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "ramp.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.momentum_ramp_steps == 10
    assert int(numpy(loaded.momentum_step.value)) == 4


def _ablation_config(row):
    spec = importlib.util.spec_from_file_location("abl", ROOT / "configs" / "paper_ablations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(f"{row},runlocal")


@pytest.mark.slow
def test_invariance_only_rows_collapse_and_regularised_rows_do_not():
    """The table's "collapse" rows (VICReg and SimSiam without a predictor, no regulariser)
    against the same rows with the variance term, and VICReg with variance and covariance."""
    images = synthetic_images(256, 16, 3, seed=0).astype("float32") / 127.5 - 1.0
    noise = np.random.default_rng(0).normal(0, 0.3, size=(2, *images.shape)).astype("float32")
    std = {}
    for row in ("vicreg_inv", "vicreg_var", "vicreg_varcov", "simsiam_sg_inv", "simsiam_sg_var"):
        config = _ablation_config(row)
        config.image_size = 16
        keras.utils.set_random_seed(0)
        model = recipe.make_model(config, 3)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(x=(images + noise[0], images + noise[1]), batch_size=64, epochs=30,
                            verbose=0, shuffle=False)
        std[row] = history.history["std"][-1]  # the embeddings' mean per-feature std
    assert std["vicreg_inv"] < 0.1 and std["simsiam_sg_inv"] < 0.1, std
    for row in ("vicreg_var", "vicreg_varcov", "simsiam_sg_var"):
        assert std[row] > 0.3, std
    assert min(std["vicreg_var"], std["vicreg_varcov"]) > 5 * std["vicreg_inv"], std
    assert std["simsiam_sg_var"] > 5 * std["simsiam_sg_inv"], std
