"""What a pretraining run reports: TensorBoard summaries and progress lines, backend-neutral.

- `TensorBoardSummaries` writes each logged loss term and the learning rate, the per-feature std of
  the embeddings of a fixed batch (a histogram and its mean), the effective rank of those embeddings
  and of the backbone's representations, and pictures of a few augmented pairs.
- `ProgressPrinter` prints a line every few steps: step, epoch, the loss terms, learning rate and
  speed.
- `effective_rank` is RankMe (Garrido, Assran, Ballas, Bardes, Najman and LeCun, "RankMe: Assessing
  the downstream performance of pretrained self-supervised representations by their rank", ICML
  2023): with the singular values s_k of a batch of embeddings and p_k = s_k / sum(s) + 1e-7,

      rank = exp(-sum_k p_k log p_k),

  between 1 (collapse to a line) and min(batch, width). A collapse shows there before the loss.

Keras logs the running mean of each metric since the start of the epoch. Both callbacks report
instead the mean over the steps since their previous report (the value of each step when they
report every step), recovered from the running means; the learning rate is reported as logged.
Steps are counted from `initial_step`, the step a resumed run starts at, so the curves of a run
and of its resumption join up. The callbacks only read the model (inference-mode forward passes),
so they change nothing in the training.
"""

import numbers
import time

import keras
import numpy as np
from keras import ops

RANKME_EPSILON = 1e-7


def effective_rank(embeddings):
    """RankMe: the exponential of the entropy of the normalised singular values of a batch.

    Args:
        embeddings: array of shape (batch, width).

    Returns:
        A float in [1, min(batch, width)].
    """
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2:
        raise ValueError(
            f"`embeddings` must be a batch of shape (batch, width). "
            f"Received: embeddings.shape={embeddings.shape}"
        )
    singular_values = np.linalg.svd(embeddings, compute_uv=False)
    total = singular_values.sum()
    if total == 0:
        return 1.0
    p = singular_values / total + RANKME_EPSILON
    return float(np.exp(-np.sum(p * np.log(p))))


def feature_std(embeddings):
    """The standard deviation of each feature over the batch (unbiased, as in the loss)."""
    return np.std(np.asarray(embeddings, np.float64), axis=0, ddof=1)


def pair_pictures(view_a, view_b, mean, std, gap=2):
    """Normalised views back to [0, 1] pictures, each pair side by side with a white gap.

    Args:
        view_a, view_b: arrays of shape (pairs, height, width, channels), normalised with
            `mean` and `std`.
        mean, std: the per-channel normalisation of the views.
        gap: the gap's width in pixels.

    Returns:
        float32 array of shape (pairs, height, 2 * width + gap, channels) in [0, 1].
    """
    view_a, view_b = np.asarray(view_a, np.float32), np.asarray(view_b, np.float32)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if view_a.shape != view_b.shape or view_a.ndim != 4 or view_a.shape[-1] != mean.size:
        raise ValueError(
            "`view_a` and `view_b` must have the same shape (pairs, height, width, channels), "
            f"with as many channels as `mean`. Received: shapes {view_a.shape} and "
            f"{view_b.shape}, mean={tuple(mean)}"
        )
    white = np.ones(view_a.shape[:2] + (gap, view_a.shape[-1]), np.float32)
    pictures = np.concatenate([view_a * std + mean, white, view_b * std + mean], axis=2)
    return np.clip(pictures, 0.0, 1.0)


class _WindowMeans:
    """Means over the steps since the last report, from Keras' running means since epoch start."""

    def __init__(self):
        self.running = set()
        self.start_epoch()

    def start_epoch(self):
        self._count = 0
        self._totals = {}

    def report(self, batch, logs):
        """{name: value} for the steps since the previous report; `batch` is Keras' index."""
        count = batch + 1
        values, totals = {}, {}
        for name, value in (logs or {}).items():
            if not isinstance(value, numbers.Real):
                continue
            if name in self.running and count > self._count:
                totals[name] = value * count
                values[name] = (totals[name] - self._totals.get(name, 0.0)) / (count - self._count)
            else:
                values[name] = float(value)
        self._count, self._totals = count, totals
        return values


class ProgressPrinter(keras.callbacks.Callback):
    """Prints the step, epoch, loss terms, learning rate and speed every `every_steps` steps.

    Args:
        every_steps: int >= 1, the interval in steps.
        total_steps: the steps of the whole run, for the percentage.
        steps_per_epoch: the steps of an epoch, for the epoch number.
        initial_step: the step the run (re)starts from.
        print_fn: where the lines go. Defaults to `print` (flushed).
    """

    def __init__(self, every_steps, total_steps, steps_per_epoch, initial_step=0, print_fn=None):
        super().__init__()
        _check_positive("every_steps", every_steps)
        self.every_steps = every_steps
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.step = initial_step
        self.print_fn = print_fn or (lambda line: print(line, flush=True))
        self._window = _WindowMeans()
        self._clock = None

    def on_train_begin(self, logs=None):
        self._window.running = {metric.name for metric in self.model.metrics}
        self._clock = (time.perf_counter(), self.step)

    def on_epoch_begin(self, epoch, logs=None):
        self._window.start_epoch()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every_steps and self.step != self.total_steps:
            return
        values = self._window.report(batch, logs)
        now = time.perf_counter()
        start, start_step = self._clock
        speed = (self.step - start_step) / max(now - start, 1e-9)
        self._clock = (now, self.step)
        terms = "  ".join(f"{name} {value:.5g}" for name, value in values.items())
        self.print_fn(
            f"step {self.step}/{self.total_steps} ({100.0 * self.step / self.total_steps:.1f}%)"
            f"  epoch {(self.step - 1) // self.steps_per_epoch + 1}  {terms}  {speed:.3g} steps/s"
        )


