/* An open-loop HTTP/1.1 load generator for Scripts/bench-http.sh (wrk2 is not packaged in
 * Debian): C keep-alive connections share a fixed request rate; request k of connection i
 * is planned at t0 + (k*C + i)/rate, and its latency is measured from that planned time, so
 * a stalled server is charged for every request it delayed (no coordinated omission).
 * One request in flight per connection; one thread, busy-polling epoll.
 *
 * Usage: http-rate PORT PATH CONNECTIONS RATE SECONDS
 * Prints: achieved req/s and latency percentiles in microseconds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

struct conn { int fd; int busy; uint64_t k; uint64_t planned; char buf[65536]; size_t have; };

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Length of the first complete response in b[0..n), or 0 if incomplete. */
static size_t response_length(const char *b, size_t n) {
    const char *end = memmem(b, n, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - b) + 4, body = 0;
    const char *cl = memmem(b, head, "Content-Length:", 15);
    if (!cl) cl = memmem(b, head, "content-length:", 15);
    if (cl) body = strtoul(cl + 15, NULL, 10);
    return head + body <= n ? head + body : 0;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: http-rate PORT PATH CONNECTIONS RATE SECONDS\n"); return 2; }
    int port = atoi(argv[1]), nc = atoi(argv[3]);
    double rate = atof(argv[4]), secs = atof(argv[5]);
    char req[512];
    int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", argv[2]);
    size_t cap = (size_t)(rate * secs * 1.2) + 1024, count = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    struct conn *cs = calloc((size_t)nc, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < nc; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001) };
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    uint64_t t0 = now_ns() + 1000000, end = t0 + (uint64_t)(secs * 1e9);
    double gap = 1e9 / rate;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        for (int i = 0; i < nc; i++) {
            struct conn *c = &cs[i];
            if (c->busy) continue;
            uint64_t planned = t0 + (uint64_t)(((double)c->k * nc + i) * gap);
            if (planned >= end) continue;
            if (planned > now) continue;
            if (send(c->fd, req, (size_t)reqlen, MSG_NOSIGNAL) != reqlen) { perror("send"); return 1; }
            c->busy = 1; c->planned = planned; c->k++;
        }
        int n = epoll_wait(ep, evs, 256, 0);
        now = now_ns();
        for (int e = 0; e < n; e++) {
            struct conn *c = &cs[evs[e].data.u32];
            ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
            if (r <= 0) { fprintf(stderr, "connection closed by server\n"); return 1; }
            c->have += (size_t)r;
            size_t len;
            while ((len = response_length(c->buf, c->have)) > 0) {
                if (count < cap) lat[count++] = (now - c->planned) / 1000;
                memmove(c->buf, c->buf + len, c->have - len);
                c->have -= len;
                c->busy = 0;
            }
        }
        int pending = 0;  /* connections still busy or with requests left to send */
        for (int i = 0; i < nc; i++)
            pending += cs[i].busy || t0 + (uint64_t)(((double)cs[i].k * nc + i) * gap) < end;
        if (!pending) break;
        if (now > end + 10000000000ull) { fprintf(stderr, "responses still missing 10 s after the end\n"); break; }
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    qsort(lat, count, sizeof *lat, cmp);
#define P(q) (count ? lat[(size_t)((double)(count - 1) * (q))] : 0)
    printf("requests %zu achieved %.0f req/s target %.0f p50 %llu us p90 %llu us p99 %llu us p99.9 %llu us max %llu us\n",
           count, (double)count / elapsed, rate, (unsigned long long)P(0.5), (unsigned long long)P(0.9),
           (unsigned long long)P(0.99), (unsigned long long)P(0.999), (unsigned long long)(count ? lat[count - 1] : 0));
    return 0;
}
