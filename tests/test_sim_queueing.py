"""Exact MVA for the ps-async PS link (`psrec.sim.queueing`) and the sim modules' examples."""
import doctest
import importlib

import pytest

from psrec.sim.queueing import mva_cycle


def test_mva_two_stations_golden():
    """Stations 2 s and 1 s, delay 1 s, 2 jobs, by hand: n=1: R = (2, 1), cycle 4, X 1/4,
    Q = (1/2, 1/4); n=2: R = (2 * 3/2, 1 * 5/4) = (3, 1.25), cycle 5.25."""
    assert mva_cycle([2.0, 1.0], 1.0, 1) == pytest.approx(4.0)
    assert mva_cycle([2.0, 1.0], 1.0, 2) == pytest.approx(5.25)


def test_mva_between_its_bounds():
    """Never below the uncontended cycle or N * D_max (operational analysis), and it reaches
    N * D_max as N grows."""
    d, z = [0.03, 0.01], 0.06
    prev = 0.0
    for n in range(1, 40):
        c = mva_cycle(d, z, n)
        assert c >= max(z + sum(d), n * max(d)) - 1e-12 and c >= prev
        prev = c
    assert mva_cycle(d, z, 200) == pytest.approx(200 * 0.03, rel=0.02)


def test_mva_rejects_bad_input():
    with pytest.raises(ValueError, match="customers"):
        mva_cycle([1.0], 0.0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        mva_cycle([-1.0], 0.0, 1)


@pytest.mark.parametrize("name", ["psrec.sim.queueing", "psrec.sim.traffic", "psrec.sim.costs"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
