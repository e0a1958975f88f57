"""Client-side checks that the serve backend tests run from the rig's peer namespace.

Usage: python3 backend_checks.py COMMAND HOST PORT [ARGS]
  pipeline HOST PORT            three requests in one send; prints the statuses in order
  traversal HOST PORT PATH...   one request per PATH; prints "PATH STATUS" per line
  concurrent HOST PORT N        opens N connections (all held open at once), then one
                                request on each; prints "answered K"
  hold HOST PORT N              opens N keep-alive connections with one answered request
                                each, prints "held N", then waits (up to 60 s) until the
                                server closes them; prints "closed K"
Every wait is bounded; exit status 0 unless the arguments are wrong.
"""
import resource
import selectors
import socket
import sys
import time


def response_end(buf):
    """Length of the first complete response in buf, or None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    total = head_end + 4 + length
    return total if len(buf) >= total else None


def read_responses(sock, count, timeout=30):
    sock.settimeout(timeout)
    buf = b""
    statuses = []
    end = time.time() + timeout
    while len(statuses) < count and time.time() < end:
        n = response_end(buf)
        if n is not None:
            statuses.append(int(buf.split(b" ", 2)[1]))
            buf = buf[n:]
            continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return statuses


def connect(host, port):
    return socket.create_connection((host, port), timeout=30)


def main():
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "pipeline":
        s = connect(host, port)
        s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        print(" ".join(str(x) for x in read_responses(s, 3)))
    elif cmd == "traversal":
        for path in sys.argv[4:]:
            s = connect(host, port)
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            st = read_responses(s, 1)
            print(path, st[0] if st else -1)
            s.close()
    elif cmd in ("concurrent", "hold"):
        n = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, n + 256))
        socks = []
        for _ in range(n):
            try:
                socks.append(connect(host, port))
            except OSError as e:
                print("connect failed:", e)
                break
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            s.send(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            sel.register(s, selectors.EVENT_READ, [b""])
        answered = 0
        end = time.time() + 60
        while answered < len(socks) and time.time() < end:
            for key, _ in sel.select(timeout=1):
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                key.data[0] += chunk
                if not chunk or response_end(key.data[0]) is not None:
                    sel.unregister(key.fileobj)
                    if chunk and key.data[0].startswith(b"HTTP/1.1 200"):
                        answered += 1
        if cmd == "concurrent":
            print("answered", answered, flush=True)
            return
        print("held", answered, flush=True)
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        closed = 0
        end = time.time() + 60
        while closed < len(socks) and time.time() < end:
            for key, _ in sel.select(timeout=1):
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fileobj)
                    closed += 1
        print("closed", closed, flush=True)
    else:
        print(__doc__)
        sys.exit(2)


main()
