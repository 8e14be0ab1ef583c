"""seqtune sweep: several seeds with mean ± std, and a (tiny) reproducible Optuna search."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics

import optuna
import pytest
from huggingface_hub import ModelCard

from seqtune.cli import main
from seqtune.errors import SeqtuneError
from seqtune.sweep import parse_seeds, print_report, score, search_space, summarize


def sweep(tiny_model, pair_files, out, *extra):
    return main(["sweep", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "2",
                 "--per_device_train_batch_size", "8", *extra])


def test_summary_of_fixed_runs_is_pinned(capsys):
    runs = [{"seed": 1, "eval_f1": 0.8, "eval_accuracy": 0.70, "train_runtime": 10.0, "epoch": 1.0},
            {"seed": 2, "eval_f1": 0.9, "eval_accuracy": 0.75, "train_runtime": 12.0, "epoch": 1.0},
            {"seed": 3, "eval_f1": 1.0, "eval_accuracy": float("nan"), "train_runtime": 14.0, "epoch": 1.0}]
    summary = summarize(runs)
    assert set(summary) == {"eval_f1", "eval_accuracy", "train_runtime"}  # not seed or epoch
    assert summary["eval_f1"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1), "n": 3}
    assert summary["train_runtime"] == {"mean": pytest.approx(12.0), "std": pytest.approx(2.0), "n": 3}
    # a NaN (constant predictions in one seed) is left out of that metric, not spread into its mean
    assert summary["eval_accuracy"] == {"mean": pytest.approx(0.725), "std": pytest.approx(0.05 / 2 ** 0.5), "n": 2}
    assert summarize(runs[:1])["eval_f1"] == {"mean": 0.8, "std": 0.0, "n": 1}
    assert score(summary, ["f1", "accuracy"]) == pytest.approx((0.9 + 0.725) / 2)
    assert score(summary, ["matthews_correlation"]) == -math.inf
    print_report({"seeds": [1, 2, 3], "summary": summary})
    assert "eval_f1                  0.9000 ± 0.1000  (n=3)" in capsys.readouterr().out


def test_search_space_is_define_by_run():
    params = {"learning_rate": 1e-4, "num_train_epochs": 3, "warmup_ratio": 0.1, "per_device_train_batch_size": 32,
              "weight_decay": 0.01, "layerwise_lr_decay": 0.9}
    assert search_space(optuna.trial.FixedTrial(params)) == params
    with pytest.raises(ValueError):  # outside its range: the space is enforced by Optuna, not by us
        search_space(optuna.trial.FixedTrial({**params, "per_device_train_batch_size": 48}))


def test_seeds_must_be_integers():
    assert parse_seeds("1, 2,3,") == [1, 2, 3]
    for bad in ("", "1,x"):
        with pytest.raises(SeqtuneError, match="--seeds"):
            parse_seeds(bad)


def test_seeds_report_mean_and_std(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "seeds")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3") == 0
    summary = json.load(open(os.path.join(out, "sweep_summary.json")))["summary"]
    runs = [json.loads(line) for line in open(os.path.join(out, "sweep_results.jsonl"))]
    assert [r["seed"] for r in runs] == [1, 2, 3]
    f1 = [r["eval_f1"] for r in runs]
    assert summary["eval_f1"] == {"mean": pytest.approx(statistics.fmean(f1)),
                                  "std": pytest.approx(statistics.stdev(f1)), "n": 3}
    assert f"{summary['eval_f1']['mean']:.4f} ± {summary['eval_f1']['std']:.4f}" in capsys.readouterr().out
    # without --keep_models: the weights and checkpoints are gone, the metrics stay, and the card says so
    seed_dir = os.path.join(out, "seed-1")
    left = os.listdir(seed_dir)
    assert not any(f.endswith(".safetensors") or f.startswith("checkpoint-") for f in left)
    assert json.load(open(os.path.join(seed_dir, "all_results.json")))["eval_f1"] == f1[0]
    card = ModelCard.load(os.path.join(seed_dir, "README.md"))
    assert "holds no model weights" in card.text and "pipeline(" not in card.text
    assert [r.metric_value for r in card.data.eval_results if r.metric_type == "f1"] == [f1[0]]


def test_search_is_reproducible_and_resumable(tiny_model, pair_files, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert sweep(tiny_model, pair_files, a, "--n_trials", "2", "--seeds", "1") == 0
    assert sweep(tiny_model, pair_files, b, "--n_trials", "2", "--seeds", "1") == 0
    params_a = [t["params"] for t in json.load(open(os.path.join(a, "sweep_summary.json")))["trials"]]
    params_b = [t["params"] for t in json.load(open(os.path.join(b, "sweep_summary.json")))["trials"]]
    assert params_a == params_b and len(params_a) == 2  # same study seed, same suggestions
    assert params_a[0] != params_a[1]
    assert sweep(tiny_model, pair_files, a, "--n_trials", "3", "--seeds", "1", "--overwrite_output_dir") == 0
    assert len(json.load(open(os.path.join(a, "sweep_summary.json")))["trials"]) == 3  # resumed: one more trial


def test_an_interrupted_search_reruns_the_stopped_trial_and_repeats_none(tiny_model, pair_files, tmp_path,
                                                                         monkeypatch, caplog):
    """Ctrl-C or SIGTERM (an optuna FAIL) and SIGKILL (a trial left RUNNING): the same command runs the stopped
    trial again with its parameters in its folder (its finished runs reused), ends with --n_trials finished trials,
    and draws no finished trial's parameters again (a resumed sampler must not replay its seed's first draws)."""
    import seqtune.train

    out = str(tmp_path / "search")
    real = seqtune.train.train

    def interrupted_in_trial_1(data_args, model_args, args):
        if args.output_dir.endswith(os.path.join("trial-1", "seed-2")):  # seed 1 of trial 1 has finished
            raise KeyboardInterrupt
        return real(data_args, model_args, args)

    monkeypatch.setattr(seqtune.train, "train", interrupted_in_trial_1)
    assert sweep(tiny_model, pair_files, out, "--n_trials", "3", "--seeds", "1,2") != 0
    monkeypatch.setattr(seqtune.train, "train", real)
    study = optuna.load_study(study_name="seqtune", storage=f"sqlite:///{out}/study.db")
    stopped = study.trials[1].params
    killed = study.ask()  # a SIGKILL: a trial asked for and never told
    killed_params = search_space(killed)
    with caplog.at_level("INFO", logger="seqtune"):
        assert sweep(tiny_model, pair_files, out, "--n_trials", "4", "--seeds", "1,2") == 0
    assert any("Reusing the finished run in" in r.getMessage() and r.getMessage().endswith(
        os.path.join("trial-1", "seed-1")) for r in caplog.records)
    trials = json.load(open(os.path.join(out, "sweep_summary.json")))["trials"]
    assert len(trials) == 4
    params = [t["params"] for t in trials]
    assert stopped in params and killed_params in params
    assert {t["folder"] for t in trials if t["params"] == stopped} == {"trial-1"}
    assert not os.path.exists(os.path.join(out, f"trial-{max(t['number'] for t in trials) + 1}"))
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 4  # none drawn twice
    states = [t.state for t in optuna.load_study(study_name="seqtune", storage=f"sqlite:///{out}/study.db").trials]
    assert optuna.trial.TrialState.RUNNING not in states
    # one more trial is a new one
    assert sweep(tiny_model, pair_files, out, "--n_trials", "5", "--seeds", "1,2") == 0
    params = [t["params"] for t in json.load(open(os.path.join(out, "sweep_summary.json")))["trials"]]
    assert len(params) == 5 and len({json.dumps(p, sort_keys=True) for p in params}) == 5


def test_a_trial_that_fails_on_its_own_counts_as_run_and_the_search_moves_on(tiny_model, pair_files, tmp_path,
                                                                             monkeypatch):
    """A failure of the trial itself (a loss gone non-finite at its learning rate) is not rerun on every resume."""
    import seqtune.train

    out = str(tmp_path / "search")
    real = seqtune.train.train

    def diverging_in_trial_0(data_args, model_args, args):
        if os.sep + "trial-0" + os.sep in args.output_dir:
            raise SeqtuneError("the training loss is nan at step 1")
        return real(data_args, model_args, args)

    monkeypatch.setattr(seqtune.train, "train", diverging_in_trial_0)
    assert sweep(tiny_model, pair_files, out, "--n_trials", "2", "--seeds", "1") == 2
    assert sweep(tiny_model, pair_files, out, "--n_trials", "2", "--seeds", "1") == 0
    trials = json.load(open(os.path.join(out, "sweep_summary.json")))["trials"]
    assert [t["number"] for t in trials] == [1]  # trial 0 failed and counts; trial 1 is new


def test_a_user_error_inside_a_search_is_one_line_without_optunas_traceback(tiny_model, pair_files, tmp_path,
                                                                           capsys):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("optuna").addHandler(handler)  # (optuna's own handler writes to the stderr of its import)
    try:
        assert sweep(tiny_model, pair_files, str(tmp_path / "s"), "--n_trials", "2", "--seeds", "1",
                     "--text_column", "nope") == 2
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    assert "--text_column 'nope' is not a column" in capsys.readouterr().err
    assert not [r for r in records if r.exc_info or "failed with" in r.getMessage()]


# ----------------------------------------------------------------------------------------------- cross-validation
def test_cv_folds_partition_the_training_rows_stratified_and_seeded(pair_files, tmp_path):
    from datasets import load_dataset

    from seqtune.config import DataArguments
    from seqtune.cv import make_folds

    data = DataArguments(train_file=pair_files["train"], validation_file=pair_files["validation"])
    folds = make_folds(data, 4, 0, str(tmp_path / "a"))
    train = load_dataset("csv", data_files=pair_files["train"])["train"]
    everything = sorted(map(tuple, train.select_columns(["idx", "label"]).to_pandas().values.tolist()))
    held_out = []
    for fold in folds:
        part = load_dataset("parquet", data_files={"train": fold.train_file, "validation": fold.validation_file})
        rest, scored = (sorted(map(int, part[s]["idx"])) for s in ("train", "validation"))  # (CSV text: "7")
        assert not set(rest) & set(scored) and sorted(rest + scored) == [r[0] for r in everything]
        # stratified: each held-out part has the training split's share of positives, within one row
        share = sum(label for _, label in everything) / len(everything)
        assert abs(sum(part["validation"]["label"]) - share * len(scored)) <= 1
        held_out += scored
        assert fold.dataset_name is None and fold.test_file is None
    assert sorted(held_out) == [r[0] for r in everything]  # every row scored exactly once
    again = make_folds(data, 4, 0, str(tmp_path / "b"))
    other = make_folds(data, 4, 1, str(tmp_path / "c"))
    ids = [lambda f=f: sorted(load_dataset("parquet", data_files=f.validation_file)["train"]["idx"]) for f in folds]
    assert [i() for i in ids] == [sorted(load_dataset("parquet", data_files=f.validation_file)["train"]["idx"])
                                  for f in again]
    assert [i() for i in ids] != [sorted(load_dataset("parquet", data_files=f.validation_file)["train"]["idx"])
                                  for f in other]


def test_cv_keeps_label_names_and_refuses_what_it_cannot_fold(tiny_model, pair_files, tmp_path, capsys):
    from datasets import ClassLabel, load_dataset

    from seqtune.config import DataArguments
    from seqtune.cv import make_folds

    named = load_dataset("csv", data_files=pair_files["train"])["train"].cast_column(
        "label", ClassLabel(names=["different", "same"]))
    path = str(tmp_path / "named.parquet")
    named.to_parquet(path)
    fold = make_folds(DataArguments(train_file=path), 3, 0, str(tmp_path / "named"))[0]
    assert load_dataset("parquet", data_files=fold.train_file)["train"].features["label"].names == ["different",
                                                                                                  "same"]
    # a class with fewer rows than folds, one fold, a stream: exit 2 with the reason
    rare = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": "x" if i else "y"} for i in range(12)]
    from tests.conftest import write_csv

    rare_file = write_csv(str(tmp_path / "rare.csv"), rare)
    for extra, expected in ((["--train_file", rare_file, "--cv", "3"], "fewer training rows than folds"),
                            (["--train_file", pair_files["train"], "--cv", "1"], "at least 2 folds"),
                            (["--train_file", rare_file, "--cv", "7"], "12 rows, too few for 7 folds (each needs 2 "
                             "rows or more); use --cv 6 or fewer"),
                            (["--train_file", pair_files["train"], "--cv", "2", "--streaming"], "--streaming")):
        code = main(["sweep", "--model_name_or_path", tiny_model, *extra, "--output_dir", str(tmp_path / "x"),
                     "--max_steps", "2", "--seeds", "1"])
        assert code == 2 and expected in capsys.readouterr().err, extra


def test_sweep_cv_scores_every_fold_then_the_validation_split_and_continues(tiny_model, pair_files, tmp_path,
                                                                             capsys, caplog):
    out = str(tmp_path / "cv")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--cv", "3") == 0
    report = json.load(open(os.path.join(out, "sweep_summary.json")))
    assert report["cv"] == 3 and report["summary"]["eval_f1"]["n"] == 6  # 3 folds x 2 seeds
    assert report["validation"]["eval_f1"]["n"] == 2 and set(report["per_fold"]) == {"0", "1", "2"}
    runs = [json.loads(line) for line in open(os.path.join(out, "sweep_results.jsonl"))]
    assert [(r["fold"], r["seed"]) for r in runs] == [(k, s) for k in range(3) for s in (1, 2)] + [
        ("validation", 1), ("validation", 2)]
    fold_f1 = [r["eval_f1"] for r in runs if r["fold"] != "validation"]
    assert report["summary"]["eval_f1"]["mean"] == pytest.approx(statistics.fmean(fold_f1))
    # each fold run scored its own held-out part (16 of the 48 training rows), not the validation file
    for k in range(3):
        scored = json.load(open(os.path.join(out, f"fold-{k}", "seed-1", "eval_predictions.json")))
        assert len(scored["labels"]) == 16
        # with its logits, so seed ensembles are scored without another pass (benchmarks/cv_ensemble.py)
        assert [max(range(2), key=row.__getitem__) for row in scored["logits"]] == scored["predictions"]
    assert "3-fold cross-validation, seeds [1, 2]" in capsys.readouterr().out
    # the same command again trains nothing: every run is reused
    stamp = os.path.getmtime(os.path.join(out, "fold-2", "seed-2", "all_results.json"))
    with caplog.at_level("INFO", logger="seqtune"):
        assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--cv", "3") == 0
    assert sum("Reusing the finished run" in r.getMessage() for r in caplog.records) == 8
    assert os.path.getmtime(os.path.join(out, "fold-2", "seed-2", "all_results.json")) == stamp
    assert json.load(open(os.path.join(out, "sweep_summary.json")))["summary"] == report["summary"]
    # other folds (another --cv_seed) are other fold files: nothing reused
    caplog.clear()
    with caplog.at_level("INFO", logger="seqtune"):
        assert sweep(tiny_model, pair_files, out, "--seeds", "1", "--cv", "3", "--cv_seed", "7",
                     "--cv_validation", "false") == 0
    assert not any("Reusing the finished run" in r.getMessage() for r in caplog.records)
    # other flags are another configuration: trained again
    caplog.clear()
    with caplog.at_level("INFO", logger="seqtune"):
        assert sweep(tiny_model, pair_files, out, "--seeds", "1", "--cv", "3", "--cv_validation", "false",
                     "--learning_rate", "3e-4") == 0
    assert not any("Reusing the finished run" in r.getMessage() for r in caplog.records)


def test_a_run_recorded_before_a_flag_existed_is_reused_only_while_the_flag_has_its_default():
    from dataclasses import replace

    from seqtune.config import TrainingArguments
    from seqtune.sweep import _same_flags

    args = TrainingArguments(output_dir="x")
    recorded = json.loads(json.dumps(vars(args), default=str))
    older = {k: v for k, v in recorded.items() if k != "rdrop_alpha"}  # written before --rdrop_alpha existed
    assert _same_flags(args, recorded) and _same_flags(args, older)
    assert not _same_flags(replace(args, rdrop_alpha=1.0), older)
    assert not _same_flags(replace(args, seed=3), older)
    assert not _same_flags(args, {**recorded, "a_flag_since_removed": 1})
    assert not _same_flags(args, None)


# ----------------------------------------------------------------------------------------------- seed ensembles
def test_an_ensemble_averages_its_members_logits_and_loads_like_a_model(tiny_model, pair_files, tmp_path, capsys):
    import csv

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = str(tmp_path / "ens")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3", "--ensemble", "--learning_rate", "3e-3",
                 "--max_steps", "4") == 0
    report = json.load(open(os.path.join(out, "sweep_summary.json")))
    folder = os.path.join(out, "ensemble")
    assert report["ensemble"]["members"] == 3 and report["ensemble"]["rows"] == 16
    assert sorted(os.listdir(folder)) == sorted(["config.json", "ensemble.json", "member-1", "member-2", "member-3",
                                                  "tokenizer.json", "tokenizer_config.json"])
    for seed in (1, 2, 3):  # the runs' own weights are dropped (the ensemble holds copies)
        assert not os.path.exists(os.path.join(out, f"seed-{seed}", "model.safetensors"))
    # the members' logits averaged, by hand with transformers, equal predict on the folder (float32)
    rows = list(csv.DictReader(open(pair_files["test"])))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        logits = torch.stack([AutoModelForSequenceClassification.from_pretrained(
            os.path.join(folder, f"member-{s}")).eval()(**batch).logits for s in (1, 2, 3)]).mean(0)
    probabilities = torch.softmax(logits, -1).max(-1).values.numpy()
    predictions = str(tmp_path / "p.jsonl")
    assert main(["predict", "--model_name_or_path", folder, "--test_file", pair_files["test"], "--output_file",
                 predictions, "--bf16", "false", "--symmetric_pairs", "false"]) == 0
    written = [json.loads(line) for line in open(predictions)]
    assert [w["prediction_id"] for w in written] == logits.argmax(-1).tolist()
    assert [w["probability"] for w in written] == pytest.approx(probabilities.tolist(), abs=1e-5)
    # evaluate on the folder repeats the sweep's score of the ensemble
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", folder, "--validation_file", pair_files["validation"]]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["accuracy"] == report["ensemble"]["accuracy"] and metrics["loss"] == report["ensemble"]["loss"]
    # an ensemble is torch models: no ONNX backend; --ensemble needs whole-split runs
    code = main(["predict", "--model_name_or_path", folder, "--backend", "onnx", "--sentence1", "a"])
    assert code == 2 and "holds no model.onnx" in capsys.readouterr().err
    code = main(["export", "--model_name_or_path", folder, "--output_dir", str(tmp_path / "onnx")])
    assert code == 2 and "export one member's folder" in capsys.readouterr().err
    code = sweep(tiny_model, pair_files, str(tmp_path / "x"), "--seeds", "1", "--ensemble", "--n_trials", "2")
    assert code == 2 and "--ensemble" in capsys.readouterr().err
    # the same sweep again trains nothing: the ensemble recorded from these runs is reused
    stamp = os.path.getmtime(os.path.join(out, "seed-2", "all_results.json"))
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3", "--ensemble", "--learning_rate", "3e-3",
                 "--max_steps", "4") == 0
    assert os.path.getmtime(os.path.join(out, "seed-2", "all_results.json")) == stamp
    assert json.load(open(os.path.join(out, "sweep_summary.json")))["ensemble"] == report["ensemble"]


def test_an_ensemble_of_runs_in_folders_of_one_name_keeps_every_member(tiny_model, tmp_path):
    import shutil

    from seqtune.ensemble import ENSEMBLE_FILE, write_ensemble

    runs = [str(tmp_path / part / "model") for part in ("a", "b")]
    for run in runs:
        shutil.copytree(tiny_model, run)
    folder = write_ensemble(runs, str(tmp_path / "ensemble"))
    members = json.load(open(os.path.join(folder, ENSEMBLE_FILE)))["members"]
    assert len(set(members)) == 2
    assert all(os.path.isfile(os.path.join(folder, m, "config.json")) for m in members)


# ----------------------------------------------------------------------------------------------- model soups
def test_a_soup_averages_runs_of_one_initialisation_into_a_model_from_pretrained_loads(tiny_model, pair_files,
                                                                                     tmp_path, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out = str(tmp_path / "soup")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3", "--soup", "--ensemble", "--keep_models",
                 "--learning_rate", "3e-3", "--max_steps", "4", "--seed", "7") == 0
    report = json.load(open(os.path.join(out, "sweep_summary.json")))
    # with --ensemble the ensemble's members are these runs, as the soup's
    assert json.load(open(os.path.join(out, "ensemble", "ensemble.json")))["members"] == [
        f"member-data_seed-{s}" for s in (1, 2, 3)]
    runs = [os.path.join(out, f"data_seed-{s}") for s in (1, 2, 3)]
    flags = [json.load(open(os.path.join(run, "seqtune_args.json")))["training"] for run in runs]
    assert [(f["seed"], f["data_seed"]) for f in flags] == [(7, 1), (7, 2), (7, 3)]
    # one initialisation, other batches: the runs' weights differ, and the soup is their mean, weight by weight
    weights = [load_file(os.path.join(run, "model.safetensors")) for run in runs]
    assert not torch.equal(weights[0]["classifier.weight"], weights[1]["classifier.weight"])
    soup = AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "soup")).state_dict()
    for key in weights[0]:
        assert torch.allclose(soup[key], torch.stack([w[key].float() for w in weights]).mean(0), atol=1e-6), key
    # evaluate on the folder repeats the sweep's score of the soup
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", os.path.join(out, "soup"), "--validation_file",
                 pair_files["validation"]]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["soup"]["members"] == 3 and metrics["loss"] == report["soup"]["loss"]


def test_a_soup_of_runs_with_other_seeds_is_refused(tiny_model, pair_files, tmp_path):
    from seqtune.soup import write_soup

    runs = []
    for seed in (1, 2):
        runs.append(str(tmp_path / f"seed-{seed}"))
        assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                     "--validation_file", pair_files["validation"], "--output_dir", runs[-1], "--max_steps", "1",
                     "--seed", str(seed)]) == 0
    with pytest.raises(SeqtuneError, match="one --seed.* differ in seed: 1 / 2.*--ensemble"):
        write_soup(runs, str(tmp_path / "soup"))
    assert not os.path.exists(tmp_path / "soup")
    with pytest.raises(SeqtuneError, match="at least 2 runs"):
        write_soup(runs[:1], str(tmp_path / "soup"))
    config = json.load(open(os.path.join(runs[1], "config.json")))  # one seed, other label names
    flags = json.load(open(os.path.join(runs[1], "seqtune_args.json")))
    flags["training"]["seed"] = 1
    config["id2label"] = {"0": "no", "1": "yes"}
    json.dump(config, open(os.path.join(runs[1], "config.json"), "w"))
    json.dump(flags, open(os.path.join(runs[1], "seqtune_args.json"), "w"))
    with pytest.raises(SeqtuneError, match="one label set"):
        write_soup(runs, str(tmp_path / "soup"))


def test_cross_validated_soups_score_each_fold_drop_the_weights_and_train_nothing_twice(tiny_model, pair_files,
                                                                                         tmp_path, capsys, caplog):
    out = str(tmp_path / "cv-soup")
    command = ("--seeds", "1,2", "--soup", "--cv", "2", "--cv_validation", "false", "--max_steps", "2")
    assert sweep(tiny_model, pair_files, out, *command) == 0
    report = json.load(open(os.path.join(out, "sweep_summary.json")))
    assert [s["members"] for s in report["soup_per_fold"]] == [2, 2]
    assert report["soup_summary"]["eval_accuracy"]["n"] == 2 and "soup" not in report  # no whole-split runs
    assert not any("folder" in s for s in report["soup_per_fold"])  # (deleted: not named)
    runs = [os.path.join(out, f"fold-{k}", f"data_seed-{s}") for k in (0, 1) for s in (1, 2)]
    for fold in (0, 1):  # the folds' soups and runs keep their scores, not their weights
        assert not os.path.exists(os.path.join(out, f"fold-{fold}", "soup"))
    assert all(os.path.isfile(os.path.join(r, "all_results.json")) for r in runs)
    assert not any(os.path.exists(os.path.join(r, "model.safetensors")) for r in runs)
    assert "a soup of the 2 runs of each fold" in capsys.readouterr().out
    # the same command again (a finished or interrupted sweep) trains nothing: the soups' records are reused
    stamps = [os.path.getmtime(os.path.join(r, "all_results.json")) for r in runs]
    with caplog.at_level("INFO", logger="seqtune"):
        assert sweep(tiny_model, pair_files, out, *command) == 0
    assert [os.path.getmtime(os.path.join(r, "all_results.json")) for r in runs] == stamps
    assert sum("Reusing the soup" in r.getMessage() for r in caplog.records) == 2
    assert json.load(open(os.path.join(out, "sweep_summary.json")))["soup_per_fold"] == report["soup_per_fold"]
    # killed after fold 1's runs finished, before its soup was recorded: only that fold's runs train again (their
    # weights were dropped), and its soup is made anew
    os.remove(os.path.join(out, "fold-1", "soup_scores.json"))
    assert sweep(tiny_model, pair_files, out, *command) == 0
    changed = [os.path.getmtime(os.path.join(r, "all_results.json")) != t for r, t in zip(runs, stamps)]
    assert changed == [False, False, True, True]
    assert os.path.isfile(os.path.join(out, "fold-1", "soup_scores.json"))


def test_soup_flags_that_cannot_work_are_refused(tiny_model, pair_files, tmp_path, capsys):
    assert sweep(tiny_model, pair_files, str(tmp_path / "one"), "--seeds", "1", "--soup") == 2
    assert "at least 2 --seeds" in capsys.readouterr().err
    assert sweep(tiny_model, pair_files, str(tmp_path / "d"), "--seeds", "1,2", "--soup", "--data_seed", "9") == 2
    assert "leave out --data_seed" in capsys.readouterr().err
    assert sweep(tiny_model, pair_files, str(tmp_path / "twice"), "--seeds", "1,2,2", "--soup") == 2
    assert "--seeds lists 2 more than once" in capsys.readouterr().err


def test_a_soup_of_lora_adapters_is_a_whole_model_and_the_adapters_are_dropped(tiny_model, pair_files, tmp_path,
                                                                               caplog):
    from transformers import AutoModelForSequenceClassification

    out = str(tmp_path / "lora-soup")
    command = ("--seeds", "1,2", "--soup", "--lora_r", "2", "--save_adapter_only", "--learning_rate", "3e-3")
    assert sweep(tiny_model, pair_files, out, *command) == 0
    AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "soup"))  # merged: a plain model
    for seed in (1, 2):
        assert not os.path.exists(os.path.join(out, f"data_seed-{seed}", "adapter_model.safetensors"))
    with caplog.at_level("INFO", logger="seqtune"):
        assert sweep(tiny_model, pair_files, out, *command) == 0
    assert sum("Reusing the finished run" in r.getMessage() for r in caplog.records) == 2


def test_a_soup_keeps_the_runs_dtype_and_knows_their_starting_point(tiny_model, no_dropout_model, pair_files,
                                                                    tmp_path):
    import torch
    from safetensors.torch import load_file

    from seqtune.soup import write_soup

    def run(name, model, *extra):
        folder = str(tmp_path / name)
        assert main(["train", "--model_name_or_path", model, "--train_file", pair_files["train"], "--output_dir",
                     folder, "--max_steps", "2", "--seed", "3", "--torch_dtype", "bfloat16", *extra]) == 0
        return folder

    runs = [run("a", tiny_model, "--data_seed", "1"), run("b", tiny_model + os.sep, "--data_seed", "2")]
    soup = write_soup(runs, str(tmp_path / "soup"))  # one model, whether named with a trailing slash or not
    assert {t.dtype for t in load_file(os.path.join(soup, "model.safetensors")).values()
            if t.is_floating_point()} == {torch.bfloat16}
    other = run("c", tiny_model, "--data_seed", "3", "--reinit_top_layers", "1")
    with pytest.raises(SeqtuneError, match="differ in reinit_top_layers: 0 / 1"):
        write_soup(runs[:1] + [other], str(tmp_path / "soup2"))
    elsewhere = run("d", no_dropout_model, "--data_seed", "4")  # another base model
    with pytest.raises(SeqtuneError, match="differ in base model: "):
        write_soup(runs[:1] + [elsewhere], str(tmp_path / "soup3"))


def test_a_signal_while_a_finished_run_saves_stops_the_sweep_and_the_same_command_continues(
        tiny_model, pair_files, tmp_path, capsys, monkeypatch):
    import signal

    import seqtune.train

    out, original = str(tmp_path / "stopped"), seqtune.train.finish

    def finish_under_sigterm(*args, **kwargs):  # SIGTERM arrives while the first run's model is being saved
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(seqtune.train, "finish", finish_under_sigterm)
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--soup") == 143
    err = capsys.readouterr().err
    assert "the finished run was being saved" in err and "run the same command again" in err
    assert os.path.isfile(os.path.join(out, "data_seed-1", "all_results.json"))
    assert not os.path.exists(os.path.join(out, "data_seed-2"))  # the sweep stopped there
    monkeypatch.setattr(seqtune.train, "finish", original)
    stamp = os.path.getmtime(os.path.join(out, "data_seed-1", "all_results.json"))
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--soup") == 0
    assert os.path.getmtime(os.path.join(out, "data_seed-1", "all_results.json")) == stamp


def test_a_damaged_soup_or_record_is_made_anew_not_reported(tiny_model, pair_files, tmp_path, caplog):
    out = str(tmp_path / "damaged")
    command = ("--seeds", "1,2", "--soup")
    assert sweep(tiny_model, pair_files, out, *command) == 0
    first = json.load(open(os.path.join(out, "sweep_summary.json")))["soup"]
    weights = os.path.join(out, "soup", "model.safetensors")
    for damage in (lambda: os.truncate(weights, 100), lambda: open(os.path.join(out, "soup_scores.json"), "w").close()):
        damage()
        caplog.clear()
        with caplog.at_level("INFO", logger="seqtune"):
            assert sweep(tiny_model, pair_files, out, *command) == 0
        assert not any("Reusing the soup" in r.getMessage() for r in caplog.records)
        assert json.load(open(os.path.join(out, "sweep_summary.json")))["soup"]["loss"] == first["loss"]
        assert main(["evaluate", "--model_name_or_path", os.path.join(out, "soup"), "--validation_file",
                     pair_files["validation"]]) == 0


def test_weights_kept_by_keep_models_survive_a_later_sweep_without_it(tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "kept")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--keep_models") == 0
    weights = [os.path.join(out, f"seed-{s}", "model.safetensors") for s in (1, 2)]
    stamps = [os.path.getmtime(w) for w in weights]
    # the same runs made into an ensemble, --keep_models left out: reused, not trained again, and not dropped
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--ensemble") == 0
    assert [os.path.getmtime(w) for w in weights] == stamps
    assert os.path.isdir(os.path.join(out, "ensemble", "member-2"))
    # a run trained by a sweep without --keep_models is still dropped once combined
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3", "--ensemble") == 0
    assert not os.path.exists(os.path.join(out, "seed-3", "model.safetensors"))
    assert all(os.path.isfile(w) for w in weights)


def test_a_kept_run_with_damaged_weights_is_trained_again_before_it_joins_an_ensemble(tiny_model, pair_files,
                                                                                        tmp_path):
    out = str(tmp_path / "damaged")
    command = ("--seeds", "1,2", "--ensemble", "--keep_models")
    assert sweep(tiny_model, pair_files, out, *command) == 0
    scored = json.load(open(os.path.join(out, "sweep_summary.json")))["ensemble"]
    weights = os.path.join(out, "seed-1", "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(1000)
    os.remove(os.path.join(out, "ensemble_scores.json"))
    assert sweep(tiny_model, pair_files, out, *command) == 0
    from seqtune.modelfiles import safetensors_problem

    assert safetensors_problem(weights) is None  # seed 1 trained again
    again = json.load(open(os.path.join(out, "sweep_summary.json")))["ensemble"]
    assert again["accuracy"] == scored["accuracy"] and again["members"] == 2
    # a damaged member folder handed to write_ensemble is named, not copied
    from seqtune.ensemble import write_ensemble

    with open(weights, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(SeqtuneError, match="model.safetensors is damaged"):
        write_ensemble([os.path.join(out, "seed-1"), os.path.join(out, "seed-2")], str(tmp_path / "x"))
    assert not os.path.exists(str(tmp_path / "x"))


def test_a_second_sweep_into_a_folder_in_use_is_refused_naming_the_first(tiny_model, pair_files, tmp_path, capsys):
    from seqtune.output_dir import LOCK_FILE, acquire_lock

    out = str(tmp_path / "busy")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1") == 0
    held = acquire_lock(out)  # (another process's lock, as far as flock is concerned: another open file)
    try:
        capsys.readouterr()
        assert sweep(tiny_model, pair_files, out, "--seeds", "1,2") == 2
        assert "is in use by another seqtune run (process" in capsys.readouterr().err
        assert not os.path.exists(os.path.join(out, "seed-2"))
    finally:
        held.release()
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2") == 0
    assert not os.path.exists(os.path.join(out, LOCK_FILE))


def test_a_data_file_changed_behind_the_same_flags_trains_the_runs_again(tiny_model, pair_files, tmp_path):
    import shutil

    files = {split: shutil.copy(path, str(tmp_path / f"{split}.csv")) for split, path in pair_files.items()}
    out = str(tmp_path / "changed")
    assert sweep(tiny_model, files, out, "--seeds", "1") == 0
    results = os.path.join(out, "seed-1", "all_results.json")
    stamp = os.path.getmtime(results)
    assert sweep(tiny_model, files, out, "--seeds", "1") == 0 and os.path.getmtime(results) == stamp  # reused
    rows = open(files["validation"]).read().splitlines()
    open(files["validation"], "w").write("\n".join(rows[:-2]) + "\n")  # other rows behind the same path
    assert sweep(tiny_model, files, out, "--seeds", "1") == 0
    assert os.path.getmtime(results) != stamp


def test_a_base_model_changed_behind_the_same_path_trains_the_runs_again(tiny_model, pair_files, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    model = shutil.copytree(tiny_model, str(tmp_path / "base"))
    out = str(tmp_path / "sweep")
    assert sweep(model, pair_files, out, "--seeds", "1") == 0
    results = os.path.join(out, "seed-1", "all_results.json")
    before = json.load(open(results))
    weights = load_file(os.path.join(model, "model.safetensors"))
    save_file({k: v * 3 for k, v in weights.items()}, os.path.join(model, "model.safetensors"))
    assert sweep(model, pair_files, out, "--seeds", "1") == 0
    assert json.load(open(results))["eval_loss"] != before["eval_loss"]  # trained again, from the new weights


def test_a_shard_added_to_a_glob_pattern_trains_the_runs_again(tiny_model, pair_files, tmp_path):
    import csv
    import shutil

    rows = list(csv.DictReader(open(pair_files["train"])))
    os.makedirs(tmp_path / "shards")
    for number, part in enumerate((rows[:16], rows[16:])):
        with open(tmp_path / "shards" / f"train-{number}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
    files = {**pair_files, "train": str(tmp_path / "shards" / "train-*.csv")}
    out = str(tmp_path / "sharded")
    assert sweep(tiny_model, files, out, "--seeds", "1") == 0
    results = os.path.join(out, "seed-1", "all_results.json")
    stamp = os.path.getmtime(results)
    assert sweep(tiny_model, files, out, "--seeds", "1") == 0 and os.path.getmtime(results) == stamp
    shutil.copy(tmp_path / "shards" / "train-0.csv", tmp_path / "shards" / "train-2.csv")  # one more shard
    assert sweep(tiny_model, files, out, "--seeds", "1") == 0
    assert os.path.getmtime(results) != stamp


def test_an_ensemble_of_lora_adapters_holds_the_adapters_and_scores_as_its_members(tiny_model, pair_files, tmp_path):
    """--save_adapter_only runs: the ensemble's members keep their adapters (the runs' own are then dropped), and
    the ensemble's logits are the mean of the runs' merged models, not of untrained heads."""
    import torch

    from seqtune.config import ModelArguments
    from seqtune.finetuned import load_finetuned

    out = str(tmp_path / "lora-ensemble")
    command = ("--seeds", "1,2", "--ensemble", "--lora_r", "2", "--save_adapter_only", "--learning_rate", "3e-2")
    assert sweep(tiny_model, pair_files, out, *command, "--keep_models") == 0
    runs = [load_finetuned(ModelArguments(model_name_or_path=os.path.join(out, f"seed-{s}")))[2] for s in (1, 2)]
    tokenizer, _, ensemble = load_finetuned(ModelArguments(model_name_or_path=os.path.join(out, "ensemble")))
    batch = tokenizer(["a first sentence", "another"], ["and its pair", "one more"], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        expected = torch.stack([run(**batch).logits for run in runs]).mean(0)
        torch.testing.assert_close(ensemble(**batch).logits, expected)
    for seed in (1, 2):
        assert os.path.isfile(os.path.join(out, "ensemble", f"member-{seed}", "adapter_model.safetensors"))
    # without --keep_models the runs' adapters are dropped: the ensemble alone must still load and score the same
    again = str(tmp_path / "lora-ensemble-2")
    assert sweep(tiny_model, pair_files, again, *command) == 0
    assert not os.path.exists(os.path.join(again, "seed-1", "adapter_model.safetensors"))
    with torch.no_grad():
        reloaded = load_finetuned(ModelArguments(model_name_or_path=os.path.join(again, "ensemble")))[2]
        torch.testing.assert_close(reloaded(**batch).logits, expected)
    # an ensemble recorded with a member that lacks its weights (as an older seqtune left them) is made anew, not
    # reused: the runs are trained again
    from seqtune.combining import folder_digest

    os.remove(os.path.join(again, "ensemble", "member-1", "adapter_model.safetensors"))
    record = json.load(open(os.path.join(again, "ensemble_scores.json")))
    record["files"] = folder_digest(os.path.join(again, "ensemble"))
    json.dump(record, open(os.path.join(again, "ensemble_scores.json"), "w"))
    assert sweep(tiny_model, pair_files, again, *command) == 0
    with torch.no_grad():
        reloaded = load_finetuned(ModelArguments(model_name_or_path=os.path.join(again, "ensemble")))[2]
        torch.testing.assert_close(reloaded(**batch).logits, expected)


def test_an_ensemble_member_without_weights_is_refused(tiny_model, tmp_path):
    from seqtune.ensemble import write_ensemble

    run = str(tmp_path / "seed-1")
    shutil.copytree(tiny_model, run)
    for name in os.listdir(run):
        if name.endswith(".safetensors") or name.endswith(".index.json"):
            os.remove(os.path.join(run, name))
    whole = str(tmp_path / "seed-2")
    shutil.copytree(tiny_model, whole)
    with pytest.raises(SeqtuneError, match="no weights"):
        write_ensemble([whole, run], str(tmp_path / "ensemble"))
    assert sorted(os.listdir(tmp_path)) == ["seed-1", "seed-2"]  # nothing copied, no staging folder left
    # a sharded run: its shards are copied with the index, and one missing shard means no weights
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).save_pretrained(
        run, max_shard_size="100KB")
    assert os.path.isfile(os.path.join(run, "model.safetensors.index.json"))
    folder = write_ensemble([run, whole], str(tmp_path / "ensemble"))
    assert sorted(n for n in os.listdir(os.path.join(folder, "member-1")) if n.startswith("model")) == sorted(
        n for n in os.listdir(run) if n.startswith("model"))
    os.remove(os.path.join(run, sorted(n for n in os.listdir(run) if n.startswith("model-"))[0]))
    with pytest.raises(SeqtuneError, match="no weights"):
        write_ensemble([run], str(tmp_path / "ensemble-2"))


def test_a_combination_that_does_not_load_stops_the_sweep_and_the_runs_keep_their_weights(
        tiny_model, pair_files, tmp_path, monkeypatch, capsys):
    from seqtune import combining

    def broken(combination, run_dirs, trust_remote_code):  # an ensemble whose member lost its weights
        os.makedirs(os.path.join(combination.folder, "member-1"))
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            if os.path.isfile(os.path.join(run_dirs[0], name)):
                shutil.copy2(os.path.join(run_dirs[0], name), os.path.join(combination.folder, name))
        shutil.copy2(os.path.join(run_dirs[0], "config.json"), os.path.join(combination.folder, "member-1"))
        json.dump({"members": ["member-1"]}, open(os.path.join(combination.folder, "ensemble.json"), "w"))

    monkeypatch.setattr(combining, "build", broken)
    out = str(tmp_path / "out")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2", "--ensemble") != 0
    assert "scoring the ensemble made of" in capsys.readouterr().err
    for seed in (1, 2):  # not dropped: the same command makes the ensemble from them
        assert os.path.isfile(os.path.join(out, f"seed-{seed}", "model.safetensors"))
    assert not os.path.exists(os.path.join(out, "ensemble_scores.json"))
