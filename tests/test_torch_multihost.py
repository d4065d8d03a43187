"""PyTorch multi-process training (torch.distributed, gloo): two processes on localhost.

Each test starts two worker processes of this file with torchrun's variables (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT on a free port); they are killed after TIMEOUT_S seconds. The workers
train VICReg with `fit` on their own halves of the same global batches; they must end with equal
weights, equal to those of this process trained on the whole global batches from the same initial
weights (agreement alone would not catch embeddings or BatchNorm statistics left per-process, since
the averaged gradients keep the workers in step whatever each computes). Process 1 starts from other
weights than process 0, which `torch_hosts.broadcast_weights` must replace.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vicreg.training import distribute
from tests.local_processes import finish, free_port, worst

pytestmark = [
    pytest.mark.backend_neutral,
    pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.distributed: torch only"),
]

REPO = Path(__file__).resolve().parents[1]
WORKERS, GLOBAL_BATCH, STEPS, IMAGE = 2, 16, 3, (8, 8, 3)
TIMEOUT_S = 120
COLLECTIVE_TIMEOUT_S = 30  # the process group's timeout in the workers
DEAD_PEER_BOUND_S = 60




def _launch(mode, out_dir):
    port = free_port()
    processes = []
    for rank in range(WORKERS):
        env = dict(
            os.environ, KERAS_BACKEND="torch", RANK=str(rank), LOCAL_RANK=str(rank),
            WORLD_SIZE=str(WORKERS), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
            OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
        )
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        processes.append(subprocess.Popen(
            [sys.executable, __file__, mode, str(out_dir)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    return processes






def test_two_processes_agree_with_each_other_and_with_one_process(tmp_path):
    reference = _tiny_vicreg(seed=3)
    initial = reference.get_weights()
    np.savez(tmp_path / "initial.npz", *initial)
    workers = _launch("train", tmp_path)
    # Meanwhile, the one-process reference: the same steps on the whole global batches.
    view_a, view_b = _global_batches()
    history = reference.fit(_batches(view_a, view_b, GLOBAL_BATCH), verbose=0).history
    expected = reference.get_weights()
    for returncode, output, _ in finish(workers, TIMEOUT_S):
        assert returncode == 0, output[-4000:]
    results = [np.load(tmp_path / f"worker{rank}.npz") for rank in range(WORKERS)]
    weights = [[result[f"arr_{i}"] for i in range(len(expected))] for result in results]
    assert int(results[0]["replicas"]) == WORKERS
    for rank, result in enumerate(results):
        assert result["input_context"].tolist() == [WORKERS, rank, GLOBAL_BATCH // WORKERS]
    assert worst(initial, expected) > 1e-3  # training moved the weights
    assert worst(weights[1], weights[0]) <= 1e-6
    assert worst(weights[0], expected) <= 1e-5
    for result in results:  # the logs are the global batch's, on every process
        for name in ("loss", "variance", "covariance", "std"):
            assert abs(float(result[name]) - history[name][-1]) <= 1e-5 * abs(history[name][-1])
    # The gather's gradient: each process's rows of the sum over processes of their losses.
    features, factors = _gather_problem()
    expected_gradient = 2.0 * sum(factors) * features * _gather_weights()
    for rank, result in enumerate(results):
        rows = slice(rank * 3, rank * 3 + 3)
        np.testing.assert_allclose(result["gather_gradient"], expected_gradient[rows], rtol=1e-6)
        np.testing.assert_allclose(result["gathered"], features, rtol=0)


def test_a_killed_process_makes_the_other_fail_within_bounded_time(tmp_path):
    workers = _launch("die", tmp_path)
    (survivor_rc, survivor_output, survivor_end), (killed_rc, _, _) = finish(workers, TIMEOUT_S)
    assert killed_rc == -signal.SIGKILL
    assert survivor_rc != 0, survivor_output[-4000:]
    killed_at = float((tmp_path / "killed_at").read_text())
    assert survivor_end - killed_at < DEAD_PEER_BOUND_S, survivor_output[-4000:]


def test_one_process_needs_no_process_group_and_bad_variables_raise(monkeypatch):
    from keras_vicreg.training.multihost import torch_hosts

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not torch_hosts.initialize()
    assert (torch_hosts.process_index(), torch_hosts.process_count()) == (0, 1)
    assert torch_hosts.any_process(True) and not torch_hosts.any_process(False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match=r"\['RANK'"):
        torch_hosts.initialize()
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1234")
    with pytest.raises(ValueError, match="RANK must be in"):
        torch_hosts.initialize()


def test_synchronised_batch_norm_saves_as_the_stock_layer_and_reloads_synchronised(tmp_path):
    from keras_vicreg.models import torch_batch_norm
    from keras_vicreg.models.vicreg import VICReg

    model = _tiny_vicreg(seed=3)
    plain = _tiny_vicreg(seed=3)
    for layer in plain._flatten_layers():
        layer.__dict__.pop("_moments", None)  # back to Keras' own moments
    batch_norms = [layer for layer in model._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 2 and all(map(torch_batch_norm.is_synchronized, batch_norms))
    # One process: the statistics are Keras' own.
    view_a, view_b = _global_batches()
    for each in (model, plain):
        each.fit(_batches(view_a, view_b, GLOBAL_BATCH), verbose=0)
    assert worst(model.get_weights(), plain.get_weights()) <= 1e-6
    # Saved: stock BatchNormalization; VICReg's config re-synchronises its expander.
    model.backbone.save(tmp_path / "backbone.keras")
    reloaded = keras.saving.load_model(tmp_path / "backbone.keras")
    layers = [layer for layer in reloaded._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert [type(layer) for layer in layers] == [keras.layers.BatchNormalization]
    assert not layers[0].synchronized and not torch_batch_norm.is_synchronized(layers[0])
    rebuilt = VICReg.from_config(model.get_config())
    assert torch_batch_norm.is_synchronized(rebuilt.expander.get_layer("bn_0"))


def _tiny_vicreg(seed):
    """A 2-layer convnet with synchronised BatchNorm and a "16-16" expander with synced BN."""
    from keras_vicreg.models.vicreg import VICReg

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same")(x)
    backbone = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    assert distribute.sync_batch_norm(backbone) == 1
    model = VICReg(backbone, "16-16", sync_batch_norm=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def _global_batches():
    rng = np.random.default_rng(0)
    view_a = rng.normal(size=(STEPS * GLOBAL_BATCH, *IMAGE)).astype("float32")
    view_b = (view_a + 0.5 * rng.normal(size=view_a.shape)).astype("float32")
    return view_a, view_b


def _batches(view_a, view_b, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((view_a, view_b)).batch(batch_size)


def _gather_problem():
    """Six rows of three features (three per process) and the factor of each process's loss."""
    features = np.arange(18, dtype="float32").reshape(6, 3) / 10.0 - 0.7
    return features, [1.0, 2.0]


