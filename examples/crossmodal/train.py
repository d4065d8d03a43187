r"""Trains the cross-modal VICReg example and prints its retrieval recall.

    python -m examples.crossmodal.train --config=examples/crossmodal/config.py --workdir=/tmp/xm

Writes `results.json` (recall@K in both directions, chance level, loss history) to --workdir.
"""

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from examples.crossmodal import crossmodal

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for results.json; none written if unset.")


def main(argv):
    del argv
    config = _CONFIG.value
    train_images = crossmodal.load_images("train", config.data_dir)[: config.train_size]
    eval_images = crossmodal.load_images("test", config.data_dir)[: config.eval_size]
    results = crossmodal.train_and_evaluate(config, train_images, eval_images)
    for direction, name in (("a_to_b", "image -> tokens"), ("b_to_a", "tokens -> image")):
        recalls = ", ".join(f"R@{k} {100 * r:.1f}" for k, r in results["recall"][direction].items())
        print(f"{name}: {recalls} (chance R@1 {100 * results['chance']:.2f})")
    if _WORKDIR.value:
        os.makedirs(_WORKDIR.value, exist_ok=True)
        with open(os.path.join(_WORKDIR.value, "results.json"), "w") as f:
            json.dump(results, f, indent=2, default=float)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
