"""The listening TCP sockets of one port, asked of the kernel through ``sock_diag`` netlink.

What ``ss -ltn sport = :PORT`` does: the kernel walks only its listening sockets and hands
back those whose port matches (a two-instruction filter), with each socket's inode.  Reading
``/proc/net/tcp`` instead formats every socket of the network namespace as text, TIME_WAIT
included: with 200 apps and their readiness probes that was several milliseconds per start,
and a start of 200 apps read it 200 times (most of the host's CPU in such a start).

Linux only; :func:`listening_inodes` raises ``OSError`` where the netlink family is not
there, and the caller falls back to the text tables.
"""

from __future__ import annotations

import itertools
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = 2, 3
TCPF_LISTEN = 1 << 10

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI48x")  # inet_diag_req_v2 (family, protocol, ext, pad, states, an unused sockid)
_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes (jump when true), no (jump when false)
SPORT_OFFSET = _HEADER.size + 4  # inet_diag_msg: 4 bytes of family/state/timer/retrans, then sockid.sport (be16)
INODE_OFFSET = _HEADER.size + 4 + 48 + 16  # after sockid: expires, rqueue, wqueue, uid, then the inode
_sequence = itertools.count(1)


def listening_inodes(port: int) -> set[str]:
    """Inodes (as decimal strings, as in ``/proc/<pid>/fd`` links) of the IPv4 and IPv6
    sockets listening on ``port``."""
    inodes: set[str] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as channel:
        for family in (socket.AF_INET, socket.AF_INET6):
            inodes |= _dump(channel, family, port)
    return inodes


def _port_filter(port: int) -> bytes:
    """``sport >= port && sport <= port``: a false condition jumps past the end (4 bytes
    beyond the program's length), which the kernel reads as "no match"."""
    return b"".join(
        (
            _OP.pack(INET_DIAG_BC_S_GE, 8, 20), _OP.pack(0, 0, port),
            _OP.pack(INET_DIAG_BC_S_LE, 8, 12), _OP.pack(0, 0, port),
        )
    )


def _dump(channel: socket.socket, family: int, port: int) -> set[str]:
    program = _port_filter(port)
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, TCPF_LISTEN) + struct.pack(
        "=HH", 4 + len(program), INET_DIAG_REQ_BYTECODE
    ) + program
    sequence = next(_sequence)
    channel.sendto(
        _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body,
        (0, 0),
    )
    found: set[str] = set()
    while True:
        data = channel.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise OSError("sock_diag: malformed reply")
            if seq == sequence:
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                    raise OSError(-error, "sock_diag refused the request")
                if kind == SOCK_DIAG_BY_FAMILY and length >= INODE_OFFSET + 4:
                    (sport,) = struct.unpack_from(">H", data, offset + SPORT_OFFSET)
                    (inode,) = struct.unpack_from("=I", data, offset + INODE_OFFSET)
                    if sport == port:  # the filter already chose these; checked all the same
                        found.add(str(inode))
            offset += (length + 3) & ~3
