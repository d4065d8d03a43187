"""Held-out evaluation while pretraining: kNN top-1 and the online probe's top-1, every N steps.

`OnlineEvaluation` is a callback: every `every_steps` steps (and at the last one) it embeds a
labelled bank and a held-out split with the model in inference mode (a `VICReg`'s pooled
representation of branch a), and computes

- `knn_top1`: weighted kNN (`evaluation.knn`) of the held-out examples against the bank;
- `probe_top1`: the top-1 of the model's `OnlineProbe` (`models.online_probe`) on the held-out
  features, its kernel and bias read as they are at that step.

Both go into that step's logs (so `training.summaries.ProgressPrinter`, `TensorBoardSummaries`
and, at the epoch's end, `History` see them: place this callback before those) and, at the step,
into TensorBoard under "eval/". It only reads the model, so it changes nothing in the training.

solo-learn and lightly evaluate the same two numbers, on the validation split after each epoch;
here by steps, since a pretraining run may be a few long epochs.
"""

import keras
import numpy as np

from keras_vicreg.evaluation.knn import knn_accuracy
from keras_vicreg.evaluation.knn import topk_accuracy
from keras_vicreg.evaluation.linear import extract_features


def probe_scores(probe, features):
    """The logits of an `OnlineProbe` for `features` (n, d), in float32 NumPy."""
    kernel = keras.ops.convert_to_numpy(probe.kernel.value)
    bias = keras.ops.convert_to_numpy(probe.bias.value)
    return np.asarray(features, np.float32) @ kernel + bias


class OnlineEvaluation(keras.callbacks.Callback):
    """kNN and online-probe top-1 on a held-out split, every `every_steps` training steps.

    Args:
        bank: (images, labels) batches of the kNN's labelled bank (centre crops).
        held_out: (images, labels) batches of the held-out split (centre crops).
        num_classes: the number of classes.
        every_steps: evaluate every this many steps, counted from the run's start (a resumed
            run goes on counting from `initial_step`), and at `total_steps`.
        total_steps: the run's last step (None: not known).
        initial_step: the step a resumed run starts from.
        log_dir: the TensorBoard directory to write "eval/knn_top1" and "eval/probe_top1" to;
            None: no TensorBoard.
        k, temperature: the kNN's (`evaluation.knn.knn_scores`); k is capped at the bank's size.
    """

    def __init__(self, bank, held_out, *, num_classes, every_steps, total_steps=None,
                 initial_step=0, log_dir=None, k=200, temperature=0.07):
        super().__init__()
        if isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 1:
            raise ValueError(f"`every_steps` must be an int >= 1. Received: {every_steps!r}")
        self.bank = bank
        self.held_out = held_out
        self.num_classes = num_classes
        self.every_steps = every_steps
        self.total_steps = total_steps
        self.step = initial_step
        self.log_dir = log_dir
        self.k = k
        self.temperature = temperature
        self.history = []  # [{"step": s, "knn_top1": %, "probe_top1": %}]
        self._writer = None

    def evaluate(self):
        """{"knn_top1": %, "probe_top1": %} of the model as it is (`probe_top1` with a probe)."""
        if hasattr(self.model, "jax_state_sync"):  # JAX: the step's values into the variables
            self.model.jax_state_sync()
        bank_features, bank_labels = extract_features(self.model, self.bank)
        features, labels = extract_features(self.model, self.held_out)
        result = {"knn_top1": knn_accuracy(
            bank_features, bank_labels, features, labels, num_classes=self.num_classes,
            k=min(self.k, len(bank_features)), temperature=self.temperature,
        )["top1"]}
        probe = getattr(self.model, "online_probe", None)
        if probe is not None:
            scores = probe_scores(probe, features)
            result["probe_top1"] = topk_accuracy(scores, labels, (1,))["top1"]
        return result

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every_steps and self.step != self.total_steps:
            return
        result = self.evaluate()
        self.history.append({"step": self.step, **result})
        if logs is not None:
            logs.update(result)
        if self.log_dir is not None:
            self._write(result)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.history:  # the newest figures, for History
            logs.update({k: v for k, v in self.history[-1].items() if k != "step"})

    def _write(self, result):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=self.step):
            for name, value in result.items():
                tf.summary.scalar(f"eval/{name}", value)
        self._writer.flush()
