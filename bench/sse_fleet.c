/* sse_fleet: N Server-Sent Events clients in one thread, for bench/fanout_bench.py.
 *
 * The Python fleet it replaces spent ~7 us of its core per event (a read, a callback,
 * the parsing), so at 10,000 clients x 10 pushes a second its own queueing was a large
 * part of the latency it reported. Here a read costs the recv(2) and two memchr-like
 * scans, and each read is timestamped (CLOCK_MONOTONIC, the clock of Python's
 * time.monotonic) before anything else is done with it.
 *
 *   sse_fleet PORT N BATCH TIMEOUT_S OUT
 *
 * Opens N connections to 127.0.0.1:PORT, BATCH at a time, sends
 * "GET /scores/stream", and waits until every client of a batch has its first event
 * (or TIMEOUT_S passes) before the next batch. Then prints one line to stdout:
 *     ready <clients with their snapshot> failed <count> <first failure reason>
 * and keeps reading until its stdin closes (or says "stop"). It then writes OUT (see
 * write_results) and prints:
 *     done lost <streams that ended early> largest_head <bytes> busy <percent>
 * where busy is the share of the time since "ready" spent handling reads: it polls
 * without sleeping while reads keep coming (see SPIN_S), so its CPU use alone says
 * little about how loaded it is.
 *
 * Frames arrive chunk-encoded, one SSE event per chunk: "event: scores\nid: V\n
 * data: [...]\n\n". Only the id line and, the first time a version is seen by any
 * client, its data line are read.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE 65536
#define MAX_HEAD 16384
#define MAX_VERSIONS 65536 /* distinct versions one run may see (power of two) */

typedef struct {
    int fd;
    int in_body;
    int connected;
    int done; /* closed: by the server, an error or a failed response */
    size_t head_len;
    char *head;   /* the response head while it arrives */
    char *rest;   /* an event cut by a read boundary, kept for the next read */
    size_t rest_len;
    int64_t *ids;
    double *times;
    size_t count, cap;
} Client;

typedef struct {
    int64_t version;
    char *data; /* the data line's JSON, as first seen */
} Top;

static Top tops[MAX_VERSIONS];
static size_t tops_used;
static long lost, failed, largest_head, ready_clients;
static char first_failure[128];
static int stopping;
static double last_read; /* when epoll last returned something */
static double busy_s;    /* time spent handling what epoll returned, after "ready" */
static int all_ready;
#define SPIN_S 0.0005

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void fail(Client *c, const char *reason) {
    failed++;
    if (!first_failure[0]) snprintf(first_failure, sizeof first_failure, "%s", reason);
    c->done = 1;
}

static void learn(int64_t version, const char *data, size_t len) {
    size_t slot = (size_t)((uint64_t)version * 0x9E3779B97F4A7C15ull >> 48) & (MAX_VERSIONS - 1);
    while (tops[slot].data != NULL) {
        if (tops[slot].version == version) return;
        slot = (slot + 1) & (MAX_VERSIONS - 1);
    }
    if (tops_used + 1 >= MAX_VERSIONS) return; /* full: later versions go unlearnt */
    tops[slot].version = version;
    tops[slot].data = strndup(data, len);
    tops_used++;
}

static int known(int64_t version) {
    size_t slot = (size_t)((uint64_t)version * 0x9E3779B97F4A7C15ull >> 48) & (MAX_VERSIONS - 1);
    while (tops[slot].data != NULL) {
        if (tops[slot].version == version) return 1;
        slot = (slot + 1) & (MAX_VERSIONS - 1);
    }
    return 0;
}

static void record(Client *c, int64_t version, double at) {
    if (c->count == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 128;
        c->ids = realloc(c->ids, c->cap * sizeof *c->ids);
        c->times = realloc(c->times, c->cap * sizeof *c->times);
        if (!c->ids || !c->times) die("realloc");
    }
    c->ids[c->count] = version;
    c->times[c->count] = at;
    if (c->count++ == 0) ready_clients++;
}

