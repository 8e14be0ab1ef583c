"""`seqtune predict --test_file "shards/*.parquet" --predictions_dir DIR`: prediction of inputs of any size in
constant memory. The input is read chunk by chunk (pyarrow's streaming readers for Parquet, CSV/TSV and JSONL),
each chunk of --rows_per_shard rows is predicted and written as one Parquet shard (atomically), named by its file
and chunk numbers; a restarted run skips the shards that exist, so every row ends up exactly once. Under torchrun
or accelerate launch (RANK/WORLD_SIZE), process r scores the chunks whose running number is r modulo the world
size; no process group is needed."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import socket
import sys
import time
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from seqtune.config import DataArguments, EvalArguments, ModelArguments
from seqtune.data import check_max_length, data_file_paths, duplicate_columns_problem, resolve_columns
from seqtune.errors import SeqtuneError
from seqtune.fileio import atomic_write, read_json, write_json
from seqtune.modeling import resolve_model_path
from seqtune.predictor import to_local_device

logger = logging.getLogger("seqtune")

MANIFEST = "_seqtune_predict.json"  # "_" and "." names are skipped by pyarrow/pandas when they read the folder
FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json"}


def predict_shards(data_args: DataArguments, model_args: ModelArguments, eval_args: EvalArguments) -> list[dict]:
    from filelock import FileLock, Timeout

    from seqtune.evaluate import _kept_columns, check_data_kind, input_names, load_predictor

    files = [os.path.abspath(p) for p in data_file_paths(data_args.test_file)]
    _check_formats(files)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    out = eval_args.predictions_dir
    os.makedirs(out, exist_ok=True)
    lock = FileLock(os.path.join(out, f".seqtune-predict-{rank}.lock"))
    try:  # one writer per process slot: two runs into one folder would write the same shards
        lock.acquire(timeout=0)
    except Timeout as error:
        raise SeqtuneError(f"--predictions_dir {out}: another seqtune predict (process {rank}) is writing into it; "
                           "wait for it to finish, or choose another folder.") from error
    try:
        names = _schema(files[0]).names
        columns = resolve_columns(names, None, data_args.text_column, data_args.text_pair_column)
        kept = _kept_columns(names, eval_args.keep_columns)
        _check_columns(files, [c for c in (columns.text, columns.text_pair, *kept) if c])
        eval_args = replace(eval_args, bf16=_effective_bf16(model_args, eval_args))  # the manifest records it
        predictor = load_predictor(model_args, data_args.max_seq_length, eval_args.per_device_eval_batch_size,
                                   eval_args.backend, eval_args.bf16)
        data_args = replace(data_args, max_seq_length=predictor.max_length)  # (left out: the model's own)
        check_max_length(predictor.tokenizer, predictor.config, data_args.max_seq_length, columns.text_pair is not None)
        check_data_kind(predictor.config, columns.text_pair is not None)  # (both before the manifest records a run)
        _check_manifest(out, _settings(files, model_args, data_args, eval_args, columns, kept))
        _remove_dead_temporaries(out)
        to_local_device(predictor.model)
        kept_as = input_names(kept, predictor.config)
        summary = _run(files, out, predictor, columns, kept_as, eval_args.rows_per_shard, rank, world)
    finally:
        lock.release()
    logger.info("Predicted %d rows into %d shards in %s (%.0f rows/s); %d rows were already done%s", summary["rows"],
                summary["shards"], out, summary["rows_per_second"], summary["skipped_rows"],
                f" (process {rank} of {world})" if world > 1 else "")
    return [summary]


def _effective_bf16(model_args, eval_args) -> bool:
    """--bf16, else the precision the model was evaluated in while training (torch backend only)."""
    from seqtune.finetuned import pick_backend
    from seqtune.modeling import load_config
    from seqtune.predictor import evaluated_in_bf16

    if eval_args.bf16 is not None:
        return eval_args.bf16
    path = resolve_model_path(model_args.model_name_or_path)
    if pick_backend(path, eval_args.backend) != "torch":
        return False
    return evaluated_in_bf16(load_config(path, model_args.trust_remote_code))


def _check_formats(files: list[str]) -> None:
    unknown = [f for f in files if os.path.splitext(f)[1].lower() not in FORMATS]
    if unknown:
        raise SeqtuneError(f"--predictions_dir reads Parquet, CSV, TSV and JSONL files; {unknown[0]} is none of "
                           "them (by its extension).")


def _check_columns(files: list[str], needed: list[str]) -> None:
    """Every file has the columns the first one gave, each once (schemas are read from footers and first blocks:
    cheap)."""
    for path in files:
        names = _schema(path).names
        problem = duplicate_columns_problem(f"--test_file {path}", names)
        if problem:
            raise SeqtuneError(problem)
        missing = [c for c in needed if c not in names]
        if missing:
            raise SeqtuneError(f"--test_file {path} has no column {', '.join(missing)} (the first file has; its "
                               f"columns are {names}): every shard needs the same columns.")


def _settings(files, model_args, data_args, eval_args, columns, kept) -> dict:
    """What decides the shards' content: a restart with other settings would mix two runs' rows."""
    model = resolve_model_path(model_args.model_name_or_path)
    return {"inputs": [_file_identity(f) for f in files], "rows_per_shard": eval_args.rows_per_shard,
            "model": os.path.abspath(model) if os.path.exists(model) else model, "model_files": _model_identity(model),
            "backend": eval_args.backend, "bf16": eval_args.bf16, "torch_dtype": model_args.torch_dtype,
            "max_seq_length": data_args.max_seq_length, "text_column": columns.text,
            "text_pair_column": columns.text_pair, "kept_columns": kept}


def _file_identity(path: str) -> list:
    status = os.stat(path)
    return [path, status.st_size, status.st_mtime_ns]


def _model_identity(model: str) -> list:
    """A model folder retrained or replaced in place between a kill and the restart must not pass as the same."""
    if not os.path.isdir(model):
        return []
    return [_file_identity(os.path.join(model, name))[1:] + [name] for name in sorted(os.listdir(model))
            if name.endswith((".safetensors", ".onnx", ".data", ".bin")) or name == "config.json"]


def _check_manifest(out: str, settings: dict) -> None:
    path = os.path.join(out, MANIFEST)
    earlier = read_json(path)
    if earlier is None:
        foreign = [n for n in os.listdir(out) if n.endswith(".parquet")]
        earlier = read_json(path)  # another process of this run may have written it (and a shard) meanwhile
    if earlier is None:
        if foreign:
            raise SeqtuneError(f"--predictions_dir {out} holds Parquet files that seqtune did not write: choose an "
                               "empty or new folder.")
        write_json(path, settings)
        return
    changed = [key for key in settings if earlier.get(key) != settings[key]]
    if changed and not any(n != MANIFEST and not n.startswith(".seqtune-predict-") for n in os.listdir(out)):
        # that run was refused or stopped before its first shard (bad rows, a wrong flag): nothing of it to mix
        logger.info("--predictions_dir %s: the earlier run there wrote no shard; starting with these settings.", out)
        write_json(path, settings)
        return
    if changed:
        raise SeqtuneError(f"--predictions_dir {out} holds the shards of a run with other settings ("
                           f"{', '.join(changed)} differ{'s' if len(changed) == 1 else ''}): continuing would mix "
                           "both runs' rows. Rerun that command, or choose a new folder.")
    logger.info("Continuing the predictions in %s: shards already written are skipped.", out)


def _temporary_name(path: str) -> str:
    """Host and process id in the name: a restart removes the leftovers of dead writers on its own host only (the
    folder may be shared by the processes of several machines)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp.{socket.gethostname()}.{os.getpid()}")


