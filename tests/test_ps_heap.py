"""psrec/ps/heap.py: with the heap kept, message-sized buffers reuse pages already faulted in.

Counted in page faults, not timed: a fresh process allocates and frees five 4 MiB buffers at
a time (a pull+push's copies), and the minor faults of the later rounds are counted."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import resource, sys
from psrec.ps.heap import keep_freed_heap
if sys.argv[1] == "keep":
    assert keep_freed_heap() and keep_freed_heap()  # once, then a no-op
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_round():
    live = [b"x" * (4 << 20) for _ in range(5)]
    del live
for _ in range(3):
    one_round()
f0 = faults()
for _ in range(10):
    one_round()
print((faults() - f0) / 10)
"""


def _faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_heap_stops_the_page_faults_of_fresh_message_buffers():
    default, kept = _faults_per_round("default"), _faults_per_round("keep")
    assert default > 1000  # 20 MiB of fresh pages each round: ~5000 faults (the cost this avoids)
    assert kept < 50, (default, kept)
