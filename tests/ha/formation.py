"""A real ``pg_auto_failover`` formation on loopback ports of its own, for failover trials and the bench.

A monitor and two nodes (Debian: ``pg-auto-failover-cli`` and
``postgresql-15-auto-failover``), their data under one temporary directory,
run as the ``postgres`` OS user (PostgreSQL refuses root). The monitor's
health checks are tuned as docs/HA.md says (a 1 s period, a 5 s unhealthy
timeout, a 5 s demote timeout), so a failover takes seconds, not a minute.
Replication is synchronous unless asked otherwise (the standby is in the
replication quorum). The server on 5432 is never touched.

Every process the formation starts carries ``LEDGER_HA_FORMATION=<its
directory>`` and ``LEDGER_HA_NODE=<node>`` in its environment, and every
PostgreSQL process works in its data directory: that is how the formation
finds its own processes by pid (to kill, freeze, or tear down), never by name.

Usage::

    with Formation(base_port=5433) as formation:
        engine = sa.create_engine(formation.url)
        old = formation.kill_primary()
        new = formation.wait_for_new_primary(old)
        formation.wait_healthy()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psycopg2

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_AUTOCTL = "pg_autoctl"
#: Debian's packages that provide the formation (``.ci/run`` installs them when missing).
PACKAGES = ("pg-auto-failover-cli", "postgresql-15-auto-failover")
OS_USER = "postgres"
DBNAME = "ledger"

#: The monitor's health checks, tuned for seconds-long failovers (defaults: 5 s, 5 s, 2, 2 s, 20 s, 30 s).
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",  # ms between checks of each node
    "pgautofailover.health_check_timeout": "1000",  # ms a check may take to connect
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",  # ms
    "pgautofailover.node_considered_unhealthy_timeout": "5000",  # ms without a keeper report
    "pgautofailover.primary_demote_timeout": "5000",  # ms the old primary is given to demote itself
}
#: The keepers' own timeouts, in seconds (``pg_autoctl config set``; defaults 20, 5, 20, 3).
KEEPER_SETTINGS = {
    "timeout.network_partition_timeout": "5",  # a primary alone without monitor and standby demotes itself
    "timeout.prepare_promotion_walreceiver": "2",
    "timeout.postgresql_restart_failure_timeout": "5",
    "timeout.postgresql_restart_failure_max_retries": "3",
}
#: States in which a node accepts writes.
WRITABLE_STATES = ("single", "primary", "wait_primary")


class FormationError(RuntimeError):
    """The formation did not reach a state the caller waited for; the message says which and shows the logs."""


@dataclass(frozen=True)
class NodeState:
    name: str
    port: int
    reported: str
    goal: str


def packages_installed() -> bool:
    """Whether ``pg_autoctl`` and PostgreSQL 15's binaries are here."""
    return shutil.which(PG_AUTOCTL) is not None and (PG_BIN / "pg_ctl").exists()


