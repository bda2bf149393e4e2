/*
 * ctl: the control-latency client of bench/run.py, in C so that the figure is the server's and
 * not the client's. (The harness's Python client spends ~0.3 ms of its own per request, about
 * half of what it measured; both the agent and Docker are timed with this same client.)
 *
 * One keep-alive HTTP/1.1 connection, one request at a time. For each update it sends the
 * request, reads the whole answer, then reads the quota file until it holds the new value, and
 * prints the microseconds from before the send to the matching read, and whether the first
 * read already had it ("1") or the file had to be polled ("0").
 *
 *   ctl agent  tcp:127.0.0.1:PORT  TOKEN  OBJECT_ID     QUOTA_FILE N
 *   ctl docker unix:/var/run/docker.sock  CONTAINER_ID  QUOTA_FILE N
 *
 * The values cycle through cpu 0.5, 0.6 ... 1.4 (quota 50000 ... 140000), as the Python series.
 * Exit status 1 with a message on any error (connection, a non-2xx answer, a quota that never
 * comes).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int dial(const char *addr) {
    if (strncmp(addr, "tcp:", 4) == 0) {
        char host[64];
        const char *colon = strrchr(addr + 4, ':');
        if (!colon || (size_t)(colon - addr - 4) >= sizeof host) die("bad address %s", addr);
        memcpy(host, addr + 4, colon - addr - 4);
        host[colon - addr - 4] = 0;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("bad host %s", host);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect %s: %s", addr, strerror(errno));
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
    }
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", addr + 5);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect %s: %s", addr, strerror(errno));
        return fd;
    }
    die("address must be tcp:HOST:PORT or unix:PATH, not %s", addr);
    return -1;
}

static void send_all(int fd, const char *b, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write: %s", strerror(errno));
        }
        b += w;
        n -= (size_t)w;
    }
}

/* Reads one answer (headers, then Content-Length bytes or chunks) and returns its status. */
static char rbuf[1 << 16];
static size_t rlen;

static void fill(int fd) {
    if (rlen == sizeof rbuf) die("answer too large");
    ssize_t r = read(fd, rbuf + rlen, sizeof rbuf - rlen);
    if (r < 0 && errno == EINTR) return;
    if (r <= 0) die("connection closed while reading an answer");
    rlen += (size_t)r;
}

static void consume(size_t n) {
    memmove(rbuf, rbuf + n, rlen - n);
    rlen -= n;
}

static int read_answer(int fd) {
    char *end;
    while (!(end = memmem(rbuf, rlen, "\r\n\r\n", 4))) fill(fd);
    size_t hlen = (size_t)(end - rbuf) + 4;
    int status = atoi(rbuf + 9);
    long clen = -1;
    int chunked = 0;
    for (char *p = rbuf; p < end; p++) {
        if (*p != '\n') continue;
        if (strncasecmp(p + 1, "content-length:", 15) == 0) clen = atol(p + 16);
        if (strncasecmp(p + 1, "transfer-encoding: chunked", 26) == 0) chunked = 1;
    }
    consume(hlen);
    if (chunked) {
        for (;;) {
            char *nl;
            while (!(nl = memmem(rbuf, rlen, "\r\n", 2))) fill(fd);
            long sz = strtol(rbuf, NULL, 16);
            size_t need = (size_t)(nl - rbuf) + 2 + (size_t)sz + 2;
            while (rlen < need) fill(fd);
            consume(need);
            if (sz == 0) break;
        }
    } else if (clen > 0) {
        while (rlen < (size_t)clen) fill(fd);
        consume((size_t)clen);
    }
    return status;
}

static long read_quota(int fd) {
    char b[32];
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    if (n <= 0) die("reading the quota file: %s", strerror(errno));
    b[n] = 0;
    return atol(b);
}

int main(int argc, char **argv) {
    int docker = argc > 1 && strcmp(argv[1], "docker") == 0;
    if (argc != (docker ? 6 : 7))
        die("usage: ctl agent tcp:HOST:PORT TOKEN OBJECT_ID QUOTA_FILE N | ctl docker unix:SOCK CONTAINER_ID QUOTA_FILE N");
    const char *addr = argv[2];
    const char *token = docker ? NULL : argv[3];
    const char *id = argv[docker ? 3 : 4];
    const char *qpath = argv[docker ? 4 : 5];
    long n = atol(argv[docker ? 5 : 6]);
    int fd = dial(addr);
    /* cgroupfs files are re-read from offset 0 of one open descriptor, as the agent does. */
    int qfd = open(qpath, O_RDONLY);
    if (qfd < 0) die("open %s: %s", qpath, strerror(errno));
    char req[1024], body[128];
    for (long i = 0; i < n; i++) {
        long want = 50000 + 10000 * (i % 10);
        int blen;
        int rl;
        if (docker) {
            blen = snprintf(body, sizeof body, "{\"NanoCpus\":%ld}", want * 10000);
            rl = snprintf(req, sizeof req,
                          "POST /v1.41/containers/%s/update HTTP/1.1\r\nHost: docker\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                          id, blen, body);
        } else {
            blen = snprintf(body, sizeof body, "{\"resources\":{\"cpu\":%.2f}}", want / 100000.0);
            rl = snprintf(req, sizeof req,
                          "PATCH /v1/objects/%s?wait=true HTTP/1.1\r\nHost: localhost\r\n"
                          "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          id, token, blen, body);
        }
        double t0 = now_us();
        send_all(fd, req, (size_t)rl);
        int status = read_answer(fd);
        if (status < 200 || status > 299) die("update %ld answered %d", i, status);
        int first = 1;
        while (read_quota(qfd) != want) {
            first = 0;
            if (now_us() - t0 > 10e6) die("%s never became %ld", qpath, want);
        }
        printf("%.1f %d\n", now_us() - t0, first);
    }
    return 0;
}
