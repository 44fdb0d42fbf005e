"""What a process tree listens on, read from /proc as `ss -ltnp` does: for the tests that pin every listener a
local rcmae instance opens to the loopback address."""

import ipaddress
import os
from pathlib import Path


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = set(), [pid]
    while pending:
        current = pending.pop()
        found.add(current)
        pending += children.get(current, [])
    return found


def listening_addresses(pids: set[int]) -> list[str]:
    """"ip:port" of every TCP socket the processes listen on, read from /proc (as `ss -ltnp` does)."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            host, port = fields[1].split(":")
            raw = bytes.fromhex(host)
            # /proc writes each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            found.append(f"{address}:{int(port, 16)}")
    return found


def beyond_loopback(pid: int) -> tuple[list[str], list[str]]:
    """(every address the process and its descendants listen on, those not on 127.0.0.1)."""
    listeners = listening_addresses(descendants(pid))
    return listeners, [address for address in listeners if not address.startswith("127.0.0.1:")]
