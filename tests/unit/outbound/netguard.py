"""Keep outbound-policy tests on loopback, even when the code under test is wrong.

:class:`EgressGuard` patches the test's event loop: a socket connect, a
``create_connection`` or a name lookup aimed anywhere but loopback is refused
(``ConnectionRefusedError`` / ``gaierror``) and recorded, so a broken policy
shows up as a recorded attempt instead of a packet on the network. Everything
in-process (edges, targets, aiohttp clients, redis-py) runs on that loop.

:class:`StaticResolver` answers names from a table, without DNS, so tests
can make a name point wherever they like.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

_LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: Any) -> bool:
    if host is None:
        return False
    text = str(host).strip("[]")
    if text.lower() in _LOOPBACK_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class EgressGuard:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connects: list[tuple[Any, ...]] = []  # every socket connect address, loopback included
        self.refused: list[tuple[str, Any]] = []  # what tried to leave loopback
        self._saved: dict[str, Any] = {}

    def install(self) -> EgressGuard:
        for name in ("sock_connect", "getaddrinfo", "create_connection"):
            self._saved[name] = getattr(self.loop, name)
        self.loop.sock_connect = self._sock_connect  # type: ignore[method-assign]
        self.loop.getaddrinfo = self._getaddrinfo  # type: ignore[method-assign]
        self.loop.create_connection = self._create_connection  # type: ignore[method-assign]
        return self

    def uninstall(self) -> None:
        for name, original in self._saved.items():
            setattr(self.loop, name, original)
        self._saved.clear()

    def connects_to_port(self, port: int) -> list[tuple[Any, ...]]:
        return [a for a in self.connects if len(a) > 1 and a[1] == port]

    async def _sock_connect(self, sock: socket.socket, address: Any) -> None:
        self.connects.append(tuple(address))
        if not is_loopback(address[0]):
            self.refused.append(("connect", tuple(address)))
            raise ConnectionRefusedError(f"egress guard: {address!r} is not loopback")
        return await self._saved["sock_connect"](sock, address)

    async def _getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host if isinstance(host, str) else host.decode()):
            self.refused.append(("dns", host))
            raise socket.gaierror(socket.EAI_NONAME, f"egress guard: no DNS lookup of {host!r} in tests")
        return await self._saved["getaddrinfo"](host, port, *args, **kwargs)

    async def _create_connection(self, protocol_factory: Any, host: Any = None, port: Any = None, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not is_loopback(host):
            self.refused.append(("create_connection", (host, port)))
            raise ConnectionRefusedError(f"egress guard: {host!r} is not loopback")
        return await self._saved["create_connection"](protocol_factory, host, port, *args, **kwargs)


@asynccontextmanager
async def guarding_egress() -> AsyncIterator[EgressGuard]:
    """An :class:`EgressGuard` on the running loop for the block (a fixture's body).

    Fails after the block if anything tried to leave loopback.
    """
    guard = EgressGuard(asyncio.get_running_loop()).install()
    try:
        yield guard
    finally:
        guard.uninstall()
    assert guard.refused == [], f"the code under test tried to leave loopback: {guard.refused}"


Answer = Iterable[str] | Callable[[], Iterable[str]]


class StaticResolver(AbstractResolver):
    """Answers names from ``table`` (name -> addresses, or a callable giving them per lookup)."""

    def __init__(self, table: dict[str, Answer]) -> None:
        self.table = {k.lower(): v for k, v in table.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        answer = self.table.get(host.lower().rstrip("."))
        if answer is None:
            raise OSError(socket.EAI_NONAME, f"StaticResolver: no entry for {host!r}")
        addresses = list(answer() if callable(answer) else answer)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass


def answers(*rounds: list[str]) -> Callable[[], list[str]]:
    """A changing DNS answer: the first lookup gets rounds[0], and so on; the last repeats."""
    calls = iter(range(10**9))

    def next_answer() -> list[str]:
        return rounds[min(next(calls), len(rounds) - 1)]

    return next_answer
