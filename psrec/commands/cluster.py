"""`psrec cluster up|status|down`: a testbed of Ray nodes in network namespaces on this machine,
each behind a tc-shaped link (`psrec.cluster`)."""
from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("cluster", help="a multi-node Ray testbed on this machine, with shaped links (needs root)",
                       description=__doc__.splitlines()[0])
    verbs = p.add_subparsers(dest="verb", required=True)
    u = verbs.add_parser("up", help="make N namespaces, shape their links, start one Ray node in each")
    u.add_argument("--nodes", type=int, default=4, help="Ray nodes; the head is the first (default 4)")
    u.add_argument("--bandwidth", default="1Gbit", help="each node's link rate, both ways (default 1Gbit)")
    u.add_argument("--latency", default="", help="one-way delay between nodes, e.g. 200us (needs sch_netem)")
    u.add_argument("--cpus-per-node", type=float, default=2.0, help="logical CPUs each Ray node offers (default 2)")
    u.add_argument("--object-store-mb", type=int, default=256, help="each node's object store, MiB (default 256)")
    u.add_argument("--name", default="tb", help="testbed name (default tb)")
    u.add_argument("--subnet", type=int, default=0, help="third octet of 10.200.S.0/24 (default 0)")
    for verb, text in (("status", "the testbeds that are up, their nodes and link counters"),
                       ("down", "stop every process of the testbed and remove its namespaces and links")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("--name", default="" if verb == "status" else "tb", help="testbed name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psrec.cluster import TestbedConfig, TestbedError

    try:
        if args.verb == "up":
            try:
                cfg = TestbedConfig(nodes=args.nodes, bandwidth=args.bandwidth, latency=args.latency,
                                    cpus_per_node=args.cpus_per_node, object_store_mb=args.object_store_mb,
                                    name=args.name, subnet=args.subnet)
            except ValueError as e:
                print(f"psrec cluster up: {e}", file=sys.stderr)
                return 2
            return _up(cfg)
        if args.verb == "down":
            from psrec.cluster import down

            if not down(args.name):
                print(f"psrec cluster down: no testbed named {args.name} (see `psrec cluster status`)",
                      file=sys.stderr)
                return 1
            return 0
        return _status(args.name)
    except TestbedError as e:
        print(f"psrec cluster {args.verb}: {e}", file=sys.stderr)
        return 1


def _up(cfg) -> int:
    from psrec.cluster import up

    st = up(cfg)
    print(f"testbed {st.name}: {len(st.nodes)} Ray nodes up in {st.up_seconds:.1f} s, links {cfg.bandwidth}"
          + (f", {cfg.latency} delay" if st.latency_applied else ""))
    print(f"address: {st.address}")
    net = f' --net "latency={cfg.latency}"' if cfg.latency_s > 0 and not st.latency_applied else ""
    print(f"train on it: psrec train --mode ps --address {st.address}{net}")
    return 0


def _status(name: str) -> int:
    from psrec.cluster import all_states, interface_bytes
    from psrec.cluster.netns import netns_exists, netns_pids
    from psrec.report.table import format_table

    states = [s for s in all_states() if not name or s.name == name]
    if not states:
        print("no testbed is up" + (f" named {name}" if name else ""))
        return 1 if name else 0
    for st in states:
        cfg = st.cfg
        delay = cfg.latency if st.latency_applied else ("none (no sch_netem: add --net latency=" + cfg.latency + ")"
                                                        if cfg.latency else "none")
        print(f"testbed {st.name}: {'up' if st.complete else 'INCOMPLETE (run `psrec cluster down`)'}, "
              f"address {st.address or '-'}, {len(st.nodes)} nodes, {cfg.bandwidth} links, delay {delay}")
        rows = []
        for n in st.nodes:
            there = netns_exists(n.netns)
            tx, rx = interface_bytes(n.host_if) if there else (0, 0)
            rows.append({"node": n.index, "netns": n.netns, "ip": n.ip, "exists": there,
                         "processes": len(netns_pids(n.netns)), "tx_MB": tx / 1e6, "rx_MB": rx / 1e6})
        print(format_table(rows, ["node", "netns", "ip", "exists", "processes", "tx_MB", "rx_MB"]))
    return 0
