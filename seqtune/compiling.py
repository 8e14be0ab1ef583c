"""torch.compile for the training loop: `--torch_compile`, `--torch_compile_mode`, `--torch_compile_backend`
(transformers' flags; giving a mode or a backend turns compiling on, as there).

Only the loop's steps run the compiled model. Evaluation, checkpoints and the saved model use the eager module,
whose weights the compiled one shares: evaluation's batch shapes would only add graphs to compile.

A mode with CUDA graphs ("reduce-overhead", "max-autotune") replays each batch shape's recorded kernels with one
launch: what a host-bound GPU loop needs (a bert-base step on an H100 issues 869 kernels, BENCHMARKS.md section
15). torch's CUDA-graph trees keep each replay's outputs in one memory pool, which sets the limits enforced here:
- no gradient accumulation: the first micro-batch's gradient memory is handed to the next replay and the gradients
  come out silently wrong (pytorch/pytorch#169545 and #96693);
- CUDA only, one process: on ROCm the same trees train worse (pytorch/pytorch#187715), and with several processes
  it is not tested here;
- the loop marks the start of each step (`torch.compiler.cudagraph_mark_step_begin`), and keeps nothing the graph
  returned beyond its step but copies.
A compiled run killed and resumed continues close to, not bit for bit equal to, the uninterrupted run (CPU, tiny
BERT: weights within 2e-6; a resumed run compiles its kernels anew and they round differently).
"""

from __future__ import annotations

import logging

import torch

from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_wanted(args) -> bool:
    return bool(args.torch_compile or args.torch_compile_mode or args.torch_compile_backend)


def uses_cuda_graphs(args) -> bool:
    """Whether the loop's model replays CUDA graphs (a mode that records them, on a CUDA device)."""
    return (compile_wanted(args) and args.torch_compile_mode in CUDA_GRAPH_MODES and torch.cuda.is_available()
            and torch.version.hip is None)


def compile_problems(args) -> list[str]:
    """The compile flags' problems that need no device: an unknown mode, CUDA graphs with accumulation."""
    mode = args.torch_compile_mode
    if mode is not None and mode not in COMPILE_MODES:
        return [f"--torch_compile_mode '{mode}' is unknown: use one of {', '.join(COMPILE_MODES)}."]
    accumulation = getattr(args, "gradient_accumulation_steps", 1)  # (bench has none)
    if compile_wanted(args) and mode in CUDA_GRAPH_MODES and accumulation > 1:
        return [f"--torch_compile_mode {mode} records CUDA graphs, whose memory reuse gives wrong gradients with "
                f"--gradient_accumulation_steps {accumulation} (pytorch/pytorch#169545): use "
                "--torch_compile_mode default, or a larger batch without accumulation."]
    return []


def compile_for_training(model, args, num_processes: int):
    """The model the loop steps: `model` itself, or compiled as asked (it shares `model`'s weights)."""
    if not compile_wanted(args):
        return model
    mode = args.torch_compile_mode
    if mode in CUDA_GRAPH_MODES and torch.version.hip is not None:
        raise SeqtuneError(f"--torch_compile_mode {mode}: CUDA graphs on ROCm train worse than without them "
                           "(pytorch/pytorch#187715); use --torch_compile_mode default.")
    if mode in CUDA_GRAPH_MODES and num_processes > 1:
        raise SeqtuneError(f"--torch_compile_mode {mode} (CUDA graphs) is for one process; with {num_processes} "
                           "use --torch_compile_mode default.")
    logger.info("torch.compile: mode %s, backend %s (the first steps of each batch shape compile%s)",
                mode or "default", args.torch_compile_backend or "inductor",
                ", then record a CUDA graph" if uses_cuda_graphs(args) else "")
    return torch.compile(model, mode=mode, backend=args.torch_compile_backend or "inductor")


def mark_step_begin() -> None:
    """Tell torch's CUDA-graph trees that a step begins: the last step's outputs may be written over."""
    torch.compiler.cudagraph_mark_step_begin()
