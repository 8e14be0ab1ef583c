"""`seqtune export`: a fine-tuned classifier to ONNX (torch's exporter, `torch.onnx.export(dynamo=True)`), checked
against the torch model, optionally quantized to int8 (onnxruntime's dynamic quantization); and the ONNX Runtime
model that predict, evaluate and serve run with `--backend onnx`.

Why not optimum: optimum-onnx (0.1.0, the current release) pins transformers < 4.58 and seqtune is on
transformers 5; torch's own exporter and onnxruntime's quantizer are what optimum calls underneath."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from seqtune.errors import SeqtuneError
from seqtune.fileio import STALE_SECONDS, disk_error, untouched_for

logger = logging.getLogger("seqtune")

ONNX_FILE = "model.onnx"
# fp32 logits of the export against torch's on a sample batch; larger means the export is wrong
EXPORT_TOLERANCE = 1e-4


@dataclass
class ExportArguments:
    """Where the ONNX model goes and how it is made."""

    output_dir: str | None = field(default=None, metadata={"help": "Folder for model.onnx, the config and the "
                                                                   "tokenizer (required)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Write into a non-empty --output_dir."})
    quantize: bool = field(default=False, metadata={
        "help": "Quantize the weights of linear layers to int8 (onnxruntime dynamic quantization): a smaller, "
                "faster model on CPUs, at a small accuracy cost (BENCHMARKS.md)."})
    opset: int = field(default=18, metadata={"help": "ONNX opset version."})
    debug: bool = field(default=False, metadata={"help": "Show full tracebacks for errors."})


def is_onnx_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ONNX_FILE))


class OnnxClassifier:
    """An ONNX Runtime session that seqtune's inference code calls like a transformers classifier (tensors in,
    `.logits` out). Hand-written: optimum's ORTModelForSequenceClassification is the library version of this, and
    optimum-onnx cannot be installed beside transformers 5 (see the module's note)."""

    training = False

    def __init__(self, path: str, config, threads: int | None = None):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # under torchrun each process runs on its own GPU (LOCAL_RANK), as the torch backend does
        providers = [("CUDAExecutionProvider", {"device_id": int(os.environ.get("LOCAL_RANK", "0"))}),
                     "CPUExecutionProvider"]
        providers = [p for p in providers if (p[0] if isinstance(p, tuple) else p) in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(os.path.join(path, ONNX_FILE), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for a damaged or foreign file
            raise SeqtuneError(f"{os.path.join(path, ONNX_FILE)} is not a model ONNX Runtime can load "
                               f"({str(error).splitlines()[0][:200]}): export it again.") from error
        self.config = config
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._device = torch.empty(0)

    def __call__(self, **batch):
        import torch

        feeds = {}
        for name in self.input_names:
            value = batch.get(name)
            if value is None:  # a graph that takes token types, given rows without them: all type 0
                value = torch.zeros_like(batch["input_ids"])
            feeds[name] = value.cpu().numpy().astype(np.int64, copy=False)
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def parameters(self):
        yield self._device  # inputs go to the CPU; onnxruntime moves them to its own device


def export(model_args, args: ExportArguments) -> dict:
    """Export, check, quantize if asked and save beside the tokenizer and config; returns what was done."""
    from seqtune.ensemble import is_ensemble_folder
    from seqtune.finetuned import load_finetuned

    _check_output_dir(args)
    if is_ensemble_folder(model_args.model_name_or_path):
        raise SeqtuneError(f"{model_args.model_name_or_path} is a seed ensemble: export one member's folder "
                           f"({model_args.model_name_or_path}/member-N), or serve the ensemble with torch.")
    tokenizer, config, model = load_finetuned(model_args, backend="torch")
    model.float().eval()
    names = _input_names(tokenizer, config)
    parent = os.path.dirname(os.path.abspath(args.output_dir))
    os.makedirs(parent, exist_ok=True)
    _remove_stale_staging(parent)
    staging = tempfile.mkdtemp(prefix=".seqtune-export-", dir=parent)  # its own name: nothing of a user's is touched
    try:
        result = _export_into(staging, model, tokenizer, config, names, args)
        _replace_folder(staging, args.output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Exported to %s (max |logit difference| against torch: %.2e%s)", args.output_dir,
                result["max_abs_logit_difference"],
                f"; int8: {result['quantized_max_abs_logit_difference']:.2e}" if args.quantize else "")
    return result


def _export_into(staging: str, model, tokenizer, config, names: list[str], args: ExportArguments) -> dict:
    onnx_path = os.path.join(staging, ONNX_FILE)
    _export_graph(model, tokenizer, names, onnx_path, args.opset)
    difference = _max_logit_difference(model, tokenizer, names, onnx_path)
    if difference > EXPORT_TOLERANCE:
        raise SeqtuneError(f"the exported model's logits differ from the torch model's by {difference:.2e} "
                           f"(more than {EXPORT_TOLERANCE:g}): this model's architecture does not export correctly "
                           "to ONNX here; report it with --debug's output.")
    result = {"output_dir": args.output_dir, "inputs": names, "opset": args.opset, "max_abs_logit_difference":
              float(difference), "quantized": args.quantize}
    if args.quantize:
        result["quantized_max_abs_logit_difference"] = float(_quantize(onnx_path, model, tokenizer, names))
    tokenizer.save_pretrained(staging)
    written = sorted({*os.listdir(staging), "config.json"})  # what an --overwrite_output_dir later may replace
    config.seqtune_onnx = {**{k: v for k, v in result.items() if k != "output_dir"}, "files": written}
    config.save_pretrained(staging)
    return result


def _remove_stale_staging(parent: str) -> None:
    """Export folders being built that a killed export left (SIGKILL: no cleanup ran), once untouched for an hour;
    a live export's, in the same parent, is written to as it goes."""
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(".seqtune-export-") and os.path.isdir(path) and untouched_for(path, STALE_SECONDS):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("Removed %s, left by a killed export", path)


def _check_output_dir(args: ExportArguments) -> None:
    from seqtune.validation import writable_dir_problem

    if not args.output_dir:
        raise SeqtuneError("--output_dir is required: the folder the ONNX model is written to.")
    # the export is built beside the folder, then renamed into place: both must be writable
    problem = writable_dir_problem(os.path.dirname(os.path.abspath(args.output_dir)),
                                   f"the folder of --output_dir {args.output_dir}")
    if problem:
        raise SeqtuneError(problem)
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise SeqtuneError(f"--output_dir {args.output_dir} is a file, not a folder.")
    here, target = os.path.realpath(os.getcwd()), os.path.realpath(args.output_dir)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        raise SeqtuneError(f"--output_dir {args.output_dir} is the working directory or holds it, and an export "
                           "replaces its folder whole: name a folder of its own (say, --output_dir model-onnx).")
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        written = _export_files(args.output_dir)
        if written is None:  # a training run, another tool's export or a user's folder is never replaced
            raise SeqtuneError(f"--output_dir {args.output_dir} is not empty and holds no earlier export: choose a "
                               "new folder for the ONNX model.")
        if not args.overwrite_output_dir:
            raise SeqtuneError(f"--output_dir {args.output_dir} holds an earlier export: pass --overwrite_output_dir "
                               "to replace it, or choose another folder.")
        others = sorted(set(os.listdir(args.output_dir)) - set(written))
        if others:
            raise SeqtuneError(f"--output_dir {args.output_dir} holds an earlier export and {', '.join(others)}, which "
                               "the export did not write and replacing the folder would delete: move them away.")


def _export_files(path: str) -> list[str] | None:
    """The files an earlier `seqtune export` wrote into `path` (as its config records them), else None."""
    from seqtune.fileio import read_json
    from seqtune.output_dir import RUN_OUTPUTS

    try:
        recorded = read_json(os.path.join(path, "config.json")).get("seqtune_onnx")
    except (OSError, ValueError, AttributeError):
        return None
    if not is_onnx_folder(path) or not isinstance(recorded, dict):
        return None
    # an export made before the files were recorded: the graph, its weights, the config and tokenizer files
    return recorded.get("files") or [ONNX_FILE, ONNX_FILE + ".data", *RUN_OUTPUTS]


def _input_names(tokenizer, config) -> list[str]:
    from seqtune.model_family import model_inputs

    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in model_inputs(tokenizer, config)]


def _sample(tokenizer, names: list[str], rows: int, tensors: str):
    texts = ["the quick brown fox jumps over the lazy dog", "a cat", "paraphrase or not?"] * rows
    batch = tokenizer(texts[:rows], texts[1:rows + 1], padding=True, truncation=True, max_length=64,
                      return_tensors=tensors)
    return {n: batch[n] for n in names if n in batch}


@contextlib.contextmanager
def _exporter_quiet():
    """The exporter's notes (axis names merged, torchvision ops skipped, deprecations inside torch) are not the
    user's concern: the exported graph's logits are checked against torch's instead. Shown with --log_level debug."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    exporter = logging.getLogger("torch.onnx")
    level = exporter.level
    exporter.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter.setLevel(level)


def _export_graph(model, tokenizer, names: list[str], path: str, opset: int) -> None:
    import torch

    class Logits(torch.nn.Module):  # inputs in `names` order, logits out: the graph's signature
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.inner(**{n: given[n] for n in names}).logits

    sample = _sample(tokenizer, names, 2, "pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = tuple({0: batch, 1: sequence} for _ in names)
    try:
        with _exporter_quiet():
            torch.onnx.export(Logits(model).eval(), tuple(sample[n] for n in names), path, input_names=names,
                              output_names=["logits"], dynamic_shapes=shapes, opset_version=opset, dynamo=True,
                              verbose=False)
    except Exception as error:  # the exporter's many error types: one line, the traceback with --debug
        cause = error.__cause__ or error  # the exporter wraps the real error in its own, with advice on filing it
        if isinstance(cause, OSError):  # writing the file failed (a full disk), not the model's export
            raise disk_error(cause, path) from error
        lines = str(cause).strip().splitlines()
        raise SeqtuneError(f"torch.onnx.export failed for this model ({type(cause).__name__}: "
                           f"{lines[0][:300] if lines else ''}).") from error


def _max_logit_difference(model, tokenizer, names: list[str], path: str) -> float:
    """On a batch of another size and length than the export's sample: the dynamic axes are checked too."""
    import onnxruntime as ort
    import torch

    sample = _sample(tokenizer, names, 3, "pt")
    with torch.inference_mode():
        expected = model(**sample).logits.float().numpy()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {n: sample[n].numpy() for n in names})[0]
    return float(np.abs(got - expected).max())


def _quantize(path: str, model, tokenizer, names: list[str]) -> float:
    """Replace the fp32 graph by its int8 dynamic quantization; returns its logit difference from torch's."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path + ".int8"
    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
    os.replace(quantized, path)
    for leftover in [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".data")]:
        os.remove(os.path.join(os.path.dirname(path), leftover))  # the fp32 weights, stored beside a large graph
    return _max_logit_difference(model, tokenizer, names, path)


def _replace_folder(staging: str, target: str) -> None:
    """The export appears whole: built beside the target under a fresh name, then swapped in; an earlier export is
    moved aside under a fresh name first and removed only once the new one is in place."""
    from seqtune.fileio import usual_file_mode

    usual_file_mode(staging)
    old = None
    try:
        if os.path.isdir(target):
            old = tempfile.mkdtemp(prefix=".seqtune-export-old-", dir=os.path.dirname(staging))
            os.replace(target, os.path.join(old, "export"))
        os.replace(staging, target)
    except OSError as error:  # a mount point, another file system: the earlier export goes back where it was
        kept = _put_back(old, target)
        raise SeqtuneError(f"--output_dir {target} cannot be replaced ({error.strerror or error}): export into a new "
                           f"folder{kept}.") from error
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _put_back(old: str | None, target: str) -> str:
    """The earlier export moved back to `target` after a failed swap; else where it still is, for the message."""
    if old is None:
        return ""
    aside = os.path.join(old, "export")
    if os.path.isdir(aside) and not os.path.exists(target):
        try:
            os.replace(aside, target)
        except OSError:
            return f" (the earlier export is in {aside})"
    if not os.path.exists(aside):  # (back in place, or never moved)
        shutil.rmtree(old, ignore_errors=True)
    return ""
