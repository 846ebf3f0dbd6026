"""`workqueue`: hand row-range tasks to workers dynamically so stragglers do not set the pace.

Layers, bottom up (nothing here imports `psrec`):

    tasks, config, stragglers   pure data and functions (numpy)
    policies, queue             the state machine: take / done / leases / checkpoint
    metrics                     Prometheus metrics + a results.json snapshot
    actor                       Ray: the queue actor, worker actors, bounded lifecycle
    longtail                    the static-vs-dynamic experiment and its Gantt charts
"""
from workqueue.config import PolicyName, WorkQueueConfig
from workqueue.policies import POLICIES, DynamicPolicy, Policy, StaticPolicy, StealingPolicy, make_policy
from workqueue.queue import QueueObserver, WorkQueueCore
from workqueue.stragglers import StragglerConfig, Stragglers, parse_factors
from workqueue.tasks import Task, contiguous_shares, epoch_order, num_tasks

__all__ = [
    "WorkQueueConfig", "PolicyName",
    "Task", "num_tasks", "epoch_order", "contiguous_shares",
    "Policy", "StaticPolicy", "DynamicPolicy", "StealingPolicy", "POLICIES", "make_policy",
    "WorkQueueCore", "QueueObserver",
    "StragglerConfig", "Stragglers", "parse_factors",
    "QueueMetrics",
    "WorkQueue", "WorkerGroup",
    "LongtailConfig", "run_longtail", "summarize",
]


def __getattr__(name: str):
    # Ray, prometheus_client and matplotlib load only when their layer is used: the core and
    # the straggler model stay importable (and fast to import) for the simulator and tests.
    if name == "QueueMetrics":
        from workqueue.metrics import QueueMetrics
        return QueueMetrics
    if name in ("WorkQueue", "WorkerGroup"):
        from workqueue import actor
        return getattr(actor, name)
    if name in ("LongtailConfig", "run_longtail", "summarize"):
        from workqueue import longtail
        return getattr(longtail, name)
    raise AttributeError(f"module 'workqueue' has no attribute {name!r}")
