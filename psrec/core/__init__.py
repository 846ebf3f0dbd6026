"""The training core every mode shares: the step, the run skeleton, the result, and the
helpers the PS and collective paths both need (so it sits below both).

    step      THE training step (`TrainStep`), its phase vocabulary and dense hook (`DenseUpdate`)
    report    a worker's step records and its summary: the one steady-state throughput rule
    result    `RunResult`, written as results.json (schema: docs/results.md)
    job       `run_job`, the run skeleton, and the `Job` seam a mode implements
    local     single-process training: the reference the distributed paths must match
    plan      the model, tables and EV configs every mode builds the same way
    ranges    training / held-out rows, rounds per epoch, each worker's rows per round, the epoch's row order
    flat      a model's dense parameters as one flat vector
    progress  the progress bar
"""
