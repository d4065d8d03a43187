"""The flags every evaluation binary shares, and its main: run a protocol, print its results.

`trainers/linear_eval.py`, `trainers/finetune.py` and `trainers/knn_eval.py` differ only in the
protocol they run (`keras_vicreg.evaluation.runs`) and in the backbone files it accepts; the flags
(`--config`, `--backbone`, `--workdir`, `--data_dir`) and what main does are defined once here.
The binaries whose config names the backbone (`svm_eval`, `detect`, `segment`, `retrieval`) take
`--config`, `--workdir` and `--data_dir` only (`define_config_flags`, `run_config_protocol`).
"""

import dataclasses
import json

from absl import app
from absl import flags
from ml_collections import config_flags


@dataclasses.dataclass(frozen=True)
class ConfigFlags:
    """The parsed flags' holders of a binary whose config says everything but where it writes."""

    config: flags.FlagHolder
    workdir: flags.FlagHolder
    data_dir: flags.FlagHolder


def define_config_flags(example_config):
    """Defines `--config`, `--workdir` and `--data_dir`; call once, at the binary's import.

    Args:
        example_config: a config file to name in `--config`'s help, e.g. "configs/detection.py:voc".

    Returns:
        A `ConfigFlags`.
    """
    holders = ConfigFlags(
        config=config_flags.DEFINE_config_file(
            "config", None, f"A config file, e.g. {example_config}.", lock_config=True
        ),
        workdir=flags.DEFINE_string("workdir", None, "Where results go.", required=True),
        data_dir=flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory."),
    )
    flags.mark_flag_as_required("config")
    return holders


def run_config_protocol(protocol, holders, argv, keys):
    """Runs `protocol(config, workdir=..., data_dir=...)` from the flags and prints the `keys` of
    its record (all of results.json is in the workdir) as JSON; the body of such a binary's
    `main`."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = protocol(holders.config.value, workdir=holders.workdir.value,
                      data_dir=holders.data_dir.value)
    print(json.dumps({key: record[key] for key in keys}, indent=2), flush=True)
    return record


@dataclasses.dataclass(frozen=True)
class EvaluationFlags:
    """The parsed flags' holders (`.value` after absl has parsed the command line)."""

    config: flags.FlagHolder
    backbone: flags.FlagHolder
    workdir: flags.FlagHolder
    data_dir: flags.FlagHolder


def define_flags(example_config, backbone_kinds):
    """Defines the flags of an evaluation binary; call once, at its import.

    Args:
        example_config: a config file to name in `--config`'s help, e.g.
            "configs/linear_eval_imagenet.py".
        backbone_kinds: what `--backbone` may be, for its help, e.g. "A .keras file or a .pth
            state dict."

    Returns:
        An `EvaluationFlags`.
    """
    holders = EvaluationFlags(
        config=config_flags.DEFINE_config_file(
            "config", None, f"A config file, e.g. {example_config}.", lock_config=True
        ),
        backbone=flags.DEFINE_string("backbone", None, backbone_kinds, required=True),
        workdir=flags.DEFINE_string("workdir", None, "Where results go.", required=True),
        data_dir=flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory."),
    )
    flags.mark_flag_as_required("config")
    return holders


def run(protocol, holders, argv):
    """Runs `protocol(config, backbone_path=..., workdir=..., data_dir=...)` from the flags and
    prints its results as JSON; the body of an evaluation binary's `main`."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = protocol(
        holders.config.value, backbone_path=holders.backbone.value,
        workdir=holders.workdir.value, data_dir=holders.data_dir.value,
    )
    print(json.dumps(record["results"], indent=2), flush=True)
    return record
