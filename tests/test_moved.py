"""The 0.1 module paths still import, warn, and give the module at the new path."""

import importlib
import subprocess
import sys

import pytest

from keras_vicreg import moved


@pytest.mark.backend_neutral
@pytest.mark.parametrize("old_name", sorted(moved.MOVED))
def test_each_old_module_path_imports_the_new_module_with_a_deprecation_warning(old_name):
    sys.modules.pop(old_name, None)
    with pytest.warns(DeprecationWarning, match=moved.MOVED[old_name]):
        old = importlib.import_module(old_name)
    assert old is importlib.import_module(moved.MOVED[old_name])


@pytest.mark.backend_neutral
def test_old_attribute_and_from_imports_work_in_a_fresh_process():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import keras_vicreg\n"
        "try:\n"
        "    from keras_vicreg import optimizers\n"
        "except DeprecationWarning as warning:\n"
        "    print('warned:', warning)\n"
        "warnings.simplefilter('ignore')\n"
        "from keras_vicreg import optimizers\n"
        "from keras_vicreg.model import VICReg\n"
        "assert optimizers.LARS is keras_vicreg.LARS and VICReg is keras_vicreg.VICReg\n"
        "assert keras_vicreg.augment.get_augmentation is keras_vicreg.transforms.get_augmentation\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "warned: keras_vicreg.optimizers moved to keras_vicreg.training.optimizers" in run.stdout


@pytest.mark.backend_neutral
def test_an_unknown_attribute_still_raises():
    import keras_vicreg

    with pytest.raises(AttributeError, match="no_such_thing"):
        keras_vicreg.no_such_thing  # noqa: B018
