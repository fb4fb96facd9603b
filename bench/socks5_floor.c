/* socks5_floor: a fake SOCKS5 server that does nothing but busy-poll one client
 * at a time on a CPU of its own and answer the greeting and the request without
 * connecting anywhere: the floor of a SOCKS5 handshake's two round trips on this
 * machine (bench/TUNING.md section 3d; not run by scripts/bench). Loopback only.
 *
 * Usage: socks5_floor PORT   (listens on 127.0.0.1:PORT until killed)
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Spins until `n` bytes came, or the peer closed (then -1). */
static int spin_read(int fd, unsigned char *buf, int n) {
    for (int got = 0; got < n;) {
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r == 0) return -1;
        if (r > 0) got += r;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: socks5_floor PORT\n");
        return 64;
    }
    int on = 1, l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 128) != 0) {
        perror("listen");
        return 1;
    }
    fcntl(l, F_SETFL, O_NONBLOCK);
    for (;;) {
        int fd;
        while ((fd = accept(l, NULL, NULL)) < 0) {
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        unsigned char buf[64];
        if (spin_read(fd, buf, 3) == 0 && send(fd, "\x05\x00", 2, 0) == 2 && spin_read(fd, buf, 10) == 0) {
            send(fd, "\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x01", 10, 0);
            while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) != 0) {
            }
        }
        close(fd);
    }
}
