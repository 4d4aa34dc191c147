"""Run the app under uvicorn on a socket bound first, so a taken port fails at once with a clear message."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from segwise.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: a free one, read it back from `getsockname()`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); pick "
                          "another --port (0 lets the system choose one), or stop the program that holds it") from None
    sock.listen(2048)
    return sock


def uvicorn_server(app: FastAPI, log_level: str = "info") -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))


def start_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    log_level: str = "warning") -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve `app` from a background thread (tests, benchmarks); returns the server (set `should_exit` to stop
    it), its thread and its base URL once it accepts connections."""
    sock = bind_socket(host, port)
    server = uvicorn_server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on {host}:{sock.getsockname()[1]} did not start")
        time.sleep(0.01)
    return server, thread, f"http://{host}:{sock.getsockname()[1]}"
