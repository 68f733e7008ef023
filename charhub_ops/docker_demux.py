"""Docker's multiplexed exec stream: 8-byte frame headers (stream id, payload size) then the payload.

Read through a fixed 1 MiB buffer, so a dump of any size streams in bounded memory.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["CHUNK", "HEADER", "Demux"]

CHUNK = 1 << 20  # bytes asked from the socket per read
HEADER = struct.Struct(">BxxxL")  # docker's multiplexed frame header: stream id, payload size


class Demux:
    """Reads docker's multiplexed frames (8-byte header + payload) from a hijacked exec connection."""

    def __init__(self, raw_socket):
        # docker-py's http.client may already have read frames past the HTTP headers into its buffered
        # reader: read through it, not through the bare socket, or the first bytes get lost.
        self.sock = getattr(raw_socket, "_sock", raw_socket)
        try:
            self._reader = raw_socket._response.raw._fp.fp
        except AttributeError:
            self._reader = raw_socket
        self._readinto = next(getattr(self._reader, name) for name in ("readinto1", "readinto", "recv_into")
                               if hasattr(self._reader, name))
        self._buf = bytearray(CHUNK)
        self._view = memoryview(self._buf)
        self._pos = self._end = self._left = self._stream = 0

    def buffered(self) -> bool:
        """True if the next chunk can be returned without blocking."""
        avail = self._end - self._pos
        return avail > 0 if self._left else avail >= HEADER.size

    def next_chunk(self, limit: int) -> tuple[int, memoryview] | None:
        """(stream id, at most ``limit`` payload bytes, valid until the next call) or None at EOF."""
        while self._left == 0:
            while self._end - self._pos < HEADER.size:
                if not self._fill():
                    return None
            self._stream, self._left = HEADER.unpack_from(self._buf, self._pos)
            self._pos += HEADER.size
        if self._pos == self._end and not self._fill():
            return None
        n = min(self._left, self._end - self._pos, limit)
        self._pos += n
        self._left -= n
        return self._stream, self._view[self._pos - n : self._pos]

    def _fill(self) -> bool:
        leftover = self._end - self._pos  # < 8 bytes of a split header, or 0
        self._buf[:leftover] = self._buf[self._pos : self._end]
        self._pos, self._end = 0, leftover
        got = self._readinto(self._view[leftover:])  # one socket read of up to 1 MiB
        self._end += got or 0
        return bool(got)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for closable in (self._reader, self.sock):
            try:
                closable.close()
            except OSError:
                pass
