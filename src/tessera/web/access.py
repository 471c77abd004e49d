"""Who may reach the web UI: loopback by default; any other address only with a password or an explicit opt-out.

The UI runs jobs on this machine's device and writes files to its disk, so it must not be opened to a network by
accident: binding to anything but a loopback address (``0.0.0.0``, a LAN address) requires ``--auth USER:PASS``
or ``--insecure``.

The password is checked in constant time (:class:`PasswordCheck`), and guessing is slowed down: after
``free_tries`` failed logins from one client address, :class:`LoginThrottle` refuses that address's logins
(HTTP 429, right or wrong password) for a delay that doubles with every further failure, up to ``max_delay``;
a successful login clears the address's record. Behind a reverse proxy every client has the proxy's address,
so the throttle then slows everyone down together, which still bounds the guessing rate.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"USER:PASS"`` -> ``("USER", "PASS")`` (the password may contain colons); None stays None."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise OptionError("--auth must be USER:PASS with a non-empty user and password")
    return user, password


def check_exposure(host: str, auth: tuple[str, str] | None, insecure: bool) -> None:
    """Refuse to serve on a non-loopback address without a password unless ``insecure`` says so on purpose."""
    if not is_loopback(host) and auth is None and not insecure:
        raise OptionError(f"--host {host} opens the web UI to the network: add --auth USER:PASS, or --insecure "
                          f"to serve without a password")


# ----------------------------------------------------------------------------------------------- password


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class PasswordCheck:
    """Gradio's ``auth`` callable for one user: compares name and password in time independent of their content.

    Both are hashed first, so that the comparison takes as long whatever their lengths, and both comparisons always
    run, so that a wrong user name takes as long as a wrong password.
    """

    def __init__(self, user: str, password: str):
        self._user = _digest(user)
        self._password = _digest(password)

    def __call__(self, user: str, password: str) -> bool:
        user_ok = hmac.compare_digest(_digest(str(user)), self._user)
        password_ok = hmac.compare_digest(_digest(str(password)), self._password)
        return user_ok & password_ok

# ----------------------------------------------------------------------------------------------- throttle


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginAttempts:
    """Failed logins per client address, and how long each address must wait before its next try."""

    def __init__(self, free_tries: int = 5, first_delay: float = 2.0, max_delay: float = 900.0,
                 forget_after: float = 3600.0, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        if free_tries < 1 or first_delay <= 0 or max_delay < first_delay:
            raise ValueError("free_tries >= 1 and 0 < first_delay <= max_delay are required")
        self.free_tries, self.first_delay, self.max_delay = free_tries, first_delay, max_delay
        self.forget_after, self.max_clients, self.clock = forget_after, max_clients, clock
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}

    def delay_after(self, failures: int) -> float:
        """Seconds an address waits after its ``failures``-th failure: none within the free tries, then doubling."""
        if failures < self.free_tries:
            return 0.0
        return min(self.max_delay, self.first_delay * 2.0 ** (failures - self.free_tries))

    def wait_left(self, client: str) -> float:
        """Seconds before ``client`` may try again (0: now)."""
        with self._lock:
            return self._wait_left(client, self.clock())

    def _wait_left(self, client: str, now: float) -> float:
        record = self._failures.get(client)
        if record is None:
            return 0.0
        return max(0.0, record.last + self.delay_after(record.count) - now)

    def begin(self, client: str) -> float:
        """Start a login try of ``client``: 0 when it may go on (it counts as failed until :meth:`succeeded`), else
        the seconds it must still wait. Counting first means that tries sent all at once cannot outrun the limit."""
        with self._lock:
            now = self.clock()
            wait = self._wait_left(client, now)
            if wait > 0:
                return wait
            record = self._failures.setdefault(client, _Failures())
            record.count, record.last = record.count + 1, now
            if len(self._failures) > self.max_clients:
                self._forget_old(now)
            return 0.0

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _forget_old(self, now: float) -> None:
        """Drop addresses idle for ``forget_after`` (past their delay); if still too many, the longest idle."""
        for client, record in list(self._failures.items()):
            if now - record.last > max(self.forget_after, self.delay_after(record.count)):
                del self._failures[client]
        while len(self._failures) > self.max_clients:
            oldest = min(self._failures, key=lambda client: self._failures[client].last)
            del self._failures[oldest]


def is_login_request(scope: Scope) -> bool:
    """True for the POST of Gradio's login form (``/login``, under any root path)."""
    path = str(scope.get("path", "")).rstrip("/")
    return scope.get("type") == "http" and scope.get("method") == "POST" and path.rsplit("/", 1)[-1] == "login"


class LoginThrottle:
    """ASGI middleware: refuses logins from an address that failed too often; counts Gradio's verdicts.

    Every try counts as a failure until Gradio answers it with 200 (a right password), which clears the address's
    record; the throttle never reads the password. While an address must wait, it answers 429 with a
    ``Retry-After`` header without passing the request on.
    """

    def __init__(self, app: ASGIApp, attempts: LoginAttempts | None = None):
        self.app = app
        self.attempts = attempts or LoginAttempts()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_login_request(scope):
            await self.app(scope, receive, send)
            return
        client = str((scope.get("client") or ("unknown", 0))[0])
        wait = self.attempts.begin(client)
        if wait > 0:
            await _too_many(send, wait)
            return

        async def watch(message: Message) -> None:
            if message.get("type") == "http.response.start" and int(message.get("status", 0)) == 200:
                self.attempts.succeeded(client)
            await send(message)

        await self.app(scope, receive, watch)


async def _too_many(send: Send, wait: float) -> None:
    seconds = max(1, int(wait + 0.999))
    body = json.dumps({"detail": f"too many failed logins from this address: try again in {seconds} s"}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
