"""What the training script's implementation adds to a GPU step on top of the ideal kernels:
extra HBM passes over the pooled embeddings, the dot interaction's padded batched GEMMs, the
host's kernel dispatch, and the copy of each batch to the device. Pure functions returning
`FrameworkCost`; the `Implementation` presets say which of them a script pays.

`psrec.sim.placement` prices the kernels a well-built job needs: the lookup reads its rows, the
optimizer updates the distinct rows, the MLP runs at `mlp_efficiency` of peak. A script built
from eager framework ops pays more, and how much is a property of its code, not of the GPU:

    pooled traffic  = (passes * activation_bytes + grad_passes * GRAD_BYTES) * B * P * D / B_hbm
        every op that reads or writes the B x P x D pooled vectors or their gradient (the
        lookup's output, concatenations, copies of gradient slices) is a pass in the step's
        activation precision; every pass over the sparse gradient's values (its clones, the
        optimizer's scaling, the scatter into the table) is one in the tables' fp32.
    interaction     = 3 * 2 * B * pad(n)^2 * D / (peak * mlp_efficiency)
        the dot interaction of n vectors of width D is a batched (n x D)(D x n) product forward
        and two of the same size backward; a batched GEMM computes whole tiles, so n is padded
        up to the kernel's tile (`pad(n) = ceil(n / tile) * tile`: tile quantization, NVIDIA
        "Matrix Multiplication Background User's Guide", sec. 3.1). tile 0 = no padding.
    dispatch        = kernels * dispatch_seconds        (host time to launch the step's ops)
    input           = B * input_bytes / (host_bandwidth * (1 if pinned else PAGEABLE_SHARE))
                      + host_passes * B * input_bytes / HOST_COPY_BANDWIDTH
        the copy to the device, and the host's own copies of the batch before it (reading it
        from the file into a buffer, making a strided slice contiguous) when the script does
        them in the timed loop.

The step. One host thread launches the kernels and copies the input. A script that reads its
batch at the top of the step after a blocking host read at the end of the last one
(`sync_per_step` and not `prefetch_input`, e.g. `loss.item()` then `next(loader)`) leaves the GPU
idle during the input: T = input + max(gpu, dispatch). A script that prepares the next batch
while the GPU runs this one overlaps the host's work with the GPU's: T = max(gpu, dispatch + input).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PAGEABLE_SHARE", "GRAD_BYTES", "HOST_COPY_BANDWIDTH", "Implementation", "IMPLEMENTATIONS",
           "get_implementation", "FrameworkCost", "pooled_traffic_time", "padded_interaction_flops", "dispatch_time",
           "input_copy_time", "host_step", "framework_cost"]

# The CUDA driver copies a pageable host buffer through a pinned staging buffer: half the pinned
# bandwidth is an assumption, not a measurement.
PAGEABLE_SHARE = 0.5
GRAD_BYTES = 4  # a sparse embedding gradient's value: the tables' fp32
# One CPU core's memcpy of a few MB (a data loader with no worker processes copies on the main
# thread): ~5 GB/s, an assumption of the order of single-threaded DRAM copy bandwidth.
HOST_COPY_BANDWIDTH = 5e9


@dataclass(frozen=True)
class Implementation:
    """How a training script runs the embedding, interaction and input path of one step.

    Args:
        name: registry key (`gpu.implementation`).
        pooled_passes: HBM passes over the B x P x D pooled vectors and their gradient beyond the
            lookup's row reads (each of `gpu.activation_bytes` bytes a value).
        grad_passes: HBM passes over the sparse gradient's B x P x D fp32 values.
        interaction_tile: tile the dot interaction's batched GEMM pads its n vectors to (0 = none).
        kernels_per_table, kernels_per_step: kernels launched a step, per embedding table and the rest.
        dispatch_seconds: host seconds to launch one op (framework dispatch + CUDA launch).
        sync_per_step: the step ends in a blocking device-to-host read.
        copies_input: the batch's copy to the device is priced (`ideal`: not).
        host_passes: copies of the batch the host makes before sending it (at HOST_COPY_BANDWIDTH).
        prefetch_input, pinned_input: the next batch is copied on a side stream during this step;
            from page-locked host memory.
        source: where the counts come from.
    """

    name: str
    pooled_passes: float = 0.0
    grad_passes: float = 0.0
    interaction_tile: int = 0
    kernels_per_table: int = 0
    kernels_per_step: int = 0
    dispatch_seconds: float = 0.0
    sync_per_step: bool = False
    copies_input: bool = True
    host_passes: float = 0.0
    prefetch_input: bool = True
    pinned_input: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        counts = (self.pooled_passes, self.grad_passes, self.host_passes, self.interaction_tile, self.kernels_per_table,
                  self.kernels_per_step)
        if min(counts) < 0 or not (self.dispatch_seconds >= 0 and math.isfinite(self.dispatch_seconds)):
            raise ValueError(f"implementation {self.name!r}: counts, tile and dispatch_seconds must be >= 0")


# ~10 us per launched op: "CUDA API call overhead adds on the order of 10 us per kernel launch.
# Moreover, frameworks like PyTorch or TensorFlow spend time deciding which kernel to launch"
# (Modal GPU glossary, "What is overhead?"). An order of magnitude: the assumption for eager ops.
_EAGER_DISPATCH = 10e-6

IMPLEMENTATIONS: dict[str, Implementation] = {i.name: i for i in (
    # The kernels placement.py prices and nothing else: the simulator's model before this file.
    Implementation("ideal", copies_input=False, source="psrec.sim.placement's kernels only"),
    # NVIDIA DeepLearningExamples DLRM PyTorch, July 2020 (commit 36f3b1b6, dlrm/scripts/main.py,
    # dlrm/nn/embeddings.py, dlrm/cuda_ext): one fused gather kernel for all tables writes the
    # pooled vectors (1 pass), the fused dot-interaction kernel reads them forward (1) and
    # backward (1) and writes their gradient (1), the fused gather backward reads it (1): 5
    # passes; it writes an uncoalesced sparse COO gradient in fp32 (1, cuda_src/
    # gather_gpu_fused_pytorch_impl.cu), which torch.optim.SGD's dense.add_(sparse) scales by
    # -lr (read 1, write 1) and index_add_s into the table (read 1): 4 gradient passes. Its WMMA
    # interaction kernel pads n to 16-wide fragments. The next batch is read from the
    # per-feature files by a background thread (data.datasets.SplitCriteoDataset, prefetch depth
    # 10) and copied to the device from pageable memory on a side stream (data.utils.prefetcher)
    # while the GPU runs this step; torch.cuda.synchronize() at the top of each step. ~150
    # kernels a step (apex fused MLP, the fused embedding, the interaction, apex O2 + SGD): an
    # estimate, not a count.
    Implementation("fused", pooled_passes=5, grad_passes=4, interaction_tile=16, kernels_per_step=150,
                   dispatch_seconds=_EAGER_DISPATCH, sync_per_step=True, prefetch_input=True, pinned_input=False,
                   source="DeepLearningExamples DLRM PyTorch 2020-07 (36f3b1b6): fused gather + cuda_dot + prefetcher"),
    # The same repository's first release, April 2020 (commit 23a6382c, dlrm/model.py and
    # dlrm/scripts/main.py), read op by op with the semantics of the PyTorch of its Dockerfile's
    # base image (NGC pytorch:20.03; ATen's add_out_dense_sparse_cuda of that era: an
    # uncoalesced gradient is scaled with values.mul and scattered with index_add_). Per table:
    # nn.Embedding(sparse=True) forward writes its (B, D) output (1); torch.cat of the 27
    # vectors reads it (1) and writes it (1); backward: torch.bmm's two gradients of the
    # concatenation (2) are summed (read 2, write 1): 8 passes, counted at fp32 (if the
    # concatenation takes the bottom MLP's fp16, its write and these gradients move half);
    # embedding_sparse_backward reshapes its non-contiguous slice of that gradient into the
    # sparse gradient's values (read 1, write 1); AccumulateGrad adds them to the zeroed sparse
    # grad, a copy (2); SGD's dense.add_(sparse) multiplies the uncoalesced values by -lr (2)
    # and index_add_ reads them (1): 7 gradient passes, fp32. Kernels per table:
    # index_select, the reshape copy, 2 for the grad accumulation, flatten_indices, mul,
    # index_add_ (~7, rounded to 8 with the index slice). The rest (~120): 8 Linear layers
    # with ReLU forward and backward, bmm, advanced indexing and its index_put_ backward, cats,
    # the jit-traced loss, apex O2's master-weight copies and 16 SGD updates. torch.bmm goes to
    # cuBLAS's batched GEMMs; that they compute the 27 x 27 products in 64-wide tiles is an
    # assumption (the guide's sec. 2.3, "Typical Tile Dimensions in cuBLAS", is about how cuBLAS
    # picks tiles; which one it picked here is not known).
    # Input: CriteoBinDataset.__getitem__ (file.read of the batch: 1 host copy) under
    # DataLoader(num_workers=0, pin_memory=False) in the timed loop; `.to(device)` of the
    # strided column slices makes them contiguous first (1 more); loss.item() every step.
    Implementation("eager-per-table", pooled_passes=8, grad_passes=7, interaction_tile=64, kernels_per_table=8,
                   kernels_per_step=120, dispatch_seconds=_EAGER_DISPATCH, sync_per_step=True,
                   host_passes=2, prefetch_input=False, pinned_input=False,
                   source="DeepLearningExamples DLRM PyTorch 2020-04 (23a6382c), read op by op"),
)}


def get_implementation(name: str) -> Implementation:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"gpu.implementation: unknown {name!r}; known: {', '.join(sorted(IMPLEMENTATIONS))}")
    return IMPLEMENTATIONS[name]


@dataclass(frozen=True)
class FrameworkCost:
    """Seconds the implementation adds to one GPU's step (module doc).

    Args:
        pooled: HBM passes over the pooled vectors (GPU time).
        interaction: the dot interaction's batched GEMMs, forward + backward (GPU time).
        dispatch: host time launching the step's kernels.
        input: host-to-device copy of the batch.
    """

    pooled: float = 0.0
    interaction: float = 0.0
    dispatch: float = 0.0
    input: float = 0.0

    @property
    def gpu(self) -> float:
        return self.pooled + self.interaction


def pooled_traffic_time(batch: int, pooled_values: float, passes: float, hbm_bandwidth: float,
                        activation_bytes: int = 4) -> float:
    """Seconds of `passes` HBM passes over a batch's pooled vectors, `pooled_values` (P D summed
    over the tables) values a sample: passes B P D bytes / B_hbm.

    >>> round(pooled_traffic_time(1000, 2 * 16, 3, 1e12) * 1e9, 6)   # 3 * 1000 * 2 * 16 * 4 B / 1 TB/s
    384.0
    """
    if batch < 0 or pooled_values < 0 or passes < 0 or not hbm_bandwidth > 0 or activation_bytes < 1:
        raise ValueError("batch, pooled_values, passes must be >= 0, hbm_bandwidth > 0, activation_bytes >= 1")
    return passes * batch * pooled_values * activation_bytes / hbm_bandwidth


def padded_interaction_flops(vectors: int, dim: int, tile: int = 0) -> float:
    """FLOPs per sample of the dot interaction of `vectors` vectors of width `dim`, forward (one
    (n x D)(D x n) product) and backward (two): 3 * 2 * pad(n)^2 * D.

    >>> padded_interaction_flops(27, 128), padded_interaction_flops(27, 128, 64)
    (559872.0, 3145728.0)
    """
    if vectors < 0 or dim < 0 or tile < 0:
        raise ValueError("vectors, dim and tile must be >= 0")
    n = math.ceil(vectors / tile) * tile if tile else vectors
    return 3 * 2.0 * n * n * dim


def dispatch_time(kernels: int, dispatch_seconds: float) -> float:
    """Host seconds to launch `kernels` ops.

    >>> round(dispatch_time(350, 1e-5), 9)
    0.0035
    """
    if kernels < 0 or dispatch_seconds < 0:
        raise ValueError("kernels and dispatch_seconds must be >= 0")
    return kernels * dispatch_seconds


def input_copy_time(batch: int, bytes_per_sample: float, host_bandwidth: float, pinned: bool = True) -> float:
    """Seconds to copy one batch to the device: B * bytes / bandwidth, at PAGEABLE_SHARE of it
    from pageable memory.

    >>> round(input_copy_time(32768, 160, 12e9, pinned=False) * 1e3, 6)   # 5.24 MB at 6 GB/s
    0.873813
    """
    if batch < 0 or bytes_per_sample < 0 or not host_bandwidth > 0:
        raise ValueError("batch and bytes_per_sample must be >= 0, host_bandwidth > 0")
    return batch * bytes_per_sample / (host_bandwidth * (1.0 if pinned else PAGEABLE_SHARE))


def host_step(gpu: float, cost: FrameworkCost, impl: Implementation) -> float:
    """Step seconds from the GPU's busy time and the host's work (module doc):
    input + max(gpu, dispatch) when the input waits for a per-step sync, else
    max(gpu, dispatch + input).

    >>> i = Implementation("x", sync_per_step=True, prefetch_input=False)
    >>> host_step(0.010, FrameworkCost(dispatch=0.004, input=0.001), i)
    0.011
    >>> host_step(0.010, FrameworkCost(dispatch=0.004, input=0.001), Implementation("y", sync_per_step=True))
    0.01
    >>> round(host_step(0.010, FrameworkCost(dispatch=0.012, input=0.001), Implementation("z")), 9)
    0.013
    """
    if impl.sync_per_step and not impl.prefetch_input:
        return cost.input + max(gpu, cost.dispatch)
    return max(gpu, cost.dispatch + cost.input)


def framework_cost(impl: Implementation, *, batch: int, tables: int, pooled_values: float, dim: int,
                   interaction_vectors: int, input_bytes_per_sample: float, activation_bytes: int,
                   hbm_bandwidth: float, host_bandwidth: float, matmul_flops: float) -> FrameworkCost:
    """What `impl` adds to one GPU's step of `batch` samples with `tables` embedding tables whose
    pooled vectors hold `pooled_values` values a sample (module doc). `dim`: the interaction's
    vector width; `matmul_flops`: achieved FLOP/s of its batched GEMM (peak * mlp_efficiency);
    `interaction_vectors` 0 = no dot interaction. The interaction's unpadded product is part of
    `gpu.flops_per_sample`: only its padding is added here.

    >>> e = get_implementation("eager-per-table")
    >>> c = framework_cost(e, batch=1000, tables=2, pooled_values=2 * 16, dim=16, interaction_vectors=3,
    ...                    input_bytes_per_sample=12, activation_bytes=4, hbm_bandwidth=1e12, host_bandwidth=1e10,
    ...                    matmul_flops=1e12)
    >>> round(c.pooled * 1e9, 3), round(c.interaction * 1e9, 3), round(c.dispatch * 1e6, 3), round(c.input * 1e9, 3)
    (1920.0, 392352.0, 1360.0, 7200.0)
    """
    pooled_s = (pooled_traffic_time(batch, pooled_values, impl.pooled_passes, hbm_bandwidth, activation_bytes)
                + pooled_traffic_time(batch, pooled_values, impl.grad_passes, hbm_bandwidth, GRAD_BYTES))
    inter = 0.0
    if interaction_vectors and impl.interaction_tile:  # the unpadded product is in gpu.flops_per_sample
        extra = (padded_interaction_flops(interaction_vectors, dim, impl.interaction_tile)
                 - padded_interaction_flops(interaction_vectors, dim))
        inter = batch * extra / matmul_flops
    kernels = impl.kernels_per_table * tables + impl.kernels_per_step
    copy = 0.0
    if impl.copies_input:
        copy = (input_copy_time(batch, input_bytes_per_sample, host_bandwidth, impl.pinned_input)
                + impl.host_passes * batch * input_bytes_per_sample / HOST_COPY_BANDWIDTH)
    return FrameworkCost(pooled=pooled_s, interaction=inter, dispatch=dispatch_time(kernels, impl.dispatch_seconds),
                         input=copy)