/* Every complete event in buf[0..len): record its id; returns bytes consumed. */
static size_t events(Client *c, const char *buf, size_t len, double at) {
    size_t start = 0;
    for (;;) {
        const char *id = memmem(buf + start, len - start, "\nid: ", 5);
        if (id == NULL) {
            /* keep the last 4 bytes: a "\nid: " may straddle this read and the next */
            return len > start + 4 ? len - 4 : start;
        }
        size_t id_at = (size_t)(id - buf);
        const char *eol = memchr(id + 5, '\n', len - id_at - 5);
        if (eol == NULL) return id_at; /* the id line is cut: take it up next time */
        int64_t version = strtoll(id + 5, NULL, 10);
        if (!known(version)) {
            const char *data = eol + 1;
            const char *stop = memchr(data, '\n', (size_t)(buf + len - data));
            if (stop == NULL) return id_at; /* the data line is cut */
            if ((size_t)(stop - data) > 6 && memcmp(data, "data: ", 6) == 0)
                learn(version, data + 6, (size_t)(stop - data - 6));
            else
                learn(version, "", 0);
        }
        record(c, version, at);
        start = (size_t)(eol - buf);
    }
}

static void body(Client *c, const char *data, size_t len, double at) {
    if (c->rest_len == 0) {
        size_t used = events(c, data, len, at);
        if (used < len) {
            c->rest = realloc(c->rest, len - used);
            if (!c->rest) die("realloc");
            memcpy(c->rest, data + used, len - used);
            c->rest_len = len - used;
        }
        return;
    }
    char *joined = malloc(c->rest_len + len);
    if (!joined) die("malloc");
    memcpy(joined, c->rest, c->rest_len);
    memcpy(joined + c->rest_len, data, len);
    size_t total = c->rest_len + len;
    size_t used = events(c, joined, total, at);
    free(c->rest);
    c->rest = NULL;
    c->rest_len = 0;
    if (used < total) {
        c->rest = malloc(total - used);
        if (!c->rest) die("malloc");
        memcpy(c->rest, joined + used, total - used);
        c->rest_len = total - used;
    }
    free(joined);
}

static void head(Client *c, const char *data, size_t len, double at) {
    if (c->head_len + len > MAX_HEAD) {
        fail(c, "response head over 16 KiB");
        return;
    }
    if (c->head == NULL && !(c->head = malloc(MAX_HEAD + 1))) die("malloc");
    memcpy(c->head + c->head_len, data, len);
    c->head_len += len;
    c->head[c->head_len] = 0;
    char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
    if (end == NULL) return;
    size_t head_bytes = (size_t)(end - c->head) + 4;
    if ((long)head_bytes > largest_head) largest_head = (long)head_bytes;
    if (strncmp(c->head, "HTTP/1.1 200", 12) != 0) {
        char *eol = strstr(c->head, "\r\n");
        if (eol) *eol = 0;
        fail(c, c->head);
        return;
    }
    c->in_body = 1;
    size_t after = c->head_len - head_bytes;
    char *rest = c->head;
    c->head = NULL;
    if (after) body(c, rest + head_bytes, after, at);
    free(rest);
}

