"""A region's object-store endpoint as its clients reach it: a TCP front on loopback that
forwards every connection to the store behind it (`python -m tests.endpoint_front PORT UPSTREAM`).

Why a front: moto keeps its objects in memory, so SIGKILLing moto is the loss of a region's
storage, not an outage it comes back from. The drills SIGKILL (or SIGSTOP) this process, the
one every client of the region connects to, the way a region's gateway or network fails
while its disks survive; restarted on the same port, the region is back with its data.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket, done: threading.Event, other: threading.Event) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        done.set()
        if other.is_set():
            src.close()
            dst.close()


def serve(port: int, upstream: int) -> None:
    server = socket.create_server(("127.0.0.1", port), backlog=256)  # SO_REUSEADDR: rebinds after a kill
    while True:
        client, _ = server.accept()
        try:
            behind = socket.create_connection(("127.0.0.1", upstream), timeout=5)
            behind.settimeout(None)
        except OSError:
            client.close()
            continue
        there, back = threading.Event(), threading.Event()
        threading.Thread(target=_pipe, args=(client, behind, there, back), daemon=True).start()
        threading.Thread(target=_pipe, args=(behind, client, back, there), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
