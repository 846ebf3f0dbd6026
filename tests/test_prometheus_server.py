"""A real Prometheus server scrapes a live PS run: PromQL over its HTTP API returns the PS
series while the job is still training. Skipped (with the reason) where no `prometheus`
binary is installed (Debian package `prometheus`; .ci/run installs it when it runs as root)."""
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from psrec.config import load_config
from psrec.metrics.prom import free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus server binary on PATH "
                                "(apt-get install prometheus; .ci/run does it as root)")
DEADLINE_S = 180.0  # for the server to be ready and for the series to show up; the run itself is ~15 s


def api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    return json.loads(urllib.request.urlopen(url, timeout=5).read().decode())


@pytest.fixture
def prometheus(tmp_path):
    """(server URL, the port it scrapes every second) for a Prometheus started here."""
    target, web = free_port(), free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n"
                   f"  - job_name: psrec\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n")
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web}"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                if urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield base, target
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_promql_returns_ps_series_while_the_run_trains(prometheus, tmp_path):
    from psrec.ps.runner import run_ps

    base, port = prometheus
    # workers slowed 20x (sleeping, not computing): a run long enough (~10-25 s) to be scraped mid-training
    # several times even when a loaded machine delays the 1 s scrapes and the PS stats poll
    cfg = load_config(None, ["data.train_rows=16384", "data.eval_rows=256", "data.batch_size=64",
                             "train.progress=false", "ps.transport=inprocess", "ps.workers=2", "ps.num_ps=2",
                             "stragglers.factors=0:20x,1:20x", f"run.dir={tmp_path / 'runs'}", "run.name=live",
                             "run.save_model=false", f"run.metrics_port={port}"])
    out: dict = {}
    run = threading.Thread(target=lambda: out.setdefault("res", run_ps(cfg)), daemon=True)
    run.start()
    query = 'sum by (ps) (psrec_ps_requests_total{mode="ps-async", run_id="live"})'
    found = None
    deadline = time.monotonic() + DEADLINE_S
    while run.is_alive() and time.monotonic() < deadline:
        r = api(base, "/api/v1/query", query=query)
        assert r["status"] == "success", r
        training = not (tmp_path / "runs" / "live" / "results.json").exists()
        if r["data"]["result"] and training and all(float(s["value"][1]) > 0 for s in r["data"]["result"]):
            found = r["data"]["result"]
            break
        time.sleep(0.5)
    rows = api(base, "/api/v1/query", query='psrec_ps_rows{run_id="live"}')["data"]["result"]
    run.join(DEADLINE_S)
    assert not run.is_alive(), "the run did not finish"
    print("PromQL", query, "->", json.dumps(found))
    assert found is not None, "no PS series were scraped while the run trained"
    assert sorted(s["metric"]["ps"] for s in found) == ["0", "1"]
    assert {s["metric"]["ps"] for s in rows} == {"0", "1"} and all(s["metric"]["node"] for s in rows)
    final = out["res"].extra["per_ps"]
    assert sum(float(s["value"][1]) for s in found) <= sum(p["requests"] for p in final)  # a mid-run count
