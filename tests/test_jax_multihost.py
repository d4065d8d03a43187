"""keras_vicreg.training.multihost.jax_hosts: two JAX processes on localhost train one VICReg.

Two processes of one CPU device each join a job through the KERAS_DISTRIBUTION_* variables (a
free localhost port), each feeding its own shard of the same global batches to `VICReg.fit` under
`jax_hosts.data_parallel()`. Both must end with the same weights, and those must be the weights of
one process trained on the same global batches from the same initial weights (this test's process
trains that reference while the workers run): with BatchNormalization in the backbone, that holds
only if its statistics are those of the global batch. The workers then check a checkpoint written
by process 0 alone and `any_process`. One launch of the workers serves every test here; they are
killed after TIMEOUT_S seconds. Run a worker by hand: `python tests/test_jax_multihost.py OUT_DIR`
with the three variables set.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tests.local_processes import finish_successfully, free_port, worst

REPO = Path(__file__).resolve().parents[1]
PROCESSES, GLOBAL_BATCH, STEPS, IMAGE = 2, 16, 3, (8, 8, 3)
TIMEOUT_S = 240

pytestmark = [
    pytest.mark.backend_neutral,
    pytest.mark.skipif(
        keras.backend.backend() != "jax", reason="jax_hosts is the JAX multi-process engine"
    ),
]




def _launch_workers(out_dir):
    address = f"localhost:{free_port()}"
    processes = []
    for index in range(PROCESSES):
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("XLA_FLAGS", None)  # one CPU device per process
        env.update(
            KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
            KERAS_DISTRIBUTION_NUM_PROCESSES=str(PROCESSES),
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        )
        processes.append(subprocess.Popen(
            [sys.executable, __file__, str(out_dir)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    return processes






def _arrays(archive, prefix):
    count = sum(name.startswith(prefix) for name in archive)
    return [archive[f"{prefix}{i}"] for i in range(count)]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Runs the two workers once; returns their results and the single-process reference."""
    out_dir = tmp_path_factory.mktemp("jax_multihost")
    reference = _tiny_vicreg()
    initial = reference.get_weights()
    np.savez(out_dir / "initial.npz", *initial)
    workers = _launch_workers(out_dir)
    # Meanwhile, the single-process reference: the same steps on the same global batches.
    loss = reference.fit(_dataset(), verbose=0).history["loss"][-1]
    finish_successfully(workers, TIMEOUT_S)
    results = [dict(np.load(out_dir / f"process{index}.npz")) for index in range(PROCESSES)]
    return dict(
        results=results, initial=initial, expected=reference.get_weights(), loss=loss,
        out_dir=out_dir,
    )


def test_two_processes_train_as_one_on_the_global_batch(job):
    trained = [_arrays(result, "trained_") for result in job["results"]]
    assert all(int(result["process_count"]) == PROCESSES for result in job["results"])
    assert all(int(result["devices"]) == PROCESSES for result in job["results"])
    assert worst(job["initial"], job["expected"]) > 1e-3  # training moved the weights
    assert worst(trained[1], trained[0]) <= 1e-6
    assert worst(trained[0], job["expected"]) <= 1e-5
    for result in job["results"]:  # the logged loss is the global batch's, on every process
        assert abs(float(result["loss"]) - job["loss"]) <= 1e-5 * job["loss"]


def test_process_0_alone_saves_a_checkpoint_and_exports_the_backbone(job):
    exported = keras.saving.load_model(job["out_dir"] / "backbone.keras").get_weights()
    assert worst(exported, _arrays(job["results"][0], "backbone_")) == 0.0
    for result in job["results"]:
        loaded = _arrays(result, "loaded_")
        assert worst(_arrays(result, "initial_"), loaded) > 1e-3  # loading changed the weights
        assert worst(loaded, _arrays(job["results"][0], "trained_")) == 0.0
        assert bool(result["spans_processes"])  # still one global array over both processes


def test_any_process_is_true_everywhere_when_one_process_says_so(job):
    for result in job["results"]:
        assert bool(result["any_of_process_1"]) is True
        assert bool(result["any_of_none"]) is False


def _job(addresses="localhost:1234", num_processes="2", process_id="0"):
    values = dict(
        KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
        KERAS_DISTRIBUTION_NUM_PROCESSES=num_processes,
        KERAS_DISTRIBUTION_PROCESS_ID=process_id,
    )
    return {name: value for name, value in values.items() if value is not None}


def test_job_settings_reads_the_three_variables():
    from keras_vicreg.training.multihost import jax_hosts

    assert jax_hosts.job_settings({}) is None
    assert jax_hosts.job_settings(_job(process_id="1")) == ("localhost:1234", 2, 1)
    assert jax_hosts.job_settings(_job("10.0.0.1:1234, 10.0.0.2:1234")) == (
        "10.0.0.1:1234, 10.0.0.2:1234", 2, 0
    )


