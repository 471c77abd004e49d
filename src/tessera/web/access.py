"""Who may reach the web UI: loopback by default; any other address only with a password or an explicit opt-out.

The UI runs jobs on this machine's device and writes files to its disk, so it must not be opened to a network by
accident: binding to anything but a loopback address (``0.0.0.0``, a LAN address) requires ``--auth USER:PASS``
or ``--insecure``.
"""
from __future__ import annotations

import ipaddress

from ..errors import OptionError

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
