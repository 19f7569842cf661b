"""
Peak memory per process of one ILA training step under DDP and under FSDP2, on 2 CPU processes (gloo), launched
with the configuration files the docs show (results in RESULTS_distributed.md):

    accelerate launch --config_file examples/accelerate/ddp.yaml benchmarks/bench_distributed_memory.py
    accelerate launch --config_file examples/accelerate/fsdp2.yaml benchmarks/bench_distributed_memory.py

The model is ILA at a real size with random weights (default B/32, SSv2 recipe, 8 frames of 224 pixels) and a
trainable backbone: the case where the weights, their gradients and AdamW's two states dominate, which FSDP shards.
After a first step (which creates AdamW's states), the second step is measured the way `ila-hf benchmark` measures
CPU memory: the resident tensors (this process's weights and optimizer states, i.e. its shards under FSDP2) plus the
peak of the tensor bytes allocated during the step (gradients, activations, FSDP's gathered weights), from the torch
profiler's allocation events. The process's peak RSS (`getrusage`) is reported too; it also counts the C allocator's
cache and the libraries. Each process prints one JSON line.
"""

import argparse
import json
import resource

import torch
from accelerate import Accelerator
from torch.distributed.tensor import DTensor

from ila_hf.benchmark import SIZES, _profiler_allocation_peak, build_model, tensor_bytes
from ila_hf.training import TrainingConfig, build_optimizer
from tests.helpers import enable_fsdp_on_cpu  # accelerate runs FSDP on CPU processes only with this (see there)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: its shard of an FSDP2 parameter or state, all of a replicated one."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ila-ssv2", choices=["ila", "ila-ssv2"])
    parser.add_argument("--size", default="B/32", choices=[name for name in SIZES if name != "tiny"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=1, help="per process")
    options = parser.parse_args()

    enable_fsdp_on_cpu()
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = build_model(options.model, SIZES[options.size], options.frames, options.image_size).train()
    model.ila.freeze_clip_backbone(False)
    optimizer = build_optimizer(model, TrainingConfig(train_data="unused", clip_model="unused", freeze_backbone=False))
    model, optimizer = accelerator.prepare(model, optimizer)
    pixel_values = torch.randn(options.batch_size, options.frames, 3, options.image_size, options.image_size)
    labels = torch.zeros(options.batch_size, dtype=torch.long)

    def step():
        accelerator.backward(model(pixel_values=pixel_values, labels=labels).loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates AdamW's states
    weights = tensor_bytes(local(parameter) for parameter in model.parameters())
    weights += tensor_bytes(model.buffers())
    states = tensor_bytes(local(value) for state in optimizer.state.values() for value in state.values())
    step_peak = _profiler_allocation_peak(step)
    result = {
        "distributed_type": str(accelerator.distributed_type),
        "process": accelerator.process_index,
        "processes": accelerator.num_processes,
        "model": f"{options.model} {options.size}, {options.frames}x{options.image_size}, batch {options.batch_size}",
        "parameters_M": round(sum(parameter.numel() for parameter in model.parameters()) / 1e6, 1),
        "resident_weights_MiB": round(weights / 2**20),
        "resident_optimizer_states_MiB": round(states / 2**20),
        "step_allocation_peak_MiB": round(step_peak / 2**20),
        "peak_tensor_MiB": round((weights + states + step_peak) / 2**20),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
