"""A minimal Redis client (RESP2) with deadlines, for role probes and flushes.

The stemcell has no redis-cli and the colocated Redis job's package may not either;
the few commands we need (AUTH, INFO, BGSAVE) do not justify a dependency.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from disk_snapshots.errors import ReleaseError


class RedisError(ReleaseError, RuntimeError):
    """Redis answered with an error, or could not be reached in time."""


@dataclass
class RedisClient:
    host: str = "127.0.0.1"
    port: int = 6379
    password: str = ""
    timeout: float = 5.0

    def call(self, *argv: str) -> str | int | list[object] | None:
        """Send one command on a fresh connection (AUTH first when a password is set)."""
        try:
            with (
                socket.create_connection((self.host, self.port), timeout=self.timeout) as conn,
                conn.makefile("rb") as reader,
            ):
                if self.password:
                    conn.sendall(encode("AUTH", self.password))
                    read_reply(reader)
                conn.sendall(encode(*argv))
                return read_reply(reader)
        except OSError as err:
            raise RedisError(f"Redis at {self.host}:{self.port}: {err}") from None

    def info(self, section: str) -> dict[str, str]:
        text = self.call("INFO", section)
        if not isinstance(text, str):
            raise RedisError(f"INFO {section} returned {text!r}")
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                fields[key] = value.strip()
        return fields


def encode(*argv: str) -> bytes:
    parts = [f"*{len(argv)}\r\n".encode()]
    for arg in argv:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def read_reply(reader: object) -> str | int | list[object] | None:
    readline = reader.readline  # type: ignore[attr-defined]
    read = reader.read  # type: ignore[attr-defined]
    line: bytes = readline()
    if not line:
        raise RedisError("connection closed by Redis")
    kind, body = line[:1], line[1:].rstrip(b"\r\n").decode()
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data: bytes = read(size + 2)
        return data[:-2].decode()
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [read_reply(reader) for _ in range(count)]
    raise RedisError(f"unexpected reply from Redis: {line[:80]!r}")
