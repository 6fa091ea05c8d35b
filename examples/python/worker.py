#!/usr/bin/env python3
"""A dsat worker in Python, written from the .proto files alone.

It speaks the worker stream protocol of docs/protocol.md on RouterService.ConnectWorker: Hello,
Credit, Assign, Heartbeats, Results/Failures, Ack, Cancel, Drain; it reconnects with capped backoff
to a list of routers. It imports only the generated stubs (run ./gen.sh first), grpcio and
protobuf.

Why asyncio (grpc.aio) and not threads: the stream, the credit count, the heartbeat timer and the
batching of reports all live on one event loop, so none of them needs a lock, and an async stage
function is aborted for real (Task.cancel) when the router cancels its attempt. A blocking stage
function still works: it runs in a thread pool of `concurrency` threads, and sees a cancel through
ctx.cancelled (a threading.Event), because Python cannot stop a thread.

    ./gen.sh
    python3 worker.py --routers 127.0.0.1:7402 --stages enrich --concurrency 8

The demo stage (--stages enrich) parses the JSON input, adds "py": true and the sha256 of the
field named by --hash-field, and returns the JSON. SIGTERM or SIGINT drains: no more credit, finish
what is held, wait for the Acks, close. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import inspect
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Union

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
try:
    import grpc
    import grpc.aio
    from dsat.router.v1 import router_pb2 as router
    from dsat.router.v1 import router_pb2_grpc as router_grpc
    from dsat.task.v1 import task_pb2 as task
except ImportError as err:  # pragma: no cover - a set-up problem, reported plainly
    sys.exit(f"worker.py: {err}. Run examples/python/gen.sh first (it needs grpcio and protobuf).")

PROTOCOL_VERSION = 1
MAX_BACKOFF_S = 5.0
DEFAULT_HEARTBEAT_S = 5.0
# Keepalive finds a router that vanished without closing the connection (10 s / 5 s, as dsat's).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]

log = logging.getLogger("worker")


# --- what a stage function sees ------------------------------------------------------------------


class StageError(Exception):
    """Raise from a stage function to fail the attempt with a chosen code.

    retryable=False fails the task at once; otherwise the router retries it while attempts are left,
    unless the code is listed in the stage's non_retryable_errors.
    """

    def __init__(self, code: str, message: str, retryable: bool = True, details=None):
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.details = dict(details or {})


@dataclass
class Output:
    """What a stage function returns: the next stage's input."""

    data: bytes
    content_type: str = "application/json"
    # Declared next stages to continue with; empty continues with all of them.
    next_stages: list = field(default_factory=list)


class TaskContext:
    """One attempt of one task, as a stage function sees it."""

    def __init__(self, a: "router.Assignment"):
        self.task_id = a.task_id
        self.stage = a.stage
        self.attempt = a.attempt
        self.pipeline = a.pipeline
        self.data = a.input.data
        self.content_type = a.input.content_type or "application/octet-stream"
        self.deadline = a.deadline.ToDatetime() if a.HasField("deadline") else None
        # The progress a previous attempt reported, to resume from.
        self.previous_progress = a.progress if a.HasField("progress") else None
        # Set when the router cancels this attempt or the stream is lost; a blocking stage
        # function should check it and give up.
        self.cancelled = threading.Event()
        self._progress = task.TaskProgress()

    def report_progress(self, fraction: float, message: str = "", details: bytes = b"") -> None:
        """Sent with the next heartbeat; safe to call from any thread."""
        self._progress = task.TaskProgress(fraction=fraction, message=message, details=details)

    def json(self):
        return json.loads(self.data)


StageFunction = Callable[[TaskContext], Union[Output, Awaitable[Output]]]


# --- the demo stage ------------------------------------------------------------------------------