@pytest.mark.parametrize(
    "environ, named",
    [
        (_job(process_id=None), "KERAS_DISTRIBUTION_PROCESS_ID"),
        (_job(addresses=None, num_processes=None), "KERAS_DISTRIBUTION_JOB_ADDRESSES"),
        (_job(process_id="2"), "KERAS_DISTRIBUTION_PROCESS_ID"),
        (_job(process_id="-1"), "KERAS_DISTRIBUTION_PROCESS_ID"),
        (_job(num_processes="two"), "KERAS_DISTRIBUTION_NUM_PROCESSES"),
        (_job(num_processes="0", process_id="0"), "KERAS_DISTRIBUTION_NUM_PROCESSES"),
        (_job("a:1,b:2,c:3"), "KERAS_DISTRIBUTION_JOB_ADDRESSES"),
        (_job("localhost"), "KERAS_DISTRIBUTION_JOB_ADDRESSES"),
    ],
)
def test_job_settings_names_the_variable_to_fix(environ, named):
    from keras_vicreg.training.multihost import jax_hosts

    with pytest.raises(ValueError, match=named):
        jax_hosts.job_settings(environ)


def test_initialize_without_the_variables_is_one_process(monkeypatch):
    import jax

    from keras_vicreg.training.multihost import jax_hosts

    for name in _job():
        monkeypatch.delenv(name, raising=False)
    assert jax_hosts.initialize() == 1
    assert not jax.distributed.is_initialized()
    with pytest.raises(ValueError, match="heartbeat_timeout_s"):
        jax_hosts.initialize(heartbeat_timeout_s=0)


def test_the_data_parallel_strategy_is_every_process_devices_fed_per_process():
    from keras_vicreg.training import distribute

    strategy = distribute.get_strategy("data_parallel")
    assert isinstance(strategy, keras.distribution.DataParallel)
    assert strategy.auto_shard_dataset is False
    assert list(strategy.device_mesh.devices.ravel()) == keras.distribution.list_devices()


def _tiny_vicreg():
    """A 2-layer convnet with BatchNormalization and a "16-16" expander (BatchNorm too)."""
    from keras_vicreg.models.vicreg import VICReg

    keras.utils.set_random_seed(3)
    inputs = keras.Input(IMAGE)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model = VICReg(backbone, "16-16")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def _dataset(input_context=None):
    """STEPS global batches of pairs; with `input_context`, this process's shard of each."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    view_a = rng.normal(size=(STEPS * GLOBAL_BATCH, *IMAGE)).astype("float32")
    view_b = (view_a + 0.5 * rng.normal(size=view_a.shape)).astype("float32")
    pairs = tf.data.Dataset.from_tensor_slices((view_a, view_b))
    if input_context is None:
        return pairs.batch(GLOBAL_BATCH, drop_remainder=True)
    # As two_view_dataset shards: every num_input_pipelines-th pair, the per-process batch. Global
    # batch b is then the same set of pairs as the reference's batch b.
    pairs = pairs.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return pairs.batch(input_context.get_per_replica_batch_size(GLOBAL_BATCH), drop_remainder=True)


def _worker(out_dir):
    """One process: train under DataParallel, save and export on process 0, load, any_process."""
    from keras_vicreg.training import multihost
    from keras_vicreg.training.multihost import jax_hosts

    assert jax_hosts.initialize() == PROCESSES
    assert jax_hosts.initialize() == PROCESSES  # idempotent
    index = jax_hosts.process_index()
    distribution = jax_hosts.data_parallel()
    initial = np.load(out_dir / "initial.npz")
    initial = [initial[f"arr_{i}"] for i in range(len(initial.files))]
    with distribution.scope():
        model = _tiny_vicreg()
        model.set_weights(initial)
        loss = model.fit(_dataset(multihost.input_context()), verbose=0).history["loss"][-1]
        trained, backbone = model.get_weights(), model.backbone.get_weights()
        checkpoint = out_dir / "checkpoint.weights.h5"
        if index == 0:
            with jax_hosts.local_scope():
                model.save_weights(checkpoint)
                model.backbone.save(out_dir / "backbone.keras")
        jax_hosts.barrier()
        model.set_weights(initial)
        with jax_hosts.local_scope():
            model.load_weights(checkpoint)
        loaded = model.get_weights()
        spans_processes = not model.trainable_variables[0].value.is_fully_addressable
    results = {f"trained_{i}": w for i, w in enumerate(trained)}
    results.update({f"loaded_{i}": w for i, w in enumerate(loaded)})
    results.update({f"initial_{i}": w for i, w in enumerate(initial)})
    results.update({f"backbone_{i}": w for i, w in enumerate(backbone)})
    np.savez(
        out_dir / f"process{index}.npz",
        **results,
        loss=loss,
        process_count=jax_hosts.process_count(),
        spans_processes=spans_processes,
        devices=len(distribution.device_mesh.devices.ravel()),
        any_of_process_1=jax_hosts.any_process(index == 1),
        any_of_none=jax_hosts.any_process(False),
    )


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
