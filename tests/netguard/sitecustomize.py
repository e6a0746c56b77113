"""Loaded by every Python process whose PYTHONPATH starts with this folder (tests/kitti_copy.py sets it): any
network connection or name lookup fails loudly and is logged to $PSDIF_NET_LOG. With PSDIF_NET_ALLOW=loopback,
connections to 127.0.0.1 / ::1 (the tests' own HTTP server) are allowed."""

import os
import socket
import sys

_LOG = os.environ.get("PSDIF_NET_LOG")
_LOOPBACK = os.environ.get("PSDIF_NET_ALLOW") == "loopback"
_LOCAL = {"127.0.0.1", "::1", "localhost"}


def _refuse(what: str):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{' '.join(sys.argv)[:200]} -> {what}\n")
    raise OSError(f"network disabled by the test: {what}")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _allowed(self, address) -> bool:
    if self.family not in (socket.AF_INET, socket.AF_INET6):
        return True
    return _LOOPBACK and isinstance(address, tuple) and address[0] in _LOCAL


def connect(self, address):
    if not _allowed(self, address):
        _refuse(f"connect {address}")
    return _connect(self, address)


def connect_ex(self, address):
    if not _allowed(self, address):
        _refuse(f"connect {address}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL or not _LOOPBACK:
        if host is not None and not (isinstance(host, str) and host.startswith("/")):
            _refuse(f"name lookup {host}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