static void readable(int epoll, Client *c, char *buf) {
    for (;;) {
        ssize_t got = recv(c->fd, buf, READ_SIZE, 0);
        double at = now(); /* first thing: the receive time of every event in buf */
        if (got > 0) {
            if (c->in_body) body(c, buf, (size_t)got, at);
            else head(c, buf, (size_t)got, at);
            if (c->done) break;
            if (got < READ_SIZE) return;
            continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (got < 0 && errno == EINTR) continue;
        if (!stopping && c->in_body) lost++;
        else if (!c->in_body && !c->done) fail(c, got == 0 ? "closed before a response"
                                                           : strerror(errno));
        c->done = 1;
        break;
    }
    epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void open_client(int epoll, Client *c, struct sockaddr_in *to) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        fail(c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        fail(c, strerror(errno));
        close(c->fd);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
}

static void writable(int epoll, Client *c, const char *req, size_t req_len) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        fail(c, strerror(err));
        epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        return;
    }
    /* The request is small: one send on a fresh connection takes it whole. */
    if (send(c->fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len) {
        fail(c, "could not send the request");
        epoll_ctl(epoll, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        return;
    }
    c->connected = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
}

/* Runs the loop until `until` (monotonic seconds), or, if settle > 0, until clients
 * [0, settle) all have an event or are done; returns 1 when stdin asked to stop. */
static int run(int epoll, Client *clients, long settle, double until, const char *req,
               size_t req_len, char *buf) {
    struct epoll_event evs[1024];
    for (;;) {
        if (settle > 0) {
            long pending = 0;
            for (long i = 0; i < settle; i++)
                if (!clients[i].done && clients[i].count == 0) pending++;
            if (pending == 0) return 0;
        }
        double at = now(), left = until - at;
        if (left <= 0) return 0;
        /* Poll without sleeping for SPIN_S after the last read: a push arrives as one
         * read per client, microseconds apart, and waking a sleeping fleet for each
         * would bill the server's core for an interprocessor interrupt per write
         * (measured: ~15 % of its time at 10,000 clients), a cost that remote clients
         * never put on a server. */
        int spin = at - last_read < SPIN_S;
        int n = epoll_wait(epoll, evs, 1024,
                           spin ? 0 : left > 1 ? 1000 : (int)(left * 1000) + 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        double woke = now();
        if (n > 0) last_read = woke;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) { /* stdin: a line or its end means stop */
                char line[64];
                ssize_t got = read(0, line, sizeof line);
                (void)got;
                return 1;
            }
            Client *c = evs[i].data.ptr;
            if (c->done) continue;
            if (!c->connected) writable(epoll, c, req, req_len);
            else readable(epoll, c, buf);
        }
        if (n > 0 && all_ready) busy_s += now() - woke;
    }
}

/* OUT: a little-endian binary file: int64 client count; per client, int64 event count,
 * then that many int64 ids, then that many float64 receive times; then int64 version
 * count and per version int64 version, int64 length and the data line's bytes. */
static void write_results(const char *path, Client *clients, long n) {
    FILE *out = fopen(path, "wb");
    if (!out) die(path);
    int64_t count = n;
    fwrite(&count, sizeof count, 1, out);
    for (long i = 0; i < n; i++) {
        int64_t events = (int64_t)clients[i].count;
        fwrite(&events, sizeof events, 1, out);
        fwrite(clients[i].ids, sizeof(int64_t), clients[i].count, out);
        fwrite(clients[i].times, sizeof(double), clients[i].count, out);
    }
    int64_t versions = (int64_t)tops_used;
    fwrite(&versions, sizeof versions, 1, out);
    for (size_t slot = 0; slot < MAX_VERSIONS; slot++) {
        if (tops[slot].data == NULL) continue;
        int64_t len = (int64_t)strlen(tops[slot].data);
        fwrite(&tops[slot].version, sizeof(int64_t), 1, out);
        fwrite(&len, sizeof len, 1, out);
        fwrite(tops[slot].data, 1, (size_t)len, out);
    }
    if (fclose(out) != 0) die(path);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s PORT N BATCH TIMEOUT_S OUT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long n = atol(argv[2]), batch = atol(argv[3]);
    double timeout = atof(argv[4]);
    if (port <= 0 || n <= 0 || batch <= 0 || timeout <= 0) {
        fprintf(stderr, "PORT, N, BATCH and TIMEOUT_S must be positive\n");
        return 2;
    }
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);

    char req[256];
    int req_len = snprintf(req, sizeof req,
                           "GET /scores/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                           "Accept: text/event-stream\r\n\r\n", port);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);

    Client *clients = calloc((size_t)n, sizeof *clients);
    char *buf = malloc(READ_SIZE);
    int epoll = epoll_create1(0);
    if (!clients || !buf || epoll < 0) die("setup");
    struct epoll_event in = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, 0, &in) < 0) die("epoll_ctl stdin");

    int stop = 0;
    for (long start = 0; start < n && !stop; start += batch) {
        long end = start + batch < n ? start + batch : n;
        for (long i = start; i < end; i++) open_client(epoll, &clients[i], &to);
        stop = run(epoll, clients, end, now() + timeout, req, (size_t)req_len, buf);
        long waiting = 0;
        for (long i = start; i < end; i++)
            if (!clients[i].done && clients[i].count == 0) waiting++;
        if (waiting) {
            failed += waiting;
            if (!first_failure[0])
                snprintf(first_failure, sizeof first_failure, "no snapshot within %.0f s",
                         timeout);
            break;
        }
    }
    all_ready = 1;
    double ready_at = now();
    printf("ready %ld failed %ld %s\n", ready_clients, failed,
           first_failure[0] ? first_failure : "-");
    fflush(stdout);
    while (!stop) stop = run(epoll, clients, 0, now() + 3600, req, (size_t)req_len, buf);
    stopping = 1;
    write_results(argv[5], clients, n);
    printf("done lost %ld largest_head %ld busy %.1f\n", lost, largest_head,
           100 * busy_s / (now() - ready_at));
    fflush(stdout);
    return 0;
}
