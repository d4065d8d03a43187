"""The installed Keras and PyTorch meet setup.cfg's security floors, which name their advisories."""

import configparser
import importlib.metadata
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def floors():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    requirements = parser["options"]["install_requires"] + parser["options.extras_require"]["torch"]
    return dict(re.findall(r"^\s*(keras|torch)>=([\d.]+)\s*$", requirements, re.M))


def version_tuple(text):
    return tuple(int(part) for part in re.match(r"[\d.]+", text).group(0).strip(".").split("."))


@pytest.mark.backend_neutral
def test_setup_cfg_floors_are_past_the_known_guard_bypasses():
    found = floors()
    assert version_tuple(found["keras"]) >= (3, 14, 0)  # CVE-2026-1462, CVE-2026-0897
    assert version_tuple(found["torch"]) >= (2, 10)  # CVE-2025-32434, CVE-2026-24747
    text = open(os.path.join(ROOT, "setup.cfg")).read()
    for advisory in ("CVE-2026-1462", "CVE-2025-32434", "CVE-2026-24747"):
        assert advisory in text


@pytest.mark.backend_neutral
@pytest.mark.parametrize("package", ["keras", "torch"])
def test_the_installed_version_meets_the_floor(package):
    installed = importlib.metadata.version(package)
    assert version_tuple(installed) >= version_tuple(floors()[package]), installed
