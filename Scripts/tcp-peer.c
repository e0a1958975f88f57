// tcp-peer: the Linux side of the TCP benchmarks over the TAP rig (Scripts/bench-tcp.sh
// builds it with cc). Plain blocking sockets, threads for concurrency, so the Linux side
// costs as little as Linux allows and is not the bottleneck (the Python peers it replaces
// were).
//
//   tcp-peer sink PORT                  accept connections, read each to its end
//   tcp-peer echo PORT                  accept connections, write back what each sends
//   tcp-peer request PORT               accept connections, echo one request (<= 64 B), close
//   tcp-peer source HOST PORT MIB       send MIB MiB, half-close, wait for the peer's close;
//                                       prints Gbit/s
//   tcp-peer connect HOST PORT SECS N   N processes open, send 32 B, read the echo, close,
//                                       for SECS seconds; prints connections per second
//                                       (with TCP_PEER_LATENCY=FILE each process appends its
//                                       per-connection latency percentiles to FILE)
//   tcp-peer verify HOST PORT MB        send MB megabytes of a seeded pseudo-random stream to
//                                       an echo while reading it back; prints "ok SECONDS"
//                                       when every byte came back in order, else "bad ..."
//
// Servers run until killed; every client call is bounded by socket timeouts.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void set_timeout(int fd, int seconds) {
    struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { perror("socket"); exit(2); }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0) { perror("bind/listen"); exit(2); }
    return fd;
}

static int connect_to(const char *host, int port, int timeout) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    set_timeout(fd, timeout);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

enum mode { SINK, ECHO, REQUEST };
struct server { int fd; enum mode mode; };

// One connection, served by the thread that accepted it.
static void serve(int c, enum mode mode, char *buf, size_t size) {
    set_timeout(c, 30);
    if (mode == REQUEST) {
        ssize_t k = read(c, buf, 64);
        if (k > 0) write_all(c, buf, (size_t)k);
    } else {
        ssize_t k;
        while ((k = read(c, buf, size)) > 0) {
            if (mode == ECHO && write_all(c, buf, (size_t)k) < 0) break;
        }
    }
    close(c);
}

static void *accept_loop(void *arg) {
    struct server *s = arg;
    size_t size = 1 << 20;
    char *buf = malloc(size);
    if (!buf) return NULL;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) { if (errno == EINTR || errno == ECONNABORTED) continue; break; }
        serve(c, s->mode, buf, size);
    }
    free(buf);
    return NULL;
}

// Servers: a pool of threads blocking in accept() on one socket, each serving the
// connection it accepted to its end (enough for the benchmarks' few concurrent flows).
static int run_server(enum mode mode, int port) {
    static struct server s;
    s.fd = listen_on(port);
    s.mode = mode;
    int threads = mode == REQUEST ? 8 : 4;
    pthread_t t[8];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, accept_loop, &s);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    return 0;
}

static int run_source(const char *host, int port, long mib) {
    int fd = connect_to(host, port, 60);
    if (fd < 0) { printf("0\n"); return 1; }
    size_t size = 1 << 20;
    char *buf = malloc(size);
    if (!buf) return 1;
    memset(buf, 'x', size);
    double t0 = now_s();
    for (long i = 0; i < mib; i++) {
        if (write_all(fd, buf, size) < 0) { printf("0\n"); return 1; }
    }
    shutdown(fd, SHUT_WR);
    while (read(fd, buf, size) > 0) {}
    double secs = now_s() - t0;
    close(fd);
    printf("%f\n", (double)mib * 8.0 * (double)size / secs / 1e9);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report_latency(const char *path, double *lat, size_t n, size_t failed, size_t noport) {
    qsort(lat, n, sizeof *lat, cmp_double);
    size_t slow = 0;
    for (size_t i = 0; i < n; i++) slow += lat[i] > 0.1;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "n %zu (connect failed %zu, %zu of them out of local ports) p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f us; over 100 ms: %zu\n", n, failed, noport,
            lat[n / 2] * 1e6, lat[n * 9 / 10] * 1e6, lat[n * 99 / 100] * 1e6, lat[n * 999 / 1000] * 1e6,
            lat[n - 1] * 1e6, slow);
    fclose(f);
}

