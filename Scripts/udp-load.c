/*
 * udp-load: a small closed-loop UDP load generator for Scripts/bench-udp.sh.
 *
 *   udp-load HOST PORT SECONDS [WINDOW [FLOWS [SIZE [MAXREPLIES]]]]
 *
 * Opens FLOWS (default 4) UDP sockets, each connected to HOST:PORT from its own source
 * port (so a flow-steering receiver spreads them over its CPUs), and keeps WINDOW
 * (default 8) requests outstanding on each. A request is SIZE (default 32, at least 16)
 * bytes: a generation number and the send time. Every reply is timed and answered by a
 * new request on its flow. A flow that gets no reply for 250 ms counts what it had
 * outstanding as lost, starts a new generation (late replies of the old one are ignored)
 * and refills its window. Stops after SECONDS or MAXREPLIES replies, whichever is first,
 * and prints one line:
 *
 *   replies_per_s=R p50_us=A p99_us=B replies=N sent=S lost=L seconds=T
 *
 * Latencies go into a histogram of 1 µs buckets up to 1 s (longer ones count as 1 s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FLOWS 256
#define HIST_US 1000000
#define LOSS_NS 250000000ULL

struct flow {
    int fd;
    uint64_t generation;
    int outstanding;
    uint64_t last_activity;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static unsigned char request[65536];
static uint64_t sent;

/* Sends one request on f; 0 on success (EAGAIN/ENOBUFS count as a loss later). */
static int send_one(struct flow *f, size_t size) {
    uint64_t t = now_ns();
    memcpy(request, &f->generation, 8);
    memcpy(request + 8, &t, 8);
    if (send(f->fd, request, size, MSG_DONTWAIT) == (ssize_t)size) {
        f->outstanding++;
        sent++;
        return 0;
    }
    return -1;
}

static double percentile(const uint64_t *hist, uint64_t total, double q) {
    if (total == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)total), seen = 0;
    for (int i = 0; i <= HIST_US; i++) {
        seen += hist[i];
        if (seen > rank) return i;
    }
    return HIST_US;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT SECONDS [WINDOW [FLOWS [SIZE [MAXREPLIES]]]]\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[3]);
    int window = argc > 4 ? atoi(argv[4]) : 8;
    int nflows = argc > 5 ? atoi(argv[5]) : 4;
    size_t size = argc > 6 ? (size_t)atol(argv[6]) : 32;
    uint64_t max_replies = argc > 7 ? strtoull(argv[7], NULL, 10) : UINT64_MAX;
    if (seconds <= 0 || seconds > 600 || window < 1 || window > 4096 || nflows < 1 || nflows > MAX_FLOWS
        || size < 16 || size > 1472) {
        fprintf(stderr, "udp-load: SECONDS in (0, 600], WINDOW 1..4096, FLOWS 1..%d, SIZE 16..1472\n", MAX_FLOWS);
        return 2;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "udp-load: bad IPv4 address %s\n", argv[1]);
        return 2;
    }
    uint64_t *hist = calloc(HIST_US + 1, sizeof *hist);
    static struct flow flows[MAX_FLOWS];
    static struct pollfd pfd[MAX_FLOWS];
    if (!hist) { perror("calloc"); return 1; }
    memset(request, 'x', sizeof request);
    uint64_t start = now_ns();
    for (int i = 0; i < nflows; i++) {
        flows[i].fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (flows[i].fd < 0 || connect(flows[i].fd, (struct sockaddr *)&to, sizeof to) != 0) {
            perror("udp-load: socket/connect");
            return 1;
        }
        flows[i].generation = 1;
        flows[i].last_activity = start;
        pfd[i].fd = flows[i].fd;
        pfd[i].events = POLLIN;
        for (int k = 0; k < window; k++) send_one(&flows[i], size);
    }
    uint64_t end = start + (uint64_t)(seconds * 1e9), replies = 0, lost = 0;
    unsigned char reply[65536];
    uint64_t t = start;
    while (t < end && replies < max_replies) {
        int r = poll(pfd, (nfds_t)nflows, 10);
        if (r < 0 && errno != EINTR) { perror("poll"); return 1; }
        t = now_ns();
        for (int i = 0; i < nflows; i++) {
            struct flow *f = &flows[i];
            if (pfd[i].revents & POLLIN) {
                for (;;) {
                    ssize_t n = recv(f->fd, reply, sizeof reply, MSG_DONTWAIT);
                    if (n < 0) break;
                    uint64_t gen, ts;
                    if (n < 16) continue;
                    memcpy(&gen, reply, 8);
                    memcpy(&ts, reply + 8, 8);
                    if (gen != f->generation) continue;
                    uint64_t now = now_ns();
                    uint64_t us = (now - ts) / 1000;
                    hist[us > HIST_US ? HIST_US : us]++;
                    replies++;
                    f->outstanding--;
                    f->last_activity = now;
                    if (now < end && replies < max_replies) send_one(f, size);
                }
            }
            if (t > f->last_activity && t - f->last_activity > LOSS_NS && t < end) {
                /* Nothing for 250 ms: what is outstanding is lost; start over. */
                lost += (uint64_t)f->outstanding;
                f->outstanding = 0;
                f->generation++;
                f->last_activity = t;
                for (int k = 0; k < window; k++) send_one(f, size);
            }
        }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    printf("replies_per_s=%.0f p50_us=%.0f p99_us=%.0f replies=%llu sent=%llu lost=%llu seconds=%.2f\n",
           (double)replies / elapsed, percentile(hist, replies, 0.50), percentile(hist, replies, 0.99),
           (unsigned long long)replies, (unsigned long long)sent, (unsigned long long)lost, elapsed);
    return 0;
}
