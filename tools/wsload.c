/*
 * wsload: WebSocket SIP load generator for sipedge (RFC 7118 clients, libwebsockets).
 *
 * Opens N ws or wss connections with subprotocol "sip", spread round-robin over several
 * local source addresses, sends one REGISTER per connection (a unique user each, no
 * authentication: meant for the embedded registrar without a users file), keeps every
 * connection alive with CRLF keepalives (RFC 5626 §4.4.1 as RFC 7118 carries it), and
 * reports registrations per second. With --pid it reads the server's VmRSS from
 * /proc/PID/status before connecting and after the connections have been idle for
 * --hold seconds, and prints KiB per idle registered connection.
 *
 * Output: one summary line "wsload: key=value ..." on stdout; progress on stderr.
 * Exit status 0 when every connection registered, 1 otherwise, 2 on usage errors.
 * One thread: lws runs on a libuv loop (epoll), since lws' default poll() loop walks
 * every descriptor on each turn and cannot drive tens of thousands of connections.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>
#include <uv.h>

#define WSLOAD_MAX_SRC 64
#define WSLOAD_MSG_MAX 1024

enum conn_state { CONN_IDLE = 0, CONN_CONNECTING, CONN_OPEN, CONN_REGISTERED, CONN_FAILED };

struct conn {
    struct lws *wsi;
    uint32_t idx;
    uint8_t state;
    bool has_register_pending;
    bool has_ping_pending;
    uint64_t ping_us; /* last CRLF keepalive (or the handshake) */
};

/* All zero: no lws validity timer (see keepalive_tick). */
static const lws_retry_bo_t no_idle_policy;

struct wsload {
    /* options */
    bool is_tls;
    char host[256];
    int port;
    char path[256];
    char *src[WSLOAD_MAX_SRC];
    unsigned n_src;
    uint32_t n_conns;
    uint32_t rate;         /* connects per second */
    uint32_t hold_s;       /* idle time before the memory reading */
    uint32_t ping_s;       /* CRLF keepalive interval */
    uint32_t timeout_s;    /* limit for the connect+register phase */
    uint32_t expires_s;
    char domain[256];
    char prefix[32];
    long pid;
    /* state */
    struct lws_context *ctx;
    struct conn *conns;
    uint32_t n_started;
    uint32_t n_open;
    uint32_t n_registered;  /* ever registered */
    uint32_t n_live_reg;    /* registered and still connected */
    uint32_t n_failed;
    uint32_t n_closed;
    uint32_t n_pongs;
    uint64_t t_start_us;
    uint64_t t_first_ok_us;
    uint64_t t_last_ok_us;
    long rss_before_kib;
    long rss_after_kib;
    bool is_done;
    uv_loop_t loop;
    void *foreign_loops[1];
    uv_timer_t tick;
    uint64_t t_tick_us;
    uint32_t ka_cursor;     /* next connection keepalive_tick looks at */
    uint64_t t_hold_until_us;
};

static struct wsload g;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static long read_rss_kib(long pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    }
    fclose(f);
    return kib;
}

static void conn_start(struct conn *c)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = g.ctx;
    ci.address = g.host;
    ci.port = g.port;
    ci.path = g.path;
    ci.host = g.host;
    ci.origin = g.host;
    ci.protocol = "sip";
    ci.iface = g.n_src ? g.src[c->idx % g.n_src] : NULL;
    ci.userdata = c;
    ci.pwsi = &c->wsi;
    ci.retry_and_idle_policy = &no_idle_policy;
    if (g.is_tls)
        ci.ssl_connection = LCCSCF_USE_SSL | LCCSCF_ALLOW_SELFSIGNED |
                            LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK | LCCSCF_ALLOW_INSECURE;
    c->state = CONN_CONNECTING;
    if (!lws_client_connect_via_info(&ci)) {
        c->state = CONN_FAILED;
        g.n_failed++;
    }
}

