/* Host program for the shim fault tests (tests/tests/shim_faults.rs): plain
 * libc calls, as an unmodified C program makes them, under libsocks4.so.
 * Prints key=value lines; the test asserts on them. Never relies on the
 * shim behaving: every wait is bounded, so a hang is the shim's.
 *
 *   faultc connect  HOST PORT         blocking connect, then "ping" echoed
 *   faultc nonblock HOST PORT         non-blocking connect + poll + SO_ERROR
 *   faultc retry    HOST PORT         connect, then again on the same fd, then on a dup
 *   faultc fastopen HOST PORT         sendto(MSG_FASTOPEN)
 *   faultc repeat   HOST PORT N       N connects in a row (one stderr line for all?)
 *   faultc signals  HOST PORT         connect under a 1 ms SIGALRM storm (no SA_RESTART)
 *   faultc threads  HOST PORT N       N threads connect at once, each echoes its own bytes
 *   faultc fork     HOST PORT ROUNDS  forks while a thread keeps connecting; children connect
 *   faultc bind     HOST PORT [HOW]   connect, then listen/accept on a fresh socket (SOCKS BIND);
 *                                     HOW 1: accept (the default), 2: accept4(SOCK_CLOEXEC) on a
 *                                     non-blocking listener, 3: accept4(SOCK_NONBLOCK)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in dest;

static const char *ename(int e) {
    switch (e) {
    case 0: return "0";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNRESET: return "ECONNRESET";
    case EPROTO: return "EPROTO";
    case EACCES: return "EACCES";
    case EINTR: return "EINTR";
    case EISCONN: return "EISCONN";
    case EALREADY: return "EALREADY";
    case EINPROGRESS: return "EINPROGRESS";
    case ECONNABORTED: return "ECONNABORTED";
    case EPIPE: return "EPIPE";
    case EIO: return "EIO";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "E%d", e);
        return buf;
    }
    }
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000.0 + t.tv_nsec / 1e6;
}

/* Sends msg and reads the same number of bytes back within 5 s. */
static int echo_check(int fd, const char *msg, size_t len) {
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len) return -1;
    char buf[256];
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return memcmp(buf, msg, len) == 0 ? 0 : -1;
}

static int do_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&dest, sizeof dest) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Prints how a connect ended: its errno, or whether the echo came back. */
static int report(int fd) {
    if (fd < 0) {
        printf("errno=%s\n", ename(-fd));
        return 0;
    }
    printf("echo=%s\n", echo_check(fd, "ping", 4) == 0 ? "ok" : "bad");
    close(fd);
    return 0;
}

static int mode_connect(void) {
    double t0 = now_ms();
    int fd = do_connect();
    printf("elapsed_ms=%.0f\n", now_ms() - t0);
    return report(fd);
}

static int mode_nonblock(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, (struct sockaddr *)&dest, sizeof dest);
    printf("connect=%s\n", rc == 0 ? "0" : ename(errno));
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int n = poll(&p, 1, 10000);
        printf("poll=%d\n", n);
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        printf("so_error=%s\n", ename(err));
    } else if (rc != 0) {
        printf("errno=%s\n", ename(errno));
    }
    close(fd);
    return 0;
}

static int mode_retry(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(fd, (struct sockaddr *)&dest, sizeof dest);
    printf("first=%s\n", rc == 0 ? "0" : ename(errno));
    rc = connect(fd, (struct sockaddr *)&dest, sizeof dest);
    printf("second=%s\n", rc == 0 ? "0" : ename(errno));
    int dupfd = dup(fd);
    rc = connect(dupfd, (struct sockaddr *)&dest, sizeof dest);
    printf("dup=%s\n", rc == 0 ? "0" : ename(errno));
    close(fd);
    close(dupfd);
    /* A fresh socket after the failures. */
    int fresh = do_connect();
    printf("fresh=%s\n", fresh >= 0 ? "0" : ename(-fresh));
    if (fresh >= 0) close(fresh);
    return 0;
}

static int mode_fastopen(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n = sendto(fd, "early", 5, MSG_FASTOPEN | MSG_NOSIGNAL, (struct sockaddr *)&dest, sizeof dest);
    printf("sendto=%s\n", n >= 0 ? "0" : ename(errno));
    close(fd);
    return 0;
}

static int mode_repeat(int count) {
    int fails = 0;
    for (int i = 0; i < count; i++) {
        int fd = do_connect();
        if (fd < 0) {
            printf("errno%d=%s\n", i, ename(-fd));
            fails++;
        } else {
            close(fd);
        }
    }
    printf("fails=%d\n", fails);
    return 0;
}

static atomic_int alarms;

static void on_alarm(int sig) {
    (void)sig;
    atomic_fetch_add(&alarms, 1);
}

static int mode_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: every syscall sees EINTR */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    int fd = do_connect();
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("signals=%d\n", atomic_load(&alarms));
    return report(fd);
}

static atomic_int ok_count;
static atomic_int err_counts[200];
static pthread_barrier_t barrier;

static void *thread_main(void *arg) {
    long id = (long)arg;
    pthread_barrier_wait(&barrier);
    int fd = do_connect();
    if (fd < 0) {
        int e = -fd;
        atomic_fetch_add(&err_counts[e < 200 ? e : 0], 1);
        return NULL;
    }
    char msg[32];
    int len = snprintf(msg, sizeof msg, "thread-%ld;", id);
    if (echo_check(fd, msg, (size_t)len) == 0) atomic_fetch_add(&ok_count, 1);
    close(fd);
    return NULL;
}

