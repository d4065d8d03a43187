"""The pretraining recipe's online evaluation: the probe of a config, and its held-out callback.

`make_probe` is the `OnlineProbe` a config asks for (`config.online_eval`); `make_callback` the
`evaluation.online.OnlineEvaluation` that reports `knn_top1` and `probe_top1` every
`online_eval.every_steps` steps, on data read before training:

- the held-out split: the first `online_eval.held_out_examples` images of the dataset's evaluation
  split (a folder: its "validation", "val" or "test" subfolder; none: no held-out evaluation),
  which pretraining never reads. Generated data: images drawn with the seed + 1. It is not carved
  out of the pretraining split, which would change `num_examples` and the views of every epoch;
- the kNN's bank: the first `online_eval.bank_examples` images of the pretraining split.

Both through the one labelled pipeline, centre crops at the pretraining size
(`data.labelled_dataset`). In a job of several processes the held-out evaluation is skipped (the
probe still trains and is checkpointed; evaluate the checkpoints): running the model's forward
pass on one process only would stall the others' collectives, on every one it would cost each
process the whole evaluation.
"""

import math
import os

from keras_vicreg import data as vicreg_data
from keras_vicreg.config import online_eval as options_lib
from keras_vicreg.config import pretraining
from keras_vicreg.data import sources
from keras_vicreg.data.synthetic import synthetic_images
from keras_vicreg.data.synthetic import synthetic_labels
from keras_vicreg.evaluation.online import OnlineEvaluation
from keras_vicreg.models.online_probe import OnlineProbe
from keras_vicreg.training import multihost

EVAL_BATCH = 256


def probe_on(config):
    """Whether a config's probe is on (`online_eval.probe`, "auto" resolved for its data)."""
    return bool(options_lib.resolve_probe(config.online_eval.probe, config.dataset, config.split))


def make_probe(config, num_classes):
    """The `OnlineProbe` of `config.online_eval` (None when the probe is off)."""
    options = config.online_eval
    if not probe_on(config):
        return None
    if num_classes is None:
        raise ValueError(
            "The online probe needs the number of classes of the data (recipe.Data.num_classes). "
            "Received: num_classes=None"
        )
    return OnlineProbe(
        num_classes, learning_rate=options.learning_rate, momentum=options.momentum,
        weight_decay=options.weight_decay, name="online_probe",
    )


def _labelled(source, data, split=None, count=None):
    """Centre-cropped (images, labels) batches of a source: `count` examples (about) or all."""
    config = data.config
    dataset = vicreg_data.labelled_dataset(
        source, EVAL_BATCH, split=split, augmentation=data.augmentation,
        crop_fraction=config.eval_crop_fraction, data_dir=data.data_dir,
        manual_dir=data.manual_dir,
    )
    return dataset if count is None else dataset.take(math.ceil(count / EVAL_BATCH))


def held_out_data(config, data):
    """(bank, held-out) labelled datasets of a config's data, or None (see the module docstring)."""
    options = config.online_eval
    if not probe_on(config) or not options.held_out_examples:
        return None
    bank_count = min(options.bank_examples, config.num_examples)
    if config.dataset == pretraining.SYNTHETIC:
        bank = synthetic_images(bank_count, config.image_size, data.channels, config.seed)
        held = synthetic_images(options.held_out_examples, config.image_size, data.channels,
                                config.seed + 1)
        return (_labelled((bank, synthetic_labels(bank)), data),
                _labelled((held, synthetic_labels(held)), data))
    eval_split = sources.default_split(config.dataset, "eval_split")
    pretrain_split = config.split or sources.default_split(config.dataset, "pretrain_split")
    if eval_split == pretrain_split:  # a folder without an evaluation subfolder
        print(f"No held-out evaluation: {config.dataset!r} has no evaluation split (a "
              "'validation', 'val' or 'test' subfolder). The online probe still trains.",
              flush=True)
        return None
    return (_labelled(config.dataset, data, pretrain_split, bank_count),
            _labelled(config.dataset, data, eval_split, options.held_out_examples))


def make_callback(config, workdir, data, start_step):
    """The `OnlineEvaluation` of a config, or None (the probe off, no held-out split, or a job of
    several processes: see the module docstring)."""
    if multihost.process_count() > 1:
        return None
    splits = held_out_data(config, data)
    if splits is None:
        return None
    options = config.online_eval
    return OnlineEvaluation(
        *splits, num_classes=data.num_classes, every_steps=options.every_steps,
        total_steps=config.total_steps, initial_step=start_step,
        log_dir=os.path.join(workdir, "tensorboard"), k=options.knn_k,
        temperature=options.knn_temperature,
    )
