"""keras_vicreg.training.distribute: VICReg on the global batch across replicas.

The multi-device checks run in a subprocess with two logical CPU devices (TensorFlow:
`tf.config.set_logical_device_configuration`; JAX: `--xla_force_host_platform_device_count=2`), set
up before anything initialises the runtime, so the rest of the suite keeps its single device. Each
subprocess compares, on the same global batch, a single-device model with a two-replica copy of it.
Run a check by hand with `KERAS_BACKEND=tensorflow python tests/test_distribute.py tensorflow`.
"""

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vicreg.training import distribute
from keras_vicreg.training import multihost
from keras_vicreg import losses
from tests.local_processes import worst

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, STEPS, IMAGE = 16, 3, (8, 8, 3)
TOLERANCE = 1e-5  # largest |multi - single| / max(1, max|single|) allowed
on_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow only"
)


# --------------------------------------------------------------------------------------------------
# The block-row covariance against NumPy float64.


def reference_covariance(z):
    """c(Z) of VICREG_REFERENCE.md in float64: off-diagonal covariances squared, summed, over d."""
    z = z.astype(np.float64)
    cov = np.cov(z, rowvar=False, ddof=1)
    return (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / z.shape[1]


def reference_dense_share(z, start, stop):
    """The off-diagonal squares of rows start:stop of the covariance matrix, over d, in float64."""
    z = z.astype(np.float64)
    cov = np.cov(z, rowvar=False, ddof=1)
    rows = cov[start:stop].copy()
    rows[np.arange(stop - start), np.arange(start, stop)] = 0.0
    return np.sum(rows**2) / z.shape[1]


def embeddings(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * rng.uniform(0.2, 1.5, size=d)).astype("float32")


@pytest.mark.backend_neutral
@pytest.mark.parametrize("method", ["gram", "dense"])
@pytest.mark.parametrize("n, d, blocks", [(16, 8, 2), (12, 20, 4), (15, 9, 4), (10, 6, 1)])
def test_block_shares_sum_to_the_float64_covariance(n, d, blocks, method):
    z = embeddings(n, d)
    shares = [
        float(keras.ops.convert_to_numpy(losses.covariance_loss_block(z, b, blocks, method)))
        for b in range(blocks)
    ]
    expected = reference_covariance(z)
    assert abs(sum(shares) - expected) <= 1e-5 * expected
    assert abs(float(keras.ops.convert_to_numpy(losses.covariance_loss(z, method))) - expected) <= (
        1e-5 * expected
    )


@pytest.mark.backend_neutral
@pytest.mark.parametrize("d, blocks", [(8, 2), (9, 4)])
def test_dense_block_is_its_own_rows_of_the_covariance(d, blocks):
    z = embeddings(12, d, seed=1)
    for block in range(blocks):
        start, stop = block * d // blocks, (block + 1) * d // blocks
        share = keras.ops.convert_to_numpy(losses.covariance_loss_block(z, block, blocks, "dense"))
        expected = reference_dense_share(z, start, stop)
        assert abs(float(share) - expected) <= 1e-5 * max(expected, 1e-3)


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "block, blocks, message",
    [(0, 0, "num_blocks"), (0, 2.0, "num_blocks"), (2, 2, "block"), (-1, 2, "block")],
)
def test_block_arguments_are_checked(block, blocks, message):
    with pytest.raises(ValueError, match=message):
        losses.covariance_loss_block(embeddings(4, 3), block, blocks)


# --------------------------------------------------------------------------------------------------
# Strategies by name, and what happens on one device.


@pytest.mark.backend_neutral
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="horovod"), "must be one of"),
        (dict(name="mirrored", tpu="local"), "only goes with strategy='tpu'"),
        (dict(name="tpu", devices=["/cpu:0"]), "only goes with strategy='mirrored'"),
    ],
)
def test_bad_strategy_options_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distribute.get_strategy(**kwargs)


