"""docs/metrics.md stays true: its table names exactly the metric families psrec exports."""
import re
from pathlib import Path

from psrec.metrics.prom import METRIC_NAMES

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _family(sample: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", sample)


def test_the_metrics_table_names_exactly_the_exported_metrics():
    rows = re.findall(r"^\| `(psrec_\w+)` \| (counter|gauge|histogram) \|", DOC.read_text(), re.M)
    documented = {name: kind for name, kind in rows}
    exported = {_family(s) for s in METRIC_NAMES}
    assert set(documented) == exported, (set(documented) ^ exported)
    for name, kind in documented.items():  # counters end in _total; nothing else does
        assert name.endswith("_total") == (kind == "counter"), name
