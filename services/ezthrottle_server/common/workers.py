"""Several processes of one service on one port: a supervisor and its workers.

With ``EZT_EDGE_WORKERS`` (``EZT_DELIVERY_WORKERS``) above 1, ``python -m
ezthrottle_server.edge`` (``.delivery``) is a :class:`Supervisor` of that many
worker processes, each a whole edge (delivery service) as one process would
be, so a node uses every core it has. Unset, it is one per core the process
may use; 1 runs the service in the one process, without a supervisor.

**The port.** The supervisor binds one listening socket per worker, all on
the same address with ``SO_REUSEPORT``: the kernel spreads new connections
over them (one shared socket would let the first process to wake take a whole
burst of connections). It keeps them open while it runs, so a worker that dies
leaves the connections queued on its socket to its successor instead of
resetting them. Without ``SO_REUSEPORT``, the workers share one socket.

**Identity.** Worker ``i`` is node ``<node id>-w<i>`` (``EZT_NODE_ID``, or
the supervisor's default id): a consumer of the region's streams, a heartbeat
and a holder of pacing and send leases of its own, so to pacing's per-node
caps and to region health each worker is a node. A restarted worker takes its
slot's name back: its heartbeat replaces its predecessor's (its region never
shows a silent node), and the stream entries its predecessor read and never
acknowledged are pending under its own name, which an edge admits at start
(``edge/worker.py``). Sends the dead worker had leased come back when their
pacing leases expire, as a dead node's do.

**Lifecycle.** A worker that exits unasked is started again after a short
pause; more than :data:`MAX_RESTARTS` within :data:`RESTART_WINDOW_S` and the
supervisor gives up: it stops the others and exits 1, for the orchestrator to
see. On SIGTERM or SIGINT it closes its copies of the sockets and forwards
SIGTERM: each worker drains as one process does (no new requests, sends in
flight finish within ``EZT_STOP_GRACE_S``, the rest are handed back), and the
supervisor exits 0 once all have. Workers die with their supervisor (Linux's
``PR_SET_PDEATHSIG``: SIGKILL, as a killed node's processes would), and stop
when the pipe they hold from it closes where that is missing.

**Metrics.** Each worker writes its metrics to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode), and the
worker that answers ``/metrics`` adds all of them up (``common/metrics.py``):
counters are the node's totals, gauges add up as their ``multiprocess_mode``
says. The supervisor empties the folder at start (a temporary folder of its
own unless ``PROMETHEUS_MULTIPROC_DIR`` names one) and marks each worker that
exits dead: its live gauges go, its counts stay in the totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import multiprocess

from .config import Settings, environment

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # more unasked exits than this within RESTART_WINDOW_S: the supervisor gives up (exit 1)
RESTART_WINDOW_S = 60.0
RESTART_PAUSE_S = 0.5
STOP_MARGIN_S = 30.0  # on SIGTERM, workers get their own grace plus this before they are killed
PR_SET_PDEATHSIG = 1


def listening_sockets(host: str, port: int, count: int, backlog: int = 1024) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port`` with ``SO_REUSEPORT`` (port 0: the port the
    first one gets, for all); one socket where the platform lacks ``SO_REUSEPORT``."""
    family, _type, _proto, _name, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    socks: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            sock.listen(backlog)
            addr = sock.getsockname()  # port 0: the next ones join the port the first one got
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def die_with_supervisor(supervisor_fd: int) -> None:
    """In a worker: be killed with the supervisor (Linux), and exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([supervisor_fd], [], [], 0)[0]:  # the pipe closed: the supervisor died before prctl
        raise SystemExit("the supervisor is gone")


@dataclass
class _Slot:
    index: int
    sock: socket.socket
    proc: asyncio.subprocess.Process | None = None


class Supervisor:
    """Runs ``settings.workers(role)`` processes of ``role`` on ``settings.host:port`` (see the module)."""

    def __init__(self, role: str, settings: Settings, *, argv: list[str] | None = None) -> None:
        self.role = role
        self.settings = settings
        self.count = settings.workers(role)
        self.argv = argv or [sys.executable, "-m", f"ezthrottle_server.{role}"]
        self._crashes: deque[float] = deque()
        self._metrics_dir = ""
        self._pipe = (-1, -1)

    def node_id(self, index: int) -> str:
        return f"{self.settings.node_id}-w{index}"

    async def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (0) or until workers keep crashing (1)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        own_dir = self._prepare_metrics_dir()
        socks: list[socket.socket] = []
        slots: list[_Slot] = []
        try:
            socks = listening_sockets(self.settings.host, self.settings.port, self.count)
            self._pipe = os.pipe()  # workers hold the read end: it closes when the supervisor is gone
            slots = [_Slot(i, socks[i % len(socks)]) for i in range(self.count)]
            for slot in slots:
                await self._start(slot)
            host, port = socks[0].getsockname()[:2]
            log.info("%d %s workers on http://%s:%s", self.count, self.role, host, port)
            return await self._watch(slots, stop)
        finally:
            for sock in socks:  # new connections are refused once the workers close theirs too
                sock.close()
            await self._stop_all(slots)
            for fd in self._pipe:
                if fd >= 0:
                    os.close(fd)
            if own_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("stopped")

    def _prepare_metrics_dir(self) -> bool:
        """The folder the workers' metric files go to, emptied; True if it is the supervisor's own."""
        if self.settings.metrics_multiproc_dir:
            self._metrics_dir = self.settings.metrics_multiproc_dir
            os.makedirs(self._metrics_dir, exist_ok=True)
            for name in os.listdir(self._metrics_dir):
                if name.endswith(".db"):
                    os.unlink(os.path.join(self._metrics_dir, name))
            return False
        self._metrics_dir = tempfile.mkdtemp(prefix=f"ezt-{self.role}-metrics-")
        return True

    async def _start(self, slot: _Slot) -> None:
        fd = slot.sock.fileno()
        env = environment(
            EZT_LISTEN_FD=str(fd),
            EZT_SUPERVISOR_FD=str(self._pipe[0]),
            EZT_WORKER_INDEX=str(slot.index),
            EZT_NODE_ID=self.node_id(slot.index),
            PROMETHEUS_MULTIPROC_DIR=self._metrics_dir,
        )
        slot.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=env, pass_fds=(fd, self._pipe[0]), stdin=asyncio.subprocess.DEVNULL
        )
        log.info("worker %s started (pid %s)", self.node_id(slot.index), slot.proc.pid)

    async def _watch(self, slots: list[_Slot], stop: asyncio.Event) -> int:
        stopped = asyncio.ensure_future(stop.wait())
        exits = {asyncio.ensure_future(s.proc.wait()): s for s in slots if s.proc is not None}
        try:
            while True:
                done, _ = await asyncio.wait({stopped, *exits}, return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    return 0
                for exited in done:
                    slot = exits.pop(exited)
                    self._exited(slot, exited.result())
                    if self._given_up():
                        log.error("%s workers exited %d times within %.0f s; giving up", self.role, len(self._crashes), RESTART_WINDOW_S)
                        return 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RESTART_PAUSE_S):  # not wait_for: it may swallow a cancel (edge/app.py)
                            await asyncio.shield(stopped)
                    if stop.is_set():
                        return 0
                    await self._start(slot)  # logs "started" again
                    assert slot.proc is not None
                    exits[asyncio.ensure_future(slot.proc.wait())] = slot
        finally:
            for task in (stopped, *exits):
                task.cancel()

    def _exited(self, slot: _Slot, code: int) -> None:
        assert slot.proc is not None
        multiprocess.mark_process_dead(slot.proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        log.error("worker %s (pid %s) exited with %s, unasked", self.node_id(slot.index), slot.proc.pid, code)
        slot.proc = None
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > RESTART_WINDOW_S:
            self._crashes.popleft()

    def _given_up(self) -> bool:
        return len(self._crashes) > MAX_RESTARTS

    async def _stop_all(self, slots: list[_Slot]) -> None:
        """SIGTERM every worker, wait for them to drain, kill what is left after the grace."""
        live = [s.proc for s in slots if s.proc is not None and s.proc.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if live:
            _done, late = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in live], timeout=self.settings.stop_grace_s + STOP_MARGIN_S
            )
            if late:
                log.error("%d workers did not stop in time; killing them", len(late))
                for proc in live:
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.gather(*late, return_exceptions=True)
        for slot in slots:
            if slot.proc is not None:
                multiprocess.mark_process_dead(slot.proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]


def supervise(role: str, settings: Settings) -> int:
    """Run the supervisor of ``role``'s workers; its exit code."""
    return asyncio.run(Supervisor(role, settings).run())
