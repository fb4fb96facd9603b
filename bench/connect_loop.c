/* connect_loop: the cost of a client's connect to a loopback listener, for
 * measuring what libsocks4.so adds on a destination that goes direct.
 * scripts/bench runs it with and without LD_PRELOAD and subtracts.
 *
 * Usage: connect_loop N LABEL
 * Prints one JSON line (LABEL, a plain word, copied into it): median, 10th percentile and mean ns per connect,
 * where "a connect" is the client's socket() + connect() + close() (the
 * calls the shim intercepts on this path); the listener's accept() is done
 * between them and not timed.
 *
 * Then, since the kernel's handshake makes that figure noisy at the 100 ns
 * scale, a second figure isolates the user-space cost: 200,000 connect()
 * calls on one already-connected socket, each failing at once with EISCONN
 * after going through whatever the preloaded library does first.
 *
 * The client closes with SO_LINGER 0 (RST), so no TIME_WAIT piles up on
 * ephemeral ports over tens of thousands of iterations. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    const char *label = argc > 2 ? argv[2] : "";
    if (n <= 0 || n > 1000000) {
        fprintf(stderr, "connect_loop: N must be 1..1000000\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &len) != 0) {
        perror("connect_loop: listener");
        return 1;
    }
    long long *samples = malloc(sizeof(long long) * (size_t)n);
    struct linger abort_close = {1, 0};
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("connect_loop: connect");
            return 1;
        }
        long long t1 = now_ns();
        int afd = accept(lfd, NULL, NULL);
        if (afd < 0) {
            perror("connect_loop: accept");
            return 1;
        }
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
        long long t2 = now_ns();
        close(fd);
        long long t3 = now_ns();
        close(afd);
        samples[i] = (t1 - t0) + (t3 - t2);
    }
    /* connect() on a connected socket: a cheap syscall, same path through
     * the shim's decision (the destination is loopback, so direct). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect_loop: connect");
        return 1;
    }
    const int m = 200000;
    long long e0 = now_ns();
    for (int i = 0; i < m; i++) connect(fd, (struct sockaddr *)&addr, sizeof addr);
    long long eisconn_ns = (now_ns() - e0) / m;
    close(fd);

    double sum = 0;
    for (int i = 0; i < n; i++) sum += (double)samples[i];
    qsort(samples, (size_t)n, sizeof samples[0], cmp_ll);
    printf("{\"kind\":\"connect_loop\",\"label\":\"%s\",\"n\":%d,\"median_ns\":%lld,\"p10_ns\":%lld,\"mean_ns\":%.0f,\"eisconn_ns\":%lld}\n", label, n,
           samples[n / 2], samples[n / 10], sum / n, eisconn_ns);
    return 0;
}
