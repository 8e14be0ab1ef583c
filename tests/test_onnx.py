"""`seqtune export` and `--backend onnx`: the exported graph's logits equal torch's within 1e-4 (other batch sizes
and lengths than the export's sample), evaluate/predict give the same results on either backend, int8
quantization is recorded with its cost, and folders that are not exports are never replaced."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from seqtune.cli import main
from tests.families import build_family


@pytest.fixture(scope="module")
def finetuned(tiny_model, pair_files, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("onnx") / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "6",
                 "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--disable_tqdm",
                 "--report_to", "none"]) == 0
    return out


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("exported") / "onnx")
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out]) == 0
    return out


def logits_both_ways(model_dir: str, onnx_dir: str, texts, pairs):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seqtune.onnx_export import OnnxClassifier

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch_model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    onnx_model = OnnxClassifier(onnx_dir, torch_model.config)
    batch = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = torch_model(**batch).logits.numpy()
    return onnx_model(**batch).logits.numpy(), expected


def test_exported_logits_equal_torchs(finetuned, exported):
    texts = ["a man is riding a horse", "x", "the weather today is nice and warm, said the man in the hat", "b"] * 3
    pairs = ["a person rides an animal", "y z", "it is warm", "c d e f g"] * 3
    for rows in (1, 5, 12):  # batch sizes and lengths other than the export's sample
        got, expected = logits_both_ways(finetuned, exported, texts[:rows], pairs[:rows])
        assert np.abs(got - expected).max() < 1e-4
    recorded = json.load(open(os.path.join(exported, "config.json")))["seqtune_onnx"]
    assert recorded["max_abs_logit_difference"] < 1e-4 and recorded["quantized"] is False


def test_evaluate_and_predict_match_on_both_backends(finetuned, exported, pair_files, tmp_path, capsys):
    results = {}
    for name, folder, extra in (("torch", finetuned, ["--bf16", "false"]), ("onnx", exported, []),
                                ("explicit", exported, ["--backend", "onnx"])):
        capsys.readouterr()
        assert main(["evaluate", "--model_name_or_path", folder, "--validation_file", pair_files["validation"],
                     *extra]) == 0
        results[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        out = str(tmp_path / f"{name}.jsonl")
        assert main(["predict", "--model_name_or_path", folder, "--test_file", pair_files["test"], "--output_file",
                     out, *extra]) == 0
        results[name]["rows"] = [json.loads(line) for line in open(out)]
    for name in ("onnx", "explicit"):
        assert results[name]["loss"] == pytest.approx(results["torch"]["loss"], abs=1e-5)
        assert results[name]["accuracy"] == results["torch"]["accuracy"]
        for a, b in zip(results[name]["rows"], results["torch"]["rows"]):
            assert a["prediction"] == b["prediction"] and a["probability"] == pytest.approx(b["probability"],
                                                                                           abs=1e-5)


def test_quantized_export_records_its_cost_and_predicts(finetuned, tmp_path, capsys):
    out = str(tmp_path / "int8")
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out, "--quantize"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["quantized"] is True and 0 < result["quantized_max_abs_logit_difference"] < 0.5
    assert not [n for n in os.listdir(out) if n.endswith(".data")]  # the fp32 weights are not left beside it
    assert main(["predict", "--model_name_or_path", out, "--sentence1", "a b", "--sentence2", "c d"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["prediction"] in ("0", "1")


def test_export_leaves_neighbouring_folders_alone(finetuned, tmp_path):
    for name in ("onnx.old", "onnx.exporting"):  # names an exporter might have used for its own folders
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("a user's file")
    out = str(tmp_path / "onnx")
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out]) == 0
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out, "--overwrite_output_dir"]) == 0
    assert (tmp_path / "onnx.old" / "mine.txt").exists() and (tmp_path / "onnx.exporting" / "mine.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["onnx", "onnx.exporting", "onnx.old"]  # no staging folder left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # a folder like any other (not mkdtemp's 0700)


def test_the_working_directory_as_output_dir_is_refused_before_exporting(finetuned, tmp_path, monkeypatch, capsys):
    """The export replaces its folder whole, which the working directory (or a folder holding it) cannot be."""
    inside = tmp_path / "here" / "below"
    inside.mkdir(parents=True)
    for folder, name in ((inside, "."), (inside, ".."), (tmp_path / "here", str(tmp_path / "here"))):
        monkeypatch.chdir(folder)
        assert main(["export", "--model_name_or_path", finetuned, "--output_dir", name]) == 2
        assert "working directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["here"] and os.listdir(tmp_path / "here") == ["below"]
    assert os.listdir(inside) == []


def test_an_export_folder_that_cannot_be_replaced_keeps_the_earlier_export(finetuned, exported, tmp_path,
                                                                          monkeypatch, capsys):
    import shutil

    out = str(tmp_path / "onnx")
    shutil.copytree(exported, out)
    before = sorted(os.listdir(out))
    real = os.replace

    def busy(source, target):  # the new export cannot be moved in (a mount point, another file system)
        if os.path.basename(source).startswith(".seqtune-export-") and "old" not in os.path.basename(source):
            raise OSError(16, "Device or resource busy")
        return real(source, target)

    monkeypatch.setattr(os, "replace", busy)
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out, "--overwrite_output_dir"]) == 2
    assert "cannot be replaced" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == before and sorted(os.listdir(tmp_path)) == ["onnx"]
    # the earlier export cannot be moved back either: it is kept aside, and the message says where

    def stuck(source, target):  # neither the new export moves in nor the earlier one back
        name = os.path.basename(source)
        if name == "export" or (name.startswith(".seqtune-export-") and "old" not in name):
            raise OSError(16, "Device or resource busy")
        return real(source, target)

    monkeypatch.setattr(os, "replace", stuck)
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out, "--overwrite_output_dir"]) == 2
    err = capsys.readouterr().err
    aside = err.split("the earlier export is in ")[1].split(")")[0]
    assert sorted(os.listdir(aside)) == before


def test_export_never_replaces_a_folder_that_is_not_an_export(finetuned, exported, tmp_path, capsys):
    code = main(["export", "--model_name_or_path", finetuned, "--output_dir", finetuned, "--overwrite_output_dir"])
    assert code == 2 and "holds no earlier export" in capsys.readouterr().err
    assert os.path.isfile(os.path.join(finetuned, "model.safetensors"))
    code = main(["export", "--model_name_or_path", finetuned, "--output_dir", exported])
    assert code == 2 and "--overwrite_output_dir" in capsys.readouterr().err
    code = main(["predict", "--model_name_or_path", finetuned, "--backend", "onnx", "--sentence1", "a"])
    assert code == 2 and "holds no model.onnx" in capsys.readouterr().err
    code = main(["predict", "--model_name_or_path", exported, "--backend", "onnx", "--bf16", "--sentence1", "a"])
    assert code == 2 and "--bf16 is bfloat16 autocast for the torch backend" in capsys.readouterr().err
    # the backend picked from the folder (only model.onnx), not named: --bf16 is refused there too, on every path
    for where in (["--sentence1", "a"], ["--test_file", str(_one_row_csv(tmp_path)), "--predictions_dir",
                                         str(tmp_path / "shards")]):
        code = main(["predict", "--model_name_or_path", exported, "--bf16", "true", *where])
        assert code == 2 and "--bf16 is bfloat16 autocast for the torch backend" in capsys.readouterr().err


def _one_row_csv(folder):
    path = folder / "one.csv"
    path.write_text("sentence1,sentence2\na b,c d\n")
    return path


def test_overwriting_an_export_never_deletes_what_it_did_not_write(finetuned, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", str(out)]) == 0
    (out / "notes.txt").write_text("a user's file")
    code = main(["export", "--model_name_or_path", finetuned, "--output_dir", str(out), "--overwrite_output_dir"])
    assert code == 2 and "notes.txt, which the export did not write" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "a user's file"
    (out / "notes.txt").unlink()
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", str(out), "--overwrite_output_dir"]) == 0
    other = tmp_path / "deploy"  # another tool's ONNX folder: model.onnx without seqtune's record
    other.mkdir()
    (other / "model.onnx").write_bytes(b"not ours")
    code = main(["export", "--model_name_or_path", finetuned, "--output_dir", str(other), "--overwrite_output_dir"])
    assert code == 2 and "holds no earlier export" in capsys.readouterr().err
    assert (other / "model.onnx").read_bytes() == b"not ours"


def test_a_damaged_onnx_file_is_named(exported, tmp_path, capsys):
    import shutil

    broken = shutil.copytree(exported, str(tmp_path / "broken"))
    with open(os.path.join(broken, "model.onnx"), "r+b") as f:
        f.truncate(100)
    assert main(["predict", "--model_name_or_path", broken, "--sentence1", "a"]) == 2
    assert "is not a model ONNX Runtime can load" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["gpt2", "llama", "modernbert"])
def test_other_families_export_within_tolerance(family, pair_files, tmp_path):
    base = build_family(family, str(tmp_path / family))
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", base, "--train_file", pair_files["train"], "--output_dir", out,
                 "--max_steps", "2", "--per_device_train_batch_size", "8", "--disable_tqdm", "--report_to",
                 "none", "--eval_strategy", "no"]) == 0
    assert main(["export", "--model_name_or_path", out, "--output_dir", str(tmp_path / "onnx")]) == 0
    recorded = json.load(open(tmp_path / "onnx" / "config.json"))["seqtune_onnx"]
    assert recorded["max_abs_logit_difference"] < 1e-4


def test_a_killed_exports_leftover_is_removed_once_stale_and_a_full_disk_is_named(finetuned, tmp_path, monkeypatch,
                                                                                   capsys):
    import errno
    import time

    import torch

    stale, live = tmp_path / ".seqtune-export-k1ll3d", tmp_path / ".seqtune-export-l1ve00"  # mkdtemp's names
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"partial")
    old = time.time() - 7200
    for path in (stale / "model.onnx", stale):
        os.utime(path, (old, old))
    out = str(tmp_path / "onnx")
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", out]) == 0
    assert not stale.exists() and live.exists()  # another export may still be writing that one

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    capsys.readouterr()
    assert main(["export", "--model_name_or_path", finetuned, "--output_dir", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "failed for this model" not in err
    assert sorted(os.listdir(tmp_path)) == [".seqtune-export-l1ve00", "onnx"]
