// mcload: a small memcached text-protocol load generator (closed loop, epoll).
// Each of C connections keeps D requests in flight (D = pipeline depth); every answer
// is replaced at once by a new request. Requests are GET or SET (32-byte values by
// default) of random keys from a preloaded key space, chosen by the GET percentage.
// Usage: mcload HOST PORT CONNECTIONS DEPTH SECONDS GET_PERCENT [KEYS] [VALUE_BYTES]
// With MCLOAD_META=1 in the environment the reads are meta-gets (`mg KEY v`) instead of
// `get KEY`.
// Prints: ops=N seconds=S ops_per_sec=R
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

typedef struct { int fd; int inflight; char carry[8]; int carryLen; } conn_t;
static int nkeys = 10000, vbytes = 32, getpct = 90, meta = 0;
static unsigned long long rng = 88172645463325252ULL;
static unsigned long long next_rand(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static char value[65536];

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int make_request(char *p) {
    int k = (int)(next_rand() % (unsigned)nkeys);
    if ((int)(next_rand() % 100) < getpct) return sprintf(p, meta ? "mg key:%08d v\r\n" : "get key:%08d\r\n", k);
    int n = sprintf(p, "set key:%08d 0 0 %d\r\n", k, vbytes);
    memcpy(p + n, value, vbytes); n += vbytes; p[n++] = '\r'; p[n++] = '\n';
    return n;
}

static void send_all(int fd, const char *p, int n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) { if (errno == EAGAIN || errno == EINTR) continue; perror("send"); exit(1); }
        p += w; n -= (int)w;
    }
}

static int dial(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); exit(1); }
    int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// Counts complete responses ("END\r\n" or "STORED\r\n"; for meta-gets also "EN\r\n", a
// miss, and the end of a value line, which is all 'x') in a stream chunk.
static int count_responses(conn_t *c, const char *buf, int n) {
    static char tmp[1 << 20];
    int total = c->carryLen + n, found = 0;
    memcpy(tmp, c->carry, c->carryLen); memcpy(tmp + c->carryLen, buf, n);
    for (int i = c->carryLen > 0 ? c->carryLen - 1 : 0; i + 1 < total; i++) {
        if (tmp[i] == '\r' && tmp[i + 1] == '\n') {
            if ((i >= 3 && memcmp(tmp + i - 3, "END", 3) == 0) || (i >= 6 && memcmp(tmp + i - 6, "STORED", 6) == 0)) found++;
            else if (meta && i >= 2 && (tmp[i - 1] == 'x' || memcmp(tmp + i - 2, "EN", 2) == 0)) found++;
        }
    }
    int keep = total < 7 ? total : 7;
    memcpy(c->carry, tmp + total - keep, keep); c->carryLen = keep;
    return found;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: mcload HOST PORT CONNS DEPTH SECONDS GET_PERCENT [KEYS] [VALUE_BYTES]\n"); return 2; }
    const char *host = argv[1]; int port = atoi(argv[2]), nconn = atoi(argv[3]), depth = atoi(argv[4]);
    double secs = atof(argv[5]); getpct = atoi(argv[6]);
    if (argc > 7) nkeys = atoi(argv[7]);
    if (argc > 8) vbytes = atoi(argv[8]);
    memset(value, 'x', sizeof value);
    meta = getenv("MCLOAD_META") && atoi(getenv("MCLOAD_META")) != 0;
    // Preload every key so that GETs hit.
    {
        int fd = dial(host, port); char req[70000]; char rbuf[65536]; int pending = 0;
        for (int k = 0; k < nkeys; k++) {
            int n = sprintf(req, "set key:%08d 0 0 %d noreply\r\n", k, vbytes);
            memcpy(req + n, value, vbytes); n += vbytes; req[n++] = '\r'; req[n++] = '\n';
            send_all(fd, req, n); pending++;
        }
        send_all(fd, "mn\r\n", 4);
        int got = 0; char last[4] = {0};
        while (!got) { ssize_t r = recv(fd, rbuf, sizeof rbuf, 0); if (r <= 0) break; for (ssize_t i = 0; i < r; i++) { last[0]=last[1]; last[1]=last[2]; last[2]=last[3]; last[3]=rbuf[i]; if (!memcmp(last, "MN\r\n", 4)) got = 1; } }
        close(fd); (void)pending;
    }
    int ep = epoll_create1(0);
    conn_t *cs = calloc(nconn, sizeof *cs);
    char *out = malloc((size_t)depth * (vbytes + 64) + 64);
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = dial(host, port);
        int n = 0; for (int d = 0; d < depth; d++) n += make_request(out + n);
        send_all(cs[i].fd, out, n); cs[i].inflight = depth;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (unsigned)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    long long ops = 0; double t0 = now(), end = t0 + secs; static char buf[1 << 18];
    struct epoll_event evs[256];
    char *reqs = malloc((size_t)depth * (vbytes + 64) * 4 + 64);
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < n; e++) {
            conn_t *c = &cs[evs[e].data.u32];
            ssize_t r = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; fprintf(stderr, "connection closed\n"); return 1; }
            int done = count_responses(c, buf, (int)r);
            ops += done;
            int m = 0; for (int d = 0; d < done; d++) m += make_request(reqs + m);
            if (m) send_all(c->fd, reqs, m);
        }
    }
    double el = now() - t0;
    printf("ops=%lld seconds=%.2f ops_per_sec=%.0f\n", ops, el, ops / el);
    return 0;
}
