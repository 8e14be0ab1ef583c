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


def records_cuda_graphs(args) -> bool:
    """Whether the flags ask for CUDA graphs: a mode that records them, or torch's cudagraphs backend."""
    return compile_wanted(args) and (args.torch_compile_mode in CUDA_GRAPH_MODES
                                     or args.torch_compile_backend == "cudagraphs")


def uses_cuda_graphs(args) -> bool:
    """Whether the loop's model replays CUDA graphs (asked for, on a CUDA device)."""
    return records_cuda_graphs(args) and torch.cuda.is_available() and torch.version.hip is None


def _graphs_flag(args) -> str:
    mode = args.torch_compile_mode
    return f"--torch_compile_mode {mode}" if mode in CUDA_GRAPH_MODES else "--torch_compile_backend cudagraphs"


def compile_problems(args) -> list[str]:
    """The compile flags' problems that need no device: an unknown mode or backend, a mode the backend ignores,
    CUDA graphs with gradient accumulation."""
    mode, backend = args.torch_compile_mode, args.torch_compile_backend
    problems = []
    if mode is not None and mode not in COMPILE_MODES:
        problems.append(f"--torch_compile_mode '{mode}' is unknown: use one of {', '.join(COMPILE_MODES)}.")
    if backend is not None:
        import torch._dynamo  # (seconds to import: only when a backend is named)

        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            problems.append(f"--torch_compile_backend '{backend}' is unknown: use one of {', '.join(known)}.")
        elif mode not in (None, "default") and backend != "inductor":
            problems.append(f"--torch_compile_mode {mode} is inductor's; the {backend} backend would ignore it: "
                            "leave out one of the two.")
    accumulation = getattr(args, "gradient_accumulation_steps", 1)  # (bench has none)
    if records_cuda_graphs(args) and accumulation > 1:
        problems.append(f"{_graphs_flag(args)} records CUDA graphs, whose memory reuse gives wrong gradients with "
                        f"--gradient_accumulation_steps {accumulation} (pytorch/pytorch#169545): use "
                        "--torch_compile_mode default, or a larger batch without accumulation.")
    return problems


def placement_problems(args, num_processes: int) -> list[str]:
    """CUDA graphs where they are not safe: on ROCm, or across processes (checked once the processes are known,
    before anything is written)."""
    if not records_cuda_graphs(args):
        return []
    if torch.version.hip is not None:
        return [f"{_graphs_flag(args)}: CUDA graphs on ROCm train worse than without them (pytorch/pytorch#187715); "
                "use --torch_compile_mode default."]
    if num_processes > 1:
        return [f"{_graphs_flag(args)} (CUDA graphs) is for one process; with {num_processes} use "
                "--torch_compile_mode default."]
    return []


def compile_setting(args) -> str | None:
    """What a resumed run must compile the same way: None for eager steps and for the plain default (inductor,
    its default mode: what checkpoints written before these flags recorded), else mode/backend."""
    mode, backend = args.torch_compile_mode or "default", args.torch_compile_backend or "inductor"
    return None if (mode, backend) == ("default", "inductor") else f"{mode}/{backend}"


def resolve_fast_dropout(args, on_cpu: bool) -> bool:
    """Compiled steps on a CPU keep torch's dropout (inductor fuses it; the fast dropout's in-place draw would break
    the graph): set `args.fast_dropout` off, in place, so that seqtune_args.json and a sweep's reuse see the value
    used. Returns whether it was turned off."""
    if args.fast_dropout and on_cpu and compile_wanted(args):
        args.fast_dropout = False
        return True
    return False


def compile_for_training(model, args):
    """The model the loop steps: `model` itself, or compiled as asked (it shares `model`'s weights). The flags
    were checked by `compile_problems` and `placement_problems`."""
    if not compile_wanted(args):
        return model
    logger.info("torch.compile: mode %s, backend %s (the first steps of each batch shape compile%s)",
                args.torch_compile_mode or "default", args.torch_compile_backend or "inductor",
                ", then record a CUDA graph" if uses_cuda_graphs(args) else "")
    return torch.compile(model, mode=args.torch_compile_mode, backend=args.torch_compile_backend or "inductor")


def mark_step_begin() -> None:
    """Tell torch's CUDA-graph trees that a step begins: the last step's outputs may be written over."""
    torch.compiler.cudagraph_mark_step_begin()
