r"""Image-text retrieval with a two-branch VICReg (MS-COCO, Karpathy's splits), results.json.

    python -m trainers.retrieval --config=configs/coco_retrieval.py --workdir=/tmp/vicreg_coco \
        [--data_dir=~/tensorflow_datasets]
    python -m trainers.retrieval --config=configs/coco_retrieval.py:runlocal --workdir=/tmp/rt

The config is validated before any data is read. The workdir gets results.json (recall@1/5/10
image to text and text to image, per protocol: "5k" and "1k", the headline one also at the top),
vocabulary.txt and the two trained branches, image_branch.keras and text_branch.keras
(`keras_vicreg.evaluation.caption_retrieval.run_retrieval`).

The training resumes: it is checkpointed in `<workdir>/checkpoints` every
`config.checkpoint_every_steps` steps and at each epoch end, and rerunning the command goes on
from the newest checkpoint. A second job on the workdir is refused while one runs. Exit statuses
(`keras_vicreg.training.exit_codes`): DONE 0; CRASH 1; INVALID_CONFIG 2 (an invalid config, a
locked workdir, checkpoints that do not load); PREEMPTED 75 (SIGTERM or SIGINT: the step is
checkpointed; rerun the command).
"""

import sys

from absl import app

from keras_vicreg.evaluation import caption_retrieval
from keras_vicreg.evaluation import command_line
from keras_vicreg.training import exit_codes
from keras_vicreg.training import workdir_lock

_FLAGS = command_line.define_config_flags("configs/coco_retrieval.py")


def main(argv):
    try:
        with workdir_lock.WorkdirLock(_FLAGS.workdir.value):
            command_line.run_config_protocol(caption_retrieval.run_retrieval, _FLAGS, argv,
                                             ("headline", *caption_retrieval.DIRECTIONS))
    except exit_codes.EXPECTED as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(exit_codes.status_of(error))


if __name__ == "__main__":
    app.run(main)
