"""moto's standalone EC2 server on loopback, for the aws-ebs tests and benchmark.

A real HTTP server (not moto's in-process mock) so the provider's boto3 clients go through
signing, retries, pagination and XML parsing exactly as they would against EC2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from support.net import free_port

HOST = "127.0.0.1"
# No proxy from the environment may see loopback traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# moto otherwise loads ~1,300 public AMIs and their snapshots into every region it
# touches: seconds per test, and noise in every unfiltered DescribeSnapshots.
QUIET_EC2 = {"MOTO_EC2_LOAD_DEFAULT_AMIS": "false", "NO_PROXY": "*", "no_proxy": "*"}


def _request(url: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310
    with _OPENER.open(request, timeout=5) as response:
        return bytes(response.read())


@contextmanager
def moto_server(
    env: Mapping[str, str] | None = None, log: Path | None = None, like_ec2: bool = False
) -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yields its URL; always stops it.

    ``like_ec2`` runs it through moto_like_ec2.py: indexed tags and real pages, for
    benchmarks at scale.
    """
    program = (
        [str(Path(__file__).with_name("moto_like_ec2.py"))] if like_ec2 else ["-m", "moto.server"]
    )
    for _ in range(5):
        port = free_port(HOST)
        url = f"http://{HOST}:{port}"
        output = log.open("ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, *program, "-H", HOST, "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_EC2, **(env or {})},
        )
        try:
            if _wait_ready(url, proc):
                yield url
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if log and not isinstance(output, int):
                output.close()
    raise RuntimeError("moto_server did not start on any of 5 free ports")


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # most likely the port was taken between probe and bind
        try:
            _request(f"{url}/moto-api/")
            return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def reset(url: str) -> None:
    """Forget every resource: each test starts from moto's empty account."""
    _request(f"{url}/moto-api/reset", method="POST")


@contextmanager
def ec2_client(endpoint: str, region: str) -> Iterator[Any]:
    """A plain EC2 client on the moto server (for arranging the world and checking it)."""
    client = boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield client
    finally:
        client.close()
