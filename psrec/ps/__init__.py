"""Parameter-server training: shards of embedding variables, clients, workers, runners.

Importing this package imports nothing heavy: Ray is only imported by the Ray transport
and runner modules.
"""
