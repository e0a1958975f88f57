#!/usr/bin/env python3
"""Fills two servers (Debian's memcached as the oracle, Libellula as the subject), both with
-m 16, with the same items and compares what each keeps: curr_items and bytes must agree
within 3%. Usage: memory_check.py HOST:PORT HOST:PORT"""
import re, socket, sys

def fill(addr, n=40000, size=1000):
    h, p = addr.rsplit(":", 1)
    s = socket.create_connection((h, int(p)), timeout=10)
    s.sendall(b"flush_all\r\n")
    out = b""
    while not out.endswith(b"OK\r\n"):
        out += s.recv(65536)
    v = b"v" * size
    batch = b""
    for i in range(n):
        batch += b"set key%d 0 0 %d noreply\r\n%s\r\n" % (i, size, v)
        if i % 200 == 199:
            s.sendall(batch)
            batch = b""
    s.sendall(batch + b"stats\r\n")
    out = b""
    while not out.endswith(b"END\r\n"):
        out += s.recv(65536)
    st = dict(re.findall(rb"STAT (\S+) (\S+)\r\n", out))
    return int(st[b"curr_items"]), int(st[b"bytes"])

def main():
    (ia, ba), (ib, bb) = fill(sys.argv[1]), fill(sys.argv[2])
    print("oracle: curr_items %d bytes %d; subject: curr_items %d bytes %d" % (ia, ba, ib, bb))
    ok = abs(ia - ib) <= 0.03 * ia and abs(ba - bb) <= 0.03 * ba
    print("agree" if ok else "DIFFER")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
