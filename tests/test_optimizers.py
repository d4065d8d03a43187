"""Tests of keras_vicreg.training.optimizers (LARS, AdamW, the exclusion rule) against independent
NumPy float64 references and the variables of a keras-hub ViT and ResNet."""

import keras
import numpy as np
import pytest

from keras_vicreg.training.optimizers import EXCLUDE_FROM_DECAY
from keras_vicreg.training.optimizers import AdamW
from keras_vicreg.training.optimizers import LARS
from keras_vicreg.training.schedules import WarmupCosine

# Large hyperparameters so that the decay, the trust ratio and the momentum all move the weights
# well beyond float32 rounding.
LR, MOMENTUM, ETA = 0.5, 0.9, 0.2
STEPS = 4


def _reference_trajectory(params, grads_per_step, excluded, weight_decay, clip=False,
                          clipped=None):
    """The update of VICREG_REFERENCE.md in float64, written from the formula, not from LARS.

    `clip`: LARC's clipping, q = min(q / lr, 1); `clipped`, a list, collects whether each
    adapted update was clipped.
    """
    params = {name: value.astype(np.float64) for name, value in params.items()}
    velocity = {name: np.zeros_like(value) for name, value in params.items()}
    for grads in grads_per_step:
        for name, p in params.items():
            dp = grads[name].astype(np.float64)
            if name not in excluded:
                dp = dp + weight_decay * p
                p_norm, dp_norm = np.linalg.norm(p), np.linalg.norm(dp)
                q = ETA * p_norm / dp_norm if p_norm > 0 and dp_norm > 0 else 1.0
                if clip:
                    if clipped is not None:
                        clipped.append(q >= LR)
                    q = min(q / LR, 1.0)
                dp = q * dp
            velocity[name] = MOMENTUM * velocity[name] + dp
            params[name] = p - LR * velocity[name]
    return params, velocity


def _problem():
    rng = np.random.default_rng(0)
    params = {
        "kernel": rng.normal(size=(3, 4)).astype("float32"),
        "bias": rng.normal(size=(4,)).astype("float32"),
        "zero_kernel": np.zeros((2, 3), "float32"),  # ||p|| = 0 at the first step
        "still_kernel": np.zeros((2, 2), "float32"),  # ||p|| = ||dp|| = 0 at every step
    }
    grads_per_step = []
    for step in range(STEPS):
        grads = {name: rng.normal(size=value.shape).astype("float32")
                 for name, value in params.items()}
        grads["still_kernel"] = np.zeros((2, 2), "float32")
        if step == 2:
            # A zero gradient: ||dp|| = 0 where weight_decay = 0, dp = wd * p otherwise.
            grads["kernel"] = np.zeros((3, 4), "float32")
        grads_per_step.append(grads)
    return params, grads_per_step


@pytest.mark.backend_neutral
@pytest.mark.parametrize("weight_decay", [0.05, 0.0])
@pytest.mark.parametrize(
    "patterns, excluded",
    [(None, {"bias"}), (["zero", "^still"], {"zero_kernel", "still_kernel"}), ([], set())],
)
def test_lars_matches_numpy_reference_for_several_steps(weight_decay, patterns, excluded):
    params, grads_per_step = _problem()
    variables = [keras.Variable(value, name=name) for name, value in params.items()]
    optimizer = LARS(LR, momentum=MOMENTUM, weight_decay=weight_decay, eta=ETA,
                     exclude_from_adaptation=patterns)
    for grads in grads_per_step:
        optimizer.apply([grads[v.name] for v in variables], variables)

    expected, velocity = _reference_trajectory(params, grads_per_step, excluded, weight_decay)
    for variable, momentum in zip(variables, optimizer.momentums, strict=True):
        actual = keras.ops.convert_to_numpy(variable)
        assert np.all(np.isfinite(actual)), variable.name
        np.testing.assert_allclose(actual, expected[variable.name], rtol=1e-5, atol=1e-7,
                                   err_msg=variable.name)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(momentum), velocity[variable.name],
                                   rtol=1e-5, atol=1e-7, err_msg=variable.name)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == STEPS