class TensorBoardSummaries(keras.callbacks.Callback):
    """Writes VICReg's training summaries to a TensorBoard log directory.

    Every `scalar_every_steps` steps: each logged metric (the loss and its terms, the std) as its
    mean over those steps, and the logged learning rate (`keras_vicreg.training.callbacks.LearningRateLogger`
    puts it in the logs; list it before this callback). Every `embedding_every_steps` steps, from
    the fixed batch `fixed_views[0]` in inference mode: the histogram of the per-feature std of the
    embeddings, its mean, the effective rank (`effective_rank`) of the embeddings and of the
    representations. At the start of training, `image_pairs` augmented pairs of `fixed_views`.

    Args:
        log_dir: the TensorBoard directory.
        fixed_views: a pair of arrays (view_a, view_b) of normalised images, the same batch for the
            whole run (e.g. the first batch of the first epoch); None: no embedding statistics and
            no pictures.
        mean, std: the normalisation of the views, to show them as pictures.
        scalar_every_steps: int >= 1.
        embedding_every_steps: int >= 1.
        image_pairs: how many pairs to picture (0: none).
        initial_step: the step the run (re)starts from.
        write: False on the processes of a multi-process job other than process 0: they compute
            what process 0 computes (the embedding statistics are a collective there) and write
            nothing.
    """

    def __init__(
        self,
        log_dir,
        *,
        fixed_views=None,
        mean=(0.0,),
        std=(1.0,),
        scalar_every_steps=10,
        embedding_every_steps=100,
        image_pairs=4,
        initial_step=0,
        write=True,
    ):
        super().__init__()
        _check_positive("scalar_every_steps", scalar_every_steps)
        _check_positive("embedding_every_steps", embedding_every_steps)
        self.log_dir = log_dir
        self.fixed_views = fixed_views
        self.mean, self.std = tuple(mean), tuple(std)
        self.scalar_every_steps = scalar_every_steps
        self.embedding_every_steps = embedding_every_steps
        self.image_pairs = image_pairs
        self.step = initial_step
        self._window = _WindowMeans()
        self._writer = None
        self.write = write

    @property
    def writer(self):
        """The `tf.summary` writer, opened on first use."""
        if self._writer is None:
            import tensorflow as tf

            self._writer = (tf.summary.create_file_writer(self.log_dir) if self.write
                            else tf.summary.create_noop_writer())
        return self._writer

    def on_train_begin(self, logs=None):
        self._window.running = {metric.name for metric in self.model.metrics}
        if self.fixed_views is not None and self.image_pairs:
            self.write_pictures()

    def on_epoch_begin(self, epoch, logs=None):
        self._window.start_epoch()

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.scalar_every_steps == 0:
            self.write_scalars(self._window.report(batch, logs))
        if self.fixed_views is not None and self.step % self.embedding_every_steps == 0:
            self.write_embedding_statistics()

    def on_epoch_end(self, epoch, logs=None):
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.flush()

    def write_scalars(self, values):
        """Writes {name: value} under "train/<name>" at the current step."""
        import tensorflow as tf

        with self.writer.as_default(step=self.step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name}", value)

    def write_embedding_statistics(self):
        """Writes the std histogram, mean std and effective ranks of the fixed batch."""
        import tensorflow as tf

        images = ops.convert_to_tensor(self.fixed_views[0])
        representations = self.model(images, training=False)
        embeddings = self.model.embed(images, training=False)
        representations = ops.convert_to_numpy(ops.cast(representations, "float32"))
        embeddings = ops.convert_to_numpy(ops.cast(embeddings, "float32"))
        stds = feature_std(embeddings)
        with self.writer.as_default(step=self.step):
            tf.summary.histogram("embeddings/feature_std", stds)
            tf.summary.scalar("embeddings/mean_feature_std", float(np.mean(stds)))
            tf.summary.scalar("embeddings/effective_rank", effective_rank(embeddings))
            tf.summary.scalar("representations/effective_rank", effective_rank(representations))

    def write_pictures(self):
        """Writes `image_pairs` pairs of the fixed batch, view a beside view b."""
        import tensorflow as tf

        view_a, view_b = (np.asarray(view[: self.image_pairs]) for view in self.fixed_views)
        pictures = pair_pictures(view_a, view_b, self.mean, self.std)
        with self.writer.as_default(step=self.step):
            tf.summary.image("augmented_pairs", pictures, max_outputs=self.image_pairs)
        self.writer.flush()


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
