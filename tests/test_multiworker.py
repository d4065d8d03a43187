"""MultiWorkerMirroredStrategy: two worker processes on localhost train VICReg for a few steps.

Both workers must end with the same weights, and those must be the weights of one device trained on
the same global batches from the same initial weights (this test's process trains that reference
while the workers run): agreement alone would not catch embeddings left ungathered, since the
all-reduced gradients keep the workers in step whatever each computes. The workers pick free
localhost ports and are killed after TIMEOUT_S seconds.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vicreg.training import distribute

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="MultiWorkerMirroredStrategy is TensorFlow only"
)

REPO = Path(__file__).resolve().parents[1]
WORKERS, GLOBAL_BATCH, STEPS, IMAGE = 2, 16, 3, (8, 8, 3)
TIMEOUT_S = 240


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _launch_workers(out_dir):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(WORKERS)]}
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


def _wait(processes):
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"the workers did not finish within {TIMEOUT_S} s")
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]


def _worst(actuals, expecteds):
    """Largest |a - e| over every tensor, relative to the expected values' scale where above 1."""
    actual = np.concatenate([np.ravel(a) for a in actuals])
    expected = np.concatenate([np.ravel(e) for e in expecteds])
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1.0))


def _tensors(archive, prefix):
    count = sum(name.startswith(prefix) for name in archive.files)
    return [archive[f"{prefix}{i}"] for i in range(count)]


def test_two_workers_agree_with_each_other_and_with_one_device(tmp_path):
    reference = _tiny_vicreg()
    initial = reference.get_weights()
    np.savez(tmp_path / "initial.npz", *initial)
    workers = _launch_workers(tmp_path)
    # Meanwhile, the single-device reference: the same steps on the same global batches.
    loss = reference.fit(_dataset(), verbose=0).history["loss"][-1]
    expected = reference.get_weights()
    _wait(workers)
    results = [np.load(tmp_path / f"worker{index}.npz") for index in range(WORKERS)]
    weights = [[result[f"arr_{i}"] for i in range(len(expected))] for result in results]
    assert int(results[0]["replicas"]) == WORKERS
    assert _worst(initial, expected) > 1e-3  # training moved the weights
    assert _worst(weights[1], weights[0]) <= 1e-6
    assert _worst(weights[0], expected) <= 1e-5
    assert abs(float(results[0]["loss"]) - loss) <= 1e-5 * loss


def _tiny_vicreg():
    """A 2-layer convnet (its BatchNorm synchronised) and a "16-16" expander with synced BN."""
    from keras_vicreg.models.vicreg import VICReg

    keras.utils.set_random_seed(3)
    inputs = keras.Input(IMAGE)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    distribute.sync_batch_norm(backbone)
    model = VICReg(backbone, "16-16", sync_batch_norm=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def _dataset():
    """STEPS global batches of pairs, the same in every process; each worker takes its rows."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    view_a = rng.normal(size=(STEPS * GLOBAL_BATCH, *IMAGE)).astype("float32")
    view_b = (view_a + 0.5 * rng.normal(size=view_a.shape)).astype("float32")
    pairs = tf.data.Dataset.from_tensor_slices((view_a, view_b))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return pairs.batch(GLOBAL_BATCH, drop_remainder=True).with_options(options)


def _worker(out_dir):
    """One worker: the VICReg train step under MultiWorkerMirroredStrategy, in a custom loop.

    Keras 3's `fit` fails under MultiWorkerMirroredStrategy for any model (keras issue #20585,
    tensorflow issue #72388), so the loop is `strategy.run(model.train_step)`, the per-replica step
    that `fit` would run.
    """
    import tensorflow as tf

    strategy = distribute.get_strategy("multi_worker")
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    with strategy.scope():
        model = _tiny_vicreg()
        model.optimizer.build(model.trainable_variables)
    initial = np.load(out_dir / "initial.npz")
    model.set_weights([initial[f"arr_{i}"] for i in range(len(initial.files))])

    @tf.function(autograph=False)
    def train_step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        return strategy.experimental_local_results(logs["loss"])[0]

    for batch in strategy.experimental_distribute_dataset(_dataset()):
        loss = train_step(batch)
    np.savez(out_dir / f"worker{index}.npz", *model.get_weights(), loss=loss,
             replicas=strategy.num_replicas_in_sync)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