def _remove_dead_temporaries(out: str) -> None:
    """Shards being written when a run was killed (their writer's process id is in the name and gone)."""
    for path in glob.glob(os.path.join(out, ".part-*.tmp.*")):
        host, _, pid = path.rsplit(".tmp.", 1)[-1].rpartition(".")
        if host == socket.gethostname() and pid.isdigit() and not _process_exists(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(path)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run(files, out, predictor, columns, kept, rows_per_shard, rank, world) -> dict:
    from tqdm.auto import tqdm

    done = skipped = shards = 0
    started = time.perf_counter()
    bar = tqdm(total=_known_rows(files) if world == 1 else None, unit="rows", unit_scale=True, desc="Predicting",
               file=sys.stderr, disable=logger.getEffectiveLevel() > logging.INFO or rank != 0,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    for number, (file_index, chunk_index, table) in enumerate(_chunks(files, rows_per_shard)):
        if number % world != rank:
            continue
        path = os.path.join(out, f"part-{file_index:05d}-{chunk_index:06d}.parquet")
        if _whole_shard(path, table.num_rows):
            skipped += table.num_rows
        else:
            _write_shard(path, _predicted_table(predictor, table, columns, kept))
            done, shards = done + table.num_rows, shards + 1
        bar.update(table.num_rows)
    bar.close()
    seconds = time.perf_counter() - started
    return {"predictions_dir": out, "rows": done, "shards": shards, "skipped_rows": skipped,
            "seconds": round(seconds, 2), "rows_per_second": round(done / seconds, 1) if seconds else 0.0}


def _whole_shard(path: str, rows: int) -> bool:
    """A shard written by an earlier run, with its rows: one emptied by a crash of the machine is written again."""
    if not os.path.exists(path):
        return False
    try:
        return pq.read_metadata(path).num_rows == rows
    except (OSError, pa.ArrowInvalid):
        return False


def _known_rows(files: list[str]) -> int | None:
    """Parquet files state their row counts in their footers; text files would have to be read to know."""
    if all(f.lower().endswith(".parquet") for f in files):
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return None


def _predicted_table(predictor, table: pa.Table, columns, kept: dict[str, str]) -> pa.Table:
    """The kept input columns (under their names in the file: see `input_names`), then the prediction fields."""
    texts = _texts(table, columns.text)
    pairs = _texts(table, columns.text_pair) if columns.text_pair else None
    fields = predictor.predict(texts, pairs)
    result = table.select(list(kept)).rename_columns(list(kept.values()))
    for name in (fields[0] if fields else {}):
        result = result.append_column(name, pa.array([row[name] for row in fields]))
    return result


def _texts(table: pa.Table, column: str) -> list[str]:
    """The column's texts; a null or a value that is not text is refused as the in-memory path refuses it."""
    values = table.column(column).to_pylist()
    if any(v is None for v in values):
        raise SeqtuneError(f"column '{column}' has empty (null) text: remove or fill those rows.")
    if any(not isinstance(v, str) for v in values):
        kind = type(next(v for v in values if not isinstance(v, str))).__name__
        raise SeqtuneError(f"column '{column}' holds {kind} values, not text: name the text columns with "
                           "--text_column / --text_pair_column, or store the values as text.")
    return values


def _write_shard(path: str, table: pa.Table) -> None:
    with atomic_write(path, "wb", tmp=_temporary_name(path)) as f:
        pq.write_table(table, f)


# ------------------------------------------------------------------------------------------ reading in chunks
def _schema(path: str) -> pa.Schema:
    with contextlib.closing(_reader(path)) as reader:  # (a Parquet file's own schema names nested leaves)
        return reader.schema_arrow if isinstance(reader, pq.ParquetFile) else reader.schema


def _chunks(files: list[str], rows: int):
    """(file number, chunk number, table of exactly `rows` rows, the last of a file fewer), file after file."""
    for file_index, path in enumerate(files):
        with contextlib.closing(_reader(path)) as reader:
            for chunk_index, table in enumerate(_exact_chunks(_batches(reader, path), rows)):
                yield file_index, chunk_index, table


def _exact_chunks(batches, rows: int):
    """Readers hand out batches of their own sizes; chunks must be the same on every run and in every process."""
    pending, count = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count, batch = count + take, batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _batches(reader, path: str):
    try:
        yield from (reader.iter_batches(batch_size=8192) if isinstance(reader, pq.ParquetFile) else reader)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        raise SeqtuneError(f"--test_file {path} could not be read: {str(error).splitlines()[0]}") from error


def _reader(path: str):
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson

    kind = FORMATS[os.path.splitext(path)[1].lower()]
    try:
        if kind == "parquet":
            return pq.ParquetFile(path)
        if kind == "json":
            return pjson.open_json(path)
        # TSV as the in-memory reader takes it: no quoting (a text may start with "), one row a line
        parse = (pcsv.ParseOptions(delimiter="\t", quote_char=False) if kind == "tsv"
                 else pcsv.ParseOptions(delimiter=",", newlines_in_values=True))
        names = pcsv.open_csv(path, parse_options=parse).schema.names
        # every column read as text (a column typed from its first block would fail on a later block that differs),
        # an empty cell as missing: as the in-memory reader takes them (data._csv_options)
        return pcsv.open_csv(path, parse_options=parse, convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as error:
        raise SeqtuneError(f"--test_file {path} could not be read: {str(error).splitlines()[0]}") from error
