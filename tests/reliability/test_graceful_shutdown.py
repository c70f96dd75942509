"""Graceful shutdown of ``omni-store serve``: on SIGTERM the service stops accepting new
connections, finishes the requests in flight (their messages stored, their answers 200) and
exits with status 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from omni_store.persistence.database import Database
from omni_store.persistence.tenancy import TenantId
from tests.factories import at, channel_account
from tests.reliability.harness import (
    PERSIST,
    SECRET,
    Event,
    call,
    fetch,
    gated,
    gid,
    token,
)

IN_FLIGHT = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _refuses(port: int) -> bool:
    """Whether connecting to ``port`` is refused. A handshake reset (the listening socket
    closing while the connection waited in its backlog) is not yet a refusal: poll again."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False


@pytest.fixture(params=[1, 2], ids=["1 worker", "2 workers"])
def served(
    request: pytest.FixtureRequest, database_url: str, service_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``omni-store serve`` in a subprocess on a free port of 127.0.0.1, with one worker
    process (``--workers 1``) or two (``OMNI_STORE_WORKERS=2``: the parent accepting and
    dealing connections out to them)."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": service_url,
        "OMNI_STORE_MIGRATION_DATABASE_URL": database_url,
        "OMNI_STORE_JWT_SECRET": SECRET,
    }
    workers = []
    if request.param == 1:
        workers = ["--workers", "1"]
    else:
        env["OMNI_STORE_WORKERS"] = str(request.param)
    with tempfile.TemporaryDirectory(prefix="omni-store-serve-") as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "omni_store.cli",
                    "serve",
                    "--port",
                    str(port),
                    *workers,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            print(log.read_text()[-4000:])


async def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        for _ in range(600):  # at most 30 s
            assert process.poll() is None, "the service exited during start-up"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the service did not start")


async def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0(
    served: tuple[subprocess.Popen[bytes], int], service: AsyncEngine, owner: AsyncEngine
) -> None:
    process, port = served
    await _wait_ready(process, port)
    tenant = TenantId(uuid.uuid4())
    account = await channel_account(Database(service), tenant)
    bearer = token(tenant)
    events = [
        Event(n, f"in-flight-{n}", account.id, "INBOUND", f"U{n}", f"T{n}", at(n))
        for n in range(IN_FLIGHT)
    ]
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client,
        gated(owner, "messages", tenant) as gate,
    ):
        in_flight = [
            asyncio.create_task(
                call(client, bearer, PERSIST, {"input": e.input()}, field_name="persistMessage")
            )
            for e in events
        ]
        # All of them inside their transaction, held at the gate.
        assert len(await gate.wait_for("omni-store", IN_FLIGHT)) == IN_FLIGHT

        process.send_signal(signal.SIGTERM)
        for _ in range(400):  # at most 10 s
            if _refuses(port):
                break
            await asyncio.sleep(0.025)
        assert _refuses(port), "still accepting connections after SIGTERM"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as late:
            with pytest.raises(httpx.ConnectError):
                await late.get("/healthz")
        assert not any(task.done() for task in in_flight)
        assert process.poll() is None  # waiting for the requests in flight

        await gate.open()
        outcomes = await asyncio.gather(*in_flight)

    assert [(o.kind, o.detail) for o in outcomes] == [("ok", "")] * IN_FLIGHT
    acked = {}
    for event, outcome in zip(events, outcomes, strict=True):
        assert outcome.body is not None
        payload = outcome.body["data"]["persistMessage"]
        assert payload["deduplicated"] is False
        acked[event.key] = payload["message"]["id"]
    stored = await fetch(
        owner, "SELECT idempotency_key, id FROM messages WHERE tenant_id = :t", t=tenant
    )
    assert {r.idempotency_key: gid("Message", r.id) for r in stored} == acked

    assert await asyncio.to_thread(process.wait, 30) == 0


