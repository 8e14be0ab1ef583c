"""predict --predictions_dir: several Parquet (or CSV, JSONL) shards in, Parquet shards out, row for row equal to
the in-memory prediction; a run killed and restarted ends with every row exactly once; processes under
RANK/WORLD_SIZE split the chunks; a folder holding another run's shards is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from seqtune.cli import main
from seqtune.demo_data.generate import make_paraphrase_pairs


@pytest.fixture(scope="module")
def finetuned(tiny_model, pair_files, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("batch") / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "6",
                 "--per_device_train_batch_size", "8", "--symmetric_pairs", "true", "--learning_rate", "1e-3",
                 "--disable_tqdm", "--report_to", "none"]) == 0
    return out


def pairs_frame(rows: int) -> pd.DataFrame:
    frame = pd.DataFrame(make_paraphrase_pairs(rows, seed=11))
    frame["id"] = [f"row-{i}" for i in range(rows)]
    return frame[["id", "sentence1", "sentence2"]]


def in_memory(model: str, frame: pd.DataFrame, folder) -> pd.DataFrame:
    path, out = str(folder / "all.csv"), str(folder / "all.jsonl")
    frame.to_csv(path, index=False)
    assert main(["predict", "--model_name_or_path", model, "--test_file", path, "--output_file", out, "--bf16", "false"]) == 0
    return pd.read_json(out, lines=True, dtype={"id": str})


def read_shards(folder) -> pd.DataFrame:
    return pd.read_parquet(str(folder))


def test_parquet_shards_equal_the_in_memory_prediction_row_for_row(finetuned, tmp_path):
    frame = pairs_frame(70)
    for i, part in enumerate((frame[:25], frame[25:26], frame[26:])):  # shards of uneven sizes, one of one row
        part.to_parquet(tmp_path / f"in-{i}.parquet")
    out = tmp_path / "preds"
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(tmp_path / "in-*.parquet"),
                 "--predictions_dir", str(out), "--rows_per_shard", "10", "--bf16", "false"]) == 0  # (float32, as the reference)
    got, expected = read_shards(out), in_memory(finetuned, frame, tmp_path)
    assert list(got.columns) == ["id", "sentence1", "sentence2", "prediction", "prediction_id", "probability"]
    assert got["id"].tolist() == frame["id"].tolist()
    assert got["prediction_id"].tolist() == expected["prediction_id"].tolist()
    assert got["probability"].tolist() == pytest.approx(expected["probability"].tolist(), abs=1e-6)
    assert sorted(n for n in os.listdir(out) if n.endswith(".parquet"))[:4] == [
        "part-00000-000000.parquet", "part-00000-000001.parquet", "part-00000-000002.parquet",
        "part-00001-000000.parquet"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_text_formats_give_the_same_shards(finetuned, tmp_path, suffix):
    frame = pairs_frame(23)
    path = str(tmp_path / f"in{suffix}")
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    out = tmp_path / "preds"
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", path, "--predictions_dir", str(out),
                 "--rows_per_shard", "7", "--keep_columns", "id"]) == 0
    got, expected = read_shards(out), in_memory(finetuned, frame, tmp_path)
    assert list(got.columns) == ["id", "prediction", "prediction_id", "probability"]
    assert got["id"].tolist() == frame["id"].tolist()
    assert got["prediction_id"].tolist() == expected["prediction_id"].tolist()


def run_predict(model, inputs, out, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "seqtune", "predict", "--model_name_or_path", model,
                             "--test_file", inputs, "--predictions_dir", out, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_a_killed_run_restarted_ends_with_every_row_exactly_once(finetuned, tmp_path):
    frame = pairs_frame(3000)
    frame.to_parquet(tmp_path / "big.parquet")
    out = str(tmp_path / "preds")
    args = (finetuned, str(tmp_path / "big.parquet"), out, "--rows_per_shard", "25")
    process = run_predict(*args)
    while not [n for n in os.listdir(out) if n.startswith("part-")] if os.path.isdir(out) else True:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = [n for n in os.listdir(out) if n.startswith("part-")]
    assert 0 < len(written) < 120, "the kill came after the run had finished: nothing was tested"
    restarted = run_predict(*args)
    _, err = restarted.communicate(timeout=300)
    assert restarted.returncode == 0, err
    assert "Continuing the predictions" in err and "rows were already done" in err
    got = read_shards(out)
    assert sorted(got["id"]) == sorted(frame["id"]) and got["id"].is_unique
    assert not [n for n in os.listdir(out) if ".tmp." in n]


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_processes_split_the_chunks_between_them(finetuned, tmp_path):
    frame = pairs_frame(90)
    for i in range(3):
        frame[i * 30:(i + 1) * 30].to_parquet(tmp_path / f"in-{i}.parquet")
    out = str(tmp_path / "preds")
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2",
                "--master_port", "29541", "-m", "seqtune", "predict", "--model_name_or_path", finetuned,
                "--test_file", str(tmp_path / "in-*.parquet"), "--predictions_dir", out, "--rows_per_shard", "8"]
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    got, expected = read_shards(out), in_memory(finetuned, frame, tmp_path)
    assert got["id"].tolist() == frame["id"].tolist()
    assert got["prediction_id"].tolist() == expected["prediction_id"].tolist()
    done = [json.loads(line)["rows"] for line in result.stdout.splitlines() if line.startswith("{")]
    assert sum(done) == 90 and len(done) == 2 and min(done) > 0  # each its share


def test_a_folder_with_another_runs_shards_is_refused(finetuned, tmp_path, capsys):
    frame = pairs_frame(12)
    frame.to_parquet(tmp_path / "in.parquet")
    out = str(tmp_path / "preds")
    base = ["predict", "--model_name_or_path", finetuned, "--test_file", str(tmp_path / "in.parquet"),
            "--predictions_dir", out]
    assert main(base + ["--rows_per_shard", "5"]) == 0
    assert main(base + ["--rows_per_shard", "6"]) == 2
    assert "rows_per_shard differs" in capsys.readouterr().err
    frame[:3].to_parquet(tmp_path / "in.parquet")  # the input changed since the shards were written
    assert main(base + ["--rows_per_shard", "5"]) == 2
    assert "inputs differs" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    frame.to_parquet(foreign / "mine.parquet")
    assert main(base[:-1] + [str(foreign)]) == 2
    assert "did not write" in capsys.readouterr().err


def test_texts_starting_with_quotes_in_tsv_and_null_texts(finetuned, tmp_path, capsys):
    tsv = tmp_path / "q.tsv"
    tsv.write_text('id\tsentence1\tsentence2\n1\t"Quoted," he said.\tHe said it\n2\tplain\t"open quote\n')
    out = tmp_path / "preds"
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(tsv), "--predictions_dir",
                 str(out)]) == 0
    got = read_shards(out)
    assert got["sentence1"].tolist() == ['"Quoted," he said.', "plain"]
    assert got["sentence2"].tolist() == ["He said it", '"open quote']
    frame = pairs_frame(3)
    frame.loc[1, "sentence2"] = None
    frame.to_parquet(tmp_path / "nulls.parquet")
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(tmp_path / "nulls.parquet"),
                 "--predictions_dir", str(tmp_path / "p2")]) == 2
    assert "column 'sentence2' has empty (null) text" in capsys.readouterr().err


def test_a_model_changed_in_place_is_not_continued(finetuned, tmp_path, capsys):
    import shutil as sh

    model = sh.copytree(finetuned, str(tmp_path / "model"))
    pairs_frame(6).to_parquet(tmp_path / "in.parquet")
    args = ["predict", "--model_name_or_path", model, "--test_file", str(tmp_path / "in.parquet"),
            "--predictions_dir", str(tmp_path / "preds"), "--rows_per_shard", "2"]
    assert main(args) == 0
    os.utime(os.path.join(model, "model.safetensors"), (1, 1))  # as if retrained into the same folder
    assert main(args) == 2
    assert "model_files differs" in capsys.readouterr().err


def test_a_shard_emptied_by_a_crash_is_written_again(finetuned, tmp_path):
    frame = pairs_frame(6)
    frame.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "preds"
    args = ["predict", "--model_name_or_path", finetuned, "--test_file", str(tmp_path / "in.parquet"),
            "--predictions_dir", str(out), "--rows_per_shard", "2"]
    assert main(args) == 0
    (out / "part-00000-000001.parquet").write_bytes(b"")  # renamed, never flushed: a power cut
    assert main(args) == 0
    assert read_shards(out)["id"].tolist() == frame["id"].tolist()


def test_a_second_run_into_the_same_folder_is_refused(finetuned, tmp_path, capsys):
    from filelock import FileLock

    pairs_frame(5).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "preds"
    out.mkdir()
    with FileLock(str(out / ".seqtune-predict-0.lock")):
        assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(tmp_path / "in.parquet"),
                     "--predictions_dir", str(out)]) == 2
    assert "another seqtune predict (process 0) is writing into it" in capsys.readouterr().err


def test_flag_combinations_are_named(finetuned, pair_files, tmp_path, capsys):
    code = main(["predict", "--model_name_or_path", finetuned, "--test_file", pair_files["test"], "--predictions_dir",
                 str(tmp_path / "p"), "--output_file", str(tmp_path / "p.csv"), "--rows_per_shard", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "not both" in err and "--rows_per_shard" in err
    code = main(["predict", "--model_name_or_path", finetuned, "--validation_file", pair_files["validation"],
                 "--predictions_dir", str(tmp_path / "p")])
    assert code == 2 and "reads the rows to predict from --test_file" in capsys.readouterr().err
    code = main(["predict", "--model_name_or_path", finetuned, "--test_file", pair_files["test"], "--predictions_dir",
                 str(tmp_path / "p"), "--max_predict_samples", "3"])
    assert code == 2 and "--max_predict_samples is for the in-memory prediction" in capsys.readouterr().err
    pairs_frame(4).to_parquet(tmp_path / "a-0.parquet")
    pairs_frame(4).rename(columns={"sentence2": "other"}).to_parquet(tmp_path / "a-1.parquet")
    code = main(["predict", "--model_name_or_path", finetuned, "--test_file", str(tmp_path / "a-*.parquet"),
                 "--predictions_dir", str(tmp_path / "q")])
    assert code == 2 and "a-1.parquet has no column sentence2" in capsys.readouterr().err
    bad = tmp_path / "rows.txt"
    bad.write_text("a\n")
    code = main(["predict", "--model_name_or_path", finetuned, "--test_file", str(bad), "--predictions_dir",
                 str(tmp_path / "p")])
    assert code == 2 and "Parquet, CSV, TSV and JSONL" in capsys.readouterr().err


def test_a_run_refused_for_its_rows_leaves_nothing_that_blocks_the_fixed_one(finetuned, tmp_path, capsys):
    frame = pairs_frame(12)
    frame.loc[5, "sentence2"] = None  # a null text: refused, row named
    path, out = str(tmp_path / "in.jsonl"), str(tmp_path / "out")
    frame.to_json(path, orient="records", lines=True)
    command = ["predict", "--model_name_or_path", finetuned, "--test_file", path, "--predictions_dir", out]
    assert main(command) == 2
    assert "null" in capsys.readouterr().err
    frame.loc[5, "sentence2"] = "fixed"
    frame.to_json(path, orient="records", lines=True)
    assert main(command) == 0  # not "a run with other settings": the refused run wrote no shard
    assert len(pd.read_parquet(out)) == 12


def test_a_parquet_file_naming_a_column_twice_is_refused_by_both_paths(finetuned, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pairs_frame(6)
    path = str(tmp_path / "twice.parquet")
    pq.write_table(pa.table([pa.array(frame.sentence1), pa.array(frame.sentence2), pa.array(frame.sentence2)],
                            names=["sentence1", "sentence2", "sentence2"]), path)
    shards = ["predict", "--model_name_or_path", finetuned, "--test_file", path, "--predictions_dir",
              str(tmp_path / "out")]
    assert main(shards) == 2
    assert "names the column(s) sentence2 twice" in capsys.readouterr().err
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", path, "--output_file",
                 str(tmp_path / "p.jsonl")]) == 2
    assert "names the column(s) sentence2 twice" in capsys.readouterr().err
    frame.to_parquet(path)  # fixed in place: the same folder takes it
    assert main(shards) == 0


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_cells_are_the_text_written_on_both_paths(finetuned, tmp_path, capsys, suffix):
    """A text reading NA, None, nan or null is that text, and a column of digits keeps its zeros, in memory as in
    --predictions_dir; only an empty cell is missing, and both paths refuse it naming the column."""
    sep = "\t" if suffix == ".tsv" else ","
    rows = [["007", "NA", "None"], ["008", "nan", "null"], ["010", "123", "N/A"], ["011", "plain words", "#N/A"]]
    path = tmp_path / f"in{suffix}"
    path.write_text(sep.join(["id", "sentence1", "sentence2"]) + "\n" + "".join(sep.join(r) + "\n" for r in rows))
    memory, shards = str(tmp_path / "p.jsonl"), str(tmp_path / "shards")
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(path), "--output_file", memory,
                 "--bf16", "false"]) == 0
    got = pd.read_json(memory, lines=True, dtype=False)
    assert got["id"].tolist() == ["007", "008", "010", "011"]
    assert got[["sentence1", "sentence2"]].values.tolist() == [r[1:] for r in rows]
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(path), "--predictions_dir",
                 shards, "--bf16", "false"]) == 0
    from_shards = read_shards(shards)
    assert from_shards[["id", "sentence1", "sentence2"]].values.tolist() == got[["id", "sentence1", "sentence2"]
                                                                                ].values.tolist()
    assert from_shards["prediction_id"].tolist() == got["prediction_id"].tolist()
    assert from_shards["probability"].tolist() == pytest.approx(got["probability"].tolist(), abs=1e-6)
    path.write_text(sep.join(["id", "sentence1", "sentence2"]) + "\n1" + sep + "a text" + sep + "\n")
    capsys.readouterr()
    for where in (["--output_file", str(tmp_path / "q.jsonl")], ["--predictions_dir", str(tmp_path / "s2")]):
        assert main(["predict", "--model_name_or_path", finetuned, "--test_file", str(path), *where]) == 2
        assert "column 'sentence2' has empty (null) text" in capsys.readouterr().err


def test_input_columns_named_like_prediction_fields_are_kept_not_overwritten(finetuned, tmp_path, caplog):
    """A column `prediction` or `probability` in the data (last month's predictions; a regression label `score`)
    keeps its values as `<name>_input` on both paths; the prediction fields hold the model's output."""
    frame = pairs_frame(12)
    frame["prediction"] = ["given"] * 12
    frame["probability"] = [0.25] * 12
    path = str(tmp_path / "in.parquet")
    frame.to_parquet(path)
    memory, shards = str(tmp_path / "p.jsonl"), str(tmp_path / "shards")
    for where in (["--output_file", memory], ["--predictions_dir", shards]):
        assert main(["predict", "--model_name_or_path", finetuned, "--test_file", path, *where, "--bf16", "false"]) == 0
    assert "kept as 'prediction_input'" in caplog.text
    for got in (pd.read_json(memory, lines=True), read_shards(shards)):
        assert got["prediction_input"].tolist() == ["given"] * 12
        assert got["probability_input"].tolist() == [0.25] * 12
        assert set(got["prediction"].astype(str)) <= {"0", "1"}
        assert got["probability"].between(0.5, 1.0).all()
    frame["prediction_input"] = ["taken"] * 12
    frame.to_parquet(path)
    assert main(["predict", "--model_name_or_path", finetuned, "--test_file", path, "--output_file", memory]) == 2


def test_list_and_struct_columns_are_kept_as_they_are_in_memory(finetuned, tmp_path):
    """Parquet columns of lists and of structs are columns (not their leaf fields) to --keep_columns, and both
    paths copy them unchanged beside the prediction."""
    frame = pairs_frame(10)
    frame["tags"] = [["a", "b"][: i % 3] for i in range(10)]
    frame["meta"] = [{"source": f"s{i}", "page": i} for i in range(10)]
    path = str(tmp_path / "in.parquet")
    frame.to_parquet(path)
    memory, shards = str(tmp_path / "p.jsonl"), str(tmp_path / "shards")
    keep = ["--keep_columns", "id", "tags", "meta"]
    for where in (["--output_file", memory], ["--predictions_dir", shards]):
        assert main(["predict", "--model_name_or_path", finetuned, "--test_file", path, *where, *keep,
                     "--bf16", "false"]) == 0
    got, from_shards = pd.read_json(memory, lines=True), read_shards(shards)
    assert list(from_shards.columns) == list(got.columns) == ["id", "tags", "meta", "prediction", "prediction_id",
                                                              "probability"]
    for frame_read in (got, from_shards):
        assert [list(t) for t in frame_read["tags"]] == frame["tags"].tolist()
        assert [dict(m) for m in frame_read["meta"]] == frame["meta"].tolist()
