"""The driver's Prometheus export: counter/histogram/gauge types, monotonic counters fed from
cumulative snapshots, one endpoint shared by the runs of a compare, the endpoint serving until
results.json is written, and the Grafana dashboard naming only exported metrics."""
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from psrec.config import load_config
from psrec.metrics.prom import METRIC_NAMES, JobMetrics, free_port, serving

ROOT = Path(__file__).resolve().parents[1]


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_totals_are_counters_and_never_go_down():
    m = JobMetrics(-1, run_id="r", mode="ps-sync")
    m.worker(0, {"compute": 1.0, "pull": 0.5}, rows=10, sent=100, received=50, steps=2)
    m.worker(0, {"compute": 0.8, "pull": 0.7}, rows=20, sent=90, received=60, steps=4)  # compute moved away
    assert m.value("psrec_worker_phase_seconds_total", worker="0", phase="compute") == 1.0
    assert m.value("psrec_worker_phase_seconds_total", worker="0", phase="pull") == 0.7
    assert m.value("psrec_samples_total", worker="0") == 20
    assert m.value("psrec_bytes_total", worker="0", direction="sent", kind="worker") == 100
    types = families(m.scrape())
    assert types["psrec_worker_phase_seconds"] == "counter" and types["psrec_step_seconds"] == "histogram"
    assert types["psrec_samples"] == "counter" and types["psrec_bytes"] == "counter"
    m.shards([{"shard": 0, "bytes_out": 30, "bytes_in": 5, "requests": 3, "rows": {"t": 6}, "apply_seconds": 0.1,
               "pull_seconds": 0.2},
              {"shard": 1, "bytes_out": 10, "bytes_in": 5, "requests": 1, "rows": {"t": 2}, "apply_seconds": 0.1,
               "pull_seconds": 0.2}])
    types = families(m.scrape())
    assert types["psrec_ps_rows"] == "gauge" and types["psrec_ps_requests"] == "counter"
    assert m.value("psrec_ps_imbalance", what="rows") == pytest.approx(6 / 4)
    assert m.value("psrec_ps_imbalance", what="requests") == pytest.approx(3 / 2)


def test_step_histogram_counts_every_step_once():
    """Live polls observe new steps at their mean; the final report adds only the steps not seen."""
    m = JobMetrics(-1, run_id="r", mode="ps-async")
    m.worker(0, {"compute": 0.3}, rows=8, sent=0, received=0, steps=3)  # 3 steps of 0.1 s on average
    m.steps(0, [0.1, 0.1, 0.1, 2.0, 0.05])  # the run's five steps: two not yet observed
    assert m.value("psrec_step_seconds_count", worker="0") == 5
    assert m.value("psrec_step_seconds_sum", worker="0") == pytest.approx(2.35)
    assert m.value("psrec_step_seconds_bucket", worker="0", le="0.064") == 1  # the 0.05 s step
    assert m.value("psrec_step_seconds_bucket", worker="0", le="1.024") == 4


def test_one_endpoint_serves_every_run_of_a_compare():
    port = free_port()
    with serving(port) as ep:
        a = JobMetrics(0, run_id="c/ps-async", mode="ps-async")
        b = JobMetrics(0, run_id="c/collective", mode="collective")
        assert a.port == b.port == port
        a.worker(0, {"pull": 1.0}, rows=1, sent=1, received=1)
        b.worker(0, {"alltoall": 2.0}, rows=1, sent=1, received=1)
        a.close()  # a run ending leaves the shared endpoint up
        text = get(ep.url)
        b.close()
    assert 'mode="ps-async"' in text and 'mode="collective"' in text
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/metrics")


def test_run_serves_until_its_results_are_written(tmp_path, monkeypatch):
    """The endpoint answers when results.json is written (run.metrics_port fixes its port), and is closed after."""
    from psrec.core.result import RunResult
    from psrec.ps.runner import run_ps

    port = free_port()
    seen = {}
    write = RunResult.write

    def scrape_then_write(self, *a, **k):
        seen["text"] = get(f"http://127.0.0.1:{port}/metrics")
        return write(self, *a, **k)

    monkeypatch.setattr(RunResult, "write", scrape_then_write)
    cfg = load_config(None, ["data.train_rows=2048", "data.eval_rows=256", "data.batch_size=128",
                             "train.progress=false", "ps.transport=inprocess", "ps.workers=2", "ps.num_ps=2",
                             f"run.dir={tmp_path}", "run.save_model=false", f"run.metrics_port={port}"])
    res = run_ps(cfg)
    assert res.extra["metrics_port"] == port
    run_id = Path(res.path).name
    assert 'psrec_ps_requests_total{mode="ps-async",node=' in seen["text"] and f'run_id="{run_id}"' in seen["text"]
    assert 'psrec_samples_total{mode="ps-async"' in seen["text"]
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/metrics")


def test_metrics_address_is_validated_and_used():
    with pytest.raises(Exception, match="run.metrics_port"):
        load_config(None, ["run.metrics_port=70000"])
    m = JobMetrics(0, addr="127.0.0.1")
    try:
        assert m.url == f"http://127.0.0.1:{m.port}/metrics"
        assert "# TYPE psrec_worker_phase_seconds_total counter" in get(m.url)
    finally:
        m.close()


def dashboard_queries() -> list[str]:
    dash = json.loads((ROOT / "deploy" / "grafana" / "psrec.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_name_only_exported_metrics():
    exprs = dashboard_queries()
    assert len(exprs) >= 6
    for e in exprs:
        names = set(re.findall(r"\bpsrec_[a-z0-9_]+", e))
        assert names, f"query names no psrec metric: {e}"
        assert names <= set(METRIC_NAMES), f"{e}: unknown {sorted(names - set(METRIC_NAMES))}"
    text = " ".join(exprs)
    for needed in ("histogram_quantile(0.5", "histogram_quantile(0.95", "psrec_ps_imbalance", "psrec_queue_depth",
                   'kind="ps"', "psrec_straggler_seconds_total"):
        assert needed in text, needed


def test_the_dashboard_check_catches_a_wrong_name():
    assert not {"psrec_worker_allreduce_total_seconds"} <= set(METRIC_NAMES)  # the old, misordered name


def test_a_local_run_serves_live_worker_series_while_it_trains(tmp_path, monkeypatch):
    """Local mode feeds the same worker series as a Ray job's poll, during training (not only at the end)."""
    import psrec.core.local as local
    from psrec.core.report import WorkerReport

    port = free_port()
    seen = []
    add = WorkerReport.add

    def add_then_scrape(self, rec, loss):
        add(self, rec, loss)
        if len(self.steps) == 6:  # mid-run: the final summary has not been fed yet
            seen.append(get(f"http://127.0.0.1:{port}/metrics"))

    monkeypatch.setattr(WorkerReport, "add", add_then_scrape)
    monkeypatch.setattr(local, "METRICS_EVERY_S", 0.0)
    cfg = load_config(None, ["data.train_rows=1280", "data.eval_rows=256", "data.batch_size=128",
                             "train.progress=false", f"run.dir={tmp_path}", "run.save_model=false",
                             f"run.metrics_port={port}"])
    local.run_local(cfg)
    samples = [s for f in text_string_to_metric_families(seen[0]) if f.name == "psrec_samples"
               for s in f.samples if s.name == "psrec_samples_total"]
    assert samples and samples[0].labels["mode"] == "local" and samples[0].value == 5 * 128  # steps fed before the 6th
