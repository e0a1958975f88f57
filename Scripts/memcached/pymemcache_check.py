#!/usr/bin/env python3
"""Drives a memcached server through pymemcache: every command pymemcache has, with and
without noreply, plus the meta commands through raw_command. Usage: pymemcache_check.py HOST:PORT"""
import sys, time
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheServerError, MemcacheIllegalInputError

host, port = sys.argv[1].rsplit(":", 1)
# Generous timeouts: on a loaded machine (CI on 2 cores) a reply can take seconds.
c = Client((host, int(port)), connect_timeout=60, timeout=60, default_noreply=False)
checks = 0

def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print("FAIL:", what)
        sys.exit(1)

c.flush_all()
# set / get, binary-safe values, flags via serde-less bytes
check(c.set("a", b"1") is True, "set")
check(c.get("a") == b"1", "get")
check(c.get("missing") is None, "get miss")
blob = bytes(range(256)) * 64
check(c.set("bin", blob), "set binary")
check(c.get("bin") == blob, "get binary")
big = b"v" * (1000 * 1000)
check(c.set("big", big), "set ~1MB")
check(c.get("big") == big, "get ~1MB")
try:
    c.set("huge", b"h" * (2 * 1024 * 1024))
    check(False, "2 MiB value should fail")
except MemcacheServerError as e:
    check("too large" in str(e), "too large message")
check(c.get("a") == b"1", "connection usable after oversized value")
# set_many / get_many across owners, in order
data = {"k%d" % i: ("v%d" % i).encode() for i in range(200)}
check(c.set_many(data) == [], "set_many")
got = c.get_many(list(data.keys()))
check(got == data, "get_many")
check(c.get_many(["k1", "nope", "k2"]) == {"k1": b"v1", "k2": b"v2"}, "get_many with miss")
# gets / cas
v, cas = c.gets("a")
check(v == b"1" and cas is not None, "gets")
check(c.cas("a", b"2", cas) is True, "cas ok")
check(c.cas("a", b"3", cas) is False, "cas exists")
check(c.cas("nope", b"3", cas) is None, "cas not found")
gm = c.gets_many(["a", "k1"])
check(set(gm.keys()) == {"a", "k1"} and gm["a"][0] == b"2", "gets_many")
# add / replace / append / prepend
check(c.add("a", b"x", noreply=False) is False, "add existing")
check(c.add("new", b"x", noreply=False) is True, "add new")
check(c.replace("new", b"y", noreply=False) is True, "replace")
check(c.replace("nope", b"y", noreply=False) is False, "replace missing")
check(c.append("new", b"z", noreply=False) is True, "append")
check(c.prepend("new", b"w", noreply=False) is True, "prepend")
check(c.get("new") == b"wyz", "append/prepend value")
check(c.append("nope", b"z", noreply=False) is False, "append missing")
# incr / decr
c.set("n", b"10")
check(c.incr("n", 5) == 15, "incr")
check(c.decr("n", 20) == 0, "decr floor")
check(c.incr("nope", 1) is None, "incr missing")
c.set("big64", b"18446744073709551615")
check(c.incr("big64", 1) == 0, "incr wraps")
try:
    c.set("s", b"abc")
    c.incr("s", 1)
    check(False, "incr non-numeric should fail")
except MemcacheClientError:
    pass
# touch / delete
check(c.touch("a", 100, noreply=False) is True, "touch")
check(c.touch("nope", 100, noreply=False) is False, "touch missing")
check(c.delete("a", noreply=False) is True, "delete")
check(c.delete("a", noreply=False) is False, "delete missing")
check(c.delete_many(["k1", "k2", "nope"]) is True, "delete_many")
check(c.get("k1") is None, "deleted")
# noreply
c.set("nr", b"1", noreply=True)
c.add("nr", b"2", noreply=True)
c.incr("nr", 1, noreply=True)
c.touch("nr", 100, noreply=True)
check(c.get("nr") == b"2", "noreply pipeline")
c.delete("nr", noreply=True)
check(c.get("nr") is None, "delete noreply")
# expiry
# An item with a 1 s lifetime is there when read at once and gone 2.1 s later. "At once"
# must be within half a second of the set: when the machine stalled longer than that, the
# pair is tried again (at most 5 times), never judged on a late read.
def quickly(step):
    for _ in range(5):
        start = time.monotonic()
        r = step()
        if time.monotonic() - start < 0.5:
            return r
    check(False, "5 tries in a row took more than 0.5 s")

check(quickly(lambda: (c.set("exp", b"1", expire=1), c.get("exp"))[1]) == b"1", "before expiry")
time.sleep(2.1)
check(c.get("exp") is None, "after expiry")
c.set("abs", b"1", expire=int(time.time()) + 100)
check(c.get("abs") == b"1", "absolute expiry in the future")
# gat / gats through raw commands
c.set("g", b"gv")
check(c.raw_command(b"gat 100 g", b"END\r\n").startswith(b"VALUE g 0 2"), "gat")
check(b"VALUE g 0 2 " in c.raw_command(b"gats 100 g", b"END\r\n"), "gats")
# meta commands
check(c.raw_command(b"mn", b"MN\r\n") in (b"", b"MN"), "mn")
c.set("mk", b"hi", noreply=False)
r = c.raw_command(b"mg mk s v f k", b"\r\n")
check(r.startswith(b"VA 2 s2 f0 kmk"), "mg %r" % r)
check(c.raw_command(b"mg nope v", b"\r\n") == b"EN", "mg miss")
check(c.raw_command(b"md mk", b"\r\n") == b"HD", "md")
check(c.raw_command(b"md mk", b"\r\n") == b"NF", "md miss")
check(c.raw_command(b"ma ctr N0 J7", b"\r\n") == b"HD", "ma vivify")
check(c.get("ctr") == b"7", "ma initial")
# stats
st = c.stats()
for name in (b"cmd_get", b"get_hits", b"get_misses", b"curr_items", b"total_items", b"evictions", b"bytes", b"curr_connections"):
    check(name in st, "stats has %s" % name)
check(isinstance(c.stats("slabs"), dict), "stats slabs")
check(isinstance(c.stats("items"), dict), "stats items")
check(len(c.version()) > 0, "version")
# flush_all with delay
flushed, before = quickly(lambda: (c.set("fl", b"1"), c.flush_all(delay=2, noreply=False), c.get("fl"))[1:])
check(flushed is True, "flush_all delay")
check(before == b"1", "still there before delay")
time.sleep(3.1)
check(c.get("fl") is None, "flushed after delay")
check(c.flush_all(noreply=False) is True, "flush_all")
# client-side key checks
try:
    c.get("k" * 251)
    check(False, "long key accepted")
except MemcacheIllegalInputError:
    pass
c.quit()
print("pymemcache: %d checks passed" % checks)
