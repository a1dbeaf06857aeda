"""Hands leaving the webcam as they happen: a 3D view in the browser (``view``, viser) and a
WebSocket stream of JSON messages for other programs (``stream``).

Both listen on 127.0.0.1 unless told otherwise, say so when they listen beyond it (neither has
authentication), and never hold up the camera loop: the view drops frames a slow browser has not
taken, the stream drops a client that falls a bounded backlog behind.
"""

from __future__ import annotations

from handssca.errors import OptionError

LOOPBACK = "127.0.0.1"


def parse_address(text: str, option: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (an IPv6 host in brackets: ``[::1]:8080``) as (host, port); the host is
    loopback unless given. Port 0 takes a free port."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else LOOPBACK
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise OptionError(f"{option} {text}: give [HOST:]PORT, a port from 0 to 65535 (e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


def no_authentication_note(host: str, what: str) -> str | None:
    """The line to print when ``what`` listens beyond loopback: it has no authentication."""
    if host in (LOOPBACK, "localhost", "::1"):
        return None
    return f"{what} on {host} has no authentication: anyone who can reach this machine can connect"