/* REGISTER for user <prefix><idx> (RFC 7118 §5: Via WS/WSS with an .invalid host). */
static size_t build_register(const struct conn *c, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
                     "REGISTER sip:%s SIP/2.0\r\n"
                     "Via: SIP/2.0/%s wsload%u.invalid;branch=z9hG4bKwl%u-%lu;rport\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:%s%u@%s>;tag=wl%u\r\n"
                     "To: <sip:%s%u@%s>\r\n"
                     "Call-ID: wsload-%u-%ld@wsload.invalid\r\n"
                     "CSeq: 1 REGISTER\r\n"
                     "Contact: <sip:%s%u@wsload%u.invalid;transport=ws>;expires=%u\r\n"
                     "Supported: path, outbound\r\n"
                     "User-Agent: sipedge-wsload\r\n"
                     "Content-Length: 0\r\n\r\n",
                     g.domain, g.is_tls ? "WSS" : "WS", c->idx, c->idx, (unsigned long)now_us(),
                     g.prefix, c->idx, g.domain, c->idx, g.prefix, c->idx, g.domain, c->idx,
                     (long)getpid(), g.prefix, c->idx, c->idx, g.expires_s);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void on_registered(void)
{
    uint64_t t = now_us();
    if (!g.t_first_ok_us)
        g.t_first_ok_us = t;
    g.t_last_ok_us = t;
    g.n_registered++;
    g.n_live_reg++;
}

static int on_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    struct conn *c = user; /* the connect info's userdata */
    unsigned char buf[LWS_PRE + WSLOAD_MSG_MAX];

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c && c->state != CONN_FAILED) {
            if (c->state == CONN_REGISTERED)
                g.n_live_reg--;
            c->state = CONN_FAILED;
            g.n_failed++;
            if (g.n_failed <= 5)
                fprintf(stderr, "wsload: connection %u failed: %s\n", c->idx,
                        in ? (const char *)in : "?");
        }
        if (c)
            c->wsi = NULL;
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!c)
            return -1;
        c->state = CONN_OPEN;
        g.n_open++;
        c->has_register_pending = true;
        c->ping_us = now_us();
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE: {
        size_t n = 0;
        if (c->has_register_pending) {
            c->has_register_pending = false;
            n = build_register(c, (char *)buf + LWS_PRE, WSLOAD_MSG_MAX);
        } else if (c->has_ping_pending) {
            c->has_ping_pending = false;
            memcpy(buf + LWS_PRE, "\r\n\r\n", 4);
            n = 4;
        }
        if (n && lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT) < (int)n)
            return -1;
        if (c->has_register_pending || c->has_ping_pending)
            lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (len == 2 && !memcmp(in, "\r\n", 2)) {
            g.n_pongs++;
        } else if (len > 12 && !memcmp(in, "SIP/2.0 ", 8)) {
            int code = atoi((const char *)in + 8);
            if (c->state == CONN_OPEN && code >= 200) {
                if (code < 300) {
                    c->state = CONN_REGISTERED;
                    on_registered();
                } else {
                    c->state = CONN_FAILED;
                    g.n_failed++;
                    if (g.n_failed <= 5)
                        fprintf(stderr, "wsload: REGISTER %u answered %d\n", c->idx, code);
                }
            }
        }
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Gone before the handshake finished without CLIENT_CONNECTION_ERROR (the
         * server's handshake timeout, a reset): count it, or the run never settles. */
        if (c && c->state == CONN_CONNECTING) {
            c->state = CONN_FAILED;
            g.n_failed++;
            c->wsi = NULL;
        }
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c) {
            if (c->state == CONN_REGISTERED)
                g.n_live_reg--;
            if (c->state == CONN_REGISTERED || c->state == CONN_OPEN)
                g.n_closed++;
            if (c->state == CONN_OPEN || c->state == CONN_REGISTERED)
                g.n_open--;
            if (c->state == CONN_OPEN) { /* closed before its REGISTER was answered */
                c->state = CONN_FAILED;
                g.n_failed++;
            }
            c->wsi = NULL;
        }
        return 0;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"sip", on_lws, 0, 2048, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static volatile sig_atomic_t g_interrupted;

/*
 * CRLF keepalives (RFC 5626 §4.4.1) from one pass over the connections per second, a
 * hundredth of them per 10 ms tick, instead of a per-connection lws timer: lws 4.1 keeps
 * its timers in one sorted list, and each insert walks all of them.
 */