static int mode_threads(int n) {
    pthread_t t[1000];
    if (n > 1000) n = 1000;
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, thread_main, (void *)i);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    printf("ok=%d\n", atomic_load(&ok_count));
    for (int e = 0; e < 200; e++)
        if (atomic_load(&err_counts[e])) printf("err_%s=%d\n", ename(e), atomic_load(&err_counts[e]));
    return 0;
}

static atomic_int stop_hammer;
static atomic_int hammer_ok;

static void *hammer(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_hammer)) {
        int fd = do_connect();
        if (fd >= 0) {
            if (echo_check(fd, "h", 1) == 0) atomic_fetch_add(&hammer_ok, 1);
            close(fd);
        }
    }
    return NULL;
}

static int mode_fork(int rounds) {
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, hammer, NULL);
    int ok = 0, failed = 0, hung = 0;
    for (int r = 0; r < rounds; r++) {
        usleep(5000);
        pid_t pid = fork();
        if (pid == 0) {
            /* In the child only this thread exists; any lock another
             * thread held at fork time is held forever here. */
            alarm(10);
            int fd = do_connect();
            if (fd < 0) _exit(2);
            _exit(echo_check(fd, "child", 5) == 0 ? 0 : 3);
        }
        int status = 0;
        double deadline = now_ms() + 8000;
        pid_t w = 0;
        while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < deadline) usleep(2000);
        if (w == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            hung++;
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            ok++;
        } else {
            failed++;
            printf("child_status%d=%d\n", r, status);
        }
    }
    atomic_store(&stop_hammer, 1);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    printf("children_ok=%d\nchildren_failed=%d\nchildren_hung=%d\nhammer_ok=%d\n", ok, failed, hung,
           atomic_load(&hammer_ok));
    return 0;
}

/* Prints `key=IP:PORT`, the socket's peer (or its own address), or `key=ERRNO`. */
static void print_addr(const char *key, int fd, int peer) {
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    char ip[INET_ADDRSTRLEN] = "?";
    int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &alen) : getsockname(fd, (struct sockaddr *)&a, &alen);
    if (rc == 0) {
        inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
        printf("%s=%s:%d\n", key, ip, ntohs(a.sin_port));
    } else {
        printf("%s=%s\n", key, ename(errno));
    }
}

/* A vfork child shares this process's memory, the shim's included: its close of an inherited
 * proxied socket must not change what the parent knows of that socket. */
static int mode_vfork(void) {
    int fd = do_connect();
    if (fd < 0) return report(fd);
    print_addr("peer_before", fd, 1);
    pid_t pid = vfork();
    if (pid == 0) {
        close(fd);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    print_addr("peer_after", fd, 1);
    return report(fd);
}

static int mode_bind(int how) {
    int ctl = do_connect();
    if (ctl < 0) {
        printf("errno=%s\n", ename(-ctl));
        return 0;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int rc = listen(l, 1);
    printf("listen=%s\n", rc == 0 ? "0" : ename(errno));
    if (rc != 0) return 0;
    print_addr("bound", l, 0);
    if (how == 2) fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK);
    struct pollfd p = {l, POLLIN, 0};
    printf("poll=%d\n", poll(&p, 1, 10000));
    int c = how == 2   ? accept4(l, NULL, NULL, SOCK_CLOEXEC)
            : how == 3 ? accept4(l, NULL, NULL, SOCK_NONBLOCK)
                       : accept(l, NULL, NULL);
    printf("accept=%s\n", c >= 0 ? "0" : ename(errno));
    if (c >= 0) {
        /* What a kernel's accept gives the new socket: FD_CLOEXEC only for SOCK_CLOEXEC,
         * O_NONBLOCK only for SOCK_NONBLOCK, whatever the listener has. */
        printf("cloexec=%d\n", (fcntl(c, F_GETFD) & FD_CLOEXEC) != 0);
        printf("nonblock=%d\n", (fcntl(c, F_GETFL) & O_NONBLOCK) != 0);
        char buf[16] = {0};
        struct timeval tv = {5, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        struct pollfd q = {c, POLLIN, 0};
        poll(&q, 1, 5000);
        ssize_t n = recv(c, buf, sizeof buf - 1, 0);
        printf("data=%s\n", n > 0 ? buf : "");
        close(c);
    }
    close(l);
    close(ctl);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4) {
        fprintf(stderr, "usage: faultc MODE HOST PORT [N]\n");
        return 64;
    }
    memset(&dest, 0, sizeof dest);
    dest.sin_family = AF_INET;
    dest.sin_port = htons((unsigned short)atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &dest.sin_addr);
    int n = argc > 4 ? atoi(argv[4]) : 1;
    const char *m = argv[1];
    int rc = 64;
    if (!strcmp(m, "connect")) rc = mode_connect();
    else if (!strcmp(m, "nonblock")) rc = mode_nonblock();
    else if (!strcmp(m, "retry")) rc = mode_retry();
    else if (!strcmp(m, "fastopen")) rc = mode_fastopen();
    else if (!strcmp(m, "repeat")) rc = mode_repeat(n);
    else if (!strcmp(m, "signals")) rc = mode_signals();
    else if (!strcmp(m, "threads")) rc = mode_threads(n);
    else if (!strcmp(m, "fork")) rc = mode_fork(n);
    else if (!strcmp(m, "bind")) rc = mode_bind(n);
    else if (!strcmp(m, "vfork")) rc = mode_vfork();
    printf("done=1\n");
    return rc;
}