def make_enrich(hash_field: str, delay_s: float) -> StageFunction:
    """The middle stage of the demo pipeline: adds "py": true and the sha256 of one field."""

    async def enrich(ctx: TaskContext) -> Output:
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # stands for real work; a Cancel aborts it here
        try:
            doc = ctx.json()
        except ValueError as err:
            raise StageError("BAD_INPUT", f"input is not JSON: {err}", retryable=False) from err
        if not isinstance(doc, dict):
            raise StageError("BAD_INPUT", "input is not a JSON object", retryable=False)
        value = doc.get(hash_field)
        if value is None:
            raise StageError("BAD_INPUT", f"input has no field {hash_field!r}", retryable=False)
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        doc["py"] = True
        doc["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return Output(json.dumps(doc, separators=(",", ":")).encode("utf-8"), "application/json")

    return enrich


# --- the worker ----------------------------------------------------------------------------------


class StreamLost(Exception):
    """The stream ended without a drain: the router requeues what this worker held."""


@dataclass
class Running:
    """One attempt this worker runs."""

    assignment: "router.Assignment"
    ctx: TaskContext
    session: "Session"
    task: Optional[asyncio.Task] = None


class Session:
    """One ConnectWorker stream: what is to be written on it and what waits for an Ack."""

    def __init__(self, address: str, call):
        self.address = address
        self.call = call
        self.router_id = ""
        self.heartbeat_s = DEFAULT_HEARTBEAT_S
        self.wake = asyncio.Event()  # something is pending for the writer
        self.credit = 0  # credit to grant in the next message
        self.outstanding_credit = 0  # granted and not yet used by an Assign
        self.results: list = []
        self.failures: list = []
        self.heartbeat_due = False
        self.drain = False  # a Drain is to be sent
        self.drain_sent = False
        self.close = False  # half-close after the pending messages
        self.gave_up = False  # the drain ran out of time and the stream was cancelled
        self.unacked: dict = {}  # (task_id, attempt) -> "result" | "failure"
        self.running: dict = {}  # (task_id, attempt) -> Running
        self.closed = False


class Worker:
    def __init__(
        self,
        routers: list,
        worker_id: str,
        stages: list,
        concurrency: int,
        handlers: dict,
        labels: dict,
        connect_timeout_s: float = 10.0,
        drain_timeout_s: float = 30.0,
    ):
        self.routers = routers
        self.worker_id = worker_id
        self.stages = stages
        self.concurrency = concurrency
        self.handlers = handlers
        self.labels = labels
        self.connect_timeout_s = connect_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="stage")
        self.busy = 0  # slots taken by attempts whose function has not returned yet
        self.session: Optional[Session] = None
        self.draining = False
        self.drain_requested = asyncio.Event()
        self.stats = {"acked": 0, "refused": 0, "failed": 0, "cancelled": 0, "sessions": 0}

    # Lifecycle -----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop asking for work, finish what is held, then close (SIGTERM)."""
        if self.draining:
            return
        log.info("draining: no more credit; finishing %d running attempts", self.busy)
        self.draining = True
        self.drain_requested.set()
        asyncio.get_running_loop().call_later(self.drain_timeout_s, self._give_up)
        s = self.session
        if s is not None and not s.closed:
            s.drain = True
            s.wake.set()
            self._maybe_close(s)

    def _give_up(self) -> None:
        """The drain took too long: drop the stream; the router requeues what was left."""
        s = self.session
        if s is not None and not s.closed:
            log.warning("drain timed out after %.0f s with %d attempts running and %d reports "
                        "unacknowledged; closing", self.drain_timeout_s, len(s.running), len(s.unacked))
            s.gave_up = True
            s.call.cancel()

    async def run(self) -> None:
        """Connects to the routers in turn until drained; backoff doubles up to 5 s."""
        failures = 0
        index = 0
        while not self.draining:
            address = self.routers[index % len(self.routers)]
            index += 1
            sessions = self.stats["sessions"]
            try:
                await self._session(address)
                if self.draining:
                    break
                raise StreamLost("the router closed the stream")
            except (grpc.aio.AioRpcError, StreamLost, asyncio.TimeoutError, OSError) as err:
                if self.draining:
                    break
                # A stream that was welcomed resets the backoff; refused connections double it.
                failures = 0 if self.stats["sessions"] > sessions else failures + 1
                delay = min(MAX_BACKOFF_S, 0.2 * 2**failures) * random.uniform(0.5, 1.0)
                # A refused Hello (a stage the router does not serve, another protocol version)
                # needs an operator; keep trying, since the router may be reconfigured.
                level = logging.ERROR if refused_hello(err) else logging.WARNING
                log.log(level, "router %s: %s; reconnecting in %.1f s", address, describe(err), delay)
                try:
                    await asyncio.wait_for(self.drain_requested.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped: %s", json.dumps(self.stats, sort_keys=True))

    async def _session(self, address: str) -> None:
        """Runs one stream. Returns when a drain has finished; raises when the stream breaks."""
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            call = router_grpc.RouterServiceStub(channel).ConnectWorker()
            s = Session(address, call)
            writer = heartbeats = None
            try:
                hello = router.Hello(
                    worker_id=self.worker_id,
                    stages=self.stages,
                    concurrency=self.concurrency,
                    protocol_version=PROTOCOL_VERSION,
                    labels=self.labels,
                )
                await call.write(router.ConnectWorkerRequest(hello=hello))
                first = await asyncio.wait_for(call.read(), timeout=self.connect_timeout_s)
                if first is grpc.aio.EOF:
                    await raise_status(call, "the router closed the stream before its Welcome")
                if first.WhichOneof("kind") != "welcome":
                    raise StreamLost(f"expected Welcome, got {first.WhichOneof('kind')}")
                self._welcome(s, first.welcome)
                writer = asyncio.create_task(self._write_loop(s))
                heartbeats = asyncio.create_task(self._heartbeat_loop(s))
                while True:
                    try:
                        msg = await call.read()
                    except asyncio.CancelledError:
                        if s.gave_up:  # our own cancel: the drain ran out of time
                            return
                        raise
                    if msg is grpc.aio.EOF:
                        break
                    self._on_message(s, msg)
                if writer.done() and not writer.cancelled() and writer.exception() is not None:
                    raise writer.exception()
                if not (self.draining and s.drain_sent and not s.running and not s.unacked):
                    await raise_status(call, "the router ended the stream")
            finally:
                s.closed = True
                self.session = None
                for t in (writer, heartbeats):
                    if t is not None:
                        t.cancel()
                self._abandon(s)
                call.cancel()

    def _welcome(self, s: Session, welcome) -> None:
        interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
        s.heartbeat_s = interval if interval > 0 else DEFAULT_HEARTBEAT_S
        s.router_id = welcome.router_id
        self.session = s
        self.stats["sessions"] += 1
        log.info(
            "connected to %s (router %s, session %s, protocol %d, heartbeat every %.1f s)",
            s.address,
            welcome.router_id,
            welcome.session_id,
            welcome.protocol_version,
            s.heartbeat_s,
        )
        if welcome.protocol_version not in (0, PROTOCOL_VERSION):
            log.warning("router speaks protocol %d; this worker speaks %d",
                        welcome.protocol_version, PROTOCOL_VERSION)
        if self.draining:
            s.drain = True
        else:
            # Everything from an earlier stream was abandoned, so every free slot is credit.
            self._grant(s, self.concurrency - self.busy)
        s.wake.set()

    def _abandon(self, s: Session) -> None:
        """The stream is gone: the router requeues what it held, so its attempts are aborted and
        their reports dropped (a report only counts on the stream that received the Assign)."""
        if s.running:
            log.warning("stream lost with %d attempts running and %d reports unacknowledged; "
                        "the router will redo them", len(s.running), len(s.unacked))
        for r in list(s.running.values()):
            r.ctx.cancelled.set()
            if r.task is not None and inspect.iscoroutinefunction(self.handlers.get(r.assignment.stage)):
                r.task.cancel()
        s.unacked.clear()

    # Writing ------------------------------------------------------------------------------------

    def _grant(self, s: Session, n: int) -> None:
        if n > 0 and not self.draining and not s.closed:
            s.credit += n
            s.wake.set()

    async def _write_loop(self, s: Session) -> None:
        """The only writer of the stream: each wake-up sends everything pending, batched."""
        while True:
            await s.wake.wait()
            s.wake.clear()
            messages = []
            if s.results:
                for r in s.results:
                    s.unacked[(r.task_id, r.attempt)] = "result"
                messages.append(router.ConnectWorkerRequest(results=router.Results(results=s.results)))
                s.results = []
            if s.failures:
                for f in s.failures:
                    s.unacked[(f.task_id, f.attempt)] = "failure"
                messages.append(router.ConnectWorkerRequest(failures=router.Failures(failures=s.failures)))
                s.failures = []
            if s.heartbeat_due:
                s.heartbeat_due = False
                beats = [
                    router.Heartbeat(task_id=k[0], attempt=k[1], progress=r.ctx._progress)
                    for k, r in s.running.items()
                    if not r.ctx.cancelled.is_set()
                ]
                if beats:
                    messages.append(router.ConnectWorkerRequest(heartbeats=router.Heartbeats(heartbeats=beats)))
            if s.credit > 0 and not self.draining:
                messages.append(router.ConnectWorkerRequest(credit=router.Credit(n=s.credit)))
                s.outstanding_credit += s.credit
            s.credit = 0
            if s.drain and not s.drain_sent:
                messages.append(router.ConnectWorkerRequest(drain=router.Drain()))
                s.drain_sent = True
            for m in messages:
                await s.call.write(m)
            if s.close:
                await s.call.done_writing()
                # The router ends its side once it sees ours end; do not wait for ever.
                await asyncio.sleep(MAX_BACKOFF_S)
                s.gave_up = True
                s.call.cancel()
                return

    async def _heartbeat_loop(self, s: Session) -> None:
        while True:
            await asyncio.sleep(s.heartbeat_s)
            if s.running:
                s.heartbeat_due = True
                s.wake.set()

    # Reading ------------------------------------------------------------------------------------

    def _on_message(self, s: Session, msg) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "assign":
            for a in msg.assign.tasks:
                self._start(s, a)
        elif kind == "ack":
            for e in msg.ack.entries:
                what = s.unacked.pop((e.task_id, e.attempt), None)
                if e.accepted:
                    self.stats["acked"] += 1
                    log.info("acked %s %s attempt %d", what or "report", e.task_id, e.attempt)
                else:
                    self.stats["refused"] += 1
                    log.warning("refused %s %s attempt %d: %s", what or "report", e.task_id,
                                e.attempt, e.reason or "no reason given")
            self._maybe_close(s)
        elif kind == "cancel":
            for ref in msg.cancel.attempts:
                r = s.running.get((ref.task_id, ref.attempt))
                if r is None:
                    continue
                log.info("cancel %s attempt %d: %s", ref.task_id, ref.attempt, msg.cancel.reason)
                r.ctx.cancelled.set()
                if r.task is not None and inspect.iscoroutinefunction(self.handlers.get(r.assignment.stage)):
                    r.task.cancel()
        elif kind == "welcome":
            log.warning("ignoring a second Welcome")
        else:
            log.warning("ignoring an unknown message from the router (%s)", kind)

    def _start(self, s: Session, a) -> None:
        key = (a.task_id, a.attempt)
        if key in s.running:
            log.warning("ignoring a repeated Assign of %s attempt %d", a.task_id, a.attempt)
            return
        s.outstanding_credit -= 1
        if s.outstanding_credit < 0:
            log.warning("the router assigned %s beyond the credit granted", a.task_id)
        self.busy += 1
        r = Running(a, TaskContext(a), s)
        s.running[key] = r
        r.task = asyncio.create_task(self._run_attempt(r))

    async def _run_attempt(self, r: Running) -> None:
        s, a, ctx = r.session, r.assignment, r.ctx
        key = (a.task_id, a.attempt)
        report = None
        try:
            fn = self.handlers.get(a.stage)
            if fn is None:
                raise StageError("UNKNOWN_STAGE", f"this worker does not serve stage {a.stage!r}",
                                 retryable=True)
            if inspect.iscoroutinefunction(fn):
                out = await fn(ctx)
            else:
                out = await asyncio.get_running_loop().run_in_executor(self.pool, fn, ctx)
            if not isinstance(out, Output):
                raise StageError("BAD_OUTPUT", f"stage function returned {type(out).__name__}, "
                                 "not Output", retryable=False)
            report = router.Result(task_id=a.task_id, attempt=a.attempt, output=out.data,
                                   content_type=out.content_type, next_stages=out.next_stages)
        except asyncio.CancelledError:
            pass  # the router cancelled the attempt, or the stream is gone
        except StageError as err:
            report = failure(a, err.code, str(err), err.retryable, err.details)
        except Exception as err:  # noqa: BLE001 - a failing handler must not kill the worker
            log.exception("stage %s failed on %s attempt %d", a.stage, a.task_id, a.attempt)
            report = failure(a, type(err).__name__, str(err), True, {"host": socket.gethostname()})
        finally:
            self.busy -= 1
            s.running.pop(key, None)
        if ctx.cancelled.is_set() or s.closed:
            # Nothing to report: the router decided already (cancel), or requeued it (stream lost).
            self.stats["cancelled"] += 1
        elif isinstance(report, router.Result):
            s.results.append(report)
        elif report is not None:
            self.stats["failed"] += 1
            s.failures.append(report)
        # The slot is free: grant it to whichever stream is current.
        current = self.session
        if current is not None:
            self._grant(current, 1)
            current.wake.set()
            self._maybe_close(current)

    def _maybe_close(self, s: Session) -> None:
        """A draining worker closes its side once nothing runs and every report is acked."""
        if self.draining and not s.running and not s.unacked and not s.results and not s.failures:
            s.drain = True
            s.close = True
            s.wake.set()


def failure(a, code: str, message: str, retryable: bool, details) -> "router.Failure":
    err = task.TaskError(code=code, message=message, retryable=retryable, details=details)
    return router.Failure(task_id=a.task_id, attempt=a.attempt, error=err)


async def raise_status(call, fallback: str) -> None:
    """Raises the stream's status as an error, or StreamLost with `fallback` if it ended OK."""
    try:
        code = await call.code()
        details = await call.details()
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001
        raise StreamLost(fallback) from None
    if code == grpc.StatusCode.OK:
        raise StreamLost(fallback)
    raise StreamLost(f"{code.name}: {details}")


def refused_hello(err: BaseException) -> bool:
    return isinstance(err, StreamLost) and str(err).startswith(
        ("INVALID_ARGUMENT", "FAILED_PRECONDITION"))


def describe(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    if isinstance(err, asyncio.TimeoutError):
        return "no Welcome in time"
    return str(err) or type(err).__name__


# --- command line --------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="A dsat worker in Python: serves one stage over RouterService.ConnectWorker.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--routers", default=os.environ.get("DSAT_ROUTERS", "127.0.0.1:7402"),
                   help="routers to connect to, comma-separated, tried in turn [env DSAT_ROUTERS]")
    p.add_argument("--worker-id", default=os.environ.get("DSAT_WORKER_ID", ""),
                   help="identifier of this worker, unique in the mesh (default: generated)")
    p.add_argument("--stages", default="enrich",
                   help="stages to serve, comma-separated; each runs the demo enrich function")
    p.add_argument("--concurrency", type=int, default=8, help="most attempts run at once")
    p.add_argument("--hash-field", default="text",
                   help="the input field whose sha256 the demo stage adds")
    p.add_argument("--delay-ms", type=int, default=0,
                   help="how long the demo stage pretends to work, per task")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds a drain may take before the stream is dropped")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    problems = []
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    for r in routers:
        host, _, port = r.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"--routers: {r!r} is not host:port")
    if not routers:
        problems.append("--routers: give at least one router")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages:
        problems.append("--stages: give at least one stage")
    for s in stages:
        if not re.fullmatch(r"[a-z0-9_-]{1,63}", s):
            problems.append(f"--stages: {s!r} is not a stage name (a-z, 0-9, '-', '_')")
    if args.worker_id and not re.fullmatch(r"[A-Za-z0-9._:@/-]{1,128}", args.worker_id):
        problems.append("--worker-id: use 1 to 128 of A-Z a-z 0-9 . _ : @ / -")
    if not 1 <= args.concurrency <= 10_000:
        problems.append("--concurrency: must be from 1 to 10000")
    if args.delay_ms < 0:
        problems.append("--delay-ms: must not be negative")
    if problems:
        p.error("\n  ".join(problems))
    args.routers, args.stages = routers, stages
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64]
    args.worker_id = args.worker_id or f"py-{host}-{uuid.uuid4().hex[:8]}"
    return args


async def main_async(args) -> None:
    enrich = make_enrich(args.hash_field, args.delay_ms / 1000)
    worker = Worker(
        routers=args.routers,
        worker_id=args.worker_id,
        stages=args.stages,
        concurrency=args.concurrency,
        handlers={stage: enrich for stage in args.stages},
        labels={"lang": "python", "host": socket.gethostname(), "pid": str(os.getpid())},
        drain_timeout_s=args.drain_timeout,
    )
    loop = asyncio.get_running_loop()
    signals = {"count": 0}

    def on_signal(signame: str) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            log.warning("second %s: stopping now; the router will redo what was running", signame)
            os._exit(130)
        worker.drain()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    log.info("worker %s serving %s with concurrency %d via %s", args.worker_id,
             ",".join(args.stages), args.concurrency, ",".join(args.routers))
    await worker.run()


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s worker.py: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