@pytest.mark.backend_neutral
def test_clipped_trust_ratio_matches_numpy_reference():
    params, grads_per_step = _problem()
    params["kernel"] = params["kernel"] * 10.0  # q near 2 > LR: clipped; the others are not
    variables = [keras.Variable(value, name=name) for name, value in params.items()]
    optimizer = LARS(LR, momentum=MOMENTUM, weight_decay=0.05, eta=ETA, clip_trust_ratio=True)
    for grads in grads_per_step:
        optimizer.apply([grads[v.name] for v in variables], variables)

    clipped = []
    expected, _ = _reference_trajectory(params, grads_per_step, {"bias"}, 0.05, clip=True,
                                        clipped=clipped)
    assert any(clipped) and not all(clipped)  # both branches of the clipping are exercised
    unclipped, _ = _reference_trajectory(params, grads_per_step, {"bias"}, 0.05)
    assert not np.allclose(expected["kernel"], unclipped["kernel"])
    for variable in variables:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected[variable.name],
                                   rtol=1e-5, atol=1e-7, err_msg=variable.name)


@pytest.mark.backend_neutral
def test_clipped_trust_ratio_at_zero_learning_rate_leaves_the_weights():
    variable = keras.Variable(np.array([[3.0, 4.0]], "float32"), name="w")
    optimizer = LARS(0.0, weight_decay=0.0, eta=0.1, clip_trust_ratio=True)
    optimizer.apply([np.array([[1.0, 0.0]], "float32")], [variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), [[3.0, 4.0]])
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(optimizer.momentums[0])))


@pytest.mark.backend_neutral
def test_one_step_by_hand():
    variable = keras.Variable(np.array([[3.0, 4.0]], "float32"), name="w")  # ||p|| = 5
    optimizer = LARS(1.0, momentum=0.9, weight_decay=0.0, eta=0.1)
    optimizer.apply([np.array([[0.0, 2.0]], "float32")], [variable])  # ||dp|| = 2, q = 0.25
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), [[3.0, 3.5]], rtol=1e-6)


@pytest.mark.backend_neutral
def test_every_1d_variable_is_excluded_by_default():
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, name="head"),
    ], name="net")
    optimizer = LARS(0.1)
    excluded = {v.path for v in model.trainable_variables if optimizer.is_excluded(v)}
    assert excluded == {"net/conv/bias", "net/bn/gamma", "net/bn/beta", "net/head/bias"}


@pytest.mark.backend_neutral
def test_patterns_replace_the_1d_default():
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, name="dense"),
        keras.layers.BatchNormalization(name="bn"),
    ], name="net")
    optimizer = LARS(0.1, exclude_from_adaptation=["bias", "/bn/"])
    excluded = {v.path for v in model.trainable_variables if optimizer.is_excluded(v)}
    assert excluded == {"net/dense/bias", "net/bn/gamma", "net/bn/beta"}
    assert not any(LARS(0.1, exclude_from_adaptation=[]).is_excluded(v)
                   for v in model.trainable_variables)


