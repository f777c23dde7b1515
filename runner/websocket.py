"""Minimal read-only websocket client for ComfyUI's /ws progress events (stdlib only).

Only what ComfyUI's server sends is handled: text frames with JSON, binary preview frames
(reported as {"type": "preview_image", "data": {"bytes": n}}), ping and close. Progress display
is best-effort: the result always comes from /history.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import struct
import threading
import urllib.parse


class EventStream:
    def __init__(self, url: str, client_id: str, timeout: float = 5.0):
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.client_id = client_id
        self.timeout = timeout
        self._events: queue.Queue = queue.Queue()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> "EventStream":
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws?clientId={urllib.parse.quote(self.client_id)} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        header = b""
        while b"\r\n\r\n" not in header:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            header += chunk
        head, _, rest = header.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            sock.close()
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        sock.settimeout(None)
        self._sock = sock
        self._buffer = rest
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()
        return self

    def drain(self) -> list[dict]:
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()

    def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked (RFC 6455 5.3).
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _read_loop(self) -> None:
        message, in_binary = b"", False
        try:
            while not self._closed:
                first, second = self._read_exact(2)
                opcode, length = first & 0x0F, second & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._read_exact(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._read_exact(8))[0]
                mask = self._read_exact(4) if second & 0x80 else None
                payload = self._read_exact(length)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 8:
                    return
                if opcode == 9:
                    self._send_frame(10, payload[:125])
                    continue
                if opcode == 2 or (opcode == 0 and in_binary):
                    message += payload
                    in_binary = not first & 0x80
                    if not in_binary:  # a whole binary message: ComfyUI's live preview image
                        self._events.put(_binary_event(message))
                        message = b""
                    continue
                if opcode in (0, 1):
                    message += payload
                    if first & 0x80:
                        try:
                            self._events.put(json.loads(message))
                        except ValueError:
                            pass
                        message = b""
        except (OSError, ConnectionError, ValueError):
            return


def _binary_event(message: bytes) -> dict:
    """ComfyUI binary frames start with a 4-byte big-endian event type (1 = preview image, then
    a 4-byte image format); only the size is kept."""
    kind = int.from_bytes(message[:4], "big") if len(message) >= 4 else -1
    name = "preview_image" if kind in (1, 4) else f"binary_{kind}"
    return {"type": name, "data": {"bytes": max(len(message) - 8, 0)}}
