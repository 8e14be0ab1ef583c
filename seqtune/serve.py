"""`seqtune serve`: a fine-tuned classifier behind HTTP, on FastAPI and uvicorn.

Why this stack: FastAPI/uvicorn is the most used Python model-serving stack, runs in one process beside the model
(no copies of a large model in worker processes), and uvicorn drains requests in flight on SIGTERM. LitServe would
bring batching, but runs the model in separate worker processes and has no bounded queue answering 503.

Concurrent requests meet in a bounded queue; one task takes up to --max_batch_size rows from it (waiting at most
--max_wait_ms for more after the first), and the model scores them in one pass, rows sorted by length, in a worker
thread so the event loop keeps accepting. A full queue answers 503 with Retry-After."""


# no `from __future__ import annotations`: FastAPI reads the endpoint's `request: Request` annotation at run time
import asyncio
import contextlib
import json
import logging
import signal
import threading
from dataclasses import dataclass, field

from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")


def _f(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class ServeArguments:
    """Where the server listens, how it batches, and what it refuses."""

    host: str = _f("127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
    port: int = _f(8000, "Port to listen on.")
    max_batch_size: int = _f(32, "Most rows scored in one model call; also the most items one request may hold.")
    max_wait_ms: float = _f(5.0, "After the first request of a batch, wait at most this long for more to join it.")
    max_queue_size: int = _f(256, "Requests waiting for the model; beyond it the server answers 503 with Retry-After.")
    max_text_length: int = _f(20000, "Longest text accepted, in characters (longer ones get 413: tokenization "
                              "truncates at --max_seq_length tokens anyway).")
    max_request_bytes: int = _f(4 * 1024 * 1024, "Largest request body accepted (413 beyond).")
    max_seq_length: int | None = _f(None, "Longest input in tokens; longer pairs are truncated (as in predict). "
                                    "Default: the length the model was trained with (else 128).")
    backend: str | None = _f(None, "torch or onnx (a folder made by `seqtune export`). Default: onnx for a folder "
                             "holding only model.onnx, torch otherwise.", choices=["torch", "onnx"])
    bf16: bool | None = _f(None, "bfloat16 autocast for the torch backend. Default: on where bfloat16 is fast (a CPU "
                           "with AVX-512 BF16 or AMX, a GPU since Ampere): 3x the rows/s of float32 on such a CPU "
                           "with the same validation accuracy (BENCHMARKS.md); --bf16 false for float32.")
    torch_compile: bool = _f(False, "Compile the model (torch.compile, dynamic shapes) before /health turns ready: "
                             "1.3x the rows/s in-process on this CPU for ~35 s more start-up (BENCHMARKS.md); where "
                             "compilation fails, the eager model serves and a warning says why.")
    shutdown_timeout: float = _f(30.0, "On SIGTERM, wait at most this many seconds for requests in flight.")
    access_log: bool = _f(False, "Log every request (uvicorn's access log).")
    debug: bool = _f(False, "Show full tracebacks for errors.")


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Job:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future


class DynamicBatcher:
    """Hand-written (about 40 lines): FastAPI has no request batching, and the batching libraries bring their own
    server (see the module's note). `run_jobs(jobs)` runs in a worker thread and returns one answer list per job."""

    def __init__(self, run_jobs, max_batch_size: int, max_wait_s: float, max_queue_size: int):
        self.run_jobs, self.max_batch_size, self.max_wait_s = run_jobs, max_batch_size, max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(max_queue_size)
        self._carry: _Job | None = None

    def submit(self, texts: list[str], pairs: list[str] | None) -> asyncio.Future:
        """Raises asyncio.QueueFull when the queue is full."""
        job = _Job(texts, pairs, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return job.future

    async def run_forever(self) -> None:
        while True:
            jobs = [job for job in await self._collect() if not job.future.done()]  # a cancelled request: skip
            if not jobs:
                continue
            try:
                answers = await asyncio.to_thread(self.run_jobs, jobs)
            except Exception:  # noqa: BLE001 - one request's rows may be at fault: each job alone, so only it fails
                answers = [await self._alone(job) for job in jobs]
            for job, answer in zip(jobs, answers):
                if job.future.done():
                    continue
                if isinstance(answer, Exception):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)

    async def _alone(self, job: _Job):
        """One job's answer, or the exception it raised (the request gets a 500 naming it; the server stays up)."""
        try:
            return (await asyncio.to_thread(self.run_jobs, [job]))[0]
        except Exception as error:  # noqa: BLE001
            logger.exception("Prediction failed")
            return error

    async def _collect(self) -> list[_Job]:
        loop = asyncio.get_running_loop()
        first, self._carry = self._carry or await self.queue.get(), None
        jobs, rows, deadline = [first], len(first.texts), loop.time() + self.max_wait_s
        while rows < self.max_batch_size:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                if deadline <= loop.time():
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            if rows + len(job.texts) > self.max_batch_size:
                self._carry = job  # it starts the next batch
                break
            jobs.append(job)
            rows += len(job.texts)
        return jobs


def run_jobs(predictor, jobs: list[_Job]) -> list[list[dict]]:
    """One model pass per kind of input (single texts, pairs) over every job's rows; answers split back per job."""
    answers: list[list[dict] | None] = [None] * len(jobs)
    for has_pairs in (False, True):
        group = [i for i, job in enumerate(jobs) if (job.pairs is not None) == has_pairs]
        if not group:
            continue
        texts = [t for i in group for t in jobs[i].texts]
        pairs = [p for i in group for p in jobs[i].pairs] if has_pairs else None
        rows = predictor.answer(texts, pairs)
        start = 0
        for i in group:
            answers[i], start = rows[start:start + len(jobs[i].texts)], start + len(jobs[i].texts)
    return answers


def parse_request(body: bytes, args: ServeArguments) -> tuple[list[str], list[str] | None, bool]:
    """(texts, pairs or None, whether one item was sent) from a JSON body: one item {"text": ..., "text_pair": ...}
    or a list of them; anything else is a RequestError with its 4xx status."""
    from seqtune.data import DuplicateKeyError, unique_keys

    try:
        data = json.loads(body, object_pairs_hook=unique_keys)
    except DuplicateKeyError as error:
        raise RequestError(422, f'an object names "{error.key[:100]}" twice; give each field once') from error
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, an integer of 5,000 digits, deep nesting
        raise RequestError(400, f"the body is not valid JSON: {str(error)[:200]}") from error
    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list):
        raise RequestError(422, 'the body must be an item {"text": "...", "text_pair": "..."} (text_pair optional) '
                                "or a list of items")
    if not items:
        raise RequestError(422, "the list of items is empty")
    if len(items) > args.max_batch_size:
        raise RequestError(413, f"{len(items)} items in one request; at most {args.max_batch_size} (--max_batch_size)")
    for number, item in enumerate(items):
        _check_item(item, number, args.max_text_length)
    with_pairs = sum(item.get("text_pair") is not None for item in items)
    if with_pairs not in (0, len(items)):
        raise RequestError(422, "either every item of a request has a text_pair or none has")
    pairs = [item["text_pair"] for item in items] if with_pairs else None
    return [item["text"] for item in items], pairs, single


def _check_kind(config, pairs: bool) -> None:
    """The request's items are the kind of input the model was fine-tuned on (a text, or a text and its pair)."""
    from seqtune.data import input_kind_problem

    problem = input_kind_problem(config, pairs, "the request", 'give every item a "text_pair"' if not pairs else
                                 'leave out "text_pair"')
    if problem:
        raise RequestError(422, problem)


def _check_item(item, number: int, max_chars: int) -> None:
    where = f"item {number}"
    if not isinstance(item, dict):
        raise RequestError(422, f'{where} is not an object {{"text": "..."}}')
    unknown = sorted(set(item) - {"text", "text_pair"})
    if unknown:
        raise RequestError(422, f"{where} has unknown field(s) {', '.join(unknown)}; the fields are text and "
                                "text_pair")
    if "text" not in item:
        raise RequestError(422, f'{where} has no "text" field')
    for name in ("text", "text_pair"):
        value = item.get(name)
        if value is None and name == "text_pair":
            continue
        if not isinstance(value, str):
            raise RequestError(422, f"{where}: {name} must be a string, not {type(value).__name__}")
        if len(value) > max_chars:
            raise RequestError(413, f"{where}: {name} is {len(value)} characters; at most {max_chars} "
                                    "(--max_text_length)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate ("\ud800") is valid JSON, not text
            raise RequestError(422, f"{where}: {name} is not valid Unicode text (character {error.start + 1})"
                               ) from error


class _State:
    """What the endpoints share: the predictor once loaded (None while loading), and the batcher."""

    def __init__(self):
        self.predictor = None
        self.batcher: DynamicBatcher | None = None
        self.load_error: BaseException | None = None
        self.metadata: dict = {}


def build_app(load_predictor, args: ServeArguments, info: dict, on_load_error=lambda error: None):
    """The FastAPI app. `load_predictor()` runs in a thread once the server starts: /health answers 503 until it
    has returned, and `on_load_error(error)` is called if it raises. `info` (model, backend) goes to /metadata."""
    from fastapi import FastAPI, Request

    state = _State()

    def load() -> None:
        try:
            predictor = load_predictor()
            state.metadata = {**info, **_metadata(predictor, args)}
            state.predictor = predictor
            logger.info("Ready: %s", json.dumps(state.metadata))
        except BaseException as error:  # noqa: BLE001 - reported by the caller, which stops the server
            state.load_error = error
            on_load_error(error)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher = DynamicBatcher(lambda jobs: run_jobs(state.predictor, jobs), args.max_batch_size,
                                       args.max_wait_ms / 1000, args.max_queue_size)
        worker = asyncio.create_task(state.batcher.run_forever())
        threading.Thread(target=load, name="seqtune-load-model", daemon=True).start()
        yield
        worker.cancel()  # uvicorn calls this after the requests in flight have been answered

    app = FastAPI(title="seqtune", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.seqtune = state

    @app.get("/health")
    async def health():
        if state.predictor is None:
            return _loading()
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        return state.metadata if state.predictor is not None else _loading()

    @app.post("/predict")
    async def predict(request: Request):
        return await _predict(state, args, request)

    return app


async def _predict(state: _State, args: ServeArguments, request):
    """POST /predict, answered with JSON also when --shutdown_timeout runs out while the request is read or waits
    (uvicorn then cancels its task: a plain-text 500 and a logged traceback otherwise)."""
    from fastapi.responses import JSONResponse

    try:
        return await _answer(state, args, request)
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()  # handled here: nothing above this handler is left waiting on it
        return JSONResponse({"error": "the server is shutting down; retry on another instance"}, 503,
                            headers={"Retry-After": "1", "Connection": "close"})


async def _answer(state: _State, args: ServeArguments, request):
    """The request checked, queued for the batcher and answered (a JSON error when it cannot be)."""
    from fastapi.responses import JSONResponse

    if state.predictor is None:
        return _loading()
    try:
        texts, pairs, single = parse_request(await _body(request, args.max_request_bytes), args)
        _check_kind(state.predictor.config, pairs is not None)
        future = state.batcher.submit(texts, pairs)
    except RequestError as error:
        return JSONResponse({"error": error.message}, error.status)
    except asyncio.QueueFull:
        return JSONResponse({"error": f"the server is busy ({args.max_queue_size} requests waiting); retry"},
                            503, headers={"Retry-After": "1"})
    try:
        answers = await future
    except Exception as error:  # noqa: BLE001 - logged by the batcher; the client learns what failed
        return JSONResponse({"error": f"prediction failed: {type(error).__name__}: {error}"}, 500)
    return answers[0] if single else {"predictions": answers}

def _loading():
    from fastapi.responses import JSONResponse

    return JSONResponse({"status": "loading", "error": "the model is loading"}, 503, headers={"Retry-After": "1"})


async def _body(request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes: never held whole when too large."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {declared} bytes; at most {limit} (--max_request_bytes)")
    from starlette.requests import ClientDisconnect

    try:
        chunks = [chunk async for chunk in _limited(request.stream(), limit)]
    except ClientDisconnect as error:  # nobody is left to answer; 400 for the log
        raise RequestError(400, "the client disconnected while sending the body") from error
    return b"".join(chunks)


async def _limited(stream, limit: int):
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit} bytes (--max_request_bytes)")
        yield chunk


def _metadata(predictor, args: ServeArguments) -> dict:
    config = predictor.config
    return {"model_type": config.model_type,
            "labels": [str(config.id2label[i]) for i in range(config.num_labels)] if config.num_labels > 1 else [],
            "problem_type": getattr(config, "problem_type", None) or (
                "regression" if config.num_labels == 1 else "single_label_classification"),
            "text_pairs": getattr(config, "seqtune_text_pairs", None),  # (None: not recorded)
            "symmetric_pairs": predictor.symmetric, "max_seq_length": predictor.max_length,
            "max_batch_size": args.max_batch_size, "max_text_length": args.max_text_length,
            "max_request_bytes": args.max_request_bytes, "max_queue_size": args.max_queue_size,
            "max_wait_ms": args.max_wait_ms}


def serve(model_args, args: ServeArguments) -> None:
    """Run the server until SIGTERM or Ctrl-C; requests in flight are answered before it stops."""
    import uvicorn

    from seqtune.finetuned import pick_backend
    from seqtune.modeling import resolve_model_path

    _validate(args)
    _check_port_free(args.host, args.port)
    path = resolve_model_path(model_args.model_name_or_path)
    info = {"model": path, "backend": pick_backend(path, args.backend)}
    servers: list = []
    app = build_app(lambda: _load(model_args, args, info), args, info,
                    lambda error: setattr(servers[0], "should_exit", True))
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=args.access_log, lifespan="on",
                                           timeout_graceful_shutdown=args.shutdown_timeout))
    servers.append(server)
    logger.info("Serving %s on http://%s:%d (POST /predict, GET /health, GET /metadata); loading the model",
                path, args.host, args.port)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown and raises the signal again once done; by then there is
    # nothing left to interrupt, so the command ends normally
    previous = {number: signal.signal(number, lambda *_: None) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except SystemExit as exit_:  # uvicorn exits when it cannot listen (it has logged why)
        raise SeqtuneError(f"could not listen on {args.host}:{args.port} (is the port in use?).") from exit_
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    error = app.state.seqtune.load_error
    if isinstance(error, SeqtuneError):
        raise error
    if error is not None:  # the model folder is the user's input: a load that fails is their error, exit 2
        lines = str(error).strip().splitlines()
        raise SeqtuneError(f"could not load {path}: {type(error).__name__}: {lines[0] if lines else ''}") from error
    logger.info("Stopped.")


def _load(model_args, args: ServeArguments, info: dict):
    """The predictor on this machine's best device, bfloat16 where it is fast unless --bf16 says otherwise; a full
    batch of symmetric pairs (both orders) is one model call."""
    from seqtune.evaluate import load_predictor
    from seqtune.data import check_max_length
    from seqtune.predictor import compile_for_inference, fast_bf16_here, to_local_device

    info["bf16"] = (info["backend"] == "torch" and fast_bf16_here()) if args.bf16 is None else args.bf16
    predictor = load_predictor(model_args, args.max_seq_length, args.max_batch_size, info["backend"],
                               info["bf16"])
    # room for the kind of text the model was trained on (a pair, unless recorded as single texts)
    check_max_length(predictor.tokenizer, predictor.config, predictor.max_length,
                     pair=getattr(predictor.config, "seqtune_text_pairs", None) is not False)
    to_local_device(predictor.model)
    info["torch_compile"] = bool(args.torch_compile and info["backend"] == "torch"
                                 and compile_for_inference(predictor, args.max_batch_size))
    return predictor


def _check_port_free(host: str, port: int) -> None:
    """The address can be bound (as uvicorn binds it, SO_REUSEADDR): one message before the model loads, not
    uvicorn's error line after; a port taken in between is still caught when uvicorn binds it."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise SeqtuneError(f"cannot listen on {host}:{port}: {error.strerror or error}: choose another --port or "
                           "--host, or stop what holds it.") from error


def _validate(args: ServeArguments) -> None:
    problems = [f"--{name} must be positive (got {getattr(args, name)})." for name in
                ("max_batch_size", "max_queue_size", "max_text_length", "max_request_bytes", "max_seq_length")
                if getattr(args, name) is not None and getattr(args, name) <= 0]
    problems += [f"--{name} must be a finite number, 0 or more (got {getattr(args, name)})." for name in
                 ("max_wait_ms", "shutdown_timeout") if not 0 <= getattr(args, name) < float("inf")]  # nan, inf
    if not 0 <= args.port <= 65535:
        problems.append(f"--port must be between 0 and 65535 (got {args.port}).")
    if args.bf16 and args.backend == "onnx":
        problems.append("--bf16 is bfloat16 autocast for the torch backend; an ONNX model runs as it was exported.")
    if args.torch_compile and args.backend == "onnx":
        problems.append("--torch_compile compiles a torch model; an ONNX model is optimized by ONNX Runtime.")
    if problems:
        raise SeqtuneError(*problems)
