"""Load test of `seqtune serve` against a naive server (BENCHMARKS.md §11), on loopback, from this machine.

    python benchmarks/serve_load.py MODEL_DIR DATA_DIR [--seconds 20] [--clients 1 8 64]

Servers, one at a time, each on its own port:
  - baseline: FastAPI on uvicorn (the same stack) calling transformers' pipeline("text-classification") for each
    request, one request at a time, float32: in FastAPI's thread pool behind a lock (a pipeline is not safe to call
    from several threads), and "baseline-on-loop", called on the event loop itself;
  - seqtune serve with its defaults (dynamic batching; bfloat16 autocast where the CPU has AVX-512 BF16/AMX);
  - seqtune serve --bf16 false (dynamic batching alone).
Clients: N concurrent keep-alive connections on asyncio streams, each posting one MRPC validation pair per request in a loop for
--seconds (after 2 s of warm-up); bounded by time and by --max_requests. Prints requests/s, p50/p99 latency and
errors per server and client count."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np


def baseline_app(model_dir: str, on_loop: bool = False):
    """on_loop: the pipeline called on the event loop itself (one request at a time by construction); otherwise in
    FastAPI's thread pool behind a lock. Both are measured; the faster is the baseline."""
    import threading

    from fastapi import FastAPI
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    def answer(item: dict) -> dict:
        scores = classify({"text": item["text"], "text_pair": item.get("text_pair")})
        best = max(scores, key=lambda s: s["score"])
        return {"label": best["label"], "probability": best["score"]}

    if on_loop:
        @app.post("/predict")
        async def predict_on_loop(item: dict):
            return answer(item)
    else:
        @app.post("/predict")
        def predict(item: dict):
            with lock:
                return answer(item)

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model_dir: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if kind.startswith("baseline"):
        cmd = [sys.executable, __file__, "--run_baseline", model_dir, str(port), kind]
    else:
        extra = kind.split()[1:]  # "seqtune --bf16 false": the flags after the name
        cmd = [sys.executable, "-m", "seqtune", "serve", "--model_name_or_path", model_dir, "--port", str(port),
               "--log_level", "warning", *extra]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{kind} did not start")


async def post_loop(port: int, bodies: list[bytes], until: float, stop_after, record) -> None:
    """One client: a keep-alive HTTP/1.1 connection posting bodies in turn. Hand-written on asyncio streams: httpx
    spent ~4 ms of CPU per request here (0.4 of a core at 100 requests/s), taken from the server under test on this
    2-core machine; this costs a tenth of that."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        i = 0
        while time.perf_counter() < until and not stop_after():
            body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            writer.write(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            record(head.split(b" ", 2)[1] == b"200", time.perf_counter() - start)
    finally:
        writer.close()


async def load(port: int, pairs: list[dict], clients: int, seconds: float, max_requests: int) -> dict:
    latencies, errors = [], []
    bodies = [json.dumps(p).encode() for p in pairs]

    def record(ok: bool, seconds_taken: float) -> None:
        (latencies if ok else errors).append(seconds_taken)

    def nothing(ok: bool, seconds_taken: float) -> None:
        pass

    def enough() -> bool:
        return len(latencies) + len(errors) >= max_requests

    warm = time.perf_counter() + 2
    await asyncio.gather(*[post_loop(port, bodies[c::clients], warm, enough, nothing) for c in range(clients)])
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[post_loop(port, bodies[c::clients], began + seconds, enough, record)
                           for c in range(clients)])
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(latencies) + len(errors),
            "requests_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None, "errors": len(errors),
            "client_cpu_share": round(cpu / elapsed, 2)}  # of one core: the client shares the machine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--max_requests", type=int, default=20000)
    parser.add_argument("--servers", nargs="+",
                        default=["baseline", "baseline-on-loop", "seqtune", "seqtune --bf16 false"])
    parser.add_argument("--run_baseline", nargs=3, metavar=("MODEL_DIR", "PORT", "KIND"), help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.run_baseline:
        import uvicorn

        uvicorn.run(baseline_app(args.run_baseline[0], args.run_baseline[2] == "baseline-on-loop"), host="127.0.0.1", port=int(args.run_baseline[1]),
                    log_level="warning", access_log=False)
        return
    from datasets import load_dataset

    validation = load_dataset(args.data_dir, "mrpc")["validation"]
    pairs = [{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in validation]
    for kind in args.servers:
        port = free_port()
        process = start(kind, args.model_dir, port)
        try:
            for clients in args.clients:
                result = asyncio.run(load(port, pairs, clients, args.seconds, args.max_requests))
                print(json.dumps({"server": kind, **result}), flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
