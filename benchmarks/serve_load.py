"""Load test of `seqtune serve` against a naive server (BENCHMARKS.md §11), on loopback, from this machine.

    python benchmarks/serve_load.py MODEL_DIR DATA_DIR [--seconds 20] [--clients 1 8 64]

Servers, one at a time, each on its own port:
  - baseline: FastAPI on uvicorn (the same stack) calling transformers' pipeline("text-classification") for each
    request, one request at a time (a lock: a pipeline is not safe to call from several threads), float32;
  - seqtune serve with its defaults (dynamic batching; bfloat16 autocast where the CPU has AVX-512 BF16/AMX);
  - seqtune serve --bf16 false (dynamic batching alone).
Clients: asyncio + httpx, N concurrent connections, each posting one MRPC validation pair per request in a loop for
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


def baseline_app(model_dir: str):
    import threading

    from fastapi import FastAPI, Request
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/predict")
    def predict(item: dict):
        with lock:
            scores = classify({"text": item["text"], "text_pair": item.get("text_pair")})
        best = max(scores, key=lambda s: s["score"])
        return {"label": best["label"], "probability": best["score"]}

    del Request
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model_dir: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if kind == "baseline":
        cmd = [sys.executable, __file__, "--run_baseline", model_dir, str(port)]
    else:
        extra = ["--bf16", "false"] if kind == "seqtune --bf16 false" else []
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


async def load(port: int, pairs: list[dict], clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    latencies, errors, count = [], 0, 0
    url = f"http://127.0.0.1:{port}/predict"
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=120) as client:
        async def worker(offset: int, until: float, record: bool):
            nonlocal errors, count
            i = offset
            while time.perf_counter() < until and count < max_requests:
                start = time.perf_counter()
                try:
                    response = await client.post(url, json=pairs[i % len(pairs)])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if record:
                    count += 1
                    latencies.append(time.perf_counter() - start) if ok else None
                    errors += 0 if ok else 1
                i += clients

        await asyncio.gather(*[worker(c, time.perf_counter() + 2, False) for c in range(clients)])  # warm-up
        began = time.perf_counter()
        await asyncio.gather(*[worker(c, began + seconds, True) for c in range(clients)])
        elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": count, "requests_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--max_requests", type=int, default=20000)
    parser.add_argument("--servers", nargs="+", default=["baseline", "seqtune", "seqtune --bf16 false"])
    parser.add_argument("--run_baseline", nargs=2, metavar=("MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.run_baseline:
        import uvicorn

        uvicorn.run(baseline_app(args.run_baseline[0]), host="127.0.0.1", port=int(args.run_baseline[1]),
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
