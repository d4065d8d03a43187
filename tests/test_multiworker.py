"""MultiWorkerMirroredStrategy: two worker processes on localhost pretrain VICReg with `fit`.

The workers train the tiny VICReg through `checkpointing.resumable_fit` (Keras' own `fit`, which
`VICReg` makes work across workers: `keras_vicreg.models.steps.tensorflow_steps`) with the real
callbacks (`NaNGuard`, `StepCheckpoint` into a directory of each worker's own) and the model's
default BatchNorm synchronisation. Both workers must end with the same weights, and those must be
the weights of one process trained by `resumable_fit` on the same global batches from the same
initial weights (this test's process trains that reference while the workers run): agreement alone
would not catch embeddings left ungathered, since the all-reduced gradients keep the workers in step
whatever each computes. Each worker also runs the same steps stopped at step STOP_AT by a stop
signal and resumed from its checkpoint on a dataset of the workers' own rows
(`distribute_datasets_from_function`), and calls `any_process` from a callback between steps. The
workers pick free localhost ports and are killed after TIMEOUT_S seconds.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tests.local_processes import finish_successfully, free_ports, worst

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="MultiWorkerMirroredStrategy is TensorFlow only"
)

REPO = Path(__file__).resolve().parents[1]
WORKERS, GLOBAL_BATCH, EPOCHS, STEPS_PER_EPOCH, IMAGE = 2, 16, 2, 3, (8, 8, 3)
STOP_AT, EVERY_STEPS, RAISED_AT = 4, 2, 2  # RAISED_AT: the step at which worker 1 alone flags
TIMEOUT_S = 240




def _launch_workers(out_dir):
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(WORKERS)]}
    processes = []
    for index in range(WORKERS):
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        task = {"type": "worker", "index": index}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        processes.append(subprocess.Popen(
            [sys.executable, __file__, str(out_dir)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    return processes






@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Launches the workers, trains the one-process reference meanwhile, and loads both."""
    from keras_vicreg.training import checkpointing

    out_dir = tmp_path_factory.mktemp("multiworker")
    reference = _tiny_vicreg()
    initial = reference.get_weights()
    np.savez(out_dir / "initial.npz", *initial)
    workers = _launch_workers(out_dir)
    checkpointing.resumable_fit(
        reference, _make_dataset, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH
    )
    finish_successfully(workers, TIMEOUT_S)
    results = [dict(np.load(out_dir / f"worker{i}.npz")) for i in range(WORKERS)]
    return {"dir": out_dir, "initial": initial, "reference": reference, "workers": results}


def _weights(result, prefix, count):
    return [result[f"{prefix}{i}"] for i in range(count)]


def test_two_workers_fit_agree_with_each_other_and_with_one_process(run):
    expected = run["reference"].get_weights()
    weights = [_weights(result, "final", len(expected)) for result in run["workers"]]
    assert [int(r["replicas"]) for r in run["workers"]] == [WORKERS] * WORKERS
    assert [int(r["iterations"]) for r in run["workers"]] == [EPOCHS * STEPS_PER_EPOCH] * WORKERS
    assert worst(run["initial"], expected) > 1e-3  # training moved the weights
    assert worst(weights[1], weights[0]) <= 1e-6
    assert worst(weights[0], expected) <= 1e-5


def test_default_batch_norm_is_synchronised_across_workers(run):
    assert all(bool(result["synchronized"]) for result in run["workers"])


def test_step_checkpoint_of_each_worker_holds_its_final_weights(run):
    from keras_vicreg.training import checkpointing

    for index, result in enumerate(run["workers"]):
        found = checkpointing.latest_checkpoint(str(run["dir"] / f"ckpt{index}"))
        assert found is not None and found[0] == EPOCHS * STEPS_PER_EPOCH
        model = _tiny_vicreg()
        model.optimizer.build(model.trainable_variables)
        model.load_weights(found[1])
        final = _weights(result, "final", len(model.get_weights()))
        assert worst(model.get_weights(), final) == 0.0


def test_run_stopped_and_resumed_from_its_checkpoint_equals_the_uninterrupted_run(run):
    for result in run["workers"]:
        count = len(run["initial"])
        assert int(result["stopped_at"]) == STOP_AT and int(result["restored"]) == STOP_AT
        assert worst(_weights(result, "resumed", count), _weights(result, "final", count)) <= 1e-5


def test_any_process_from_a_callback_sees_one_workers_flag_on_every_worker(run):
    steps = EPOCHS * STEPS_PER_EPOCH
    expected = [step == RAISED_AT for step in range(1, steps + 1)]
    for index, result in enumerate(run["workers"]):
        assert list(result["any"]) == expected
        assert (int(result["index"]), int(result["count"])) == (index, WORKERS)


@pytest.mark.parametrize(
    "tf_config",
    [
        "{not json",
        json.dumps({"task": {"type": "worker", "index": 0}}),
        json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}),
        json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker"}}),
        json.dumps({"cluster": {"worker": ["host:1"]}, "task": {"type": "worker", "index": 1}}),
        json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}),
    ],
)
def test_malformed_tf_config_is_a_clear_error_before_any_strategy(tf_config, monkeypatch):
    from keras_vicreg.training.multihost import tensorflow_hosts

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        tensorflow_hosts.process_count()
    with pytest.raises(ValueError, match="TF_CONFIG"):
        tensorflow_hosts.multi_worker_strategy(timeout_seconds=30)


