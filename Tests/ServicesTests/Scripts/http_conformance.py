"""HTTP/1.1 conformance checks against `libellula serve`'s demo site with Python's http.client.

Usage: python3 http_conformance.py PORT [HOST]   (HOST defaults to 127.0.0.1)
Prints one line per check and exits 1 if any check failed.
"""
import http.client
import sys

port = int(sys.argv[1])
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
failures = []
checks = 0


def check(name, cond, detail=""):
    global checks
    checks += 1
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else " -- " + str(detail)))
    if not cond:
        failures.append(name)


conn = http.client.HTTPConnection(host, port, timeout=60)

# Keep-alive: several requests over one connection.
conn.request("GET", "/hello.txt")
r = conn.getresponse()
body = r.read()
check("GET 200", r.status == 200, r.status)
check("GET body", body == b"hello\n", body)
check("Content-Length", r.getheader("Content-Length") == "6", r.getheader("Content-Length"))
check("Content-Type", r.getheader("Content-Type", "").startswith("text/plain"), r.getheader("Content-Type"))
etag = r.getheader("ETag")
lm = r.getheader("Last-Modified")
check("ETag present", etag is not None and etag.startswith('"'), etag)
check("Last-Modified present", lm is not None and lm.endswith("GMT"), lm)
check("Accept-Ranges", r.getheader("Accept-Ranges") == "bytes")
sock = conn.sock

conn.request("HEAD", "/hello.txt")
r = conn.getresponse()
check("HEAD 200", r.status == 200, r.status)
check("HEAD empty body", r.read() == b"")
check("HEAD length", r.getheader("Content-Length") == "6")

conn.request("GET", "/hello.txt", headers={"If-None-Match": etag})
r = conn.getresponse()
r.read()
check("If-None-Match 304", r.status == 304, r.status)
check("304 keeps ETag", r.getheader("ETag") == etag)

conn.request("GET", "/hello.txt", headers={"If-None-Match": '"other", W/' + etag})
r = conn.getresponse()
r.read()
check("If-None-Match list (weak) 304", r.status == 304, r.status)

conn.request("GET", "/hello.txt", headers={"If-None-Match": '"nope"'})
r = conn.getresponse()
r.read()
check("If-None-Match mismatch 200", r.status == 200, r.status)

conn.request("GET", "/hello.txt", headers={"If-Modified-Since": lm})
r = conn.getresponse()
r.read()
check("If-Modified-Since 304", r.status == 304, r.status)

conn.request("GET", "/hello.txt", headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
r = conn.getresponse()
r.read()
check("If-Modified-Since old 200", r.status == 200, r.status)

conn.request("GET", "/hello.txt", headers={"Range": "bytes=1-3"})
r = conn.getresponse()
b = r.read()
check("Range 206", r.status == 206, r.status)
check("Range body", b == b"ell", b)
check("Content-Range", r.getheader("Content-Range") == "bytes 1-3/6", r.getheader("Content-Range"))

conn.request("GET", "/hello.txt", headers={"Range": "bytes=-2"})
r = conn.getresponse()
b = r.read()
check("Suffix range", r.status == 206 and b == b"o\n", (r.status, b))

conn.request("GET", "/hello.txt", headers={"Range": "bytes=4-"})
r = conn.getresponse()
b = r.read()
check("Open range", r.status == 206 and b == b"o\n", (r.status, b))

conn.request("GET", "/hello.txt", headers={"Range": "bytes=10-20"})
r = conn.getresponse()
r.read()
check("Range 416", r.status == 416, r.status)
check("416 Content-Range", r.getheader("Content-Range") == "bytes */6", r.getheader("Content-Range"))

conn.request("GET", "/hello.txt", headers={"Range": "bytes=0-1,3-4"})
r = conn.getresponse()
b = r.read()
check("Multiple ranges ignored (200)", r.status == 200 and b == b"hello\n", r.status)

conn.request("GET", "/hello.txt", headers={"Range": "bytes=1-2", "If-Range": '"stale"'})
r = conn.getresponse()
b = r.read()
check("If-Range mismatch gives 200", r.status == 200 and b == b"hello\n", r.status)

conn.request("GET", "/hello.txt", headers={"Range": "bytes=1-2", "If-Range": etag})
r = conn.getresponse()
b = r.read()
check("If-Range match gives 206", r.status == 206 and b == b"el", r.status)

conn.request("GET", "/missing")
r = conn.getresponse()
r.read()
check("404", r.status == 404, r.status)

conn.request("POST", "/hello.txt", body=b"")
r = conn.getresponse()
r.read()
check("405", r.status == 405, r.status)
check("405 Allow", r.getheader("Allow") == "GET, HEAD", r.getheader("Allow"))

conn.request("GET", "/docs")
r = conn.getresponse()
r.read()
check("directory redirect 301", r.status == 301 and r.getheader("Location") == "/docs/", (r.status, r.getheader("Location")))

conn.request("GET", "/docs/")
r = conn.getresponse()
b = r.read()
check("directory index page", r.status == 200 and b"lwkt.txt" in b, r.status)

conn.request("GET", "/style.css")
r = conn.getresponse()
r.read()
check("MIME css", r.getheader("Content-Type", "").startswith("text/css"), r.getheader("Content-Type"))

conn.request("GET", "/")
r = conn.getresponse()
b = r.read()
check("index.html for /", r.status == 200 and b"Libellula" in b, r.status)

check("one connection for everything (keep-alive)", conn.sock is sock)

# HTTP/1.0 closes by default.
c10 = http.client.HTTPConnection(host, port, timeout=60)
c10._http_vsn = 10
c10._http_vsn_str = "HTTP/1.0"
c10.request("GET", "/hello.txt")
r = c10.getresponse()
check("HTTP/1.0 200", r.status == 200 and r.read() == b"hello\n", r.status)
check("HTTP/1.0 closes", r.will_close)

print(f"{checks - len(failures)}/{checks} checks passed")
sys.exit(1 if failures else 0)