@pytest.mark.backend_neutral
def test_get_config_round_trip_with_schedule():
    schedule = WarmupCosine(0.3, total_steps=100, warmup_steps=10, batch_size=512)
    optimizer = LARS(schedule, momentum=0.8, weight_decay=1e-4, eta=2e-3,
                     exclude_from_adaptation=["bias"], clip_trust_ratio=True, clipnorm=1.0)
    config = optimizer.get_config()
    assert config["weight_decay"] == 1e-4 and config["clip_trust_ratio"] is True
    assert optimizer.weight_decay is None  # the base class's decoupled decay is never used

    restored = LARS.from_config(optimizer.get_config())  # from_config edits its argument
    assert restored.get_config() == config
    deserialized = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(deserialized, LARS)
    assert deserialized.get_config() == config


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"momentum": 1.5}, "momentum=1.5"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"eta": 0.0}, "eta=0.0"),
        ({"clip_trust_ratio": 1}, "clip_trust_ratio=1"),
        ({"exclude_from_adaptation": "bias"}, "exclude_from_adaptation='bias'"),
        ({"exclude_from_adaptation": ["("]}, "exclude_from_adaptation=['(']"),
    ],
)
def test_invalid_arguments_raise(kwargs, received):
    with pytest.raises(ValueError, match=r"Received: " + received.replace("(", r"\(")
                       .replace("[", r"\[").replace("]", r"\]")):
        LARS(0.1, **kwargs)


def _dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(1)])


def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


@pytest.mark.backend_neutral
@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_with_lars_and_schedule_reduces_the_loss(jit_compile):
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("torch.compile is slow on CPU; the eager torch path is tested")
    model = _dense_model()
    schedule = WarmupCosine(0.1, total_steps=40, warmup_steps=4, batch_size=256)
    model.compile(optimizer=LARS(schedule, eta=0.1), loss="mse", jit_compile=jit_compile)
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=10, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 40


def _apply(optimizer, grads, variables):
    """`optimizer.apply`, except on JAX, where `LossScaleOptimizer` is stateless-only: jitted."""
    if keras.backend.backend() != "jax":
        optimizer.apply(grads, variables)
        return
    import jax

    optimizer.build(variables)
    new_values, new_optimizer_values = jax.jit(optimizer.stateless_apply)(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables]
    )
    pairs = zip(variables + optimizer.variables, new_values + new_optimizer_values, strict=True)
    for variable, value in pairs:
        variable.assign(value)


@pytest.fixture
def mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.backend_neutral
def test_loss_scale_optimizer_unscales_before_lars_and_skips_non_finite_steps(mixed_float16):
    params, grads_per_step = _problem()
    grads = [grads_per_step[0][name] for name in params]
    plain_variables = [keras.Variable(value, name=name) for name, value in params.items()]
    scaled_variables = [keras.Variable(value, name=name) for name, value in params.items()]
    plain = LARS(LR, eta=ETA)
    scaled = keras.optimizers.LossScaleOptimizer(LARS(LR, eta=ETA), initial_scale=1024.0)
    plain.apply(grads, plain_variables)
    _apply(scaled, [g * 1024.0 for g in grads], scaled_variables)
    for a, b in zip(plain_variables, scaled_variables, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-6, atol=1e-7)

    before = [keras.ops.convert_to_numpy(v) for v in scaled_variables]
    _apply(scaled, [np.full_like(g, np.inf) for g in grads], scaled_variables)
    for value, variable in zip(before, scaled_variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    assert int(keras.ops.convert_to_numpy(scaled.iterations)) == 1


@pytest.mark.backend_neutral
def test_fit_in_mixed_float16_wraps_lars_in_loss_scaling(mixed_float16):
    model = _dense_model()
    model.compile(optimizer=LARS(0.5, eta=0.02), loss="mse")
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, LARS)
    assert np.all(np.isfinite(history.history["loss"]))


# The exclusion rule (EXCLUDE_FROM_DECAY) and AdamW.


def _tiny_vit():
    import keras_hub

    return keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                        num_heads=2, hidden_dim=16, mlp_dim=32)


def _excluded_paths(optimizer, variables):
    return {v.path for v in variables if optimizer.is_excluded(v)}


