"""A loopback TCP proxy in front of PostgreSQL that a test can cut, freeze and thaw.

``cut()`` closes every connection through it (a primary that died, or a
failover's dropped sessions) and, with ``refuse=True``, closes new ones at
once until ``heal()``. ``deafen()`` forwards the client's bytes but holds
back the server's: a commit that happens while its answer is lost (cut
the connection then, and the client cannot know). ``freeze()`` stops forwarding bytes while keeping
every socket open, new ones included: what a client sees of a SIGSTOPped
primary, whose kernel still acknowledges TCP. ``thaw()`` resumes.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

import sqlalchemy as sa

#: How often a forwarding thread looks at the proxy's state while idle or frozen.
POLL_SECONDS = 0.05


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``target`` on a thread per connection."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._deaf = False
        self._closed = False
        self._generation = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        #: Connections accepted so far (a test can see that clients reconnected).
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    def url(self, base: str) -> str:
        """``base`` (a SQLAlchemy URL) pointed at this proxy."""
        return sa.engine.make_url(base).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    # -- faults ------------------------------------------------------------------

    def cut(self, *, refuse: bool = False) -> None:
        """Close every connection now; with ``refuse``, close new ones at once until :meth:`heal`."""
        with self._lock:
            self._generation += 1
            self._refusing = refuse
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def heal(self) -> None:
        """Accept and forward again after ``cut(refuse=True)``."""
        self._refusing = False

    def freeze(self) -> None:
        """Stop forwarding bytes; every socket stays open (a SIGSTOPped server)."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again what the frozen (or deafened) connections hold."""
        self._deaf = False
        self._flowing.set()

    def deafen(self) -> None:
        """Forward what clients send, hold back what the server answers."""
        self._deaf = True

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def close(self) -> None:
        self._closed = True
        self.thaw()
        self.cut()
        self._thread.join(timeout=5)
        _close(self._listener)

    # -- forwarding --------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self._refusing:
                _close(client)
                continue
            threading.Thread(target=self._serve, args=(client,), name="fault-proxy-pair", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        generation = self._generation
        self._track(client)
        while not self._flowing.is_set():  # frozen: the client is connected, and hears nothing
            if self._generation != generation or self._closed:
                _close(client)
                return
            self._flowing.wait(POLL_SECONDS)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(client)
            return
        self._track(upstream)
        if self._generation != generation:
            _close(client)
            _close(upstream)
            return
        self._pump(client, upstream, generation)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _pump(self, client: socket.socket, upstream: socket.socket, generation: int) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while self._generation == generation and not self._closed:
                if not self._flowing.is_set():
                    self._flowing.wait(POLL_SECONDS)
                    continue
                readable, _, _ = select.select([client] if self._deaf else list(peers), [], [], POLL_SECONDS)
                for sock in readable:
                    if not self._flowing.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
