"""torch.compile in the training loop (`seqtune.compiling`): the compiled steps train the model eager steps train,
evaluation and saving use the eager module, CUDA graphs get their step marks and their limits refused by name."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from seqtune import compiling
from seqtune.cli import main
from seqtune.errors import SeqtuneError
from tests.test_errors import run_error, train_args


def test_unknown_mode_and_cuda_graphs_with_accumulation_are_refused(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--torch_compile_mode", "fastest"), out)
    assert "--torch_compile_mode 'fastest' is unknown: use one of default, reduce-overhead" in err
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--torch_compile_mode", "reduce-overhead",
                                       "--gradient_accumulation_steps", "2"), out)
    assert "wrong gradients with --gradient_accumulation_steps 2 (pytorch/pytorch#169545)" in err


def test_unknown_backend_a_mode_it_ignores_and_the_cudagraphs_backend_with_accumulation_are_refused(
        tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--torch_compile_backend", "fastest"), out)
    assert "--torch_compile_backend 'fastest' is unknown: use one of" in err and "inductor" in err
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--torch_compile_backend", "aot_eager",
                                       "--torch_compile_mode", "reduce-overhead"), out)
    assert "the aot_eager backend would ignore it" in err
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--torch_compile_backend", "cudagraphs",
                                       "--gradient_accumulation_steps", "4"), out)
    assert "--torch_compile_backend cudagraphs records CUDA graphs" in err and "accumulation_steps 4" in err


@pytest.mark.parametrize("flags", [{"torch_compile_mode": "reduce-overhead"}, {"torch_compile_mode": "max-autotune"},
                                   {"torch_compile_backend": "cudagraphs"}])
def test_cuda_graphs_refused_across_processes_and_on_rocm(flags, monkeypatch):
    args = SimpleNamespace(**{"torch_compile": False, "torch_compile_mode": None, "torch_compile_backend": None,
                              **flags})
    assert compiling.placement_problems(args, 1) == []
    assert "is for one process; with 2" in compiling.placement_problems(args, 2)[0]
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert "ROCm" in compiling.placement_problems(args, 1)[0]
    plain = SimpleNamespace(torch_compile=True, torch_compile_mode="default", torch_compile_backend=None)
    assert compiling.placement_problems(plain, 2) == []


def test_a_mode_or_backend_turns_compiling_on_and_shares_the_weights():
    model = torch.nn.Linear(2, 2)
    plain = SimpleNamespace(torch_compile=False, torch_compile_mode=None, torch_compile_backend=None)
    assert compiling.compile_for_training(model, plain) is model
    for args in (SimpleNamespace(torch_compile=True, torch_compile_mode=None, torch_compile_backend=None),
                 SimpleNamespace(torch_compile=False, torch_compile_mode="default", torch_compile_backend=None),
                 SimpleNamespace(torch_compile=False, torch_compile_mode=None, torch_compile_backend="eager")):
        stepped = compiling.compile_for_training(model, args)
        assert stepped is not model and stepped._orig_mod is model  # the same weights, the same module
    # a resume must compile the same way; plain --torch_compile records what checkpoints before the flags did
    assert compiling.compile_setting(plain) is None
    assert compiling.compile_setting(SimpleNamespace(torch_compile=True, torch_compile_mode="default",
                                                     torch_compile_backend=None)) is None
    assert compiling.compile_setting(SimpleNamespace(torch_compile=False, torch_compile_mode="reduce-overhead",
                                                     torch_compile_backend=None)) == "reduce-overhead/inductor"


def test_each_step_is_marked_before_its_forward_and_its_loss_kept_as_a_copy(tiny_model, pair_files, tmp_path,
                                                                           monkeypatch):
    """CUDA graphs need a GPU; what the loop owes them does not: a mark before each step's forward (else a replay
    may write over tensors still in use) and no graph output kept past its step (the loss is copied)."""
    import seqtune.loop
    import seqtune.train

    events, outputs, kept = [], [], []

    def stepped(model, args):  # the loop's model, watched: its forwards and the losses they return
        model.register_forward_pre_hook(lambda *a: events.append("forward"))
        model.register_forward_hook(lambda module, a, output: outputs.append(output.loss))
        return model

    add_micro = seqtune.loop.LossWindow.add_micro
    monkeypatch.setattr(seqtune.train, "uses_cuda_graphs", lambda args: True)
    monkeypatch.setattr(seqtune.train, "compile_for_training", stepped)
    monkeypatch.setattr(seqtune.loop, "mark_step_begin", lambda: events.append("mark"))
    monkeypatch.setattr(seqtune.loop.LossWindow, "add_micro",
                        lambda self, loss, batch: (kept.append(loss), add_micro(self, loss, batch)))
    out = str(tmp_path / "out")
    assert main(train_args(tiny_model, pair_files, out, "--max_steps", "5", "--per_device_train_batch_size", "8",
                           "--disable_tqdm", "--eval_strategy", "no")) == 0
    assert events[:10] == ["mark", "forward"] * 5 and events.count("mark") == 5
    assert len(kept) == 5 and all(k.data_ptr() != o.data_ptr() for k, o in zip(kept, outputs))


def test_compiled_training_trains_the_eager_model_with_loader_workers(no_dropout_model, pair_files, tmp_path,
                                                                     monkeypatch):
    """--torch_compile (inductor on this CPU) with two loader workers: the saved weights are those eager steps give
    (float32, no dropout), and evaluation ran on the eager module."""
    import seqtune.best_model

    evaluated, predict_logits = [], seqtune.best_model.predict_logits
    monkeypatch.setattr(seqtune.best_model, "predict_logits",
                        lambda model, *a, **k: (evaluated.append(model), predict_logits(model, *a, **k))[1])
    runs = {}
    for name, flags in (("eager", []), ("compiled", ["--torch_compile", "--dataloader_num_workers", "2"])):
        out = str(tmp_path / name)
        assert main(train_args(no_dropout_model, pair_files, out, "--max_steps", "4", "--per_device_train_batch_size",
                               "8", "--no_bf16", "--disable_tqdm", "--eval_strategy", "steps", "--eval_steps", "2",
                               *flags)) == 0
        runs[name] = (load_file(os.path.join(out, "model.safetensors")),
                      json.load(open(os.path.join(out, "all_results.json"))))
    (eager, eager_results), (compiled, compiled_results) = runs["eager"], runs["compiled"]
    start = load_file(os.path.join(no_dropout_model, "model.safetensors"))
    assert any(not torch.equal(eager[k], start[k.removeprefix("bert.")]) for k in eager
               if k.removeprefix("bert.") in start), "training changed no weight"
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    assert compiled_results["eval_loss"] == pytest.approx(eager_results["eval_loss"], rel=1e-4)
    assert json.load(open(tmp_path / "compiled" / "seqtune_args.json"))["training"]["torch_compile"] is True
    assert evaluated and not any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in evaluated)


def test_bench_compiles_the_default_strategy_when_asked(tiny_model, pair_files, tmp_path, monkeypatch):
    """`bench --strategies default --torch_compile_mode M` measures the compiled loop (it once measured eager)."""
    import seqtune.bench

    asked = []
    monkeypatch.setattr(seqtune.bench, "compile_for_training",
                        lambda model, args: asked.append(args.torch_compile_mode) or model)
    report_file = str(tmp_path / "bench.json")
    assert main(["bench", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--steps", "1",
                 "--warmup_steps", "1", "--strategies", "default,grouped", "--torch_compile_mode", "reduce-overhead",
                 "--output_file", report_file]) == 0
    assert asked == ["reduce-overhead", "reduce-overhead"]
    report = json.load(open(report_file))
    assert [r["torch_compile"] for r in report["results"]] == ["reduce-overhead/inductor"] * 2
    assert all(r["warmup_seconds"] > 0 for r in report["results"])


def test_a_sweep_reuses_a_compiled_cpu_run_recorded_without_the_fast_dropout(tmp_path, monkeypatch):
    """Compiled CPU steps record --fast_dropout as off (the value used): a sweep with the same flags still
    recognises the finished run and does not train it again."""
    from seqtune.config import DataArguments, ModelArguments, TrainingArguments
    from seqtune.sweep import _as_json, finished_results

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data_args, model_args = DataArguments(train_file="t.csv"), ModelArguments()
    args = TrainingArguments(output_dir=str(tmp_path), seed=3, torch_compile=True)
    recorded = TrainingArguments(output_dir=str(tmp_path), seed=3, torch_compile=True, fast_dropout=False,
                                 per_device_train_batch_size=32, learning_rate=1e-4, dataloader_num_workers=0)
    (tmp_path / "seqtune_args.json").write_text(json.dumps({
        "data": _as_json(vars(data_args)), "model": _as_json(vars(model_args)), "training": _as_json(vars(recorded))}))
    (tmp_path / "all_results.json").write_text(json.dumps({"eval_f1": 0.5}))
    assert finished_results(data_args, model_args, args) == {"eval_f1": 0.5}
    assert finished_results(data_args, model_args, TrainingArguments(output_dir=str(tmp_path), seed=3)) is None
