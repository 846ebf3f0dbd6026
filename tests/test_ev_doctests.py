"""The runnable examples in the EV docstrings stay runnable."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["psrec.ev.hashtable", "psrec.ev.variable", "psrec.ev.bloom", "psrec.ev.config", "psrec.ev._memory",
           "psrec.embedding.local"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