class Formation:
    """A monitor on ``base_port`` and nodes on the next ports, under one temporary directory."""

    def __init__(self, base_port: int = 5433, nodes: int = 2, synchronous: bool = True,
                 dbname: str = DBNAME) -> None:
        self.monitor_port = base_port
        self.names = [f"node{i + 1}" for i in range(nodes)]
        self.ports = {name: base_port + 1 + i for i, name in enumerate(self.names)}
        self.synchronous = synchronous
        self.dbname = dbname
        self.root: Path | None = None
        self.processes: dict[str, subprocess.Popen] = {}  # the pg_autoctl supervisor of each node
        self.frozen: list[int] = []

    # -- URLs ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ledger's multi-host URL: libpq tries each node and keeps the writable one."""
        return self.database_url(self.dbname)

    def database_url(self, dbname: str) -> str:
        """The multi-host URL of another database of the formation (see :meth:`create_database`)."""
        hosts = "&".join(f"host=127.0.0.1:{self.ports[name]}" for name in self.names)
        return f"postgresql+psycopg2://postgres@/{dbname}?{hosts}&target_session_attrs=read-write"

    def create_database(self, dbname: str) -> None:
        """Create a database on the primary (replicated to the standbys), unless it exists."""
        connection = psycopg2.connect(self.node_dsn(self.primary(), "postgres"))
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            connection.close()
        # A standby that has not replayed it answers "database does not exist", and libpq
        # stops there instead of trying the next host of a multi-host URL.
        self._wait(lambda: all(self._has_database(name, dbname) for name in self.names),
                   f"every node to have database {dbname}", 60)

    def _has_database(self, name: str, dbname: str) -> bool:
        try:
            psycopg2.connect(self.node_dsn(name, dbname)).close()
            return True
        except psycopg2.OperationalError:
            return False

    def node_dsn(self, name: str, dbname: str | None = None) -> str:
        return f"host=127.0.0.1 port={self.ports[name]} user=postgres dbname={dbname or self.dbname} connect_timeout=2"

    @property
    def monitor_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.monitor_port} user=postgres dbname=pg_auto_failover connect_timeout=2"

    @property
    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.monitor_port}/pg_auto_failover?sslmode=disable"

    # -- life --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> Formation:
        """Create and run the monitor, tune it, then the nodes one after the other; return once healthy."""
        self._check_ports_free()
        self.root = Path(tempfile.mkdtemp(prefix="ledger-ha-"))
        self._own(self.root)
        monitor = self.root / "monitor"
        self._autoctl("create", "monitor", "--pgdata", str(monitor), "--pgport", str(self.monitor_port),
                      "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--pgctl", str(PG_BIN / "pg_ctl"))
        self._autoctl("config", "set", "--pgdata", str(monitor), "postgresql.listen_addresses", "127.0.0.1")
        self.processes["monitor"] = self._spawn("monitor", "run", "--pgdata", str(monitor))
        self._wait(lambda: self._monitor_answers(), "the monitor to accept connections", timeout)
        self._tune_monitor()
        for name in self.names:
            self._create_node(name)
            self._wait(lambda n=name: self._node_settled(n), f"{name} to join the formation", timeout)
        self.wait_healthy(timeout)
        if not self.synchronous:
            self.set_synchronous(False)
        return self

    def stop(self) -> None:
        """Kill every process of the formation by pid (frozen ones too) and remove its directory."""
        if self.root is None:
            return
        for _ in range(3):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                _signal(pid, signal.SIGKILL)
                _signal(pid, signal.SIGCONT)
            time.sleep(0.3)
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    # -- the state -----------------------------------------------------------------------

    def states(self) -> list[NodeState]:
        """Each node as the monitor sees it (reported and goal state)."""
        with psycopg2.connect(self.monitor_dsn) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT nodename, nodeport, reportedstate, goalstate FROM pgautofailover.node "
                           "ORDER BY nodeid")
            rows = [NodeState(name, port, str(reported), str(goal)) for name, port, reported, goal in cursor]
        connection.close()
        return rows

    def primary(self) -> str:
        """The node that accepts writes now (asked of the nodes themselves, not the monitor)."""
        for name in self.names:
            if self._writable(name):
                return name
        raise FormationError(f"no node accepts writes: {self.states()}")

    def standbys(self) -> list[str]:
        return [name for name in self.names if name != self.primary()]

    def wait_healthy(self, timeout: float = 120.0) -> str:
        """Wait until one node is primary and every other is a secondary that reached its goal; the primary."""
        def healthy() -> str | None:
            states = self._states_or_none()
            if states is None or len(states) != len(self.names):
                return None
            if any(s.reported != s.goal for s in states):
                return None
            primaries = [s.name for s in states if s.reported == "primary"]
            others = [s for s in states if s.reported != "primary"]
            if len(primaries) == 1 and all(s.reported == "secondary" for s in others):
                return primaries[0] if self._writable(primaries[0]) else None
            return None
        return self._wait(healthy, "one primary and its secondaries", timeout)

    def wait_for_new_primary(self, old: str, timeout: float = 90.0) -> str:
        """Wait until a node other than ``old`` accepts writes; its name."""
        def promoted() -> str | None:
            return next((name for name in self.names if name != old and self._writable(name)), None)
        return self._wait(promoted, f"a node other than {old} to accept writes", timeout)

    def synchronous_standby_names(self) -> str:
        with psycopg2.connect(self.node_dsn(self.primary())) as connection, connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_standby_names")
            value = cursor.fetchone()[0]
        connection.close()
        return str(value)

    # -- faults ----------------------------------------------------------------------------

    def node_pids(self, name: str) -> list[int]:
        """Every process of a node: its pg_autoctl keeper and services, its postgres and backends."""
        assert self.root is not None
        return self._pids(node=name)

    def kill_primary(self) -> str:
        """SIGKILL every process of the primary (postgres and its keeper) at once, then restart the keeper.

        The keeper finds its node demoted on the monitor and rejoins as a standby
        (``pg_rewind`` when needed). Returns the old primary's name.
        """
        name = self.primary()
        self.kill_node(name)
        self.restart_node(name)
        return name

    def kill_node(self, name: str) -> None:
        for _ in range(3):  # a pid forked while we signalled is killed on the next pass
            pids = self.node_pids(name)
            if not pids:
                break
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.1)
        process = self.processes.pop(name, None)
        if process is not None:
            process.wait(timeout=10)

    def restart_node(self, name: str) -> None:
        assert self.root is not None
        self._remove_stale_pid_files(name)
        self.processes[name] = self._spawn(name, "run", "--pgdata", str(self.root / name))

    def freeze_primary(self) -> str:
        """SIGSTOP every process of the primary: it hangs (connections stay open, nothing answers)."""
        name = self.primary()
        pids = self.node_pids(name)
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        self.frozen = pids
        return name

    def thaw(self) -> None:
        """SIGCONT the frozen processes: the old primary finds itself demoted and rejoins as a standby."""
        for pid in self.frozen:
            _signal(pid, signal.SIGCONT)
        self.frozen = []

    def set_synchronous(self, on: bool, timeout: float = 60.0) -> None:
        """Put the standbys in (synchronous) or out of (asynchronous) the replication quorum."""
        assert self.root is not None
        primary = self.primary()
        for name in self.names:
            if name != primary:
                self._autoctl("set", "node", "replication-quorum", "true" if on else "false",
                              "--pgdata", str(self.root / name))
        self.synchronous = on
        self._wait(lambda: bool(self.synchronous_standby_names()) == on,
                   f"synchronous_standby_names {'set' if on else 'empty'} on the primary", timeout)

    def logs(self, tail: int = 4000) -> str:
        """The end of each process's log, for a failure message."""
        if self.root is None:
            return ""
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # -- inside ---------------------------------------------------------------------------------

    def _environment(self, node: str) -> dict[str, str]:
        assert self.root is not None
        return {
            "PATH": f"{PG_BIN}:/usr/bin:/bin",
            "HOME": str(self.root),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_DATA_HOME": str(self.root / "share"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "PG_CONFIG": str(PG_BIN / "pg_config"),
            "LEDGER_HA_FORMATION": str(self.root),
            "LEDGER_HA_NODE": node,
        }

    def _as_postgres(self) -> dict[str, object]:
        """Popen arguments that run the command as the postgres OS user when we are root."""
        if os.geteuid() != 0:
            return {}
        return {"user": OS_USER, "group": pwd.getpwnam(OS_USER).pw_gid, "extra_groups": []}

    def _autoctl(self, *args: str, node: str = "setup", timeout: float = 120.0) -> str:
        assert self.root is not None
        result = subprocess.run([PG_AUTOCTL, *args], check=False, env=self._environment(node), cwd=self.root,
                                capture_output=True, text=True, errors="replace", timeout=timeout,
                                **self._as_postgres())
        if result.returncode != 0:
            raise FormationError(f"pg_autoctl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr[-4000:]}")
        return result.stdout

    def _spawn(self, node: str, *args: str) -> subprocess.Popen:
        """A long-running ``pg_autoctl`` in its own session, its output appended to ``<node>.log``."""
        assert self.root is not None
        log_path = self.root / f"{node}.log"
        with open(log_path, "a") as log:
            process = subprocess.Popen([PG_AUTOCTL, *args], env=self._environment(node), cwd=self.root,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       **self._as_postgres())
        self._own(log_path)
        return process

    def _create_node(self, name: str) -> None:
        assert self.root is not None
        pgdata = self.root / name
        options = ["create", "postgres", "--pgdata", str(pgdata), "--pgport", str(self.ports[name]),
                   "--pghost", "127.0.0.1", "--listen", "127.0.0.1", "--hostname", "127.0.0.1",
                   "--name", name, "--dbname", self.dbname, "--monitor", self.monitor_uri,
                   "--auth", "trust", "--no-ssl", "--pgctl", str(PG_BIN / "pg_ctl"),
                   "--replication-quorum", "true", "--candidate-priority", "50"]
        self._autoctl(*options, node=name)  # registers, initialises (or clones the primary), stops
        for setting, value in KEEPER_SETTINGS.items():  # set while no keeper runs: nothing to signal
            self._autoctl("config", "set", "--pgdata", str(pgdata), setting, value, node=name)
        self.processes[name] = self._spawn(name, "run", "--pgdata", str(pgdata))

    def _tune_monitor(self) -> None:
        connection = psycopg2.connect(self.monitor_dsn)
        connection.autocommit = True
        with connection.cursor() as cursor:
            for setting, value in MONITOR_SETTINGS.items():
                cursor.execute(f"ALTER SYSTEM SET {setting} = {int(value)}")
            cursor.execute("SELECT pg_reload_conf()")
        connection.close()

    def _monitor_answers(self) -> bool:
        try:
            psycopg2.connect(self.monitor_dsn).close()
            return True
        except psycopg2.OperationalError:
            return False

    def _states_or_none(self) -> list[NodeState] | None:
        try:
            return self.states()
        except psycopg2.Error:
            return None

    def _node_settled(self, name: str) -> bool:
        states = self._states_or_none() or []
        return any(s.name == name and s.reported == s.goal and s.reported in ("single", "primary", "secondary")
                   for s in states)

    def _writable(self, name: str) -> bool:
        """Whether the node answers and is not in recovery (a promoted standby, or the primary)."""
        try:
            connection = psycopg2.connect(self.node_dsn(name), options="-c statement_timeout=2000")
        except psycopg2.OperationalError:
            return False
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'")
                return bool(cursor.fetchone()[0])
        except psycopg2.Error:
            return False
        finally:
            connection.close()

    def _wait(self, check: Callable[[], object], what: str, timeout: float) -> object:
        end = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > end:
                states = self._states_or_none()
                raise FormationError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"monitor says {states}\n{self.logs()}")
            time.sleep(0.2)

    def _pids(self, node: str | None = None) -> list[int]:
        """Our processes: pg_autoctl ones by their environment marker, PostgreSQL ones by their working directory.

        (PostgreSQL's backends overwrite their environment area with their process title,
        but each works in its data directory.)
        """
        assert self.root is not None
        root = str(self.root)
        marker = f"LEDGER_HA_FORMATION={root}\0".encode()
        node_marker = f"LEDGER_HA_NODE={node}\0".encode() if node else None
        datadir = f"{root}/{node}" if node else root
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                cwd = ""
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                environ = b""
            by_environ = marker in environ and (node_marker is None or node_marker in environ)
            by_cwd = cwd == datadir or (node is None and cwd.startswith(root + "/"))
            if by_environ or by_cwd:
                found.append(int(entry.name))
        return found

    def _remove_stale_pid_files(self, name: str) -> None:
        """A SIGKILLed keeper leaves its pid file; postgres's own postmaster.pid is checked by postgres."""
        assert self.root is not None
        for path in (self.root / "run").rglob("pg_autoctl.pid") if (self.root / "run").exists() else []:
            if f"/{name}/" in str(path):
                path.unlink(missing_ok=True)

    def _check_ports_free(self) -> None:
        import socket
        for port in (self.monitor_port, *self.ports.values()):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    raise FormationError(f"port {port} is taken: the formation needs {self.monitor_port}-"
                                         f"{max(self.ports.values())} free on 127.0.0.1")

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, OS_USER, OS_USER)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def running_formation(**options: object) -> Iterator[Formation]:
    """A started formation for a ``with`` block or a fixture: torn down even when the body fails."""
    formation = Formation(**options)  # type: ignore[arg-type]
    with formation:
        yield formation
