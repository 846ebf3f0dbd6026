"""Cross-node: sync PS (Ray and gRPC transports) and collective training on a real two-node
Ray cluster (Ray's own multi-node test cluster, no root needed) equal local training after K
steps, with the actors spread over both nodes (tests/multinode_job.py, in its own process)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def multinode():
    pytest.importorskip("ray.cluster_utils")
    r = subprocess.run([sys.executable, str(HERE / "multinode_job.py")], capture_output=True, text=True, timeout=600,
                       cwd=HERE.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _node_ids(actors):
    return [a["node_id"] for a in actors]


def test_two_nodes_and_spread_placement(multinode):
    assert multinode["nodes"] == 2
    for job in ("ps_ray", "ps_grpc"):
        rec = multinode[job]
        assert rec["placement"] == "spread"
        assert len(set(_node_ids(rec["workers"]))) == 2, rec  # one worker per node
    assert len(set(_node_ids(multinode["ps_ray"]["ps"]))) == 2  # 2 PS: one per node
    grpc = multinode["ps_grpc"]  # 1 PS: one of the workers pulls across the nodes
    assert any(w != grpc["ps"][0]["node_id"] for w in _node_ids(grpc["workers"]))
    assert len(set(_node_ids(multinode["collective"]["workers"]))) == 2  # ranks on different nodes


def test_spread_and_pack_place_actors_apart_and_together(multinode):
    spread, pack = multinode["placements"]["spread"], multinode["placements"]["pack"]
    assert len(set(spread)) == 2 and len(set(pack)) == 1 and all(spread + pack)


def test_sync_ps_routes_cross_the_nodes(multinode):
    """Equality with local was asserted in the child; here: the pulls really crossed nodes.
    Ray transport (2 PS): the same-node channel to the local PS, Ray actor calls to the other
    node's; gRPC transport (1 PS): gRPC from both workers."""
    rec = multinode["ps_ray"]
    ps_nodes = _node_ids(rec["ps"])
    for w_node, routes in zip(_node_ids(rec["workers"]), rec["routes"]):
        assert routes == ["channel" if p == w_node else "ray" for p in ps_nodes]
        assert "ray" in routes
    assert multinode["ps_grpc"]["routes"] == [["grpc"], ["grpc"]]
