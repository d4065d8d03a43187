"""Two different branches, the paper's ablation switches, and their round trip through a file."""

import keras
import numpy as np
import pytest

from keras_vicreg import VICReg

pytestmark = pytest.mark.backend_neutral


def image_encoder():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2)(x)
    return keras.Model(inputs, x, name="image_encoder")  # a feature map: the model pools it


def token_encoder(vocabulary=20, length=7):
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, 8)(inputs)
    x = keras.layers.GRU(12)(x)
    return keras.Model(inputs, x, name="token_encoder")


def vector_encoder(width=16):
    inputs = keras.Input((width,))
    x = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, x, name="vector_encoder")


def image_token_pairs(n=32):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    tokens = rng.integers(0, 20, size=(n, 7)).astype("int32")
    return images, tokens


def vector_views(n=64, width=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype("float32")
    noise = 0.3 * rng.normal(size=(2, n, width)).astype("float32")
    return x + noise[0], x + noise[1]


def values(variables):
    return [keras.ops.convert_to_numpy(v.value).copy() for v in variables]


def compiled(model, optimizer=None):
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05))
    return model


def test_two_branches_of_different_architectures_and_inputs_train():
    images, tokens = image_token_pairs()
    model = compiled(VICReg(image_encoder(), "16-16", backbone_b=token_encoder()))
    before_a, before_b = values(model.backbone.weights), values(model.backbone_b.weights)
    history = model.fit(x=(images, tokens), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = values(model.backbone.weights + model.backbone_b.weights)
    for old, new in zip(before_a + before_b, after):
        assert not np.allclose(old, new)  # both branches learn, each with its own weights
    assert model.expander_b is not model.expander
    assert model.branch_a.predict(images, verbose=0).shape == (32, 16)
    assert model.branch_b.predict(tokens, verbose=0).shape == (32, 12)


def test_shared_weights_stay_the_default():
    model = VICReg(vector_encoder(), "8-8")
    assert model.backbone_b is None and model.expander_b is None
    x, _ = vector_views(8)
    np.testing.assert_array_equal(
        model.branch_a.predict(x, verbose=0), model.branch_b.predict(x, verbose=0)
    )
    assert len(model.trainable_variables) == len(
        model.backbone.trainable_variables + model.expander.trainable_variables
    )


def test_two_branch_model_round_trips_through_a_keras_file(tmp_path):
    images, tokens = image_token_pairs()
    model = compiled(
        VICReg(image_encoder(), "16-16", backbone_b=token_encoder(), expander_b="24-16",
               std_coeff=20.0)
    )
    model.fit(x=(images, tokens), batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "two_branch.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["expander_b"] == "24-16"
    assert loaded.loss_options["std_coeff"] == 20.0
    for branch, inputs in (("a", images), ("b", tokens)):
        for embeddings in (False, True):
            np.testing.assert_allclose(
                loaded.branch_model(branch, embeddings).predict(inputs, verbose=0),
                model.branch_model(branch, embeddings).predict(inputs, verbose=0),
                rtol=1e-5, atol=1e-6,
            )
    exported = str(tmp_path / "branch_b.keras")
    model.branch_b.save(exported)  # each branch stands alone
    np.testing.assert_allclose(
        keras.saving.load_model(exported).predict(tokens, verbose=0),
        model.branch_b.predict(tokens, verbose=0),
        rtol=1e-5, atol=1e-6,
    )


def test_momentum_encoder_follows_the_ema_formula_exactly():
    rate = 0.9
    model = compiled(VICReg(vector_encoder(), "16-16", momentum=rate, predictor="8-16"))
    online = model.backbone.weights + model.expander.weights
    target = model.backbone_b.weights + model.expander_b.weights
    pairs = [(a, b) for a, b in zip(online, target) if a.trainable]
    assert all(not b.trainable for b in target)
    assert not {id(v) for v in target} & {id(v) for v in model.trainable_variables}
    expected = values([a for a, _ in pairs])  # the momentum encoder starts as a copy
    for want, got in zip(expected, values([b for _, b in pairs])):
        np.testing.assert_array_equal(got, want)
    view_a, view_b = vector_views()
    for step in range(3):
        rows = slice(step * 16, (step + 1) * 16)
        model.train_on_batch(x=(view_a[rows], view_b[rows]))
        new_online = values([a for a, _ in pairs])
        expected = [rate * e + (1.0 - rate) * o for e, o in zip(expected, new_online)]
        for want, got in zip(expected, values([b for _, b in pairs])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    moved = [not np.allclose(e, o) for e, o in zip(expected, new_online)]
    assert any(moved)  # the target lags behind the online weights, it is not a copy


def test_momentum_encoder_round_trips_through_a_keras_file(tmp_path):
    model = compiled(VICReg(vector_encoder(), "16-16", momentum=0.5))
    view_a, view_b = vector_views()
    model.fit(x=(view_a, view_b), batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "momentum.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.momentum == 0.5
    np.testing.assert_allclose(
        loaded.branch_model("b", embeddings=True).predict(view_b, verbose=0),
        model.branch_model("b", embeddings=True).predict(view_b, verbose=0),
        rtol=1e-5, atol=1e-6,
    )


@pytest.mark.parametrize("stop_gradient_b", [True, False])
def test_stop_gradient_leaves_branch_b_weights_unchanged_by_the_loss(stop_gradient_b):
    model = compiled(
        VICReg(vector_encoder(), "16-16", backbone_b=vector_encoder(),
               stop_gradient_b=stop_gradient_b)
    )
    branch_b = model.backbone_b.trainable_weights + model.expander_b.trainable_weights
    branch_a = model.backbone.trainable_weights + model.expander.trainable_weights
    before_a, before_b = values(branch_a), values(branch_b)
    view_a, view_b = vector_views()
    model.fit(x=(view_a, view_b), batch_size=16, epochs=1, verbose=0)
    changed_b = [not np.array_equal(old, new) for old, new in zip(before_b, values(branch_b))]
    changed_a = [not np.array_equal(old, new) for old, new in zip(before_a, values(branch_a))]
    assert all(changed_a)
    if stop_gradient_b:
        assert not any(changed_b)
    else:
        assert all(changed_b)  # the control: without stop-gradient, branch b learns


def test_predictor_trains_and_stays_out_of_the_exported_branch():
    model = compiled(VICReg(vector_encoder(), "16-16", predictor="8-16"))
    kernels = [w for w in model.predictor.trainable_weights if w.name == "kernel"]
    before = values(kernels)
    view_a, view_b = vector_views()
    terms = model.compute_terms((view_a[:16], view_b[:16]))
    assert set(terms) == {"loss", "invariance", "variance", "covariance", "std"}
    model.fit(x=(view_a, view_b), batch_size=16, epochs=1, verbose=0)
    for old, new in zip(before, values(kernels)):
        assert not np.allclose(old, new)
    # The exported representation and embeddings are the expander's, not the predictor's.
    assert model.branch_model("a", embeddings=True).output.shape == (None, 16)


def test_invariance_only_collapses_while_the_full_loss_does_not():
    view_a, view_b = vector_views(128)
    final_std = {}
    for name, coefficients in (("invariance", dict(std_coeff=0.0, cov_coeff=0.0)),
                               ("full", dict(std_coeff=25.0, cov_coeff=1.0))):
        keras.utils.set_random_seed(0)
        model = compiled(VICReg(vector_encoder(), "32-32", **coefficients),
                         keras.optimizers.Adam(3e-2))
        history = model.fit(x=(view_a, view_b), batch_size=64, epochs=30, verbose=0,
                            shuffle=False)
        final_std[name] = history.history["std"][-1]
    assert final_std["invariance"] < 0.05, final_std
    assert final_std["full"] > 0.8, final_std


def test_invariance_plus_variance_is_set_through_the_coefficients():
    model = VICReg(vector_encoder(), "16-16", cov_coeff=0.0)
    view_a, view_b = vector_views(16)
    terms = model.compute_terms((view_a, view_b))
    expected = 25.0 * terms["invariance"] + 25.0 * terms["variance"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(terms["loss"]),
                               keras.ops.convert_to_numpy(expected), rtol=1e-6)


def test_no_batch_norm_in_the_expanders_removes_it_from_both_branches():
    model = VICReg(vector_encoder(), "16-16", backbone_b=vector_encoder(),
                   expander_batch_norm=False)
    for expander in (model.expander, model.expander_b):
        assert not any(isinstance(layer, keras.layers.BatchNormalization)
                       for layer in expander.layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(expander_b="16-16"), "give `backbone_b` too"),
        (dict(momentum=1.0), r"in \[0, 1\)"),
        (dict(momentum=0.9, backbone_b="vector"), "leave `backbone_b` unset"),
        (dict(predictor=keras.layers.Dense(16)), "spec string"),
        (dict(predictor="8-12"), "same width"),
        (dict(backbone_b="vector", expander_b="16-12"), "same width"),
        (dict(backbone_b="not a layer"), "`backbone_b` must be a keras.Model"),
    ],
)
def test_bad_branch_options_raise_value_errors_that_say_what_to_change(kwargs, message):
    if kwargs.get("backbone_b") == "vector":
        kwargs["backbone_b"] = vector_encoder()
    with pytest.raises(ValueError, match=message):
        VICReg(vector_encoder(), "16-16", **kwargs)


def test_unknown_branch_name_raises():
    with pytest.raises(ValueError, match='"a" or "b"'):
        VICReg(vector_encoder(), "8-8").branch_model("c")
