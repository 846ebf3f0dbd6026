"""Parameter-server training: shards of embedding variables, clients, workers, runners.

    config      PSConfig: servers, workers, sync or async, dense placement, transport, network
    shard       `PSShard`: one server's EV tables (and dense slice), sync-step bookkeeping
    partition   key -> shard placement (hash, balanced), one file per strategy
    transport   the seam workers call shards through, and its in-process implementation
    ray_transport, channel, shm   PS actors on Ray; same-node pulls over a local socket
    grpc_server, grpc_transport, grpc_codec   the gRPC wire of proto/ps.proto (across nodes)
    wire        what a PS accepts from any transport, the refusals, the job token options
    heap        malloc kept warm for message-sized buffers (the gRPC server and transport)
    client      `PSClient`: the worker-side EmbeddingStore over the shards
    dense       where dense parameters live: the training step's dense hooks (on the PS, or
                all-reduced over `psrec.comm`: hybrid)
    worker      `PSWorker`: the one training step (`psrec.core.step`) over a client
    runner      `run_ps`: the plan, the in-process job, the one run skeleton
    ray_runner  the Ray job: PS and worker actors

Importing this package imports nothing heavy: Ray is only imported by the Ray transport
and runner modules.
"""
