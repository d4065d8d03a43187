r"""Image-text retrieval with a two-branch VICReg (MS-COCO, Karpathy's splits), results.json.

    python -m trainers.retrieval --config=configs/coco_retrieval.py --workdir=/tmp/vicreg_coco \
        [--data_dir=~/tensorflow_datasets]
    python -m trainers.retrieval --config=configs/coco_retrieval.py:runlocal --workdir=/tmp/rt

The config is validated before any data is read. The workdir gets results.json (recall@1/5/10
image to text and text to image, per protocol: "5k" and "1k", the headline one also at the top),
vocabulary.txt and the two trained branches, image_branch.keras and text_branch.keras
(`keras_vicreg.evaluation.caption_retrieval.run_retrieval`).
"""

from absl import app

from keras_vicreg.evaluation import caption_retrieval
from keras_vicreg.evaluation import command_line

_FLAGS = command_line.define_config_flags("configs/coco_retrieval.py")


def main(argv):
    command_line.run_config_protocol(caption_retrieval.run_retrieval, _FLAGS, argv,
                                     ("headline", *caption_retrieval.DIRECTIONS))


if __name__ == "__main__":
    app.run(main)
