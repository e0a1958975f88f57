/*
 * udp-echo: a UDP echo server on Linux sockets, the counterpart of `libellula net
 * --socket-echo-port` for Scripts/bench-udp.sh.
 *
 *   udp-echo PORT THREADS SECONDS
 *
 * One socket bound to 0.0.0.0:PORT and THREADS threads, thread i pinned to core i (modulo
 * the online cores), each looping recvfrom/sendto on that socket: the same shape as
 * Libellula's socket echo (one UDPSocket, one receive/send thread per CPU). Exits after
 * SECONDS and prints how many datagrams it echoed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int fd;
static time_t deadline;
static atomic_ullong echoed;

static void *serve(void *arg) {
    long cpu = (long)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(cpu % sysconf(_SC_NPROCESSORS_ONLN)), &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    unsigned char buf[65536];
    unsigned long long n = 0;
    while (time(NULL) < deadline) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (r < 0) continue; /* the 200 ms receive timeout: check the deadline */
        if (sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, len) == r) n++;
    }
    atomic_fetch_add(&echoed, n);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT THREADS SECONDS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]), seconds = atoi(argv[3]);
    if (threads < 1 || threads > 256 || seconds < 1 || seconds > 3600) {
        fprintf(stderr, "udp-echo: THREADS 1..256, SECONDS 1..3600\n");
        return 2;
    }
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0
        || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
        perror("udp-echo: socket/bind");
        return 1;
    }
    deadline = time(NULL) + seconds;
    pthread_t t[256];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, serve, (void *)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("echoed=%llu\n", (unsigned long long)atomic_load(&echoed));
    return 0;
}
