"""Serving from several processes, with connections dealt out evenly.

The parent process listens and accepts; it hands each accepted connection to the next worker
in turn, over a Unix socket (``SCM_RIGHTS``), and the worker serves it as if it had accepted
it itself. Neither of the usual ways spreads a few keep-alive connections evenly:

- one listening socket shared by the workers (uvicorn's ``--workers``): whichever worker
  wakes first accepts every connection waiting, up to the backlog; on the benchmark machine
  one worker took all 16 clients;
- a socket per worker on the same port (``SO_REUSEPORT``): the kernel picks a socket by a
  hash of the client's address and port, so 16 connections split 10/6 or 11/5 as often as
  8/8, and the busier worker sets the pace.

Round-robin over accepted connections gives each worker the same number of them. The parent
only accepts, so it costs nothing per request on keep-alive connections. Linux and other
Unix systems only (``socket.send_fds``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

import uvicorn

log = logging.getLogger("omni_store")
LISTEN_BACKLOG = 2048


def serve_processes(
    host: str,
    port: int,
    workers: int,
    build: Callable[..., Any],
    build_args: tuple[object, ...] = (),
    **uvicorn_options: Any,
) -> int:
    """Serve ``build(*build_args)`` (an ASGI app, built in each worker: ``build`` must be
    importable by name) from ``workers`` processes on ``host:port``. SIGTERM or SIGINT stops
    accepting at once, then stops the workers gracefully (each finishes its requests in
    flight); the exit status is 0 when every worker exited 0. Should one die, the others are
    stopped too."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    listening.listen(LISTEN_BACKLOG)
    listening.setblocking(False)

    context = multiprocessing.get_context("spawn")
    processes, handoffs = [], []
    for _ in range(workers):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = context.Process(
            target=_serve_worker, args=(theirs, build, build_args, uvicorn_options)
        )
        process.start()
        theirs.close()
        ours.setblocking(False)
        processes.append(process)
        handoffs.append(ours)

    # A signal wakes the loop below through this socket (signal.set_wakeup_fd).
    wakeup, wakeup_writer = socket.socketpair()
    wakeup.setblocking(False)
    wakeup_writer.setblocking(False)
    signal.set_wakeup_fd(wakeup_writer.fileno(), warn_on_full_buffer=False)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    running = list(processes)
    dealer = Dealer(handoffs)
    stopped = False
    try:
        while running:
            if stopping and not stopped:
                stopped = True
                listening.close()  # new connections are refused from now on
                for process in running:
                    process.terminate()  # SIGTERM: each finishes its requests in flight
            watched: list[Any] = [wakeup, *(p.sentinel for p in running)]
            if not stopped:
                watched.append(listening)
            for ready in wait(watched):
                if ready is listening:
                    dealer.deal(listening)
                elif ready is wakeup:
                    _drain(wakeup)
                else:
                    running = [p for p in running if p.sentinel != ready]
                    if not stopping:
                        log.error("a worker exited unexpectedly; stopping the others")
                        stopping = True
    finally:
        signal.set_wakeup_fd(-1)
        for resource in (listening, wakeup, wakeup_writer, *handoffs):
            resource.close()
    for process in processes:
        process.join()
    return 0 if all(p.exitcode == 0 for p in processes) else 1


class Dealer:
    """Hands accepted connections to the workers in turn; a worker that cannot take one (its
    queue full, or gone) is skipped for that connection."""

    def __init__(self, handoffs: list[socket.socket]) -> None:
        self.handoffs = handoffs
        self.turn = 0

    def deal(self, listening: socket.socket) -> None:
        """Every connection waiting on ``listening`` (non-blocking), to a worker each."""
        while True:
            try:
                connection, _ = listening.accept()
            except BlockingIOError:
                return
            except OSError as error:  # ECONNABORTED, EMFILE…: keep serving the others
                log.warning("accept failed: %s", error)
                return
            with connection:  # the worker has its own copy of the descriptor once sent
                if not self._hand(connection):
                    log.warning("no worker could take a connection; it was closed")

    def _hand(self, connection: socket.socket) -> bool:
        count = len(self.handoffs)
        for step in range(count):
            index = (self.turn + step) % count
            try:
                socket.send_fds(self.handoffs[index], [b"c"], [connection.fileno()])
            except OSError:  # BlockingIOError (queue full), BrokenPipeError (worker gone)
                continue
            self.turn = (index + 1) % count
            return True
        return False


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass


class HandedOffServer(uvicorn.Server):
    """A uvicorn server that listens on nothing: it serves the connections its parent
    accepted and sent over ``handoff``. Closing the parent's end of ``handoff`` stops it."""

    def __init__(self, config: uvicorn.Config, handoff: socket.socket) -> None:
        super().__init__(config)
        self.handoff = handoff
        self._starting: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if self.should_exit:
            return
        self.handoff.setblocking(False)
        asyncio.get_running_loop().add_reader(self.handoff.fileno(), self._take_connections)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().remove_reader(self.handoff.fileno())
        await super().shutdown(sockets=sockets)

    def _take_connections(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, descriptors, _, _ = socket.recv_fds(self.handoff, 1, 1)
            except BlockingIOError:
                return
            if not message:  # the parent is gone: nothing more will come
                loop.remove_reader(self.handoff.fileno())
                self.should_exit = True
                return
            for descriptor in descriptors:
                task = loop.create_task(
                    loop.connect_accepted_socket(self._protocol, socket.socket(fileno=descriptor))
                )
                self._starting.add(task)
                task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[Any]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The client went away before its connection was set up: nothing to serve.
            log.debug("a handed-off connection could not be set up", exc_info=task.exception())

    def _protocol(self) -> asyncio.Protocol:
        """What uvicorn's own listening server builds for each connection it accepts."""
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol


def _serve_worker(
    handoff: socket.socket,
    build: Callable[..., Any],
    build_args: tuple[object, ...],
    uvicorn_options: dict[str, Any],
) -> None:
    app = build(*build_args)
    # uvicorn drains the requests in flight on SIGTERM, then raises the signal again: this
    # makes that a clean exit (status 0), not a death by signal.
    signal.signal(signal.SIGTERM, exit_cleanly)
    config = uvicorn.Config(app, **{"timeout_graceful_shutdown": 30, **uvicorn_options})
    HandedOffServer(config, handoff).run()


def exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