def _workers_of(pid: int) -> list[int]:
    """The multiprocessing workers that ``pid`` started (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"spawn_main" in command:  # not the resource tracker
            found.append(int(entry.name))
    return sorted(found)


def _sockets_on(pid: int, port: int, state: str) -> int:
    """How many TCP sockets of process ``pid`` on local ``port`` are in ``state`` ("0A":
    listening, "01": established), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, current, inode = fields[1], fields[3], fields[9]
            if current == state and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                found += 1
    return found


def _listens_on(pid: int, port: int) -> bool:
    return _sockets_on(pid, port, "0A") > 0


def _keep_alive_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each of which has had one request answered (so the process that
    serves it holds it) and is kept open."""
    opened = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            chunk = connection.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        opened.append(connection)
    return opened


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
async def test_workers_serve_connections_dealt_out_evenly_and_stop_together(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = served
    await _wait_ready(process, port)
    workers = _workers_of(process.pid)
    if "1 worker" in os.environ.get("PYTEST_CURRENT_TEST", ""):
        assert workers == []
        assert _listens_on(process.pid, port)
    else:
        # The parent listens and accepts; it hands connections to the workers in turn, so
        # keep-alive clients are spread evenly (a shared socket, or a socket per worker with
        # SO_REUSEPORT, let one worker take most of them).
        assert len(workers) == 2
        assert _listens_on(process.pid, port)
        assert [_listens_on(w, port) for w in workers] == [False, False]
        opened = await asyncio.to_thread(_keep_alive_connections, port, 8)
        try:
            held = [_sockets_on(w, port, "01") for w in workers]
            assert held == [4, 4]
            assert _sockets_on(process.pid, port, "01") == 0
        finally:
            for connection in opened:
                connection.close()

    status = []
    for _ in range(40):
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
            status.append((await client.get("/readyz")).status_code)
    assert status == [200] * 40

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 30) == 0
    assert _refuses(port)
    assert _workers_of(process.pid) == []


def _native_modules_in(pid: int) -> set[str]:
    """Which of uvloop's loop and httptools' parser are mapped into process ``pid``: uvicorn
    imports each only when its options choose it (from /proc)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    wanted = {"uvloop": "/uvloop/loop.", "httptools": "/httptools/parser/parser."}
    return {name for name, path in wanted.items() if path in maps}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
async def test_every_serving_process_runs_on_uvloop_and_httptools(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = served
    await _wait_ready(process, port)
    expected = 1 if "1 worker" in os.environ["PYTEST_CURRENT_TEST"] else 2
    # The first worker up answers /healthz: the other may still be starting (a busy machine).
    for _ in range(600):  # at most 30 s
        serving = _workers_of(process.pid) or [process.pid]
        loaded = [_native_modules_in(pid) for pid in serving]
        if len(serving) == expected and loaded == [{"uvloop", "httptools"}] * expected:
            break
        await asyncio.sleep(0.05)

    assert len(serving) == expected
    assert loaded == [{"uvloop", "httptools"}] * expected
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 30) == 0


@pytest.mark.parametrize(
    ("arguments", "environment"),
    [
        (["--workers", "0"], {}),
        ([], {"OMNI_STORE_WORKERS": "0"}),
        (["--workers", "0"], {"OMNI_STORE_WORKERS": "2"}),
    ],
    ids=["flag", "environment", "flag over environment"],
)
def test_a_number_of_workers_under_one_is_refused_before_anything_starts(
    arguments: list[str], environment: dict[str, str]
) -> None:
    inherited = {k: v for k, v in os.environ.items() if k != "OMNI_STORE_WORKERS"}
    # A database that cannot be reached: the refusal comes before any connection is tried.
    env = {**inherited, "DATABASE_URL": "postgresql://omni_app@127.0.0.1:1/none", **environment}
    finished = subprocess.run(
        [sys.executable, "-m", "omni_store.cli", "serve", "--port", "8000", *arguments],
        env=env,
        capture_output=True,
        timeout=60,
    )

    assert finished.returncode == 1
    assert finished.stderr.decode().strip().splitlines()[-1] == (
        "--workers (or OMNI_STORE_WORKERS) needs a number of at least 1, "
        "and a fixed --port when over 1"
    )
