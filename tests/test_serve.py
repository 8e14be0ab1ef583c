"""`seqtune serve` as a real process on a loopback port: the same predictions as `seqtune predict`, a 4xx with a
JSON message for every bad request, 503 with Retry-After beyond the queue (and still serving afterwards), and
SIGTERM answering every request in flight."""

from __future__ import annotations

import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from seqtune.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 60):
    """(status, parsed JSON body, headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null"), dict(response.getheaders())
    finally:
        connection.close()


def post(port: int, payload, **kwargs):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(port, "POST", "/predict", body, **kwargs)


class Server:
    def __init__(self, model: str, *flags: str):
        self.port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "seqtune", "serve", "--model_name_or_path", model,
                                         "--port", str(self.port), *flags], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                if request(self.port, "GET", "/health", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        return self.process.returncode, err


@pytest.fixture(scope="module")
def model(tiny_model, pair_files, tmp_path_factory) -> str:
    """A fine-tuned tiny model whose pairs are symmetric: the server must average both orders as predict does."""
    out = str(tmp_path_factory.mktemp("serve") / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "6",
                 "--per_device_train_batch_size", "8", "--symmetric_pairs", "true", "--learning_rate", "1e-3",
                 "--disable_tqdm", "--report_to", "none"]) == 0
    return out


@pytest.fixture(scope="module")
def server(model):
    running = Server(model, "--max_batch_size", "8", "--bf16", "false")  # float32: equal to predict's to 1e-6
    running.wait_ready()
    yield running
    code, err = running.stop()
    assert code == 0, err


def test_answers_equal_predicts_and_name_the_labels(server, model, pair_files, tmp_path):
    predictions = str(tmp_path / "p.jsonl")
    assert main(["predict", "--model_name_or_path", model, "--test_file", pair_files["test"], "--output_file",
                 predictions, "--bf16", "false"]) == 0  # the server here runs in float32 too
    expected = [json.loads(line) for line in open(predictions)]
    rows = list(csv.DictReader(open(pair_files["test"])))
    items = [{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in rows[:8]]
    status, body, _ = post(server.port, items)
    assert status == 200 and len(body["predictions"]) == 8
    for answer, want in zip(body["predictions"], expected):
        assert answer["label"] == want["prediction"] and answer["label_id"] == want["prediction_id"]
        assert answer["probability"] == pytest.approx(want["probability"], abs=2e-6)
        assert set(answer["probabilities"]) == {"0", "1"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    status, one, _ = post(server.port, items[3])  # one item in, one answer out
    assert status == 200 and one["probability"] == pytest.approx(body["predictions"][3]["probability"], abs=1e-6)
    status, metadata, _ = request(server.port, "GET", "/metadata")
    assert status == 200 and metadata["labels"] == ["0", "1"] and metadata["symmetric_pairs"] is True
    assert metadata["text_pairs"] is True
    assert metadata["max_seq_length"] == 128 and metadata["backend"] == "torch" and metadata["bf16"] is False


def test_bf16_by_default_where_it_is_fast_and_close_to_float32(model, server):
    import torch

    fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    running = Server(model)
    running.wait_ready()
    try:
        assert request(running.port, "GET", "/metadata")[1]["bf16"] is fast
        item = {"text": "a man is riding a horse", "text_pair": "a person rides an animal"}
        default, exact = post(running.port, item)[1], post(server.port, item)[1]
        assert default["probability"] == pytest.approx(exact["probability"], abs=2e-2)
    finally:
        running.stop()


BAD_REQUESTS = [
    (b'{"text": "a", ', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b'{"text_pair": "b"}', 422, 'no "text" field'),
    (b'{"text": 5}', 422, "text must be a string"),
    (b'{"text": "a", "text_pair": ["b"]}', 422, "text_pair must be a string"),
    (b'{"text": null}', 422, "text must be a string"),
    (b'{"txt": "a"}', 422, "unknown field"),
    (b"[]", 422, "empty"),
    (b'"just a string"', 422, "must be an item"),
    (b"[1, 2]", 422, "item 0 is not an object"),
    (b'{"text": "\\ud800"}', 422, "not valid Unicode"),
    (b'{"text": ' + b"1" * 5000 + b"}", 400, "not valid JSON"),
    (b"[" * 100000, 400, "not valid JSON"),
    (b'[{"text": "a"}, {"text": "b", "text_pair": "c"}]', 422, "every item"),
    (b'{"text": "a"}', 422, 'fine-tuned on text pairs, but the request holds single texts: give every item'),
    (b'[{"text": "a", "text_pair": null}]', 422, "fine-tuned on text pairs"),  # null: no pair, as if left out
    (b'{"text": "a", "text": "b", "text_pair": "c"}', 422, 'names "text" twice'),
    (b'[{"text": "a", "text_pair": "b", "text_pair": "c"}]', 422, 'names "text_pair" twice'),
    (json.dumps([{"text": "a"}] * 9).encode(), 413, "at most 8"),
    (b"[" + b",".join([b'{"text": "' + b"y" * 15000 + b'"}'] * 8) + b"]", 413, "bytes"),  # 120 kB > 100 kB
]


@pytest.fixture(scope="module")
def strict_server(model):
    running = Server(model, "--max_batch_size", "8", "--max_request_bytes", "100000")
    running.wait_ready()
    yield running
    running.stop()


@pytest.mark.parametrize("body,status,message", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_with_a_json_message(strict_server, body, status, message):
    got, answer, _ = post(strict_server.port, body)
    assert got == status and message in answer["error"]
    assert post(strict_server.port, {"text": "still", "text_pair": "serving"})[0] == 200


def test_a_text_of_a_megabyte_gets_413_under_the_default_limits(server):
    status, answer, _ = post(server.port, {"text": "x" * 1_000_000, "text_pair": "y"})
    assert status == 413 and "1000000 characters; at most 20000" in answer["error"]
    assert post(server.port, {"text": "still", "text_pair": "serving"})[0] == 200


def test_wrong_paths_and_methods_are_4xx_json(server):
    assert request(server.port, "GET", "/predict")[0] == 405
    status, body, _ = request(server.port, "GET", "/nowhere")
    assert status == 404 and body


def test_a_burst_beyond_the_queue_gets_503_and_the_server_recovers(model):
    running = Server(model, "--max_batch_size", "1", "--max_queue_size", "1", "--max_wait_ms", "0")
    running.wait_ready()
    try:
        statuses, retry_after = [], set()
        long = {"text": "the quick brown fox " * 40, "text_pair": "jumps over the lazy dog " * 40}
        start = threading.Barrier(48)

        def client():
            start.wait()
            status, _, headers = post(running.port, long)
            statuses.append(status)
            if status == 503:
                retry_after.add(headers.get("retry-after"))

        threads = [threading.Thread(target=client) for _ in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) > 0
        assert retry_after == {"1"}
        assert post(running.port, long)[0] == 200 and request(running.port, "GET", "/health")[0] == 200
    finally:
        code, err = running.stop()
    assert code == 0, err


def test_sigterm_answers_every_request_in_flight(model):
    running = Server(model, "--max_batch_size", "4", "--max_wait_ms", "400")  # requests wait in the batcher
    running.wait_ready()
    answers = []

    def client(i):
        answers.append(post(running.port, {"text": f"sentence {i}", "text_pair": "another one"})[0])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # the requests are queued or being scored
    running.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    running.process.wait(timeout=60)  # it exits on its own: a second SIGTERM from stop() would mean "stop now"
    code, err = running.stop()
    assert answers == [200] * 10
    assert code == 0 and "Stopped." in err
    with pytest.raises(OSError):
        request(running.port, "GET", "/health", timeout=5)


def test_requests_still_waiting_when_the_shutdown_timeout_runs_out_get_a_json_503(model):
    running = Server(model, "--max_batch_size", "64", "--max_wait_ms", "20000", "--shutdown_timeout", "0.5",
                     "--bf16", "false")  # the requests wait for a batch to fill longer than the shutdown allows
    running.wait_ready()
    answers = []
    long = {"text": "the quick brown fox " * 40, "text_pair": "jumps over the lazy dog " * 40}

    def client():
        try:
            answers.append(post(running.port, long)[:2])
        except OSError as error:  # not yet accepted when the server stopped listening
            answers.append((None, str(error)))

    def slow_client():  # still sending its body when the server stops
        with socket.create_connection(("127.0.0.1", running.port), timeout=60) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"text\": ")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        answers.append((int(head.split()[1]), json.loads(body)) if head else (None, "closed"))

    threads = [threading.Thread(target=client) for _ in range(6)] + [threading.Thread(target=slow_client)]
    for t in threads:
        t.start()
    time.sleep(1)  # the requests are queued
    running.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    running.process.wait(timeout=60)
    code, err = running.stop()
    stopped = [body for status, body in answers if status == 503]
    assert stopped and all("shutting down" in body["error"] for body in stopped), answers
    assert {status for status, _ in answers} <= {503, None}, answers  # (None: not yet connected when it stopped)
    assert code == 0 and "Traceback" not in err and "Exception in ASGI" not in err, err


def test_a_model_that_cannot_load_stops_the_server_with_one_line(model, tmp_path):
    import shutil

    broken = shutil.copytree(model, str(tmp_path / "broken"))
    with open(os.path.join(broken, "config.json"), "w") as f:
        f.write('{"model_type": "bert", "num_labels": ')  # truncated
    running = Server(broken)
    running.process.wait(timeout=90)
    code, err = running.stop()
    assert code == 2 and "seqtune serve: error:" in err and "Traceback" not in err


def test_bad_flags_exit_2_before_listening(model, capsys):
    assert main(["serve", "--model_name_or_path", model, "--max_batch_size", "0", "--max_wait_ms", "nan",
                 "--shutdown_timeout", "inf"]) == 2
    err = capsys.readouterr().err
    assert "--max_batch_size must be positive" in err and "--max_wait_ms must be a finite number" in err
    assert "--shutdown_timeout must be a finite number" in err


def test_a_port_in_use_is_one_message_before_the_model_loads(model, capsys, monkeypatch):
    import seqtune.serve

    monkeypatch.setattr(seqtune.serve, "_load", lambda *a: pytest.fail("the model loaded for a port it cannot use"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", "--model_name_or_path", model, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use: choose another --port" in err
    assert "ERROR" not in err and len(err.strip().splitlines()) == 1


def test_a_compiled_model_answers_as_the_eager_one(model):
    """--torch_compile: torch.compile with dynamic shapes, warmed up before the server turns ready."""
    from seqtune.config import ModelArguments
    from seqtune.evaluate import load_predictor
    from seqtune.predictor import compile_for_inference

    predictor = load_predictor(ModelArguments(model_name_or_path=model), 128, 8)
    texts, pairs = ["a man rides a horse", "x", "the weather is nice today"], ["a person rides", "y z", "warm"]
    eager = predictor.logits(texts, pairs)
    assert compile_for_inference(predictor, 8)
    assert predictor.logits(texts, pairs) == pytest.approx(eager, abs=1e-5)
    assert predictor.logits(texts[:1], pairs[:1]) == pytest.approx(eager[:1], abs=1e-5)


def test_a_model_that_does_not_compile_is_served_eager(model, monkeypatch, caplog):
    import torch

    from seqtune.config import ModelArguments
    from seqtune.evaluate import load_predictor
    from seqtune.predictor import compile_for_inference

    def fail(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", fail)
    predictor = load_predictor(ModelArguments(model_name_or_path=model), 128, 8)
    eager = predictor.model
    assert compile_for_inference(predictor, 8) is False and predictor.model is eager
    assert "torch.compile failed (RuntimeError: no C++ compiler)" in caplog.text


def test_an_onnx_export_serves_the_same_answers(model, server, tmp_path):
    onnx = str(tmp_path / "onnx")
    assert main(["export", "--model_name_or_path", model, "--output_dir", onnx]) == 0
    running = Server(onnx)  # a folder holding only model.onnx: ONNX Runtime by default
    running.wait_ready()
    try:
        assert request(running.port, "GET", "/metadata")[1]["backend"] == "onnx"
        items = [{"text": "a man rides a horse", "text_pair": "a person rides"}, {"text": "x", "text_pair": "y z"}]
        got, want = post(running.port, items)[1]["predictions"], post(server.port, items)[1]["predictions"]
        for a, b in zip(got, want):
            assert a["label"] == b["label"] and a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    finally:
        code, err = running.stop()
    assert code == 0, err


def test_a_request_whose_rows_fail_gets_500_alone(caplog):
    """A batch whose model call fails is retried job by job: only the guilty request fails."""
    import asyncio

    from seqtune.serve import DynamicBatcher

    def run_jobs(jobs):
        if any("boom" in job.texts for job in jobs):
            raise RuntimeError("boom")
        return [[{"label": text} for text in job.texts] for job in jobs]

    async def scenario():
        batcher = DynamicBatcher(run_jobs, max_batch_size=8, max_wait_s=0.05, max_queue_size=8)
        worker = asyncio.create_task(batcher.run_forever())
        futures = [batcher.submit([text], None) for text in ("a", "boom", "c")]
        results = await asyncio.gather(*futures, return_exceptions=True)
        worker.cancel()
        return results

    a, boom, c = asyncio.run(scenario())
    assert a == [{"label": "a"}] and c == [{"label": "c"}] and isinstance(boom, RuntimeError)


def test_a_max_seq_length_beyond_the_model_stops_the_server(model):
    running = Server(model, "--max_seq_length", "4096")
    running.process.wait(timeout=90)
    code, err = running.stop()
    assert code == 2 and "above the model's limit of 128 tokens" in err


def test_a_single_text_model_trained_short_loads_where_a_pair_would_not_fit(tiny_model, tmp_path):
    """--max_seq_length 4 leaves room for one text ([CLS] x y [SEP]) but not for a pair: the server checks the
    room for the kind of input the model was trained on."""
    from seqtune.config import ModelArguments
    from seqtune.serve import ServeArguments, _load
    from tests.conftest import write_csv

    rows = [{"text": f"{'good' if i % 2 else 'bad'} words here", "label": i % 2} for i in range(16)]
    data = write_csv(str(tmp_path / "t.csv"), rows)
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", data, "--validation_file", data,
                 "--output_dir", out, "--max_steps", "1", "--max_seq_length", "4", "--no_bf16", "--disable_tqdm",
                 "--report_to", "none"]) == 0
    predictor = _load(ModelArguments(model_name_or_path=out), ServeArguments(bf16=False), {"backend": "torch"})
    assert predictor.max_length == 4
