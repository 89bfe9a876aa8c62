"""Watch every master with MONITOR and check that nothing crossed a hash slot.

The cluster client already refuses a multi-key command or a script whose
KEYS span slots, and refuses MULTI/EXEC outright. What it cannot see is a
key a Lua script touches without passing it in KEYS: Redis runs it when the
key happens to live on the same node and fails when it does not, so such a
script works on one server and breaks at random on a cluster. MONITOR shows
every command a script runs (``[0 lua] …``) next to the EVALSHA that ran it,
so each can be checked against the script's declared keys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis
from redis.crc import key_slot

from support.redis_cluster import LocalRedisCluster

SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"})
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def parse_monitor_line(line: str) -> tuple[str, list[str]]:
    """``'<ts> [<db> <source>] "ARG" …'`` → (source, args); source is ``lua`` for a script's calls.

    Arguments are quoted as Redis's ``sdscatrepr`` writes them: ``\\"``, ``\\\\``,
    ``\\n`` and the like, and ``\\xHH`` for any other byte outside printable ASCII.
    """
    head, _, rest = line.partition("] ")
    source = head.rsplit(" ", 1)[-1]
    args: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] != '"':
            i += 1
            continue
        i += 1
        buf = bytearray()
        while rest[i] != '"':
            if rest[i] == "\\":
                nxt = rest[i + 1]
                if nxt == "x":
                    buf.append(int(rest[i + 2 : i + 4], 16))
                    i += 4
                    continue
                buf += _ESCAPES.get(nxt, nxt).encode()
                i += 2
                continue
            buf += rest[i].encode()
            i += 1
        args.append(buf.decode("utf-8", "surrogateescape"))
        i += 1
    return source, args


@dataclass
class Call:
    node: int
    source: str
    args: list[str]
    lua: list[list[str]] = field(default_factory=list)  # for a script: the commands it ran


class SlotAudit:
    """MONITOR every master of ``cluster`` from threads until :meth:`stop`."""

    def __init__(self, cluster: LocalRedisCluster) -> None:
        self.cluster = cluster
        self.lines: dict[int, list[str]] = {}
        self._threads: list[threading.Thread] = []
        self._marker = "ezt-slot-audit-end"
        self.stopped = False
        self.lua_after_script = True  # Redis < 7 shows a script's calls after its EVALSHA; 7 before

    def start(self) -> SlotAudit:
        masters = self.cluster.master_ports()
        with self.cluster.node(masters[0]) as r:
            self.lua_after_script = int(str(r.info("server")["redis_version"]).split(".")[0]) < 7
        for port in masters:
            self.lines[port] = []
            ready = threading.Event()
            t = threading.Thread(target=self._watch, args=(port, ready), daemon=True, name=f"monitor-{port}")
            t.start()
            if not ready.wait(5):
                raise RuntimeError(f"MONITOR on {port} did not start")
            self._threads.append(t)
        return self

    def _watch(self, port: int, ready: threading.Event) -> None:
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as r, r.monitor() as m:  # no read timeout
            ready.set()
            while True:
                try:
                    line = m.connection.read_response()
                except redis.RedisError:
                    return  # the node went away
                if self._marker in line:
                    return
                self.lines[port].append(line)

    def stop(self) -> list[Call]:
        self.stopped = True
        for port in self.lines:
            try:
                with self.cluster.node(port) as r:
                    r.echo(self._marker)
            except redis.RedisError:
                pass
        for t in self._threads:
            t.join(10)
        return self.calls()

    def calls(self) -> list[Call]:
        out: list[Call] = []
        for port, lines in self.lines.items():
            pending_lua: list[list[str]] = []
            last_script: Call | None = None
            for line in lines:
                source, args = parse_monitor_line(line)
                if not args:
                    continue
                if source == "lua":
                    if self.lua_after_script:
                        assert last_script is not None, f"a script's call without its script on {port}: {line}"
                        last_script.lua.append(args)
                    else:
                        pending_lua.append(args)
                    continue
                call = Call(port, source, args)
                if args[0].upper() in SCRIPT_COMMANDS:
                    last_script = call
                    if not self.lua_after_script:
                        call.lua, pending_lua = pending_lua, []
                else:
                    last_script = None
                out.append(call)
        return out


def command_keys(client: redis.Redis, commands: Iterable[list[str]]) -> list[list[str]]:
    """The keys of each command, as the server finds them (COMMAND GETKEYS), [] for keyless ones."""
    commands = list(commands)
    with client.pipeline(transaction=False) as pipe:
        for args in commands:
            pipe.command_getkeys(*args)
        replies = pipe.execute(raise_on_error=False)
    return [list(r) if isinstance(r, list) else [] for r in replies]


def violations(cluster: LocalRedisCluster, calls: list[Call]) -> list[str]:
    """What crossed a slot: undeclared keys in scripts, scripts/commands over several slots, MULTI."""
    problems: list[str] = []
    checked = [c for c in calls if c.source != "lua" and c.args[0].upper() not in ("MONITOR", "ECHO")]
    with cluster.node(cluster.master_ports()[0]) as r:
        keyed = command_keys(r, (c.args for c in checked))
        script_calls = [(c, a) for c in checked if c.args[0].upper() in SCRIPT_COMMANDS for a in c.lua]
        script_keys = command_keys(r, (a for _, a in script_calls))
    for call, ks in zip(checked, keyed):
        name = call.args[0].upper()
        if name in ("MULTI", "EXEC"):
            problems.append(f"{name} from {call.source} on {call.node}: transactions cannot span slots and the cluster client refuses them")
        if len({key_slot(k.encode()) for k in ks}) > 1:
            problems.append(f"{' '.join(call.args[:4])}…: keys in {len({key_slot(k.encode()) for k in ks})} slots: {ks}")
    for (call, lua_args), ks in zip(script_calls, script_keys):
        declared = set(call.args[3 : 3 + int(call.args[2])])
        undeclared = [k for k in ks if k not in declared]
        if undeclared:
            problems.append(
                f"script {call.args[1][:12]} ran {' '.join(lua_args[:2])} on undeclared key(s) {undeclared}; declared {sorted(declared)}"
            )
    return problems
