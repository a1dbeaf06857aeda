"""Hands leaving the webcam as they happen: a 3D view in the browser (``view``, viser) and a
WebSocket stream of JSON messages for other programs (``stream``).

Both listen on 127.0.0.1 unless told otherwise, say so when they listen beyond it (neither has
authentication), and never hold up the camera loop: the view drops frames a slow browser has not
taken, the stream drops a client that falls a bounded backlog behind.
"""

from __future__ import annotations

import errno
import os
import socket

from handssca.errors import OptionError

LOOPBACK = "127.0.0.1"


def parse_address(text: str, option: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (an IPv6 host in brackets: ``[::1]:8080``) as (host, port); the host is
    loopback unless given. Port 0 takes a free port."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else LOOPBACK
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535 or (sep and not host):
        raise OptionError(f"{option} {text}: give [HOST:]PORT, a port from 0 to 65535 (e.g. 8080 or 0.0.0.0:8080)")
    return host, int(port)


def no_authentication_note(host: str, what: str) -> str | None:
    """The line to print when ``what`` listens beyond loopback: it has no authentication."""
    if host in (LOOPBACK, "localhost", "::1"):
        return None
    return f"{what} on {host} has no authentication: anyone who can reach this machine can connect"


def listen_reason(exc: OSError) -> str:
    """Why a server could not listen, in words (and what to do about a port in use)."""
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use (give another, or 0 for a free one)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)


def check_listen(host: str, port: int, option: str) -> None:
    """Binds ``host:port`` once and lets it go: an OptionError naming ``option`` where nothing can
    listen there (a port in use, an address not of this machine, an unknown host). For servers
    that would otherwise wait or move to another port on their own."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        raise OptionError(f"{option} {shown}:{port}: cannot listen there: {listen_reason(exc)}") from exc
