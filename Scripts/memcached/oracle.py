#!/usr/bin/env python3
"""Differential check: the same memcached command sequences against two servers
(Debian's memcached as the oracle, Libellula as the subject); responses must match
after CAS ids are renumbered in order of appearance. Usage: oracle.py HOST:PORT HOST:PORT"""
import re, socket, sys, time

BIG = b"x" * 5000
BIN = bytes(range(256)) * 4
CASES = [
    ("set/get", [b"set a 0 0 3\r\nabc\r\nget a\r\nget nope\r\n"]),
    ("flags", [b"set f 4294967295 0 1\r\nz\r\nget f\r\nset f2 4294967296 0 1\r\nz\r\n"]),
    ("multi-get order", [b"".join(b"set k%d %d 0 %d\r\n%s\r\n" % (i, i, len(str(i)), str(i).encode()) for i in range(40)),
                         b"get " + b" ".join(b"k%d" % i for i in range(39, -1, -1)) + b" missing k3\r\n"]),
    ("gets", [b"set g 1 0 2\r\nhi\r\ngets g\r\ngets g a\r\n"]),
    ("add/replace", [b"add r 0 0 1\r\n1\r\nadd r 0 0 1\r\n2\r\nreplace r 0 0 1\r\n3\r\nreplace none 0 0 1\r\n4\r\nget r\r\n"]),
    ("append/prepend", [b"set p 7 0 2\r\nmm\r\nappend p 0 0 2\r\nzz\r\nprepend p 0 0 2\r\naa\r\nget p\r\nappend none 0 0 1\r\nx\r\nprepend none 0 0 1\r\nx\r\n"]),
    ("cas", [b"set c 0 0 1\r\n1\r\ngets c\r\n"], "cas"),
    ("cas missing", [b"cas nope 0 0 1 1\r\nx\r\ncas c2 0 0 1 abc\r\nx\r\n"], "closes"),
    ("delete", [b"set d 0 0 1\r\n1\r\ndelete d\r\ndelete d\r\ndelete d 0\r\ndelete d 5\r\ndelete d 0 noreply\r\ndelete d noreply\r\n"]),
    ("incr/decr", [b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nget n\r\nincr n 18446744073709551615\r\nincr none 1\r\ndecr none 1\r\n"
                   b"incr n -1\r\nincr n abc\r\nset s 0 0 3\r\nabc\r\nincr s 1\r\nset m 0 0 2\r\n99\r\nincr m 1\r\nget m\r\ndecr m 1\r\nget m\r\n"
                   b"set w 0 0 20\r\n18446744073709551615\r\nincr w 2\r\nget w\r\n"]),
    ("touch/gat", [b"set t 3 0 2\r\nhi\r\ntouch t 100\r\ntouch none 100\r\ntouch t abc\r\ngat 100 t\r\ngat 100 none\r\ngats 0 t\r\ngat abc t\r\n"]),
    ("noreply", [b"set q 0 0 1 noreply\r\n1\r\nadd q 0 0 1 noreply\r\n2\r\nreplace q 0 0 1 noreply\r\n3\r\nappend q 0 0 1 noreply\r\n4\r\n"
                 b"prepend q 0 0 1 noreply\r\n5\r\nincr nn 1 noreply\r\ntouch q 10 noreply\r\nget q\r\ndelete q noreply\r\nget q\r\n"
                 b"flush_all noreply\r\nverbosity 1 noreply\r\n"]),
    ("expired", [b"set e 0 -1 1\r\nx\r\nget e\r\nset e2 0 1000 1\r\nx\r\nget e2\r\nset e3 0 1 1\r\nx\r\n", 2.2, b"get e3 e2\r\n"]),
    ("absolute expiry", [b"set ab 0 100 1\r\nx\r\nset ab2 0 1000000000 1\r\nx\r\nget ab ab2\r\n"]),
    ("flush delay", [b"set fd 0 0 1\r\nx\r\nflush_all 2\r\nget fd\r\n", 3.1, b"get fd\r\nset fd 0 0 1\r\ny\r\nget fd\r\n"]),
    ("flush", [b"set fl 0 0 1\r\nx\r\nflush_all\r\nget fl\r\nflush_all 0\r\nflush_all x\r\n"]),
    ("binary value", [b"set bin 0 0 %d\r\n%s\r\nget bin\r\n" % (len(BIN), BIN)]),
    ("big value", [b"set big 0 0 %d\r\n%s\r\nget big\r\n" % (len(BIG), BIG)]),
    ("too large", [b"set huge 0 0 2000000\r\n" + b"y" * 2000000 + b"\r\nget huge\r\n"]),
    ("bad data chunk", [b"set bd 0 0 3\r\nabcX\r\nget bd\r\n"]),
    ("bad flags", [b"set a b 0 1\r\nx\r\n"], "closes"),
    ("negative length", [b"set a 0 0 -1\r\nget a\r\n"], "closes"),
    ("short set", [b"set a 0 0\r\nget a\r\n"], "closes"),
    ("bare set", [b"set\r\nget a\r\n"], "closes"),
    ("bad format", [b"get\r\nincr\r\ntouch k\r\nverbosity\r\nfoo bar\r\n\r\n"]),
    ("long key", [b"get " + b"k" * 251 + b"\r\nget " + b"k" * 250 + b"\r\n"]),
    ("long key set", [b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\nget " + b"k" * 250 + b"\r\n"], "closes"),
    ("partial", [b"se", 0.05, b"t pa 0 0 5\r", 0.05, b"\nhel", 0.05, b"lo", 0.05, b"\r\nget p", 0.05, b"a\r\n"]),
    ("lf only", [b"set lf 0 0 2\nhi\r\nget lf\n"]),
    ("spaces", [b"set  sp  0  0  1\r\nx\r\nget   sp  \r\n"]),
    ("mn/mg", [b"set m1 5 0 2\r\nhi\r\nmg m1 s v f t k\r\nmg m1\r\nmg m1 v\r\nmg none v\r\nmg none v q\r\nmg m1 k Oabc q\r\nmg m1 zz\r\nmn\r\n"]),
    ("mg cas", [b"set m2 0 0 2\r\nhi\r\nmg m2 c\r\n"], "mgcas"),
    ("ms", [b"ms s1 2\r\nhi\r\nmg s1 v f\r\nms s1 2 F7 T0\r\nyo\r\nmg s1 v f t\r\nms s2 2 q\r\nhi\r\nms s1 2 MA\r\n++\r\nmg s1 v\r\n"
            b"ms s1 2 MP\r\n--\r\nmg s1 v\r\nms nope 2 MR\r\nxx\r\nms s1 2 ME\r\nxx\r\nms s3 2 ME\r\nxx\r\nms s1 2 MX\r\nxx\r\nmn\r\n"]),
    ("ms bad length", [b"ms s1 abc\r\nmn\r\n"], "closes"),
    ("ms cas", [b"ms sc 2 C999\r\nhi\r\nms sc 2\r\nhi\r\nms sc 2 C1\r\nho\r\n"]),
    ("md", [b"set dd 0 0 1\r\nx\r\nmd dd\r\nmd dd\r\nmd dd q\r\nset dd 0 0 1\r\nx\r\nmd dd q\r\nmg dd v\r\nmd dd Oxx k\r\nmn\r\n"]),
    ("ma", [b"ma c\r\nma c N0 J5\r\nma c v\r\nma c MD D2 v\r\nma c MI D10\r\nmg c v\r\nset s 0 0 1\r\nx\r\nma s\r\nma c q\r\nma c t v\r\nmn\r\n"]),
    ("mg ttl touch", [b"set tt 0 100 1\r\nx\r\nmg tt t v\r\nmg tt T0 t\r\nmg tt t\r\n"]),
    # Issue 11 item 5: a refused ms swallows its data block exactly as memcached does.
    ("ms injection E", [b"set victim 0 0 1\r\nx\r\nms k 9 E999\r\nflush_all\r\nget victim\r\n"]),
    ("ms injection b", [b"set victim 0 0 1\r\nx\r\nms Zm9v 13 b\r\ndelete victim\r\nget victim\r\nmg foo v k\r\n"]),
    ("ms refusals swallow", [b"set victim 0 0 1\r\nx\r\n"
                             b"ms k 9 Z\r\nflush_all\r\nms k 9 T1 T2\r\nflush_all\r\nms k 9 Tx\r\nflush_all\r\n"
                             b"ms k 9 Fx\r\nflush_all\r\nms k 9 Cx\r\nflush_all\r\nms k 9 MX\r\nflush_all\r\n"
                             b"ms k 9 M\r\nflush_all\r\nms k 9 Jx\r\nflush_all\r\nms k 9 Dx\r\nflush_all\r\n"
                             b"ms k 9 Nx\r\nflush_all\r\nms k 9 Rx\r\nflush_all\r\nms k 9 S9\r\nflush_all\r\n"
                             b"ms @@@ 9 b\r\nflush_all\r\nms k 9 O" + b"o" * 32 + b"\r\nflush_all\r\n"
                             b"ms k 9 MSS\r\nflush_all\r\nms k 9 E999 q\r\nflush_all\r\nget victim\r\n"]),
    ("too large swallow", [b"set old 0 0 1\r\nx\r\nset old 0 0 1048517\r\n" + b"flush_all\r\n" * 104851 + b"fl\r\nget old\r\n"
                           b"set old2 0 0 1\r\nx\r\nms old2 1048517\r\n" + b"flush_all\r\n" * 104851 + b"fl\r\nget old2\r\n"
                           b"set old3 0 0 1\r\nx\r\nset old3 0 0 1048517 noreply\r\n" + b"x" * 1048517 + b"\r\nget old3\r\n"]),
    ("item size limit", [b"set big1 0 0 1048516\r\n" + b"a" * 1048516 + b"\r\nset big2 0 0 1048517\r\n" + b"a" * 1048517 +
                         b"\r\nset big3 5 0 1048512\r\n" + b"a" * 1048512 + b"\r\nset big4 5 0 1048513\r\n" + b"a" * 1048513 +
                         b"\r\nmg big1 s\r\nmg big2 s\r\nmg big3 s\r\nmg big4 s\r\n"]),
    ("meta b", [b"ms Zm9v 2 b k c\r\nhi\r\nmg Zm9v b k v s\r\nmg foo k v\r\nme Zm9v b\r\nma Zm9v b k\r\n"
                b"md Zm9v b k q\r\nmg foo v\r\nmg Zm9v= b\r\nmg Zm9vYg== b k\r\nmd Zm9vYg== b k\r\nmn\r\n"], "mecas"),
    ("meta N", [b"mg nn N30 v t\r\nmg nn N30 v t\r\nmg nn v\r\nms nn 1\r\nz\r\nmg nn v\r\nma nc N0 J7 v\r\nma nc N0 J7 v\r\nmn\r\n"]),
    ("meta I", [b"ms k 1 T100\r\nx\r\nmd k I T30\r\nmg k v t\r\nmg k v\r\nms k 1 I C1\r\ny\r\nmg k v t\r\n"
                b"md k I\r\nmg k v h\r\nmg k\r\nmn\r\n"]),
    ("meta q", [b"mg q1 q v\r\nmg q1 q k Oa\r\nmd q1 q\r\nma q1 q\r\nms q1 1 q\r\n1\r\nms q1 1 q ME\r\n1\r\n"
                b"mg q1 q v\r\nma q1 q\r\nma q1 q v\r\nmd q1 q\r\nms q1 1 q C1\r\nx\r\nmn\r\n"]),
    ("meta k O", [b"mg zz k Oab s v\r\nmg zz\r\nset zz 0 0 1\r\n1\r\nmg zz k Oab s\r\nmd zz Oab k\r\nmd zz Oab k\r\n"
                  b"mg a O" + b"x" * 32 + b"\r\nmg a O" + b"x" * 31 + b"\r\nmd a O" + b"x" * 32 + b"\r\nma a O" + b"x" * 32 + b"\r\n"
                  b"ms a 1 k Ox\r\n1\r\nma a k Oz t v\r\nmn\r\n"]),
    ("meta flags", [b"set k 0 0 1\r\n1\r\nmg k v T30 u\r\nmg k R40 v t\r\nmg k R20\r\nmg k R40\r\nmg k h l\r\n"
                    b"mg k Z\r\nmg k v v\r\nmd k Z\r\nma k Z\r\nma k C\r\nmd k T\r\nma k MX\r\nma k Mi\r\nms k 1 Ms\r\nx\r\n"
                    b"mg k b\r\nma k N\r\nmn\r\n"]),
    ("me", [b"me nope\r\nme\r\nme a b c\r\nset me1 0 0 2\r\nhi\r\nset me2 7 0 300\r\n" + b"m" * 300 + b"\r\nmn\r\n"], "me"),
    ("incr spaces", [b"set sp 0 0 3\r\n 12\r\nincr sp 1\r\nget sp\r\nset sp2 0 0 4\r\n12  \r\nincr sp2 1\r\nset sp3 0 0 4\r\n1 2 \r\nincr sp3 1\r\nmn\r\n"]),
    ("verbosity/version", [b"verbosity 1\r\nverbosity 1 2 3\r\n"]),
    ("stats reset", [b"stats reset\r\nstats detail\r\nstats nosuch\r\n"]),
    ("quit", [b"set qq 0 0 1\r\nx\r\nquit\r\nget qq\r\n"]),
]

def addr(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)

last_eof = False

def run_case(a, chunks, closing=False):
    s = socket.create_connection(a, timeout=5)
    s.settimeout(5)
    s.sendall(b"flush_all\r\n")
    buf = b""
    while not buf.endswith(b"OK\r\n"):
        buf += s.recv(65536)
    for c in chunks:
        if isinstance(c, float):
            time.sleep(c)
        else:
            s.sendall(c)
    quitting = any(isinstance(c, bytes) and b"quit\r\n" in c for c in chunks)
    if closing:
        s.settimeout(1)
    expect = sum(c.count(b"mn\r\n") for c in chunks if isinstance(c, bytes)) + 1
    if not quitting:
        s.sendall(b"mn\r\n")
    out = b""
    deadline = time.time() + 10
    global last_eof
    last_eof = False
    while time.time() < deadline:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            break
        if not d:
            last_eof = True
            break
        out += d
        if not quitting and out.endswith(b"MN\r\n") and out.count(b"MN\r\n") >= expect:
            break
    s.close()
    return out

def normalise(out):
    ids = {}
    def cas(v):
        return b"#%d" % ids.setdefault(v, len(ids) + 1)
    out = re.sub(rb"(VALUE \S+ \d+ \d+) (\d+)\r\n", lambda m: m.group(1) + b" " + cas(m.group(2)) + b"\r\n", out)
    out = re.sub(rb"(?<= )c(\d+)(?=[ \r])", lambda m: b"c" + cas(m.group(1)), out)
    return out

def main():
    a, b = addr(sys.argv[1]), addr(sys.argv[2])
    failures = 0
    for case in CASES:
        name, chunks = case[0], case[1]
        special = case[2] if len(case) > 2 else None
        closing = special == "closes"
        ra = run_case(a, chunks, closing)
        rb_ = run_case(b, chunks, closing)
        if closing:
            # Where memcached would run a refused storage command's value as commands, the
            # subject answers as memcached does and then closes the connection.
            na, nb = normalise(ra), normalise(rb_)
            ok = last_eof and nb and na.startswith(nb) and nb.split(b"\r\n")[-2].split(b" ")[0] in (b"ERROR", b"CLIENT_ERROR")
            if not ok:
                failures += 1
                print("MISMATCH %s (expected reply then close)\n  oracle:  %r\n  subject: %r eof=%s" % (name, na[:600], nb[:600], last_eof))
            else:
                print("ok %s (closed)" % name)
            continue
        if special == "me":
            # me prints access age and CAS; compare the shape and the sizes.
            ra, rb_ = re.sub(rb"la=\d+ cas=\d+", b"la cas", ra), re.sub(rb"la=\d+ cas=\d+", b"la cas", rb_)
            for (srv, r) in ((a, None), (b, None)):
                pass
            ra += run_case_keep_raw(a, b"me me1\r\nme me2\r\nmg me1 v\r\nme me1\r\nmn\r\n")
            rb_ += run_case_keep_raw(b, b"me me1\r\nme me2\r\nmg me1 v\r\nme me1\r\nmn\r\n")
            ra, rb_ = re.sub(rb"la=\d+ cas=\d+", b"la cas", ra), re.sub(rb"la=\d+ cas=\d+", b"la cas", rb_)
        if special == "mecas":
            ra, rb_ = re.sub(rb"cas=\d+", b"cas", ra), re.sub(rb"cas=\d+", b"cas", rb_)
        if special == "cas":
            # Use each server's own CAS id for the follow-up cas commands.
            outs = []
            for (srv, r) in ((a, ra), (b, rb_)):
                m = re.search(rb"VALUE c 0 1 (\d+)", r)
                v = m.group(1) if m else b"0"
                outs.append(r + run_case_keep(srv, v))
            ra, rb_ = outs
        if special == "mgcas":
            outs = []
            for (srv, r) in ((a, ra), (b, rb_)):
                m = re.search(rb"HD c(\d+)", r)
                v = m.group(1) if m else b"0"
                outs.append(run_case_mg(srv, v))
            ra, rb_ = outs
        na, nb = normalise(ra), normalise(rb_)
        if na != nb:
            failures += 1
            print("MISMATCH %s\n  oracle:  %r\n  subject: %r" % (name, na[:600], nb[:600]))
        else:
            print("ok %s" % name)
    print("%d cases, %d mismatches" % (len(CASES), failures))
    sys.exit(1 if failures else 0)

def run_case_keep_raw(srv, data):
    s = socket.create_connection(srv, timeout=5)
    s.sendall(data)
    out = b""
    while not out.endswith(b"MN\r\n"):
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out

def run_case_keep(srv, v):
    s = socket.create_connection(srv, timeout=5)
    s.sendall(b"cas c 0 0 1 " + v + b"\r\n2\r\ncas c 0 0 1 " + v + b"\r\n3\r\ncas c 0 0 1 " + v + b" noreply\r\n4\r\nget c\r\nmn\r\n")
    out = b""
    while not out.endswith(b"MN\r\n"):
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out

def run_case_mg(srv, v):
    s = socket.create_connection(srv, timeout=5)
    s.sendall(b"set m2 0 0 2\r\nhi\r\nmg m2 c\r\nmn\r\n")
    out = b""
    while not out.endswith(b"MN\r\n"):
        out += s.recv(65536)
    m = re.search(rb"HD c(\d+)", out)
    v = m.group(1) if m else b"0"
    s.sendall(b"ms m2 2 C" + v + b" c\r\nho\r\nms m2 2 C" + v + b"\r\nhu\r\nmd m2 C1\r\nmg m2 v\r\nma m2 C1\r\nmn\r\n")
    out2 = b""
    while not out2.endswith(b"MN\r\n"):
        d = s.recv(65536)
        if not d:
            break
        out2 += d
    s.close()
    return out2.replace(v, b"<cas>")

if __name__ == "__main__":
    main()
