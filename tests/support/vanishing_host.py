"""A machine that can vanish from the network without a word, for real.

A deployer runs in a network namespace of its own, joined to this machine by a veth
pair: to the server it is a separate host (``10.213.N.2``). :meth:`VanishingHost.vanish`
takes that host's link down: from then on nothing it sends arrives, and nothing is
answered, not even a TCP keepalive probe, exactly as when a CI runner is powered off
or its network is cut. Neither end is told (no FIN, no RST), so the server learns of
it only through its keepalives.

Freezing the deployer (SIGSTOP), or a proxy in front of it, does not do this: the
kernel goes on acknowledging every probe for a stopped process, and the server would
hold the deployer's lock for as long as the kernel's keepalive defaults say (hours).
Network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2;
:func:`unavailable` says why they cannot be had.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any


def _ip(*arguments: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *arguments], check=True, capture_output=True, timeout=30)


def unavailable() -> str | None:
    """Why a vanishing host cannot be made here, or None when it can."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"todo_probe_{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        return f"cannot create a network namespace: {exc.stderr.decode().strip()}"
    _ip("netns", "delete", name)
    return None


@dataclass(frozen=True)
class VanishingHost:
    namespace: str
    link: str
    #: This machine's address on the link (the server listens there) and the host's.
    server_address: str
    address: str

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """`command` run on the vanishing host."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespace, *command], **kwargs)

    def vanish(self) -> None:
        _ip("link", "set", self.link, "down", namespace=self.namespace)

    def reappear(self) -> None:
        """Back on the network, for the next deployer (what vanished stays lost)."""
        _ip("link", "set", self.link, "up", namespace=self.namespace)


@contextmanager
def vanishing_host() -> Iterator[VanishingHost]:
    """A host of its own on a /30 of 10.213.0.0/16 (random, so parallel tests differ)."""
    tag = uuid.uuid4().hex[:6]
    namespace, outside, inside = f"todo_test_{tag}", f"todo{tag}o", f"todo{tag}i"
    network = f"10.213.{random.randrange(256)}"
    first = random.randrange(0, 256, 4)
    server_address, address = f"{network}.{first + 1}", f"{network}.{first + 2}"
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("addr", "add", f"{server_address}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("addr", "add", f"{address}/30", "dev", inside, namespace=namespace)
        _ip("link", "set", inside, "up", namespace=namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        yield VanishingHost(namespace, inside, server_address, address)
    finally:
        with suppress(subprocess.CalledProcessError):
            _ip("link", "delete", outside)
        _ip("netns", "delete", namespace)
