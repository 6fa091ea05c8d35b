#!/usr/bin/env python3
"""A dsat client in Python, written from the .proto files alone.

    ./gen.sh
    python3 client.py submit --pipeline demo --payload '{"text": "hello"}' --follow
    python3 client.py submit --pipeline demo --payload '{"n": {i}, "text": "item-{i}"}' \\
        --count 200 --wait --json
    python3 client.py watch TASK_ID
    python3 client.py get TASK_ID --history
    python3 client.py list --pipeline demo --state SUCCEEDED --limit 20

submit uses RouterService.SubmitTask for one task and the SubmitTasks stream (batches in, one
durable ack per task out) for --count > 1 or --batch. Every task gets an idempotency key, so a
submit that breaks is retried safely: a key seen before returns the same task and creates nothing.
watch follows StatusService.WatchTask and, when the stream breaks, resumes after the last
revision it received. It imports only the generated stubs (run ./gen.sh first), grpcio and
protobuf.

Exit codes: 0 success (every waited task SUCCEEDED), 1 an error or a task that did not succeed,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
try:
    import grpc
    import grpc.aio
    from dsat.router.v1 import router_pb2 as router
    from dsat.router.v1 import router_pb2_grpc as router_grpc
    from dsat.status.v1 import status_pb2 as status
    from dsat.status.v1 import status_pb2_grpc as status_grpc
    from dsat.task.v1 import task_pb2 as task
except ImportError as err:  # pragma: no cover - a set-up problem, reported plainly
    sys.exit(f"client.py: {err}. Run examples/python/gen.sh first (it needs grpcio and protobuf).")

TERMINAL = {
    task.TASK_STATE_SUCCEEDED,
    task.TASK_STATE_FAILED,
    task.TASK_STATE_DEAD_LETTERED,
    task.TASK_STATE_CANCELLED,
}
# Errors that no retry can fix; anything else (UNAVAILABLE, a reset stream, …) is retried.
FINAL_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


class ClientFailure(Exception):
    """An error worth one line on stderr and exit code 1."""


class StreamEnded(ClientFailure):
    """A stream ended before it answered everything; worth a retry."""


def describe(err: Exception) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err)


def state_name(state: int) -> str:
    return task.TaskState.Name(state).removeprefix("TASK_STATE_")


def parse_state(raw: str) -> int:
    name = raw.strip().upper()
    try:
        return task.TaskState.Value(name if name.startswith("TASK_STATE_") else "TASK_STATE_" + name)
    except ValueError:
        names = ", ".join(n.removeprefix("TASK_STATE_") for n in task.TaskState.keys()[1:])
        raise argparse.ArgumentTypeError(f"{raw!r} is not a task state ({names})") from None


def show_payload(p) -> object:
    """A payload for printing: parsed JSON, text, or base64 for other bytes."""
    if not p.data:
        return None
    if p.content_type == "application/json":
        try:
            return json.loads(p.data)
        except ValueError:
            pass
    if p.content_type.startswith("text/") or p.content_type == "application/json":
        return p.data.decode("utf-8", errors="replace")
    return {"base64": base64.b64encode(p.data).decode("ascii"), "content_type": p.content_type}


def task_json(t) -> dict:
    out = {
        "task_id": t.task_id,
        "pipeline": t.pipeline,
        "stage": t.stage,
        "state": state_name(t.state),
        "attempt": t.attempt,
        "revision": t.revision,
        "trace_id": t.trace_id,
    }
    if t.HasField("output"):
        out["output"] = show_payload(t.output)
    if t.HasField("last_error") and t.last_error.code:
        out["last_error"] = {"code": t.last_error.code, "message": t.last_error.message}
    return out


def transition_json(t) -> dict:
    out = {
        "revision": t.revision,
        "seq": t.seq,
        "from": state_name(t.from_state),
        "to": state_name(t.to_state),
        "stage": t.stage,
        "attempt": t.attempt,
        "reason": t.reason,
    }
    if t.worker_id:
        out["worker_id"] = t.worker_id
    if t.HasField("error") and t.error.code:
        out["error"] = f"{t.error.code}: {t.error.message}"
    return out


class Mesh:
    """Channels to one router and one status service."""

    def __init__(self, args):
        self.args = args
        self.router_channel = grpc.aio.insecure_channel(args.router, options=CHANNEL_OPTIONS)
        self.status_channel = grpc.aio.insecure_channel(args.status, options=CHANNEL_OPTIONS)
        self._router = router_grpc.RouterServiceStub(self.router_channel)
        self._status = status_grpc.StatusServiceStub(self.status_channel)
        self.current = ""  # the service last called, for error messages

    @property
    def router(self):
        self.current = f"router {self.args.router}"
        return self._router

    @property
    def status(self):
        self.current = f"status {self.args.status}"
        return self._status

    async def close(self):
        await self.router_channel.close()
        await self.status_channel.close()

    def out(self, human: str, data) -> None:
        """One result line: JSON with --json, else the human text."""
        print(json.dumps(data, sort_keys=True) if self.args.json else human, flush=True)

    def note(self, text: str) -> None:
        print(f"client.py: {text}", file=sys.stderr, flush=True)


async def backoff(failures: int) -> None:
    await asyncio.sleep(min(5.0, 0.1 * 2**failures) * random.uniform(0.5, 1.0))


# --- submit --------------------------------------------------------------------------------------


def make_request(args, i: int, key: str) -> "router.SubmitTaskRequest":
    payload = args.payload.replace("{i}", str(i)).encode("utf-8")
    return router.SubmitTaskRequest(
        pipeline=args.pipeline,
        payload=payload,
        content_type=args.content_type,
        idempotency_key=key,
        priority=args.priority,
    )


async def submit_one(mesh: Mesh, args) -> list:
    """SubmitTask, retried with the same idempotency key while the router is unreachable."""
    req = make_request(args, 0, args.idempotency_key or f"py-{uuid.uuid4()}")
    for failures in range(args.retries + 1):
        try:
            res = await mesh.router.SubmitTask(req, timeout=args.timeout)
            break
        except grpc.aio.AioRpcError as err:
            if err.code() in FINAL_CODES or failures == args.retries:
                raise
            mesh.note(f"submit: {err.code().name}: {err.details()}; retrying with the same key")
            await backoff(failures)
    mesh.out(
        res.task_id + (" (duplicate: the key was seen before)" if res.duplicate else ""),
        {"task_id": res.task_id, "trace_id": res.trace_id, "duplicate": res.duplicate},
    )
    return [(0, res.task_id)]


async def submit_batches(mesh: Mesh, args) -> list:
    """SubmitTasks: sends batches while acks come back; resends what was not acked on a new
    stream if the stream breaks (same keys, so nothing is created twice)."""
    prefix = args.idempotency_key or f"py-{uuid.uuid4()}"
    pending = {str(i): make_request(args, i, f"{prefix}-{i}") for i in range(args.count)}
    done: dict = {}
    refused: dict = {}
    failures = 0
    while pending:
        refs = list(pending)
        call = mesh.router.SubmitTasks()

        async def write_all():
            # A broken stream shows up on the reading side; the writer just stops.
            try:
                for start in range(0, len(refs), args.batch_size):
                    entries = [router.SubmitTasksEntry(client_ref=r, task=pending[r])
                               for r in refs[start:start + args.batch_size]]
                    await call.write(router.SubmitTasksRequest(entries=entries))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass

        writer = asyncio.create_task(write_all())
        try:
            # Acks come back while batches are still being written.
            async for res in call:
                for ack in res.acks:
                    if ack.client_ref not in pending:
                        continue
                    del pending[ack.client_ref]
                    if ack.code == 0:
                        done[ack.client_ref] = ack.task_id
                    else:
                        code = grpc.StatusCode(ack.code).name if ack.code < 17 else str(ack.code)
                        refused[ack.client_ref] = f"{code}: {ack.message}"
                failures = 0
            if pending:
                raise StreamEnded(f"the stream ended with {len(pending)} tasks unacknowledged")
        except (grpc.aio.AioRpcError, StreamEnded) as err:
            final = isinstance(err, grpc.aio.AioRpcError) and err.code() in FINAL_CODES
            if final or failures >= args.retries:
                raise
            failures += 1
            mesh.note(f"SubmitTasks: {describe(err)}; resending {len(pending)} "
                      "unacknowledged tasks with the same keys")
            await backoff(failures)
        finally:
            writer.cancel()
    for ref, why in sorted(refused.items(), key=lambda kv: int(kv[0])):
        mesh.note(f"task {ref} refused: {why}")
    if not args.wait:
        for ref, tid in sorted(done.items(), key=lambda kv: int(kv[0])):
            mesh.out(tid, {"index": int(ref), "task_id": tid})
    if refused:
        raise ClientFailure(f"{len(refused)} of {args.count} tasks were refused")
    return sorted(((int(ref), tid) for ref, tid in done.items()))


async def cmd_submit(mesh: Mesh, args) -> int:
    batch = args.batch or args.count > 1
    if args.follow and batch:
        raise ClientFailure("--follow follows one task; use --wait with --count")
    submitted = await (submit_batches if batch else submit_one)(mesh, args)
    if args.follow:
        return await cmd_watch_task(mesh, submitted[0][1], 0)
    if args.wait:
        return await wait_all(mesh, submitted, args)
    return 0


# --- watch ---------------------------------------------------------------------------------------


async def follow(mesh: Mesh, task_id: str, from_revision: int, on_event=None, retries: int = 10):
    """Follows a task with WatchTask until it ends; returns its final record. When the stream
    breaks it resumes after the last revision it received, so no transition is missed or repeated."""
    last = from_revision
    failures = 0
    while True:
        try:
            call = mesh.status.WatchTask(status.WatchTaskRequest(task_id=task_id, from_revision=last))
            async for ev in call:
                failures = 0
                if ev.HasField("snapshot"):
                    last = max(last, ev.snapshot.revision)
                elif ev.HasField("transition"):
                    last = max(last, ev.transition.revision)
                if on_event is not None:
                    on_event(ev)
            # The stream ends after a terminal state; a server going away may end it early.
            record = (await mesh.status.GetTask(status.GetTaskRequest(task_id=task_id),
                                                timeout=mesh.args.timeout)).task
            if record.state in TERMINAL:
                return record
        except grpc.aio.AioRpcError as err:
            if err.code() in FINAL_CODES or failures >= retries:
                raise
            failures += 1
            if on_event is not None:
                mesh.note(f"watch {task_id}: {err.code().name}: {err.details()}; "
                          f"resuming after revision {last}")
        await backoff(failures)


async def cmd_watch_task(mesh: Mesh, task_id: str, from_revision: int) -> int:
    def on_event(ev):
        if ev.HasField("snapshot"):
            t = ev.snapshot
            mesh.out(f"{t.task_id} {state_name(t.state)} at {t.stage} (attempt {t.attempt}, "
                     f"revision {t.revision})", {"snapshot": task_json(t)})
        else:
            t = ev.transition
            extra = f" [{t.error.code}: {t.error.message}]" if t.error.code else ""
            mesh.out(f"r{t.revision} {t.stage}: {state_name(t.from_state)} → "
                     f"{state_name(t.to_state)} attempt {t.attempt} {t.reason}{extra}",
                     {"transition": transition_json(t)})

    record = await follow(mesh, task_id, from_revision, on_event, retries=mesh.args.retries)
    result = task_json(record)
    mesh.out(f"{record.task_id} {result['state']}: {json.dumps(result.get('output'))}",
             {"final": result})
    return 0 if record.state == task.TASK_STATE_SUCCEEDED else 1


async def wait_all(mesh: Mesh, submitted: list, args) -> int:
    """Waits for many tasks, with a bounded number of watches open at once."""
    gate = asyncio.Semaphore(args.watch_concurrency)

    async def one(index: int, task_id: str):
        async with gate:
            record = await follow(mesh, task_id, 0, retries=args.retries)
        result = task_json(record)
        result["index"] = index
        mesh.out(f"{index} {task_id} {result['state']} {json.dumps(result.get('output'))}", result)
        return record.state

    states = await asyncio.gather(*(one(i, tid) for i, tid in submitted))
    counts: dict = {}
    for s in states:
        counts[state_name(s)] = counts.get(state_name(s), 0) + 1
    mesh.note("finished: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0 if all(s == task.TASK_STATE_SUCCEEDED for s in states) else 1


# --- get, list -----------------------------------------------------------------------------------


async def cmd_get(mesh: Mesh, args) -> int:
    t = (await mesh.status.GetTask(status.GetTaskRequest(task_id=args.task_id),
                                   timeout=args.timeout)).task
    mesh.out(json.dumps(task_json(t), indent=2), task_json(t))
    if args.history:
        token = ""
        while True:
            page = await mesh.status.GetTaskHistory(
                status.GetTaskHistoryRequest(task_id=args.task_id, page_token=token),
                timeout=args.timeout)
            for tr in page.transitions:
                j = transition_json(tr)
                mesh.out(f"  r{j['revision']} #{j['seq']} {j['stage']}: {j['from']} → {j['to']} "
                         f"attempt {j['attempt']} {j['reason']}", j)
            token = page.next_page_token
            if not token:
                break
    return 0


async def cmd_list(mesh: Mesh, args) -> int:
    flt = task.TaskFilter(states=args.state or [], pipeline=args.pipeline or "",
                          stage=args.stage or "")
    token, shown = "", 0
    while shown < args.limit:
        page = await mesh.status.ListTasks(
            status.ListTasksRequest(filter=flt, page_size=min(1000, args.limit - shown),
                                    page_token=token),
            timeout=args.timeout)
        if not args.json and not token:
            print(f"{'task':36}  {'pipeline':16} {'stage':12} {'state':13} attempt")
        for t in page.tasks[: args.limit - shown]:
            shown += 1
            mesh.out(f"{t.task_id:36}  {t.pipeline:16} {t.stage:12} {state_name(t.state):13} "
                     f"{t.attempt}", task_json(t))
        token = page.next_page_token
        if not token:
            break
    if token and not args.json:
        print(f"(more: --page-token {token})")
    return 0


# --- command line --------------------------------------------------------------------------------


def address(raw: str) -> str:
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{raw!r} is not host:port")
    return raw


def positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive integer")
    return int(raw)


def parse_args(argv):
    def mesh_options(p, suppress):
        d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
        p.add_argument("--router", type=address,
                       default=d(os.environ.get("DSAT_ROUTER_ADDRESS", "127.0.0.1:7402")),
                       help="router address [env DSAT_ROUTER_ADDRESS, default 127.0.0.1:7402]")
        p.add_argument("--status", type=address,
                       default=d(os.environ.get("DSAT_STATUS_ADDRESS", "127.0.0.1:7401")),
                       help="status address [env DSAT_STATUS_ADDRESS, default 127.0.0.1:7401]")
        p.add_argument("--timeout", type=float, default=d(10.0),
                       help="deadline of each unary call, in seconds [default 10]")
        p.add_argument("--retries", type=int, default=d(10),
                       help="how often a broken call is retried or resumed [default 10]")
        p.add_argument("--json", action="store_true", default=d(False),
                       help="print one JSON object per line")

    parser = argparse.ArgumentParser(description="A dsat client in Python.")
    mesh_options(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="submit tasks to a pipeline")
    mesh_options(s, True)
    s.add_argument("--pipeline", required=True, help="the pipeline to run")
    s.add_argument("--payload", default="{}",
                   help="the input; {i} is replaced by the task's index (0, 1, …)")
    s.add_argument("--content-type", default="application/json", help="the payload's media type")
    s.add_argument("--count", type=positive, default=1, help="how many tasks to submit")
    s.add_argument("--batch", action="store_true",
                   help="use the SubmitTasks stream even for one task (implied by --count > 1)")
    s.add_argument("--batch-size", type=positive, default=100, help="tasks per SubmitTasks message")
    s.add_argument("--idempotency-key", default="",
                   help="the key (one task) or key prefix (batch, '-INDEX' appended); "
                        "default: random")
    s.add_argument("--priority", type=int, default=0, help="higher runs first, -1000 to 1000")
    s.add_argument("--follow", action="store_true",
                   help="follow the task until it ends and print every transition")
    s.add_argument("--wait", action="store_true",
                   help="wait until every task ends and print each final state and output")
    s.add_argument("--watch-concurrency", type=positive, default=100,
                   help="most WatchTask streams open at once with --wait")

    w = sub.add_parser("watch", help="follow a task until it ends")
    mesh_options(w, True)
    w.add_argument("task_id")
    w.add_argument("--from-revision", type=int, default=0,
                   help="resume after this revision instead of starting with the record")

    g = sub.add_parser("get", help="show a task")
    mesh_options(g, True)
    g.add_argument("task_id")
    g.add_argument("--history", action="store_true", help="also print the transition log")

    ls = sub.add_parser("list", help="list tasks, newest first")
    mesh_options(ls, True)
    ls.add_argument("--pipeline", help="only tasks of this pipeline")
    ls.add_argument("--stage", help="only tasks at this stage")
    ls.add_argument("--state", type=parse_state, action="append",
                    help="only tasks in this state (repeatable), e.g. SUCCEEDED")
    ls.add_argument("--limit", type=positive, default=50, help="at most this many")
    return parser.parse_args(argv)


async def run(args) -> int:
    mesh = Mesh(args)
    try:
        if args.command == "submit":
            return await cmd_submit(mesh, args)
        if args.command == "watch":
            return await cmd_watch_task(mesh, args.task_id, args.from_revision)
        if args.command == "get":
            return await cmd_get(mesh, args)
        return await cmd_list(mesh, args)
    except grpc.aio.AioRpcError as err:
        hint = " (is dsat running there?)" if err.code() == grpc.StatusCode.UNAVAILABLE else ""
        raise ClientFailure(f"{mesh.current}: {describe(err)}{hint}") from None
    finally:
        await mesh.close()


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        code = asyncio.run(run(args))
    except ClientFailure as err:
        print(f"client.py: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