def _gather_weights():
    return np.linspace(-1.0, 1.0, 18, dtype="float32").reshape(6, 3)


def _gather_gradient(rank):
    """This process's gradient of its own loss, factor * sum(w * gather(x)^2), w.r.t. its rows."""
    import torch

    from keras_vicreg.models import global_batch

    features, factors = _gather_problem()
    local = torch.tensor(features[rank * 3:rank * 3 + 3], requires_grad=True)
    gathered = global_batch.cross_replica_gather(local)
    loss = factors[rank] * torch.sum(torch.tensor(_gather_weights()) * gathered**2)
    loss.backward()
    return gathered.detach().numpy(), local.grad.numpy()


def _worker(mode, out_dir):
    """One process: `fit` on its half of every global batch (mode "train"), or die (mode "die")."""
    import torch

    from keras_vicreg.training.multihost import torch_hosts

    torch.set_num_threads(1)
    assert torch_hosts.initialize(timeout_s=COLLECTIVE_TIMEOUT_S)  # joins the process group
    strategy = distribute.get_strategy("data_parallel")  # already joined: no second group
    rank = torch_hosts.process_index()
    model = _tiny_vicreg(seed=3 + rank)  # process 1 starts from other weights...
    if rank == 0 and mode == "train":
        initial = np.load(out_dir / "initial.npz")
        model.set_weights([initial[f"arr_{i}"] for i in range(len(initial.files))])
    torch_hosts.broadcast_weights(model)  # ...until it receives process 0's
    half = GLOBAL_BATCH // WORKERS
    view_a, view_b = (
        view.reshape(STEPS, GLOBAL_BATCH, *IMAGE)[:, rank * half:(rank + 1) * half].reshape(
            STEPS * half, *IMAGE)
        for view in _global_batches()
    )
    if mode == "die":
        _fit_until_killed(model, rank, view_a, view_b, half, out_dir)
        return
    gathered, gradient = _gather_gradient(rank)
    history = model.fit(_batches(view_a, view_b, half), verbose=0).history
    logs = {name: values[-1] for name, values in history.items()}
    context = strategy.input_context()  # what the binary reads its shard of the input with
    np.savez(out_dir / f"worker{rank}.npz", *model.get_weights(), **logs,
             replicas=distribute.num_replicas(strategy), gathered=gathered,
             gather_gradient=gradient, input_context=[
                 context.num_input_pipelines, context.input_pipeline_id,
                 context.get_per_replica_batch_size(GLOBAL_BATCH)])
    torch_hosts.barrier()
    torch_hosts.shutdown()


def _fit_until_killed(model, rank, view_a, view_b, half, out_dir):
    """Process 1 SIGKILLs itself after its first step; process 0 trains on, for many epochs."""

    class KillAfterFirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if rank == 1:
                (out_dir / "killed_at").write_text(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)

    model.fit(_batches(view_a, view_b, half), epochs=1000, verbose=0,
              callbacks=[KillAfterFirstStep()])


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
