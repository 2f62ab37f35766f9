"""A veth pair through rtnetlink, in about a hundred lines of :mod:`struct`.

A veth pair is a virtual cable: a packet sent into one end comes out of the other. Container
runtimes put one end in the container's network namespace and the other on the host, which is
the "veth hop" the simulator charges for. Creating one needs rtnetlink (the ``ioctl`` interface in
:mod:`virtlab.linux.netdev` cannot), so this module speaks just enough of it: one
``RTM_NEWLINK`` request, the same one ``ip link add A type veth peer name B netns FD`` sends::

    nlmsghdr | ifinfomsg | IFLA_IFNAME "A"
                         | IFLA_LINKINFO { IFLA_INFO_KIND "veth"
                                           IFLA_INFO_DATA { VETH_INFO_PEER { ifinfomsg
                                                                             IFLA_IFNAME "B"
                                                                             IFLA_NET_NS_FD fd }}}

Why create the pair from *inside* the container and push the peer out to the host: a veth pair
dies as a whole when either end is destroyed, and an end is destroyed with its network
namespace. So if the container dies for any reason (even ``SIGKILL``), the host end goes too and
nothing is left behind on the host.
"""

from __future__ import annotations

import os
import socket
import struct

__all__ = ["create_veth", "delete_link"]

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_DELLINK = 17
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1

_NLMSGHDR = "=IHHII"  # length, type, flags, sequence, port id
_IFINFOMSG = "=BxHiII"  # family, pad, device type, index, flags, change mask


def _align(length: int) -> int:
    return (length + 3) & ~3  # netlink attributes are padded to 4 bytes


def _attr(attr_type: int, payload: bytes) -> bytes:
    """One ``struct rtattr`` (length, type) followed by its padded payload."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (_align(length) - length)


def _ifinfomsg(index: int = 0) -> bytes:
    return struct.pack(_IFINFOMSG, socket.AF_UNSPEC, 0, index, 0, 0)


def _request(msg_type: int, flags: int, body: bytes, what: str) -> None:
    """Send one request and wait for the kernel's acknowledgement (an ``NLMSG_ERROR`` with 0)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        header = struct.pack(_NLMSGHDR, 16 + len(body), msg_type,
                             flags | NLM_F_REQUEST | NLM_F_ACK, 1, 0)
        sock.send(header + body)
        reply = sock.recv(65536)
    _, reply_type, _, _, _ = struct.unpack_from(_NLMSGHDR, reply)
    if reply_type != NLMSG_ERROR:
        raise OSError(0, f"unexpected netlink reply type {reply_type}", what)
    (error,) = struct.unpack_from("=i", reply, 16)
    if error:
        raise OSError(-error, os.strerror(-error), what)


def create_veth(name: str, peer: str, peer_netns_fd: int | None = None) -> None:
    """Create a veth pair ``name`` ↔ ``peer`` in the caller's network namespace.

    Parameters
    ----------
    name:
        The end that stays in the caller's network namespace (at most 15 characters).
    peer:
        The other end.
    peer_netns_fd:
        An open ``/proc/PID/ns/net`` of the namespace the peer should be created in; moving it
        there needs ``CAP_NET_ADMIN`` over that namespace too, so this is a root-only operation.

    """
    peer_attrs = _attr(IFLA_IFNAME, peer.encode() + b"\0")
    if peer_netns_fd is not None:
        peer_attrs += _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
    info = _attr(IFLA_INFO_KIND, b"veth") + _attr(
        IFLA_INFO_DATA, _attr(VETH_INFO_PEER, _ifinfomsg() + peer_attrs))
    body = _ifinfomsg() + _attr(IFLA_IFNAME, name.encode() + b"\0") + _attr(IFLA_LINKINFO, info)
    _request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"veth {name}/{peer}")


def delete_link(name: str) -> None:
    """Delete an interface of the caller's namespace (for a veth, both ends go)."""
    index = socket.if_nametoindex(name)
    _request(RTM_DELLINK, 0, _ifinfomsg(index), name)
