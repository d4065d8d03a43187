r"""Object detection transfer: a RetinaNet around a (VICReg-pretrained) backbone, results.json.

    python -m trainers.detect --config=configs/detection.py:voc \
        --config.backbone=/tmp/vicreg/export/backbone.keras --workdir=/tmp/vicreg_detect_voc

`config.backbone` is a `.keras` file or a torchvision-layout `.pth` ("" for random weights). The
workdir gets results.json (`ap`, `ap50`, per class, the config) and TensorBoard logs
(`keras_vicreg.transfer.detection_run.run_detection`). Not the paper's detectron2 protocol: see
configs/detection.py.
"""

from absl import app

from keras_vicreg.evaluation import command_line
from keras_vicreg.transfer import detection_run

_FLAGS = command_line.define_config_flags("configs/detection.py:voc")


def main(argv):
    command_line.run_config_protocol(detection_run.run_detection, _FLAGS, argv, ("ap50", "ap"))


if __name__ == "__main__":
    app.run(main)