@pytest.mark.backend_neutral
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch backend's refusal")
@pytest.mark.parametrize("name", ["mirrored", "multi_worker", "tpu"])
def test_torch_backend_refuses_distributed_strategies(name):
    with pytest.raises(ValueError, match="torchrun .* strategy='data_parallel'"):
        distribute.get_strategy(name)
    assert distribute.get_strategy("default") is None


@pytest.mark.backend_neutral
def test_data_parallel_is_jax_and_torchs_multi_process_strategy(monkeypatch):
    for name in ("WORLD_SIZE", "KERAS_DISTRIBUTION_JOB_ADDRESSES",
                 "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(ValueError, match="'multi_worker'"):
            distribute.get_strategy("data_parallel")
        return
    strategy = distribute.get_strategy("data_parallel")  # one process: no job to join
    expected = len(keras.distribution.list_devices()) if keras.backend.backend() == "jax" else 1
    assert distribute.num_replicas(strategy) == expected
    assert multihost.process_count() == 1 and multihost.input_context() is None


@pytest.mark.backend_neutral
def test_gather_and_loss_are_the_single_device_ones_outside_replicas():
    z_a, z_b = embeddings(8, 4), embeddings(8, 4, seed=2)
    assert np.array_equal(keras.ops.convert_to_numpy(distribute.cross_replica_gather(z_a)), z_a)
    terms = distribute.global_batch_vicreg_loss(z_a, z_b, cov_coeff=2.0)
    expected = losses.vicreg_loss(z_a, z_b, cov_coeff=2.0)
    for name, value in expected.items():
        assert float(keras.ops.convert_to_numpy(terms[name])) == float(
            keras.ops.convert_to_numpy(value)
        )
    assert distribute.num_replicas() == 1


@on_tensorflow
def test_default_strategy_is_the_tensorflow_default():
    import tensorflow as tf

    strategy = distribute.get_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    distribute.check_global_batch_size(3, strategy)


@on_tensorflow
def test_global_batch_must_split_evenly_over_replicas():
    class FourReplicas:
        num_replicas_in_sync = 4

    distribute.check_global_batch_size(32, FourReplicas())
    with pytest.raises(ValueError, match="multiple of the number of replicas"):
        distribute.check_global_batch_size(30, FourReplicas())


@on_tensorflow
def test_sync_batch_norm_converts_nested_layers_and_keeps_weights(tmp_path):
    inner = keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()])
    inputs = keras.Input((3,))
    outputs = keras.layers.BatchNormalization()(inner(inputs))
    model = keras.Model(inputs, outputs)
    weights = model.get_weights()
    assert distribute.sync_batch_norm(model) == 2
    batch_norms = [layer for layer in model._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.synchronized for layer in batch_norms)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert all(layer.synchronized for layer in reloaded._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.backend_neutral
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's refusal")
def test_sync_batch_norm_is_refused_on_jax():
    with pytest.raises(ValueError, match="TensorFlow"):
        distribute.sync_batch_norm(keras.Sequential([keras.layers.Dense(2)]))


# --------------------------------------------------------------------------------------------------
# Two devices against one, in subprocesses.


def run_check(backend):
    """Runs this file as a script for `backend` on two logical CPU devices; returns its report."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    result = subprocess.run(
        [sys.executable, __file__, backend],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tensorflow_report():
    return run_check("tensorflow")


@pytest.fixture(scope="module")
def jax_report():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed")
    return run_check("jax")


@on_tensorflow
def test_gather_gives_each_replica_its_rows_of_the_summed_gradient(tensorflow_report):
    report = tensorflow_report["gather"]
    assert report["replicas"] == 2
    for case in ("even", "uneven"):
        assert report[case]["forward"] == 0.0, case
        assert report[case]["gradient"] <= 1e-6, case
    assert report["uneven_static"] == {"refused": True}


@on_tensorflow
@pytest.mark.parametrize("method", ["gram", "dense"])
def test_mirrored_terms_and_gradients_equal_single_device(tensorflow_report, method):
    report = tensorflow_report[method]
    assert report["replicas"] == 2
    assert set(report["terms"]) == {"loss", "invariance", "variance", "covariance", "std"}
    for name, error in report["terms"].items():
        assert error <= TOLERANCE, (name, error)
    assert report["replicas_agree"] == 0.0
    assert report["gradients"] <= TOLERANCE


@on_tensorflow
@pytest.mark.parametrize("method", ["gram", "dense"])
def test_no_mirrored_replica_computes_the_whole_covariance(tensorflow_report, method):
    # Two replicas, two views: four blocks of rows of a two-block split, and no whole term.
    assert tensorflow_report[method]["covariance_calls"] == ["block of 2"] * 4


@on_tensorflow
def test_mirrored_fit_steps_give_the_single_device_weights(tensorflow_report):
    report = tensorflow_report["fit"]
    assert report["moved"] > 1e-3  # the weights did change: the comparison means something
    assert report["weights"] <= TOLERANCE
    assert report["loss"] <= TOLERANCE


@on_tensorflow
def test_vicreg_synchronises_every_batch_norm_by_default_under_mirrored(tensorflow_report):
    default, unsynchronised = (tensorflow_report[key] for key in ("bn_default", "bn_off"))
    assert default["moved"] > 1e-3
    assert default["weights"] <= TOLERANCE and default["loss"] <= TOLERANCE
    assert default["synchronized"] == [True] * 2  # the backbone's and the expander's
    assert unsynchronised["synchronized"] == [False] * 2
    assert unsynchronised["weights"] > 1e-3  # per-replica statistics: another model


@on_tensorflow
def test_mirrored_fit_refuses_steps_per_execution_above_one(tensorflow_report):
    assert "steps_per_execution=1" in tensorflow_report["steps_per_execution_3"]
    assert "#19246" in tensorflow_report["steps_per_execution_3"]


def test_jax_data_parallel_terms_gradients_and_fit_equal_single_device(jax_report):
    assert jax_report["devices"] == 2 and jax_report["batch_shards"] == 2
    assert jax_report["all_reduce"]  # XLA did split the step over the two devices
    for name, error in jax_report["terms"].items():
        assert error <= TOLERANCE, (name, error)
    assert jax_report["gradients"] <= TOLERANCE
    assert jax_report["fit"]["moved"] > 1e-3
    assert jax_report["fit"]["weights"] <= TOLERANCE


# --------------------------------------------------------------------------------------------------
# The subprocess side.


def _error(actual, expected):
    """Largest absolute difference, relative to the expected values' scale where that exceeds 1."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1.0))




def _batches():
    rng = np.random.default_rng(0)
    shape = (STEPS, GLOBAL_BATCH, *IMAGE)
    view_a = rng.normal(size=shape).astype("float32")
    view_b = (view_a + 0.5 * rng.normal(size=shape)).astype("float32")
    return view_a, view_b


def _model(sync, covariance="auto"):
    """A 2-layer convnet with BatchNorm and a "16-16" expander: small, but every piece is there."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input(IMAGE)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    if sync:  # None: the model's default
        distribute.sync_batch_norm(backbone)
    from keras_vicreg.models.vicreg import VICReg

    return VICReg(backbone, "16-16", sync_batch_norm=sync, covariance=covariance)


def _fit_and_compare(make_model, fit_scope, data, **compile_kwargs):
    """Fits a single-device model and a distributed copy for STEPS steps; compares the weights."""
    single = make_model()
    initial = single.get_weights()
    with fit_scope():
        multi = make_model()
        multi.set_weights(initial)
    results = []
    synchronized = [layer.synchronized for layer in multi._flatten_layers()
                    if isinstance(layer, keras.layers.BatchNormalization)]
    for model, scope in ((single, None), (multi, fit_scope)):
        with scope() if scope else contextlib.nullcontext():
            model.compile(optimizer=keras.optimizers.SGD(0.05), **compile_kwargs)
            history = model.fit(data(), batch_size=GLOBAL_BATCH, shuffle=False, verbose=0)
        results.append((model.get_weights(), history.history["loss"][-1]))
    (single_weights, single_loss), (multi_weights, multi_loss) = results
    return {
        "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(single_weights, initial)),
        "weights": worst(multi_weights, single_weights),
        "loss": _error(multi_loss, single_loss),
        "synchronized": synchronized,
    }


def _tensorflow_check():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_vicreg.models.steps import tensorflow_steps

    strategy = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    report = {}
    view_a, view_b = _batches()

    def dataset():
        pairs = tf.data.Dataset.from_tensor_slices((view_a.reshape(-1, *IMAGE),
                                                     view_b.reshape(-1, *IMAGE)))
        return pairs.batch(GLOBAL_BATCH, drop_remainder=True)

    def terms_and_gradients(model, data):
        with tf.GradientTape() as tape:
            terms = model.compute_terms(data, training=True)
            loss = tensorflow_steps.loss_for_gradients(terms)
        return terms, tape.gradient(loss, model.trainable_variables)

    def distributed_terms_and_gradients(model):
        return tf.function(lambda data: strategy.run(terms_and_gradients, args=(model, data)))

    for method in ("gram", "dense"):
        single = _model(sync=True, covariance=method)
        with strategy.scope():
            multi = _model(sync=True, covariance=method)
            multi.set_weights(single.get_weights())
        batch = (tf.constant(view_a[0]), tf.constant(view_b[0]))
        terms, gradients = terms_and_gradients(single, batch)
        step = distributed_terms_and_gradients(multi)
        with _recording_covariance_calls() as calls:
            multi_terms, multi_gradients = step(next(iter(
                strategy.experimental_distribute_dataset(dataset().take(1))
            )))
        per_replica = {name: strategy.experimental_local_results(value)
                       for name, value in multi_terms.items()}
        summed = [strategy.reduce("SUM", g, axis=None) for g in multi_gradients]
        report[method] = {
            "replicas": strategy.num_replicas_in_sync,
            "terms": {name: _error(values[0], terms[name])
                      for name, values in per_replica.items()},
            "replicas_agree": max(_error(values[1], values[0])
                                  for values in per_replica.values()),
            "gradients": worst(summed, gradients),
            "covariance_calls": calls,
        }
    report["fit"] = _fit_and_compare(lambda: _model(sync=True), strategy.scope, dataset)
    for key, sync in (("bn_default", None), ("bn_off", False)):
        report[key] = _fit_and_compare(
            lambda sync=sync: _model(sync=sync), strategy.scope, lambda: dataset().take(1)
        )
    with strategy.scope():
        model = _model(sync=True)
        model.compile(optimizer=keras.optimizers.SGD(0.05), steps_per_execution=3)
    try:
        model.fit(dataset(), verbose=0)
        report["steps_per_execution_3"] = "trained"
    except ValueError as error:
        report["steps_per_execution_3"] = str(error)
    # Last: its uneven cases abort collectives on purpose, which can leave later collectives of
    # this process mismatched ("Shape mismatch in the collective instance ...").
    report["gather"] = _tensorflow_gather_check(tf, strategy)
    return report


@contextlib.contextmanager
def _recording_covariance_calls():
    """Records, while tracing, which covariance function each replica calls: the whole term or a
    block of rows (and of how many blocks)."""
    whole, block = losses.covariance_loss, losses.covariance_loss_block
    calls = []

    def record_whole(z, method="auto"):
        calls.append("whole")
        return whole(z, method)

    def record_block(z, index, num_blocks, method="auto"):
        calls.append(f"block of {num_blocks}")
        return block(z, index, num_blocks, method)

    losses.covariance_loss, losses.covariance_loss_block = record_whole, record_block
    try:
        yield calls
    finally:
        losses.covariance_loss, losses.covariance_loss_block = whole, block


def _tensorflow_gather_check(tf, strategy):
    """Replica r gathers its rows and takes the gradient of sum(w_r * gathered): its gradient must
    be its own rows of w_0 + w_1. "even": 3 rows each; "uneven": 2 and 3 rows of unknown static
    shape (a batch without drop_remainder); "uneven_static": 2 and 3 rows of known static shapes,
    which the gather refuses rather than mis-slice."""
    weights = tf.reshape(tf.range(12, dtype=tf.float32), (6, 2))
    report = {"replicas": strategy.num_replicas_in_sync}
    for case in ("even", "uneven", "uneven_static"):

        def replica(case=case):
            replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
            rows = 3 if case == "even" else 2 + replica_id
            first = 3 * replica_id if case == "even" else 2 * replica_id
            local = tf.reshape(tf.range(2 * rows, dtype=tf.float32), (rows, 2))
            local += 100.0 * tf.cast(replica_id, tf.float32)
            if case == "uneven":
                local = tf.compat.v1.placeholder_with_default(local, shape=(None, 2))
            with tf.GradientTape() as tape:
                tape.watch(local)
                gathered = distribute.cross_replica_gather(local)
                scale = tf.cast(replica_id + 1, tf.float32)
                value = tf.reduce_sum(scale * weights[: tf.shape(gathered)[0]] * gathered)
            expected_gradient = 3.0 * weights[first:first + rows]  # scales 1 + 2
            return gathered, tape.gradient(value, local), expected_gradient, local

        try:
            outputs = tf.function(lambda: strategy.run(replica))()
        except tf.errors.InvalidArgumentError as error:
            report[case] = {"refused": "not compatible with expected shape" in str(error)}
            continue
        gathered, gradient, expected, local = (
            strategy.experimental_local_results(output) for output in outputs
        )
        every_row = np.concatenate([t.numpy() for t in local])
        report[case] = {
            "forward": max(float(np.max(np.abs(g.numpy() - every_row))) for g in gathered),
            "gradient": max(_error(g, e) for g, e in zip(gradient, expected)),
        }
    return report


def _jax_check():
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec

    distribution = distribute.get_strategy("mirrored")
    view_a, view_b = _batches()

    def terms_and_gradients(model, data):
        """Terms and gradients as one jitted function, and whether XLA split it over devices."""
        trainable = [v.value for v in model.trainable_variables]
        others = [(v, v.value) for v in model.non_trainable_variables]

        def loss(values, data):
            mapping = list(zip(model.trainable_variables, values)) + others
            with keras.StatelessScope(state_mapping=mapping):
                terms = model.compute_terms(data, training=True)
            return terms["loss"], terms

        step = jax.jit(jax.value_and_grad(loss, has_aux=True))
        (_, terms), gradients = step(trainable, data)
        return terms, gradients, "all-reduce" in step.lower(trainable, data).compile().as_text()

    single = _model(sync=False)
    batch = (view_a[0], view_b[0])
    terms, gradients, _ = terms_and_gradients(single, batch)
    with distribution.scope():
        multi = _model(sync=False)
        multi.set_weights(single.get_weights())
    sharding = NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec("batch"))
    sharded = tuple(jax.device_put(view, sharding) for view in batch)
    multi_terms, multi_gradients, all_reduce = terms_and_gradients(multi, sharded)

    def data():
        return (view_a.reshape(-1, *IMAGE), view_b.reshape(-1, *IMAGE))

    return {
        "devices": len(jax.devices()),
        "batch_shards": len(sharded[0].addressable_shards),
        "all_reduce": all_reduce,
        "terms": {name: _error(multi_terms[name], terms[name]) for name in terms},
        "gradients": worst(multi_gradients, gradients),
        "fit": _fit_and_compare(lambda: _model(sync=False), distribution.scope, data),
    }


if __name__ == "__main__":
    check = {"tensorflow": _tensorflow_check, "jax": _jax_check}[sys.argv[1]]
    print(json.dumps(check()))
