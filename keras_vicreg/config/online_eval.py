"""The pretraining config's `online_eval` keys: the online linear probe and the held-out evaluation.

    online_eval.probe              "auto" (on where the data has labels: tfds datasets with a
                                   labelled pretraining split, folders of class subfolders; off for
                                   generated data and STL-10's unlabelled split), True or False.
                                   `validate` writes the resolved bool into the config
    online_eval.learning_rate, online_eval.momentum, online_eval.weight_decay
                                   the probe's SGD (`keras_vicreg.models.OnlineProbe`)
    online_eval.every_steps        every this many steps (and at the last one) `knn_top1` and
                                   `probe_top1` on the held-out split (`evaluation.online`)
    online_eval.held_out_examples  examples of the held-out split: the dataset's evaluation split
                                   (generated data: images drawn with another seed); 0: no
                                   held-out evaluation, the probe still trains
    online_eval.bank_examples      examples of the pretraining split in the kNN's labelled bank
    online_eval.knn_k, online_eval.knn_temperature
                                   the kNN's neighbours and temperature (`evaluation.knn`)

Generated data ("synthetic") is labelled by construction (`data.synthetic.synthetic_labels`), for
tests: its probe is on only with `online_eval.probe=True`.
"""

import ml_collections
from ml_collections import config_dict

from keras_vicreg.config.checks import at_least
from keras_vicreg.data import sources

AUTO = "auto"
SYNTHETIC = "synthetic"


def add_defaults(config):
    """Adds `config.online_eval` with its defaults to a pretraining config."""
    online = ml_collections.ConfigDict()
    # "auto" or a bool: typed object, so that both pass the types and the command line.
    online.probe = config_dict.FieldReference(AUTO, field_type=object)
    online.learning_rate = 0.1
    online.momentum = 0.9
    online.weight_decay = 0.0
    online.every_steps = 500
    online.held_out_examples = 1000
    online.bank_examples = 5000
    online.knn_k = 200
    online.knn_temperature = 0.07
    config.online_eval = online


def has_labels(dataset, split=None):
    """Whether pretraining data of `dataset` (and `split`) comes with class labels."""
    if dataset == SYNTHETIC or sources.is_folder(dataset):
        return True
    try:
        spec = sources.dataset_spec(dataset)
    except ValueError:
        return False
    return (split or spec.pretrain_split) != "unlabelled"


def resolve_probe(probe, dataset, split=None):
    """The probe's switch for a dataset: "auto" on where the data has labels (not generated)."""
    if probe == AUTO:
        return dataset != SYNTHETIC and has_labels(dataset, split)
    return probe


def problems(flat, found):
    """Appends the problems of the `online_eval` keys (of a flattened config) to `found`."""
    probe, dataset = flat["config.online_eval.probe"], flat["config.dataset"]
    if probe not in (AUTO, True, False):
        found.append(
            f"config.online_eval.probe must be {AUTO!r}, True or False. "
            f"Received: config.online_eval.probe={probe!r}"
        )
    elif probe is True and not has_labels(dataset, flat["config.split"]):
        found.append(
            "config.online_eval.probe=True needs labelled pretraining data (a tfds dataset with a "
            "label, a folder of class subfolders or generated data), and "
            f"{dataset!r} (split {flat['config.split'] or 'default'}) has none: set "
            "--config.online_eval.probe=False (or 'auto'). Received: config.online_eval.probe=True"
        )
    at_least(found, "config.online_eval.learning_rate", flat["config.online_eval.learning_rate"],
             0.0, strict=True)
    momentum = flat["config.online_eval.momentum"]
    if not 0.0 <= momentum < 1.0:
        found.append(f"config.online_eval.momentum must be in [0, 1). "
                     f"Received: config.online_eval.momentum={momentum!r}")
    at_least(found, "config.online_eval.weight_decay", flat["config.online_eval.weight_decay"],
             0.0)
    for key in ("every_steps", "bank_examples", "knn_k"):
        at_least(found, f"config.online_eval.{key}", flat[f"config.online_eval.{key}"], 1)
    at_least(found, "config.online_eval.held_out_examples",
             flat["config.online_eval.held_out_examples"], 0)
    at_least(found, "config.online_eval.knn_temperature",
             flat["config.online_eval.knn_temperature"], 0.0, strict=True)


def resolve(config):
    """Writes the resolved `online_eval.probe` (a bool) into a validated config."""
    config.online_eval.probe = bool(
        resolve_probe(config.online_eval.probe, config.dataset, config.split)
    )