@pytest.mark.backend_neutral
def test_default_exclusion_on_a_vit_is_biases_norms_class_token_and_position_embeddings():
    variables = _tiny_vit().trainable_variables
    # Written out by hand from keras-hub's layer names, not from the patterns.
    expected = {"vit_patching_and_embedding/class_token",
                "vit_patching_and_embedding/patch_embedding/bias",
                "vit_patching_and_embedding/position_embedding/embeddings",
                "vit_encoder/ln/gamma", "vit_encoder/ln/beta"}
    for block in ("vit_encoder/transformer_block_1", "vit_encoder/transformer_block_2"):
        expected |= {f"{block}/{norm}/{weight}" for norm in ("ln_1", "ln_2")
                     for weight in ("gamma", "beta")}
        expected |= {f"{block}/mha/{part}/bias"
                     for part in ("query", "key", "value", "attention_output")}
        expected |= {f"{block}/mlp/dense_1/bias", f"{block}/mlp/dense_2/bias"}
    lars = LARS(0.1, exclude_from_adaptation=EXCLUDE_FROM_DECAY)
    adamw = AdamW(0.1, exclude_from_decay=EXCLUDE_FROM_DECAY)
    assert _excluded_paths(lars, variables) == expected
    assert _excluded_paths(adamw, variables) == expected
    # Every other variable is a kernel: decayed and, with LARS, trust-scaled.
    assert {v.path.rsplit("/", 1)[1] for v in variables if v.path not in expected} == {"kernel"}
    # The release's 1-D rule would decay and trust-scale the class token (1, 1, d), the position
    # embeddings (N, d) and the attention's query, key and value biases (heads, head_dim).
    one_d = _excluded_paths(LARS(0.1), variables)
    assert one_d < expected
    assert {path.rsplit("/", 2)[-2] for path in expected - one_d} == {
        "vit_patching_and_embedding", "position_embedding", "query", "key", "value"}


@pytest.mark.backend_neutral
@pytest.mark.parametrize("model", ["resnet18", "vicreg_convnet"])
def test_default_exclusion_on_a_resnet_and_the_tiny_model_is_the_releases_1d_rule(model):
    from keras_vicreg.models import backbones
    from keras_vicreg.training import recipe

    if model == "resnet18":
        variables = backbones.resnet(18, stem="small", input_shape=(16, 16, 3),
                                     filters=(4, 8, 8, 8)).trainable_variables
    else:  # configs/tiny.py's model: the convnet and the expander (Dense, BatchNorm)
        config = _load_config("tiny")
        variables = recipe.make_model(config, 3).trainable_variables
        assert any("expander" in v.path for v in variables)
    by_name = _excluded_paths(LARS(0.1, exclude_from_adaptation=EXCLUDE_FROM_DECAY), variables)
    assert by_name == _excluded_paths(LARS(0.1), variables)  # the 1-D rule
    assert by_name == {v.path for v in variables
                       if v.path.rsplit("/", 1)[1] in ("bias", "gamma", "beta")}
    assert {v.path.rsplit("/", 1)[1] for v in variables if v.path in by_name} >= {"gamma", "beta"}
    assert len(by_name) < len(variables)


def _load_config(name):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _vit_like_variables():
    """{path: variable} of a kernel, a bias, a class token and position embeddings, by path."""
    rng = np.random.default_rng(3)
    embedding = keras.layers.Embedding(5, 4, name="position_embedding")
    embedding.build((None,))
    embedding.embeddings.assign(rng.normal(size=(5, 4)).astype("float32"))
    variables = [
        keras.Variable(rng.normal(size=(4, 3)).astype("float32"), name="kernel"),
        keras.Variable(rng.normal(size=(3,)).astype("float32"), name="bias"),
        keras.Variable(rng.normal(size=(1, 1, 4)).astype("float32"), name="class_token"),
        embedding.embeddings,
    ]
    assert [v.path for v in variables][-1] == "position_embedding/embeddings"
    return variables