static void keepalive_tick(uint64_t t)
{
    uint32_t n = g.n_started / 100 + 1;
    for (uint32_t k = 0; k < n && g.n_started; k++) {
        struct conn *c = &g.conns[g.ka_cursor];
        g.ka_cursor = (g.ka_cursor + 1) % g.n_started;
        if ((c->state == CONN_OPEN || c->state == CONN_REGISTERED) && c->wsi &&
            t - c->ping_us >= (uint64_t)g.ping_s * 1000000u) {
            c->ping_us = t;
            c->has_ping_pending = true;
            lws_callback_on_writable(c->wsi);
        }
    }
}

/* Every 10 ms: start the next batch of connections, send keepalives, watch the phases. */
static void on_tick(uv_timer_t *h)
{
    uint64_t t = now_us();
    (void)h;
    if (g_interrupted) {
        g.is_done = true;
        uv_stop(&g.loop);
        return;
    }
    uint64_t due = (uint64_t)g.rate * (t - g.t_start_us) / 1000000u + 1;
    while (g.n_started < g.n_conns && g.n_started < due)
        conn_start(&g.conns[g.n_started++]);
    keepalive_tick(t);

    uint32_t n_settled = g.n_registered + g.n_failed;
    bool is_setup_over = (g.n_started == g.n_conns && n_settled >= g.n_conns) ||
                         t - g.t_start_us > (uint64_t)g.timeout_s * 1000000u;
    if (is_setup_over && !g.t_hold_until_us) {
        g.t_hold_until_us = t + (uint64_t)g.hold_s * 1000000u;
        fprintf(stderr, "wsload: %u registered, %u failed; idle for %u s\n", g.n_registered,
                g.n_failed, g.hold_s);
    }
    if (g.t_hold_until_us && t >= g.t_hold_until_us) {
        if (g.pid > 0)
            g.rss_after_kib = read_rss_kib(g.pid);
        g.is_done = true;
        uv_stop(&g.loop);
        return;
    }
    if (t - g.t_tick_us > 5000000u) {
        g.t_tick_us = t;
        fprintf(stderr, "wsload: started %u open %u registered %u failed %u\n", g.n_started,
                g.n_open, g.n_registered, g.n_failed);
    }
}

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static int parse_url(const char *url)
{
    const char *p;
    if (!strncmp(url, "wss://", 6)) {
        g.is_tls = true;
        p = url + 6;
    } else if (!strncmp(url, "ws://", 5)) {
        p = url + 5;
    } else {
        return -EINVAL;
    }
    const char *slash = strchr(p, '/');
    const char *colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
    if (!colon)
        return -EINVAL;
    if ((size_t)(colon - p) >= sizeof(g.host))
        return -EINVAL;
    memcpy(g.host, p, (size_t)(colon - p));
    g.port = atoi(colon + 1);
    snprintf(g.path, sizeof(g.path), "%s", slash ? slash : "/");
    return g.port > 0 && g.port < 65536 ? 0 : -EINVAL;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: wsload --url ws[s]://HOST:PORT[/path] [options]\n"
            "  --conns N        connections (default 1000)\n"
            "  --src A,B,...    local source addresses, used round-robin\n"
            "  --rate N         connects per second (default 1000)\n"
            "  --domain D       SIP domain (default: the URL host)\n"
            "  --prefix P       user name prefix (default \"wl\")\n"
            "  --expires S      registration expiry (default 3600)\n"
            "  --ping S         CRLF keepalive interval (default 25)\n"
            "  --hold S         idle seconds before the memory reading (default 10)\n"
            "  --timeout S      limit for connecting and registering (default 120)\n"
            "  --pid PID        server process whose VmRSS is read\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},     {"conns", required_argument, NULL, 'n'},
        {"src", required_argument, NULL, 's'},     {"rate", required_argument, NULL, 'r'},
        {"domain", required_argument, NULL, 'd'},  {"prefix", required_argument, NULL, 'P'},
        {"expires", required_argument, NULL, 'e'}, {"ping", required_argument, NULL, 'k'},
        {"hold", required_argument, NULL, 'H'},    {"timeout", required_argument, NULL, 't'},
        {"pid", required_argument, NULL, 'p'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char *url = NULL;
    int o;
    g.n_conns = 1000;
    g.rate = 1000;
    g.expires_s = 3600;
    g.ping_s = 25;
    g.hold_s = 10;
    g.timeout_s = 120;
    snprintf(g.prefix, sizeof(g.prefix), "wl");
    while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (o) {
        case 'u':
            url = optarg;
            break;
        case 'n':
            g.n_conns = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 's':
            for (char *save = NULL, *tok = strtok_r(optarg, ",", &save);
                 tok && g.n_src < WSLOAD_MAX_SRC; tok = strtok_r(NULL, ",", &save))
                g.src[g.n_src++] = tok;
            break;
        case 'r':
            g.rate = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            snprintf(g.domain, sizeof(g.domain), "%s", optarg);
            break;
        case 'P':
            snprintf(g.prefix, sizeof(g.prefix), "%s", optarg);
            break;
        case 'e':
            g.expires_s = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            g.ping_s = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'H':
            g.hold_s = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 't':
            g.timeout_s = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'p':
            g.pid = strtol(optarg, NULL, 10);
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!url || parse_url(url) < 0 || g.n_conns == 0 || g.rate == 0 || g.ping_s == 0) {
        usage();
        return 2;
    }
    if (!g.domain[0])
        snprintf(g.domain, sizeof(g.domain), "%s", g.host);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < g.n_conns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < g.n_conns + 64)
            fprintf(stderr, "wsload: RLIMIT_NOFILE %llu is below %u connections\n",
                    (unsigned long long)rl.rlim_cur, g.n_conns);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);

    g.conns = calloc(g.n_conns, sizeof(*g.conns));
    if (!g.conns)
        return 1;
    for (uint32_t i = 0; i < g.n_conns; i++)
        g.conns[i].idx = i;

    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_LIBUV;
    info.timeout_secs = 30;
    /* One header table per handshake in flight; the default pool of 32 makes
     * thousands of handshakes queue behind each other. */
    info.max_http_header_pool = 4096;
    uv_loop_init(&g.loop);
    g.foreign_loops[0] = &g.loop;
    info.foreign_loops = g.foreign_loops;
    g.ctx = lws_create_context(&info);
    if (!g.ctx) {
        fprintf(stderr, "wsload: lws_create_context failed\n");
        return 1;
    }
    if (g.pid > 0)
        g.rss_before_kib = read_rss_kib(g.pid);
    g.t_start_us = now_us();
    g.t_tick_us = g.t_start_us;
    uv_timer_init(&g.loop, &g.tick);
    uv_timer_start(&g.tick, on_tick, 1, 10);
    uv_run(&g.loop, UV_RUN_DEFAULT);

    double setup_s = g.t_last_ok_us > g.t_start_us ? (g.t_last_ok_us - g.t_start_us) / 1e6 : 0;
    double reg_per_s = setup_s > 0 ? g.n_registered / setup_s : 0;
    double kib_per_conn = -1;
    /* Memory is charged to the connections that are registered and still open. */
    if (g.pid > 0 && g.rss_before_kib > 0 && g.rss_after_kib > 0 && g.n_live_reg)
        kib_per_conn = (double)(g.rss_after_kib - g.rss_before_kib) / g.n_live_reg;
    printf("wsload: url=%s conns=%u registered=%u live=%u failed=%u closed=%u pongs=%u "
           "setup_s=%.2f reg_per_s=%.0f rss_before_kib=%ld rss_after_kib=%ld "
           "kib_per_conn=%.2f\n",
           url, g.n_conns, g.n_registered, g.n_live_reg, g.n_failed, g.n_closed, g.n_pongs,
           setup_s, reg_per_s, g.rss_before_kib, g.rss_after_kib, kib_per_conn);
    fflush(stdout);
    /* Foreign-loop teardown: destroy, let lws' handles close, destroy again. */
    lws_context_destroy(g.ctx);
    uv_close((uv_handle_t *)&g.tick, NULL);
    uv_run(&g.loop, UV_RUN_DEFAULT);
    lws_context_destroy(g.ctx);
    uv_loop_close(&g.loop);
    free(g.conns);
    return g.n_live_reg == g.n_conns ? 0 : 1;
}
