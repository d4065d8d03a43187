"""The flags and `main` shared by the evaluation binaries (linear_eval, knn_eval, finetune).

Each binary is one call of `run_binary` with its library entry point from
`keras_vicreg.evaluation.runs`, so the three take the same flags and print the same results.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags


def run_binary(run_fn, *, config_example, backbone_help):
    """Defines --config, --backbone, --workdir and --data_dir, then runs `run_fn` under absl.

    Args:
        run_fn: `runs.run_linear_eval`, `runs.run_knn` or `runs.run_finetune`.
        config_example: a config file named in --config's help.
        backbone_help: what --backbone accepts.
    """
    config = config_flags.DEFINE_config_file(
        "config", None, f"A config file, e.g. {config_example}.", lock_config=True
    )
    backbone = flags.DEFINE_string("backbone", None, backbone_help, required=True)
    workdir = flags.DEFINE_string("workdir", None, "Where results go.", required=True)
    data_dir = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        record = run_fn(
            config.value, backbone_path=backbone.value, workdir=workdir.value,
            data_dir=data_dir.value,
        )
        print(json.dumps(record["results"], indent=2), flush=True)

    app.run(main)