def _adamw_reference(params, grads_per_step, excluded, lr, weight_decay, beta_1, beta_2, eps):
    """AdamW (Loshchilov and Hutter; torch.optim.AdamW's update) in float64, from the formula."""
    params = {name: value.astype(np.float64) for name, value in params.items()}
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        for name in params:
            g = grads[name].astype(np.float64)
            if name not in excluded:
                params[name] = params[name] - lr * weight_decay * params[name]
            m[name] = beta_1 * m[name] + (1 - beta_1) * g
            v[name] = beta_2 * v[name] + (1 - beta_2) * g * g
            m_hat, v_hat = m[name] / (1 - beta_1**t), v[name] / (1 - beta_2**t)
            params[name] = params[name] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


@pytest.mark.backend_neutral
def test_adamw_skips_the_decay_of_excluded_variables_as_a_numpy_reference():
    variables = _vit_like_variables()
    params = {v.path: keras.ops.convert_to_numpy(v) for v in variables}
    rng = np.random.default_rng(4)
    grads_per_step = [{path: rng.normal(size=value.shape).astype("float32")
                       for path, value in params.items()} for _ in range(3)]
    hyper = dict(lr=0.05, weight_decay=0.5, beta_1=0.9, beta_2=0.99, eps=1e-8)
    optimizer = AdamW(hyper["lr"], weight_decay=hyper["weight_decay"], beta_1=hyper["beta_1"],
                      beta_2=hyper["beta_2"], epsilon=hyper["eps"],
                      exclude_from_decay=EXCLUDE_FROM_DECAY)
    for grads in grads_per_step:
        optimizer.apply([grads[v.path] for v in variables], variables)
    excluded = {"bias", "class_token", "position_embedding/embeddings"}
    assert _excluded_paths(optimizer, variables) == excluded
    expected = _adamw_reference(params, grads_per_step, excluded, **hyper)
    decayed = _adamw_reference(params, grads_per_step, set(), **hyper)
    for variable in variables:
        actual = keras.ops.convert_to_numpy(variable)
        np.testing.assert_allclose(actual, expected[variable.path], rtol=1e-5, atol=1e-6,
                                   err_msg=variable.path)
        if variable.path in excluded:  # decaying it would have moved it measurably
            assert np.max(np.abs(actual - decayed[variable.path])) > 1e-3, variable.path


@pytest.mark.backend_neutral
def test_lars_skips_decay_and_trust_ratio_of_excluded_variables_as_a_numpy_reference():
    variables = _vit_like_variables()
    params = {v.path: keras.ops.convert_to_numpy(v) for v in variables}
    rng = np.random.default_rng(5)
    grads_per_step = [{path: rng.normal(size=value.shape).astype("float32")
                       for path, value in params.items()} for _ in range(STEPS)]
    optimizer = LARS(LR, momentum=MOMENTUM, weight_decay=0.05, eta=ETA,
                     exclude_from_adaptation=EXCLUDE_FROM_DECAY)
    for grads in grads_per_step:
        optimizer.apply([grads[v.path] for v in variables], variables)
    excluded = {"bias", "class_token", "position_embedding/embeddings"}
    expected, _ = _reference_trajectory(params, grads_per_step, excluded, 0.05)
    adapted, _ = _reference_trajectory(params, grads_per_step, set(), 0.05)
    for variable in variables:
        actual = keras.ops.convert_to_numpy(variable)
        np.testing.assert_allclose(actual, expected[variable.path], rtol=1e-5, atol=1e-7,
                                   err_msg=variable.path)
        if variable.path in excluded:  # the trust ratio would have moved it measurably
            assert np.max(np.abs(actual - adapted[variable.path])) > 1e-2, variable.path


@pytest.mark.backend_neutral
def test_adamw_round_trips_its_patterns_and_rejects_bad_ones():
    schedule = WarmupCosine(0.001, total_steps=100, warmup_steps=10, batch_size=512)
    optimizer = AdamW(schedule, weight_decay=0.05, exclude_from_decay=["bias$"])
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, AdamW) and restored.exclude_from_decay == ["bias$"]
    assert restored.get_config() == optimizer.get_config()
    assert AdamW(0.1).is_excluded(keras.Variable(np.zeros(3, "float32"), name="bias")) is False
    with pytest.raises(ValueError, match=r"Received: exclude_from_decay=\['\('\]"):
        AdamW(0.1, exclude_from_decay=["("])