def test_process_index_and_count_read_tf_config_chief_first(monkeypatch):
    from keras_vicreg.training.multihost import tensorflow_hosts

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert (tensorflow_hosts.process_index(), tensorflow_hosts.process_count()) == (0, 1)
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": 1}}
    ))
    assert (tensorflow_hosts.process_index(), tensorflow_hosts.process_count()) == (2, 3)


# --------------------------------------------------------------------------------------------------
# Both sides: the model and the data.


def _tiny_vicreg():
    """A 2-layer convnet with BatchNorm and a "16-16" expander, BatchNorm left at its default."""
    from keras_vicreg.models.vicreg import VICReg

    keras.utils.set_random_seed(3)
    inputs = keras.Input(IMAGE)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model = VICReg(backbone, "16-16")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def _views():
    """Every global batch of the run, (epochs * steps, batch, ...), the same in every process."""
    rng = np.random.default_rng(0)
    view_a = rng.normal(size=(EPOCHS * STEPS_PER_EPOCH, GLOBAL_BATCH, *IMAGE)).astype("float32")
    view_b = (view_a + 0.5 * rng.normal(size=view_a.shape)).astype("float32")
    return view_a, view_b


def _make_dataset(epoch, skip, rows=slice(None)):
    """Epoch `epoch`'s global batches (their `rows`) without the first `skip`."""
    import tensorflow as tf

    steps = slice(epoch * STEPS_PER_EPOCH + skip, (epoch + 1) * STEPS_PER_EPOCH)
    view_a, view_b = (view[steps, rows] for view in _views())
    dataset = tf.data.Dataset.from_tensor_slices((view_a, view_b)).unbatch()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(view_a.shape[1], drop_remainder=True).with_options(options)


# --------------------------------------------------------------------------------------------------
# The worker side.


class _StopAt:
    """A stop signal (as `preemption.PreemptionSignal` offers it) received once `step` is done."""

    def __init__(self, step):
        self.step, self.done, self.received = step, 0, None


class _Probe(keras.callbacks.Callback):
    """Counts steps for `_StopAt` and calls `any_process` after each, worker 1 flagging once."""

    def __init__(self, stop=None, probe_any=False):
        super().__init__()
        self.stop, self.probe_any, self.seen = stop, probe_any, []

    def on_train_batch_end(self, batch, logs=None):
        assert all(isinstance(value, float) for value in logs.values()), logs
        if self.probe_any:
            from keras_vicreg.training.multihost import tensorflow_hosts as hosts

            step = len(self.seen) + 1
            self.seen.append(hosts.any_process(hosts.process_index() == 1 and step == RAISED_AT))
        if self.stop is not None:
            self.stop.done += 1
            self.stop.received = signal.SIGTERM if self.stop.done == self.stop.step else None


def _worker(out_dir):
    import tensorflow as tf

    from keras_vicreg.training import callbacks
    from keras_vicreg.training import checkpointing
    from keras_vicreg.training import preemption
    from keras_vicreg.training.multihost import tensorflow_hosts as hosts

    strategy = hosts.multi_worker_strategy(timeout_seconds=120)
    index = hosts.process_index()
    initial = np.load(out_dir / "initial.npz")
    initial = [initial[f"arr_{i}"] for i in range(len(initial.files))]
    report = {"index": index, "count": hosts.process_count()}

    def train(directory, initial_step=0, make_dataset=_make_dataset, stop=None, probe_any=False):
        with strategy.scope():
            model = _tiny_vicreg()
            model.optimizer.build(model.trainable_variables)
            model.set_weights(initial)
            if initial_step:
                report["restored"] = checkpointing.restore_latest(model, directory)
            probe = _Probe(stop, probe_any)
            checkpoint = checkpointing.StepCheckpoint(
                directory, EVERY_STEPS, initial_step, stop_signal=stop
            )
            checkpointing.resumable_fit(
                model, make_dataset, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                initial_step=initial_step,
                callbacks=[callbacks.NaNGuard(), probe, checkpoint],
            )
        return model, probe

    model, probe = train(str(out_dir / f"ckpt{index}"), probe_any=True)
    report.update(
        replicas=strategy.num_replicas_in_sync, any=probe.seen,
        iterations=int(model.optimizer.iterations.numpy()),
        synchronized=all(layer.synchronized for layer in model._flatten_layers()
                         if isinstance(layer, keras.layers.BatchNormalization)),
    )
    report.update({f"final{i}": w for i, w in enumerate(model.get_weights())})

    stopped = str(out_dir / f"stopped{index}")
    try:
        train(stopped, stop=_StopAt(STOP_AT))
    except preemption.Preempted as stop:
        report["stopped_at"] = stop.step

    def own_rows(epoch, skip):
        """The workers' own rows of each global batch, batched per replica."""
        def dataset(context):
            per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
            start = context.input_pipeline_id * per_replica
            return _make_dataset(epoch, skip, slice(start, start + per_replica))

        options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
        return strategy.distribute_datasets_from_function(dataset, options)

    resumed, _ = train(stopped, initial_step=report["stopped_at"], make_dataset=own_rows)
    report.update({f"resumed{i}": w for i, w in enumerate(resumed.get_weights())})
    np.savez(out_dir / f"worker{index}.npz", **report)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
