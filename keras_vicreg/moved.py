"""The module paths of keras-vicreg 0.1, still importable, each with a DeprecationWarning.

The package was laid out anew (docs/design.md): `keras_vicreg.model` became
`keras_vicreg.models.vicreg`, `keras_vicreg.optimizers` became `keras_vicreg.training.optimizers`,
and so on. `import keras_vicreg.model` and `from keras_vicreg import optimizers` keep working: a
finder on `sys.meta_path` answers each old path with the module at its new one, after warning.
The table below is the one list of what moved; the README's "What changed" says the same.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "keras_vicreg.model": "keras_vicreg.models.vicreg",
    "keras_vicreg.expander": "keras_vicreg.models.expander",
    "keras_vicreg.backbones": "keras_vicreg.models.backbones",
    "keras_vicreg.torchvision_weights": "keras_vicreg.models.backbones.torchvision",
    "keras_vicreg.augment": "keras_vicreg.data.transforms",
    "keras_vicreg.callbacks": "keras_vicreg.training.callbacks",
    "keras_vicreg.checkpointing": "keras_vicreg.training.checkpointing",
    "keras_vicreg.distribute": "keras_vicreg.training.distribute",
    "keras_vicreg.optimizers": "keras_vicreg.training.optimizers",
    "keras_vicreg.schedules": "keras_vicreg.training.schedules",
    "keras_vicreg.summaries": "keras_vicreg.training.summaries",
    "keras_vicreg.train_steps": "keras_vicreg.models.steps",
    "keras_vicreg.pretrain_config": "keras_vicreg.config.pretraining",
    "keras_vicreg.batch_norm": "keras_vicreg.experimental.cpu.batch_norm",
    "keras_vicreg.conv": "keras_vicreg.experimental.cpu.conv",
    "keras_vicreg.layer_classes": "keras_vicreg.experimental.cpu.layer_classes",
}


def resolve(old_name):
    """The module now at the place of `old_name`, imported, after a DeprecationWarning."""
    new_name = MOVED[old_name]
    warnings.warn(
        f"{old_name} moved to {new_name}; import it from there (the old path will be removed).",
        DeprecationWarning,
        stacklevel=3,
    )
    return importlib.import_module(new_name)


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path of `MOVED` with the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return resolve(spec.name)

    def exec_module(self, module):
        """Nothing to run: the module was imported at its new path."""


def install():
    """Puts the finder on `sys.meta_path` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
