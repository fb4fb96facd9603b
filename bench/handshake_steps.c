/* handshake_steps: where a sequential SOCKS CONNECT handshake's time goes, from
 * the client's side, one step at a time (for bench/TUNING.md section 3d; not run
 * by scripts/bench).
 *
 * Usage: handshake_steps 4|5 PROXY_IP PROXY_PORT N
 * N handshakes (after 200 not counted), each on a new connection closed at once
 * after the reply, to a destination of its own on 127.0.0.1 that a thread accepts
 * and closes (as loadgen's does). Prints the median microseconds of:
 * connect (to the proxy), greeting (SOCKS5: method offer sent -> choice read;
 * 0 for SOCKS4), request (request sent -> whole reply read) and the total.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int read_n(int fd, unsigned char *buf, int n) {
    for (int got = 0; got < n;) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return v[n / 2];
}

static void *accept_and_close(void *arg) {
    int l = *(int *)arg;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c >= 0) close(c);
    }
    return NULL;
}

/* A listener on 127.0.0.1, port chosen by the kernel, served by a thread. */
static int destination(void) {
    static int l;
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1024) != 0) return -1;
    getsockname(l, (struct sockaddr *)&a, &alen);
    pthread_t t;
    pthread_create(&t, NULL, accept_and_close, &l);
    return ntohs(a.sin_port);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: handshake_steps 4|5 PROXY_IP PROXY_PORT N\n");
        return 64;
    }
    int version = atoi(argv[1]), n = atoi(argv[4]), warm = 200, dport = destination();
    if (dport < 0) return 1;
    struct sockaddr_in proxy = {0};
    proxy.sin_family = AF_INET;
    proxy.sin_port = htons(atoi(argv[3]));
    if (n < 1 || inet_pton(AF_INET, argv[2], &proxy.sin_addr) != 1) return 64;
    double *conn = calloc(n, sizeof(double)), *greet = calloc(n, sizeof(double));
    double *req = calloc(n, sizeof(double)), *total = calloc(n, sizeof(double));
    unsigned char v4[9] = {4, 1, dport >> 8, dport & 255, 127, 0, 0, 1, 0};
    unsigned char v5[10] = {5, 1, 0, 1, 127, 0, 0, 1, dport >> 8, dport & 255};
    unsigned char buf[16];
    for (int i = 0; i < warm + n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        double t0 = now_us();
        if (connect(fd, (struct sockaddr *)&proxy, sizeof proxy) != 0) {
            perror("connect");
            return 1;
        }
        double t1 = now_us(), t2 = t1;
        if (version == 5) {
            if (write(fd, "\x05\x01\x00", 3) != 3 || read_n(fd, buf, 2) != 0 || buf[1] != 0) return 2;
            t2 = now_us();
            if (write(fd, v5, sizeof v5) != sizeof v5 || read_n(fd, buf, 10) != 0 || buf[1] != 0) return 3;
        } else if (write(fd, v4, sizeof v4) != sizeof v4 || read_n(fd, buf, 8) != 0 || buf[1] != 90) {
            return 3;
        }
        double t3 = now_us();
        close(fd);
        if (i >= warm) {
            int k = i - warm;
            conn[k] = t1 - t0, greet[k] = t2 - t1, req[k] = t3 - t2, total[k] = t3 - t0;
        }
    }
    printf("connect %5.1f  greeting %5.1f  request %5.1f  total %5.1f (median us)\n", median(conn, n),
           median(greet, n), median(req, n), median(total, n));
    return 0;
}
