r"""The paper's flexibility table: shared or separate weights and architectures in the two branches.

    python -m trainers.pretrain --config=configs/paper_flexibility.py:dw_r50 \
        --workdir=$HOME/vicreg/flex_dw_r50 --strategy=mirrored \
        --data_dir=$HOME/tensorflow_datasets --manual_dir=$HOME/imagenet_tars

The argument names the row; beside it, VICReg's linear top-1 on ImageNet after 100 epochs in the
paper (../shared/VICREG_REFERENCE.md, "The paper's other tables"):

    sw_r50        68.6   shared weights, ResNet-50 (the paper's usual setting)
    dw_r50        66.5   different weights, ResNet-50 and ResNet-50
    da_r50_r101   68.1   different architectures, ResNet-50 and ResNet-101
    da_r50_vits   66.2   different architectures, ResNet-50 and ViT-S/16 (class token)

Every row is the paper's 100-epoch ImageNet recipe of configs/imagenet_resnet50.py (`:100ep`:
batch 2048, base learning rate 0.3, 10 warmup epochs, expander 8192-8192-8192, 25 / 25 / 1); branch
a is always the ResNet-50 the exported backbone and the linear evaluation use, branch b reads the
same views through its own network and its own expander of the same spec.

`runlocal` (`:da_r50_vits,runlocal`) shrinks a row to a smoke run of seconds on generated images:
32 pixels, batch 16, 6 steps, a "64-64" expander, the narrow widths of `common`'s runlocal, and
small stand-ins for the ResNets (a ResNet-50 takes most of a minute to build and trace on a CPU):
branch a is the two-layer convnet, and the DA rows keep two different architectures, the convnet
beside a ResNet-18 (for R50/R101) or beside `vit_tiny` (for R50/ViT-S).
"""

from keras_vicreg.config import common
from keras_vicreg.config import pretraining

# row: (branch_b, backbone_b, runlocal's stand-in for it beside the convnet of branch a)
_ROWS = {
    "sw_r50": ("shared", None, None),
    "dw_r50": ("own_weights", None, None),
    "da_r50_r101": ("own_architecture", "resnet101", "resnet18"),
    "da_r50_vits": ("own_architecture", "vit_s16", "vit_tiny"),
}


def get_config(arg=None):
    """The row `arg` names (default `sw_r50`), with `runlocal` (see `common`)."""
    args = common.parse_arg(arg, row=tuple(_ROWS))
    branch_b, backbone_b, local_backbone_b = _ROWS[args.row]
    config = common.paper_100_epoch_recipe(pretraining.default_config())
    config.model.expander = "8192-8192-8192"
    config.model.branch_b = branch_b
    config.model.backbone_b = backbone_b
    common.finish_pretraining(config, args)
    if args.runlocal:
        common.generated_images_for_local_run(config)
        config.model.backbone_b = local_backbone_b
    return config
