"""Network interfaces through ``ioctl``: list them, bring them up, give them an IPv4 address.

The ``ip`` tool talks rtnetlink, but the older ``ioctl`` interface is enough for what the
container needs and fits in a few lines of :mod:`struct`: every call passes a ``struct ifreq``,
40 bytes on 64-bit Linux::

    struct ifreq {
        char ifr_name[16];            /* "lo", "eth0", ...                       */
        union { short ifr_flags;      /* SIOCGIFFLAGS / SIOCSIFFLAGS              */
                struct sockaddr ifr_addr;   /* SIOCSIFADDR / SIOCSIFNETMASK       */
                ... } ;               /* 24 bytes                                 */
    };

The ioctls act on the network namespace of the *socket* they are issued on, which is the
namespace of the process that created the socket. Setting flags or addresses needs
``CAP_NET_ADMIN`` in the user namespace that owns that network namespace, so a rootless container
may bring up its own ``lo``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = ["IFF_UP", "Link", "link_flags", "links", "set_ipv4", "set_link_up"]

# From <linux/sockios.h> and <net/if.h>.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40

_IFREQ_FLAGS = "16sH22x"  # name, unsigned short flags, pad to 40 bytes
_IFREQ_ADDR = "16sH2s4s8x8x"  # name, sockaddr_in{family, port, addr, zero[8]}, pad to 40


@dataclass(frozen=True)
class Link:
    """One network interface as the current network namespace sees it."""

    index: int
    name: str
    up: bool
    loopback: bool

    def __str__(self) -> str:
        return f"{self.name} {'UP' if self.up else 'DOWN'}"


def _ioctl(request: int, ifreq: bytes) -> bytes:
    import fcntl  # Unix-only; imported here so the package imports everywhere

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        result: bytes = fcntl.ioctl(sock.fileno(), request, ifreq)
        return result


def link_flags(name: str) -> int:
    """``SIOCGIFFLAGS``: the interface's ``IFF_*`` flags."""
    raw = _ioctl(SIOCGIFFLAGS, struct.pack(_IFREQ_FLAGS, name.encode(), 0))
    flags: int = struct.unpack_from("16sH", raw)[1]
    return flags


def set_link_up(name: str, up: bool = True) -> None:
    """Bring an interface up (or down) with ``SIOCSIFFLAGS``: read the flags, flip ``IFF_UP``.

    A new network namespace starts with ``lo`` down: even ``127.0.0.1`` is unreachable until this
    runs.
    """
    flags = link_flags(name)
    flags = flags | IFF_UP if up else flags & ~IFF_UP
    _ioctl(SIOCSIFFLAGS, struct.pack(_IFREQ_FLAGS, name.encode(), flags))


def set_ipv4(name: str, address: str, prefix_len: int) -> None:
    """Give an interface an IPv4 address and netmask (``SIOCSIFADDR``, ``SIOCSIFNETMASK``).

    The kernel adds the connected route for the subnet once the interface is up.
    """
    mask = (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF
    for request, value in ((SIOCSIFADDR, address), (SIOCSIFNETMASK, socket.inet_ntoa(
            mask.to_bytes(4, "big")))):
        ifreq = struct.pack(_IFREQ_ADDR, name.encode(), socket.AF_INET, b"\0\0",
                            socket.inet_aton(value))
        _ioctl(request, ifreq)


def links() -> list[Link]:
    """Every interface in the caller's network namespace, with its up/down state.

    :func:`socket.if_nameindex` follows the caller's network namespace. (``/sys/class/net`` does
    not: it shows whichever namespace sysfs was mounted in, usually the host's.)
    """
    found = []
    for index, name in socket.if_nameindex():
        flags = link_flags(name)
        found.append(Link(index, name, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK)))
    return found