@pytest.mark.backend_neutral
@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_make_optimizer_builds_the_configs_optimizer_and_schedule(name):
    from keras_vicreg.config import pretraining
    from keras_vicreg.training import recipe

    config = _load_config("tiny")
    config.optimizer.name = name
    config.optimizer.base_learning_rate = 0.002 if name == "adamw" else "auto"
    config.optimizer.exclude_from_decay = ("bias$",)
    pretraining.validate(config)
    optimizer = recipe.make_optimizer(config)
    assert isinstance(optimizer, {"lars": LARS, "adamw": AdamW}[name])
    schedule = optimizer._learning_rate
    # tiny: batch 32, so "auto" is the table's 0.8 for LARS
    assert schedule.base_learning_rate == (0.002 if name == "adamw" else 0.8)
    assert schedule.batch_size == 32 and schedule.total_steps == 24
    variables = [keras.Variable(np.ones((2,), "float32"), name="bias"),
                 keras.Variable(np.ones((2,), "float32"), name="gamma")]
    assert _excluded_paths(optimizer, variables) == {"bias"}
    if name == "adamw":
        assert (optimizer.weight_decay, optimizer.beta_1, optimizer.epsilon) == (1e-4, 0.9, 1e-8)


@pytest.mark.slow
def test_the_pretraining_binary_trains_with_adamw(tmp_path):
    import os
    import pathlib
    import re
    import subprocess
    import sys

    import h5py

    root = pathlib.Path(__file__).resolve().parents[1]
    workdir = tmp_path / "adamw"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "trainers.pretrain", "--config=configs/tiny.py",
         f"--workdir={workdir}", "--config.optimizer.name=adamw",
         "--config.optimizer.base_learning_rate=0.001"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^  name: adamw$", result.stdout, re.M), result.stdout[-3000:]
    losses = [float(loss) for loss in re.findall(r"^step \d+/24 .*  loss (\S+)", result.stdout,
                                                 re.M)]
    assert len(losses) == 24 and np.all(np.isfinite(losses))

    def weights(step):
        path = workdir / "checkpoints" / f"ckpt-{step:09d}.weights.h5"
        arrays = {}
        with h5py.File(path, "r") as file:
            file.visititems(lambda name, item: arrays.update({name: item[()]})
                            if isinstance(item, h5py.Dataset) else None)
        return arrays

    first, last = weights(5), weights(24)
    moved = [name for name in first if not name.startswith("optimizer")
             and not np.array_equal(first[name], last[name])]
    assert len(moved) > 10  # the backbone and the expander trained on


@pytest.mark.backend_neutral
@pytest.mark.parametrize("jit_compile", [False, True])
def test_adamw_in_fit_decays_only_the_kernels(jit_compile):
    # With a zero loss the gradients are 0 and Adam's step is 0: only the decay moves a weight.
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("torch.compile is slow on CPU; the eager torch path is tested")
    model = _dense_model()
    model.layers[0].bias.assign(np.ones(8, "float32"))
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    optimizer = AdamW(0.1, weight_decay=0.5, exclude_from_decay=EXCLUDE_FROM_DECAY)
    model.compile(optimizer=optimizer, loss=lambda y, p: 0.0 * keras.ops.sum(p),
                  jit_compile=jit_compile)
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 4 steps
    for variable, value in zip(model.trainable_variables, before, strict=True):
        factor = 1.0 if variable.path.endswith("bias") else (1.0 - 0.1 * 0.5) ** 4
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), value * factor,
                                   rtol=1e-5, err_msg=variable.path)
