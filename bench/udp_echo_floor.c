/* The floor for UDP echo on this machine: a plain single-threaded recvfrom/sendto loop that
 * sends each datagram back upper-cased, with the same 4 MiB receive buffer sockit asks for.
 * Built and run by bench/floor.py:
 *
 *     gcc -O2 -o udp_echo_floor bench/udp_echo_floor.c && ./udp_echo_floor
 *
 * It binds 127.0.0.1 on a free port, prints `listening udp-echo 127.0.0.1:PORT` like
 * `sockit serve`, and serves until killed. No meters, no checks: the cheapest echo there is. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int rcvbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening udp-echo 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    static char buf[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
        if (n < 0) {
            if (errno == EINTR) continue;
            continue;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] -= 'a' - 'A';
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, from_len);
    }
}