static int run_connect(const char *host, int port, double secs, int procs) {
    int pipes[64][2];
    if (procs < 1) procs = 1;
    if (procs > 64) procs = 64;
    double start = now_s();
    for (int p = 0; p < procs; p++) {
        if (pipe(pipes[p]) < 0) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            long n = 0;
            char req[32], got[64];
            memset(req, 'x', sizeof req);
            // With TCP_PEER_LATENCY=FILE each process appends its per-connection latency
            // percentiles (microseconds) to FILE, to tell steady latency from stalls.
            static double lat[1 << 17];
            size_t nlat = 0, failed = 0, noport = 0;
            while (now_s() < start + secs) {
                double t0 = now_s();
                int fd = connect_to(host, port, 5);
                if (fd < 0) {
                    failed++;
                    if (errno == EADDRNOTAVAIL) noport++;
                    if (nlat < sizeof lat / sizeof lat[0]) lat[nlat++] = now_s() - t0;
                    continue;
                }
                size_t have = 0;
                if (write_all(fd, req, sizeof req) == 0) {
                    ssize_t k;
                    while (have < sizeof req && (k = read(fd, got + have, sizeof got - have)) > 0) have += (size_t)k;
                }
                close(fd);
                if (nlat < sizeof lat / sizeof lat[0]) lat[nlat++] = now_s() - t0;
                if (have == sizeof req && memcmp(got, req, sizeof req) == 0) n++;
            }
            const char *path = getenv("TCP_PEER_LATENCY");
            if (path && nlat > 0) report_latency(path, lat, nlat, failed, noport);
            if (write(pipes[p][1], &n, sizeof n) != sizeof n) _exit(1);
            _exit(0);
        }
        close(pipes[p][1]);
    }
    long total = 0;
    for (int p = 0; p < procs; p++) {
        long n = 0;
        if (read(pipes[p][0], &n, sizeof n) == sizeof n) total += n;
        close(pipes[p][0]);
    }
    while (wait(NULL) > 0) {}
    printf("%f\n", (double)total / (now_s() - start));
    return 0;
}

// A seeded stream (xorshift64*), so the reader can check every byte without keeping a copy.
static uint64_t next_word(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void fill(uint64_t *state, unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = next_word(state);
        memcpy(p + i, &w, n - i < 8 ? n - i : 8);
    }
}

struct feeder { int fd; long long total; };

static void *feed(void *arg) {
    struct feeder *f = arg;
    size_t size = 1 << 20;
    unsigned char *buf = malloc(size);
    if (!buf) return NULL;
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    long long left = f->total;
    while (left > 0) {
        size_t n = left < (long long)size ? (size_t)left : size;
        fill(&state, buf, size);
        if (write_all(f->fd, buf, n) < 0) break;
        left -= (long long)n;
    }
    shutdown(f->fd, SHUT_WR);
    free(buf);
    return NULL;
}

static int run_verify(const char *host, int port, long mb) {
    int fd = connect_to(host, port, 60);
    if (fd < 0) { printf("bad connect\n"); return 1; }
    struct feeder f = {.fd = fd, .total = (long long)mb * 1000000LL};
    double t0 = now_s();
    pthread_t t;
    pthread_create(&t, NULL, feed, &f);
    size_t size = 1 << 20;
    unsigned char *want = malloc(size), *got = malloc(size);
    if (!want || !got) return 1;
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    long long seen = 0, bad = -1;
    size_t have = 0;  // bytes of `want` (the current 1 MiB block) already compared
    fill(&state, want, size);
    ssize_t k;
    while ((k = read(fd, got, size)) > 0) {
        size_t off = 0;
        while (off < (size_t)k) {
            size_t run = (size_t)k - off < size - have ? (size_t)k - off : size - have;
            if (bad < 0 && memcmp(got + off, want + have, run) != 0) bad = seen;
            seen += (long long)run;
            off += run;
            have += run;
            if (have == size) { fill(&state, want, size); have = 0; }
        }
    }
    pthread_join(t, NULL);
    double secs = now_s() - t0;
    close(fd);
    if (seen == f.total && bad < 0) printf("ok %f\n", secs);
    else printf("bad %lld of %lld (first difference at %lld)\n", seen, f.total, bad);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && strcmp(argv[1], "sink") == 0) return run_server(SINK, atoi(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "echo") == 0) return run_server(ECHO, atoi(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "request") == 0) return run_server(REQUEST, atoi(argv[2]));
    if (argc >= 5 && strcmp(argv[1], "source") == 0) return run_source(argv[2], atoi(argv[3]), atol(argv[4]));
    if (argc >= 6 && strcmp(argv[1], "connect") == 0) return run_connect(argv[2], atoi(argv[3]), atof(argv[4]), atoi(argv[5]));
    if (argc >= 5 && strcmp(argv[1], "verify") == 0) return run_verify(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: tcp-peer sink|echo|request PORT | source HOST PORT MIB | connect HOST PORT SECS N | verify HOST PORT MB\n");
    return 2;
}
