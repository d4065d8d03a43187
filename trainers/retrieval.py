r"""Image-text retrieval with a two-branch VICReg (MS-COCO, Karpathy's splits), results.json.

    python -m trainers.retrieval --config=configs/coco_retrieval.py --workdir=/tmp/vicreg_coco \
        [--data_dir=~/tensorflow_datasets]
    python -m trainers.retrieval --config=configs/coco_retrieval.py:runlocal --workdir=/tmp/rt

The config is validated before any data is read. The workdir gets results.json (recall@1/5/10
image to text and text to image, per protocol: "5k" and "1k", the headline one also at the top),
vocabulary.txt and the two trained branches, image_branch.keras and text_branch.keras
(`keras_vicreg.evaluation.caption_retrieval.run_retrieval`).
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from keras_vicreg.evaluation import caption_retrieval

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, e.g. configs/coco_retrieval.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets' data directory.")
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    record = caption_retrieval.run_retrieval(_CONFIG.value, workdir=_WORKDIR.value,
                                             data_dir=_DATA_DIR.value)
    headline = {key: record[key] for key in caption_retrieval.DIRECTIONS}
    print(json.dumps({record["headline"]: headline}, indent=2), flush=True)


if __name__ == "__main__":
    app.run(main)
