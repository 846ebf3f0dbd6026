"""Where a job's actors run across Ray nodes: `spread` them over the nodes (so that a worker's
pulls cross links to a PS on another node) or `pack` them onto as few nodes as fit.

Both are one Ray placement group (one bundle per actor, strategy SPREAD or PACK); an actor is
started into its bundle (`options(i)`). On a one-node cluster both mean that node, so no group
is made and Ray's default scheduling is kept (the single-node runs are unchanged).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PLACEMENTS", "ActorPlacement", "actor_nodes"]

PLACEMENTS = ("spread", "pack")


class ActorPlacement:
    """Bundles for `len(cpus)` actors under `strategy`; `options(i)` goes into actor i's `.options()`.

    Args:
        strategy: "spread" or "pack".
        cpus: Ray CPU request of each actor, in the order the caller will start them.
        timeout_s: how long to wait for Ray to reserve the bundles.
    """

    def __init__(self, strategy: str, cpus: Sequence[float], timeout_s: float = 60.0) -> None:
        import ray

        if strategy not in PLACEMENTS:
            raise ValueError(f"placement {strategy!r}: expected one of {PLACEMENTS}")
        self.strategy = strategy
        self.pg = None
        if sum(1 for n in ray.nodes() if n.get("Alive")) <= 1:
            return
        from ray.util.placement_group import placement_group, remove_placement_group

        pg = placement_group([{"CPU": float(c)} for c in cpus], strategy=strategy.upper())
        try:
            ray.get(pg.ready(), timeout=timeout_s)
        except Exception as e:
            remove_placement_group(pg)
            raise RuntimeError(f"Ray could not place {len(cpus)} actors ({sum(cpus):g} CPUs, {strategy}) in "
                               f"{timeout_s:.0f} s: {type(e).__name__}") from e
        self.pg = pg

    def options(self, i: int) -> dict[str, Any]:
        if self.pg is None:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)}

    def remove(self) -> None:
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.pg)
            self.pg = None


def actor_nodes(actors: Sequence[Any]) -> list[dict[str, str]]:
    """{"node_id", "ip"} of each Ray actor, read from the GCS actor table ('' where it does not say)."""
    from ray._private.state import state  # the public state API needs the dashboard

    out = []
    for a in actors:
        addr = (state.actor_table(a._actor_id.hex()) or {}).get("Address", {})
        out.append({"node_id": str(addr.get("NodeID", "")), "ip": str(addr.get("IPAddress", ""))})
    return out
