#!/usr/bin/env python3
"""Randomized storage-command fuzz against two servers (Debian's memcached as the oracle,
Libellula as the subject). Every command's data block is a command itself ("incr dsync 1"),
so a server that reads a value as commands bumps the counter `dsync`: that is a protocol
desync. Replies must match memcached byte for byte, except that where memcached would run a
refused command's value as commands the subject answers the same reply and closes.
Usage: storage_fuzz.py HOST:PORT HOST:PORT [COUNT] [SEED]. Prints the counts and exits 1 on
any mismatch or any desync of the subject."""
import random, re, socket, sys

def addr(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)

class Conn:
    def __init__(self, a):
        self.a = a
        self.open()
    def open(self):
        self.s = socket.create_connection(self.a, timeout=2)
    def exchange(self, data):
        """Sends data + mn and reads to the MN; returns (reply, closed)."""
        self.s.sendall(data + b"mn\r\n")
        out = b""
        while not out.endswith(b"MN\r\n"):
            try:
                d = self.s.recv(1 << 20)
            except (socket.timeout, ConnectionResetError):
                d = b""
            if not d:
                self.s.close()
                self.open()
                return out, True
            out += d
        return out[:-4], False

KEYS = [b"k%d" % i for i in range(6)] + [b"K" * 251, b"Zm9v", b"a2V5"]
PAYLOAD = b"incr dsync 1\r\n"

def token(choices):
    return random.choice(choices)

def classic():
    verb = random.choice([b"set", b"add", b"replace", b"append", b"prepend", b"cas"])
    data = PAYLOAD + b"x" * random.randint(0, 6)
    n = len(data)
    length = random.choice([b"%d" % n] * 8 + [b"%d" % (n - 1), b"%d" % (n - 2), b"-1", b"abc"])
    parts = [verb, token(KEYS[:6] * 4 + KEYS[6:]), token([b"0", b"5", b"4294967295", b"4294967296", b"-1", b"x"] + [b"0"] * 6),
             token([b"0", b"100", b"-1", b"x", b"99999999999"] + [b"0"] * 6), length]
    if verb == b"cas":
        parts.append(token([b"1", b"abc"] + [b"1"] * 4) if random.random() > 0.1 else b"")
    if random.random() < 0.2:
        parts.append(token([b"noreply", b"noreply", b"x", b"noreply x"]))
    return b" ".join(p for p in parts if p) + b"\r\n" + data + b"\r\n"

META = [b"T100", b"T0", b"F5", b"C1", b"C0", b"q", b"k", b"Oab", b"c", b"I", b"MS", b"ME", b"MA", b"MP", b"MR",
        b"b", b"N30", b"S9", b"E999", b"Z", b"MX", b"M", b"T", b"Tx", b"Fx", b"Cx", b"O" + b"o" * 32, b"s", b"v", b"h",
        b"l", b"t", b"f", b"u", b"R5", b"J1", b"D1", b"P", b"L"]

def meta():
    data = PAYLOAD + b"y" * random.randint(0, 6)
    n = len(data)
    length = random.choice([b"%d" % n] * 10 + [b"%d" % (n - 1), b"-1", b"abc"])
    flags = random.sample(META, random.randint(0, 4))
    if random.random() < 0.1 and flags:
        flags.append(flags[0])
    key = token(KEYS[:6] * 3 + KEYS[6:])
    return b" ".join([b"ms", key, length] + flags) + b"\r\n" + data + b"\r\n"

def main():
    a, b = addr(sys.argv[1]), addr(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 600
    random.seed(int(sys.argv[4]) if len(sys.argv) > 4 else 11)
    ca, cb = Conn(a), Conn(b)
    for c in (ca, cb):
        c.exchange(b"flush_all\r\nset dsync 0 0 1\r\n0\r\n")
    mismatches = closes = 0
    for i in range(count):
        cmd = classic() if random.random() < 0.5 else meta()
        ra, closed_a = ca.exchange(cmd)
        rb, closed_b = cb.exchange(cmd)
        ra, rb = re.sub(rb"c\d+", b"c#", ra), re.sub(rb"c\d+", b"c#", rb)
        if closed_b:
            closes += 1
            first = rb.split(b"\r\n")[0]
            silent = cmd.split(b"\r\n")[0].endswith(b" noreply") and rb == b""
            if not (ra.startswith(rb) and (silent or first.split(b" ")[0] in (b"ERROR", b"CLIENT_ERROR"))):
                mismatches += 1
                print("MISMATCH (close) %r\n  oracle:  %r\n  subject: %r" % (cmd[:120], ra[:300], rb[:300]))
            # Keep the oracle's connection in step with the subject's fresh one.
            ca.s.close()
            ca.open()
        elif ra != rb:
            mismatches += 1
            print("MISMATCH %r\n  oracle:  %r\n  subject: %r" % (cmd[:120], ra[:300], rb[:300]))
    desync = []
    for c in (ca, cb):
        r, _ = c.exchange(b"get dsync\r\n")
        m = re.search(rb"VALUE dsync 0 \d+\r\n(\d+)", r)
        desync.append(int(m.group(1)) if m else -1)
    print("%d commands, %d mismatches, %d subject closes, desyncs: oracle %d, subject %d"
          % (count, mismatches, closes, desync[0], desync[1]))
    sys.exit(1 if mismatches or desync[1] != 0 else 0)

if __name__ == "__main__":
    main()
