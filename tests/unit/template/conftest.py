"""The real template, loaded and translated once per module, for the tests of template.yaml.

Modules of this folder that need another template (the worker service switched on, the beat
function alone) define their own ``sam`` or ``cfn``, which overrides these.
"""

from __future__ import annotations

import copy

import pytest

from devtools.cloud.template import load_template, translate
from tests.unit.template.rules import Template


@pytest.fixture(scope="module")
def sam() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def translated(sam: Template) -> Template:
    return translate(sam)


@pytest.fixture
def cfn(translated: Template) -> Template:
    """A copy of the translated template that a test may break."""
    return copy.deepcopy(translated)
