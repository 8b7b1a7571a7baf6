/*
 * sipload: a UDP REGISTER load generator with digest authentication, cheaper per message
 * than the edge it measures, so one small machine can drive sipedge and still measure it.
 *
 * Users PREFIX<START>..PREFIX<START+N-1> with password "pw" + user name are spread over S
 * non-blocking sockets (user i on socket i % S) bound on the --src addresses in turn.
 * Each user registers (REGISTER, 401, answer with MD5 digest, qop=auth when offered, 200),
 * then refreshes with CSeq+1 on the same Call-ID, token-paced at --rate per second in
 * total (or --open-loop), for --duration seconds. Every message text is built once per
 * user; a request only rewrites CSeq, branch, nc and response in place. One thread,
 * epoll, recvmmsg/sendmmsg batches of 64, no retransmissions: an unanswered request
 * counts as a timeout after --timeout ms. One key=value block on stdout at the end:
 * latency_* over every answer, refresh_latency_* over the refresh phase's answers only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sipedge/config_addr.h"

#define BATCH 64
#define RX_BUF 4096
#define PREFIX_CAP 640
#define AUTH_CAP 896
#define CSEQ_W 10
#define MAX_SOCKETS 16384
#define MAX_SRCS 64

enum phase { PH_REGISTER, PH_REFRESH, PH_DRAIN, PH_DONE };

struct user {
    char prefix[PREFIX_CAP]; /* request line .. Expires, CSeq and branch rewritten per send */
    char auth[AUTH_CAP];     /* Authorization .. end of message, rebuilt on a new nonce */
    uint16_t prefix_len, auth_len;
    uint16_t off_branch, off_cseq;          /* CSEQ_W digits each, in prefix */
    uint16_t off_resp, off_nc;              /* in auth: 32 hex, 8 hex (nc only with qop) */
    uint16_t nonce_off, nonce_len, uri_len; /* nonce inside auth, for the digest */
    uint32_t cseq, nc;
    uint64_t sent_ns;
    char ha1[32];
    char realm[64];
    bool has_auth, qop, outstanding, sent_auth, registered, failed;
    uint8_t auth_401s; /* consecutive 401s to requests that carried credentials */
    int sock;
};

struct sock {
    int fd;
    struct sockaddr_in local;
    uint32_t *queue; /* users to send now (answers to challenges), at most one each */
    uint32_t queued;
    uint32_t *members; /* users of this socket */
    uint32_t nmembers, rr;
    uint32_t outstanding;
};

struct hist {
    uint64_t b[64 * 32];
    uint64_t n;
};

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static struct {
    struct sockaddr_in to;
    const char *domain, *prefix;
    uint32_t users, start, nsock, expires, max_out;
    double rate, duration, timeout_ms, reg_timeout_s;
    bool open_loop;
    struct in_addr srcs[MAX_SRCS];
    int nsrcs;
} o = {.prefix = "u",
       .users = 100,
       .start = 1000,
       .nsock = 1,
       .expires = 600,
       .max_out = 1024,
       .rate = 1000,
       .duration = 10,
       .timeout_ms = 2000,
       .reg_timeout_s = 10};

static struct user *U;
static struct sock S[MAX_SOCKETS];
static char g_ruri[128];
static size_t g_ruri_len;
static char g_ha2[32];
static EVP_MD_CTX *g_md_ctx;
static EVP_MD *g_md5;
static struct hist g_lat, g_lat_refresh;
static int g_pid;
static struct {
    uint64_t sent, recv, ok, c401, other, timeouts, stray, refresh_ok, registered, failed;
} st;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- latency histogram: 32 linear sub-buckets per power of two of microseconds ---- */

static unsigned hist_index(uint64_t us)
{
    if (us < 32)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* >= 5 */
    unsigned idx = (e - 4) * 32 + (unsigned)((us >> (e - 5)) & 31);
    return idx < 64 * 32 ? idx : 64 * 32 - 1;
}

static uint64_t hist_value(unsigned idx)
{
    if (idx < 32)
        return idx;
    unsigned e = idx / 32 + 4, m = idx % 32;
    return ((uint64_t)(32 + m) << (e - 5)) + (1ull << (e - 5)) / 2;
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->b[hist_index(us)]++;
    h->n++;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)(p * (double)h->n + 0.999999), acc = 0;
    if (want < 1)
        want = 1;
    for (unsigned i = 0; i < 64 * 32; i++) {
        acc += h->b[i];
        if (acc >= want)
            return hist_value(i);
    }
    return hist_value(64 * 32 - 1);
}

/* ---- digest ---- */

static const char HEX[] = "0123456789abcdef";

static void md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[32])
{
    unsigned char d[16];
    EVP_DigestInit_ex(g_md_ctx, g_md5, NULL);
    EVP_DigestUpdate(g_md_ctx, a, alen);
    if (blen)
        EVP_DigestUpdate(g_md_ctx, b, blen);
    EVP_DigestFinal_ex(g_md_ctx, d, NULL);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = HEX[d[i] >> 4];
        out[2 * i + 1] = HEX[d[i] & 15];
    }
}

static void put_dec(char *p, uint32_t v, int w)
{
    for (int i = w - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

static void put_hex8(char *p, uint32_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = HEX[v & 15];
        v >>= 4;
    }
}

/* ---- message text ---- */

static void user_name(uint32_t i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%u", o.prefix, o.start + i);
}

static int build_prefix(uint32_t i)
{
    struct user *u = &U[i];
    struct sock *s = &S[u->sock];
    char name[64], src[INET_ADDRSTRLEN];
    user_name(i, name, sizeof(name));
    inet_ntop(AF_INET, &s->local.sin_addr, src, sizeof(src));
    unsigned port = ntohs(s->local.sin_port);
    int n = snprintf(u->prefix, PREFIX_CAP,
                     "REGISTER %s SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP %s:%u;rport;branch=z9hG4bKsl%u.%0*u\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:%s@%s>;tag=sl%u\r\n"
                     "To: <sip:%s@%s>\r\n"
                     "Call-ID: sl%u-%d@%s\r\n"
                     "CSeq: %0*u REGISTER\r\n"
                     "Contact: <sip:%s@%s:%u>\r\n"
                     "Expires: %u\r\n",
                     g_ruri, src, port, i, CSEQ_W, 0u, name, o.domain, i, name, o.domain, i, g_pid,
                     src, CSEQ_W, 0u, name, src, port, o.expires);
    if (n < 0 || n >= PREFIX_CAP)
        return -1;
    u->prefix_len = (uint16_t)n;
    char *b = strstr(u->prefix, ";branch=z9hG4bKsl");
    b = strchr(b + 17, '.') + 1;
    u->off_branch = (uint16_t)(b - u->prefix);
    u->off_cseq = (uint16_t)(strstr(u->prefix, "\r\nCSeq: ") + 8 - u->prefix);
    return 0;
}

struct challenge {
    const char *realm, *nonce, *opaque, *qop;
    size_t realm_len, nonce_len, opaque_len, qop_len;
    bool stale, md5;
};

static int build_auth(uint32_t i, const struct challenge *c)
{
    struct user *u = &U[i];
    char name[64];
    user_name(i, name, sizeof(name));
    if (c->realm_len >= sizeof(u->realm))
        return -1;
    if (!u->ha1[0] || strlen(u->realm) != c->realm_len ||
        memcmp(u->realm, c->realm, c->realm_len) != 0) {
        char buf[256];
        memcpy(u->realm, c->realm, c->realm_len);
        u->realm[c->realm_len] = '\0';
        int n = snprintf(buf, sizeof(buf), "%s:%s:pw%s", name, u->realm, name);
        if (n < 0 || (size_t)n >= sizeof(buf))
            return -1;
        md5_hex(buf, (size_t)n, NULL, 0, u->ha1);
    }
    bool qop = false;
    for (size_t k = 0; k + 4 <= c->qop_len; k++)
        if (memcmp(c->qop + k, "auth", 4) == 0 &&
            (k + 4 == c->qop_len || c->qop[k + 4] == ',' || c->qop[k + 4] == ' ') &&
            (k == 0 || c->qop[k - 1] == ',' || c->qop[k - 1] == ' '))
            qop = true;
    int n = snprintf(u->auth, AUTH_CAP,
                     "Authorization: Digest username=\"%s\", realm=\"%s\", nonce=\"%.*s\", "
                     "uri=\"%s\", response=\"%032u\", algorithm=MD5",
                     name, u->realm, (int)c->nonce_len, c->nonce, g_ruri, 0u);
    if (n < 0 || n >= AUTH_CAP - 200)
        return -1;
    u->nonce_off = (uint16_t)(strstr(u->auth, "nonce=\"") + 7 - u->auth);
    u->nonce_len = (uint16_t)c->nonce_len;
    u->off_resp = (uint16_t)(strstr(u->auth, "response=\"") + 10 - u->auth);
    size_t len = (size_t)n;
    if (c->opaque) {
        n = snprintf(u->auth + len, AUTH_CAP - len, ", opaque=\"%.*s\"", (int)c->opaque_len,
                     c->opaque);
        if (n < 0 || (size_t)n >= AUTH_CAP - len - 100)
            return -1;
        len += (size_t)n;
    }
    if (qop) {
        n = snprintf(u->auth + len, AUTH_CAP - len, ", qop=auth, nc=00000000, cnonce=\"%08x\"",
                     i * 2654435761u ^ (unsigned)g_pid);
        u->off_nc = (uint16_t)(len + 15);
        len += (size_t)n;
    }
    n = snprintf(u->auth + len, AUTH_CAP - len, "\r\nContent-Length: 0\r\n\r\n");
    len += (size_t)n;
    u->auth_len = (uint16_t)len;
    u->qop = qop;
    u->nc = 0;
    u->has_auth = true;
    return 0;
}

/* Next request of user i: CSeq+1, and with credentials nc+1 and a fresh response. */
static void prepare(uint32_t i)
{
    struct user *u = &U[i];
    u->cseq++;
    put_dec(u->prefix + u->off_branch, u->cseq, CSEQ_W);
    put_dec(u->prefix + u->off_cseq, u->cseq, CSEQ_W);
    u->sent_auth = u->has_auth;
    if (!u->has_auth)
        return;
    char buf[512];
    size_t n = 0;
    memcpy(buf, u->ha1, 32);
    buf[32] = ':';
    n = 33;
    memcpy(buf + n, u->auth + u->nonce_off, u->nonce_len);
    n += u->nonce_len;
    buf[n++] = ':';
    if (u->qop) {
        u->nc++;
        put_hex8(u->auth + u->off_nc, u->nc);
        memcpy(buf + n, u->auth + u->off_nc, 8);
        n += 8;
        buf[n++] = ':';
        /* cnonce sits right after nc=XXXXXXXX, cnonce=" */
        memcpy(buf + n, u->auth + u->off_nc + 18, 8);
        n += 8;
        memcpy(buf + n, ":auth:", 6);
        n += 6;
    }
    memcpy(buf + n, g_ha2, 32);
    n += 32;
    md5_hex(buf, n, NULL, 0, u->auth + u->off_resp);
}

static const char CL0[] = "Content-Length: 0\r\n\r\n";

/* Sends the given users of socket s in sendmmsg batches. Returns how many went out. */
static uint32_t send_users(struct sock *s, const uint32_t *ids, uint32_t n)
{
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH][2];
    uint32_t done = 0;
    while (done < n) {
        uint32_t k = n - done < BATCH ? n - done : BATCH;
        uint64_t t = now_ns();
        for (uint32_t j = 0; j < k; j++) {
            uint32_t i = ids[done + j];
            struct user *u = &U[i];
            prepare(i);
            iov[j][0].iov_base = u->prefix;
            iov[j][0].iov_len = u->prefix_len;
            if (u->has_auth) {
                iov[j][1].iov_base = u->auth;
                iov[j][1].iov_len = u->auth_len;
            } else {
                iov[j][1].iov_base = (void *)CL0;
                iov[j][1].iov_len = sizeof(CL0) - 1;
            }
            memset(&mm[j], 0, sizeof(mm[j]));
            mm[j].msg_hdr.msg_iov = iov[j];
            mm[j].msg_hdr.msg_iovlen = 2;
            mm[j].msg_hdr.msg_name = &o.to;
            mm[j].msg_hdr.msg_namelen = sizeof(o.to);
            u->sent_ns = t;
        }
        int r = sendmmsg(s->fd, mm, k, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            r = 0;
        for (uint32_t j = 0; j < (uint32_t)r; j++) {
            U[ids[done + j]].outstanding = true;
            s->outstanding++;
        }
        st.sent += (uint64_t)r;
        /* Requests the socket did not take: undo the CSeq step, they stay idle. */
        for (uint32_t j = (uint32_t)r; j < k; j++) {
            struct user *u = &U[ids[done + j]];
            u->cseq--;
            if (u->sent_auth && u->qop)
                u->nc--;
        }
        done += (uint32_t)r;
        if ((uint32_t)r < k)
            break;
    }
    return done;
}

/* ---- response scan ---- */

static const char *find_line_end(const char *p, const char *end)
{
    const char *q = memchr(p, '\n', (size_t)(end - p));
    return q ? q : end;
}

static bool hdr_is(const char *p, const char *le, const char *name, size_t nlen, const char **val)
{
    if ((size_t)(le - p) <= nlen || strncasecmp(p, name, nlen) != 0)
        return false;
    const char *v = p + nlen;
    while (v < le && (*v == ' ' || *v == '\t'))
        v++;
    if (v >= le || *v != ':')
        return false;
    v++;
    while (v < le && (*v == ' ' || *v == '\t'))
        v++;
    *val = v;
    return true;
}

/* Parses one Digest challenge (the value after "Digest"); sets c for MD5 or no algorithm. */
static void parse_challenge(const char *p, const char *le, struct challenge *c)
{
    memset(c, 0, sizeof(*c));
    c->md5 = true;
    while (p < le) {
        while (p < le && (*p == ' ' || *p == ',' || *p == '\t' || *p == '\r'))
            p++;
        const char *k = p;
        while (p < le && *p != '=' && *p != ',')
            p++;
        size_t klen = (size_t)(p - k);
        while (klen && (k[klen - 1] == ' ' || k[klen - 1] == '\t'))
            klen--;
        if (p >= le || *p != '=')
            continue;
        p++;
        while (p < le && *p == ' ')
            p++;
        const char *v;
        size_t vlen;
        if (p < le && *p == '"') {
            v = ++p;
            while (p < le && *p != '"')
                p++;
            vlen = (size_t)(p - v);
            if (p < le)
                p++;
        } else {
            v = p;
            while (p < le && *p != ',' && *p != ' ' && *p != '\r')
                p++;
            vlen = (size_t)(p - v);
        }
        if (klen == 5 && strncasecmp(k, "realm", 5) == 0) {
            c->realm = v;
            c->realm_len = vlen;
        } else if (klen == 5 && strncasecmp(k, "nonce", 5) == 0) {
            c->nonce = v;
            c->nonce_len = vlen;
        } else if (klen == 6 && strncasecmp(k, "opaque", 6) == 0) {
            c->opaque = v;
            c->opaque_len = vlen;
        } else if (klen == 3 && strncasecmp(k, "qop", 3) == 0) {
            c->qop = v;
            c->qop_len = vlen;
        } else if (klen == 5 && strncasecmp(k, "stale", 5) == 0) {
            c->stale = vlen == 4 && strncasecmp(v, "true", 4) == 0;
        } else if (klen == 9 && strncasecmp(k, "algorithm", 9) == 0) {
            c->md5 = vlen == 3 && strncasecmp(v, "MD5", 3) == 0;
        }
    }
}

static enum phase g_phase;

static void handle_response(struct sock *s, const char *buf, size_t len, uint64_t t)
{
    const char *end = buf + len;
    if (len < 12 || memcmp(buf, "SIP/2.0 ", 8) != 0) {
        st.stray++;
        return;
    }
    unsigned code =
        (unsigned)(buf[8] - '0') * 100 + (unsigned)(buf[9] - '0') * 10 + (unsigned)(buf[10] - '0');
    long idx = -1;
    unsigned long cseq = 0;
    const char *www[8];
    const char *www_end[8];
    int nwww = 0;
    const char *p = find_line_end(buf, end) + 1;
    while (p < end) {
        const char *le = find_line_end(p, end);
        if (le - p <= 1)
            break;
        const char *v;
        if (hdr_is(p, le, "Call-ID", 7, &v) || hdr_is(p, le, "i", 1, &v)) {
            if (le - v > 2 && v[0] == 's' && v[1] == 'l')
                idx = strtol(v + 2, NULL, 10);
        } else if (hdr_is(p, le, "CSeq", 4, &v)) {
            cseq = strtoul(v, NULL, 10);
        } else if (code == 401 && nwww < 8 && hdr_is(p, le, "WWW-Authenticate", 16, &v)) {
            if (le - v > 7 && strncasecmp(v, "Digest", 6) == 0) {
                www[nwww] = v + 6;
                www_end[nwww++] = le;
            }
        }
        p = le + 1;
    }
    if (idx < 0 || (uint64_t)idx >= o.users || &S[U[idx].sock] != s) {
        st.stray++;
        return;
    }
    struct user *u = &U[idx];
    if (!u->outstanding || cseq != u->cseq) {
        st.stray++;
        return;
    }
    if (code < 200)
        return;
    u->outstanding = false;
    s->outstanding--;
    hist_add(&g_lat, (t - u->sent_ns) / 1000);
    if (g_phase == PH_REFRESH)
        hist_add(&g_lat_refresh, (t - u->sent_ns) / 1000);
    if (code >= 200 && code < 300) {
        st.ok++;
        if (g_phase == PH_REFRESH)
            st.refresh_ok++;
        u->auth_401s = 0;
        if (!u->registered) {
            u->registered = true;
            st.registered++;
        }
        return;
    }
    if (code != 401) {
        st.other++;
        return;
    }
    st.c401++;
    struct challenge c;
    bool found = false;
    for (int k = 0; k < nwww && !found; k++) {
        parse_challenge(www[k], www_end[k], &c);
        found = c.md5 && c.nonce && c.realm;
    }
    bool same_nonce = found && u->has_auth && c.nonce_len == u->nonce_len &&
                      memcmp(c.nonce, u->auth + u->nonce_off, c.nonce_len) == 0;
    if (u->sent_auth)
        u->auth_401s++;
    /* Credentials refused for a nonce we already answered, or twice in a row: wrong. */
    if (!found || (u->sent_auth && same_nonce && !c.stale) || u->auth_401s >= 2 ||
        g_phase >= PH_DRAIN) {
        if (found && g_phase >= PH_DRAIN)
            return;
        if (!u->failed) {
            u->failed = true;
            st.failed++;
            if (u->registered) {
                u->registered = false;
                st.registered--;
            }
        }
        return;
    }
    if (!same_nonce && build_auth((uint32_t)idx, &c) < 0) {
        u->failed = true;
        st.failed++;
        return;
    }
    s->queue[s->queued++] = (uint32_t)idx;
}

static char g_rx[BATCH][RX_BUF];

static void drain_socket(struct sock *s)
{
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    for (;;) {
        memset(mm, 0, sizeof(mm));
        for (int j = 0; j < BATCH; j++) {
            iov[j].iov_base = g_rx[j];
            iov[j].iov_len = RX_BUF;
            mm[j].msg_hdr.msg_iov = &iov[j];
            mm[j].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(s->fd, mm, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break;
        uint64_t t = now_ns();
        st.recv += (uint64_t)n;
        for (int j = 0; j < n; j++)
            handle_response(s, g_rx[j], mm[j].msg_len, t);
        if (s->queued) {
            send_users(s, s->queue, s->queued);
            s->queued = 0;
        }
        if (n < BATCH)
            break;
    }
}

/* Picks up to `want` idle users of socket s that the current phase sends, round robin. */
static uint32_t pick(struct sock *s, uint32_t want, uint32_t *out)
{
    uint32_t got = 0;
    for (uint32_t scanned = 0; scanned < s->nmembers && got < want; scanned++) {
        uint32_t i = s->members[s->rr];
        s->rr = s->rr + 1 == s->nmembers ? 0 : s->rr + 1;
        struct user *u = &U[i];
        if (u->outstanding || u->failed)
            continue;
        if (g_phase == PH_REGISTER ? u->registered : !u->registered)
            continue;
        out[got++] = i;
    }
    return got;
}

static void check_timeouts(uint64_t t)
{
    uint64_t lim = (uint64_t)(o.timeout_ms * 1e6);
    for (uint32_t i = 0; i < o.users; i++) {
        struct user *u = &U[i];
        if (u->outstanding && t - u->sent_ns >= lim) {
            u->outstanding = false;
            S[u->sock].outstanding--;
            st.timeouts++;
        }
    }
}

static uint32_t outstanding_total(void)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < o.nsock; k++)
        n += S[k].outstanding;
    return n;
}

/* "ip:port" (IPv4) into *out, through the config parser every sipedge address uses. */
static int parse_addr(const char *s, struct sockaddr_in *out)
{
    struct config_addr a;
    if (config_addr_parse(s, &a) < 0 || a.ss.ss_family != AF_INET)
        return -1;
    memcpy(out, &a.ss, sizeof(*out));
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sipload --to ADDR:PORT [options]\n"
               "REGISTER load over UDP with MD5 digest: each user registers (401, answer, 200),\n"
               "then refreshes on its Call-ID at a fixed total rate; key=value results on stdout.\n"
               "  --to ADDR:PORT         where REGISTERs go (required)\n"
               "  --users N              users (100)\n"
               "  --start U              first user number (1000): users PREFIX<U>..\n"
               "  --prefix P             user name prefix (\"u\"); password is \"pw\" + user name\n"
               "  --sockets S            source sockets (1, at most 16384), user i on socket i %% S\n"
               "  --src LIST             comma-separated source addresses (127.0.0.1), sockets\n"
               "                         bound on them in turn, ephemeral ports\n"
               "  --domain D             Request-URI and To/From domain (the --to address)\n"
               "  --expires E            Expires of every REGISTER (600)\n"
               "  --rate R               offered REGISTERs per second in total (1000), also\n"
               "                         paces first registrations; answers to 401 go at once\n"
               "  --open-loop            no pacing: as fast as --max-outstanding allows\n"
               "  --duration SECONDS     refresh phase length (10)\n"
               "  --register-timeout S   deadline for all first registrations (10)\n"
               "  --timeout MS           an unanswered request counts as a timeout (2000)\n"
               "  --max-outstanding K    requests in flight per socket (1024)\n"
               "  --help                 this text\n"
               "Exit status: 0 when every user registered, 1 otherwise, 2 on bad usage.\n");
}

/* Room for nsock sockets plus stdio and epoll: the soft descriptor limit raised towards
 * the hard one when it is lower. */
static int raise_fd_limit(uint32_t nsock)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)nsock + 32;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        fprintf(stderr, "sipload: %u sockets need %llu descriptors, the hard limit is %llu\n",
                nsock, (unsigned long long)want, (unsigned long long)rl.rlim_max);
        return -1;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("sipload: setrlimit");
        return -1;
    }
    return 0;
}

static int setup(void)
{
    if (raise_fd_limit(o.nsock) < 0)
        return -1;
    if (o.nsrcs == 0) {
        inet_pton(AF_INET, "127.0.0.1", &o.srcs[0]);
        o.nsrcs = 1;
    }
    for (uint32_t k = 0; k < o.nsock; k++) {
        struct sock *s = &S[k];
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s->fd < 0) {
            perror("sipload: socket");
            return -1;
        }
        int size = 4 * 1024 * 1024;
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
        setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        memset(&s->local, 0, sizeof(s->local));
        s->local.sin_family = AF_INET;
        s->local.sin_addr = o.srcs[k % (uint32_t)o.nsrcs];
        if (bind(s->fd, (struct sockaddr *)&s->local, sizeof(s->local)) < 0) {
            perror("sipload: bind");
            return -1;
        }
        socklen_t sl = sizeof(s->local);
        getsockname(s->fd, (struct sockaddr *)&s->local, &sl);
        uint32_t cap = o.users / o.nsock + 1;
        s->queue = calloc(cap, sizeof(uint32_t));
        s->members = calloc(cap, sizeof(uint32_t));
        if (!s->queue || !s->members)
            return -1;
    }
    U = calloc(o.users, sizeof(*U));
    if (!U)
        return -1;
    for (uint32_t i = 0; i < o.users; i++) {
        U[i].sock = (int)(i % o.nsock);
        struct sock *s = &S[U[i].sock];
        s->members[s->nmembers++] = i;
        if (build_prefix(i) < 0) {
            fprintf(stderr, "sipload: message too long\n");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        O_TO = 1,
        O_USERS,
        O_START,
        O_PREFIX,
        O_SOCKETS,
        O_SRC,
        O_DOMAIN,
        O_EXPIRES,
        O_RATE,
        O_OPEN,
        O_DURATION,
        O_REGTO,
        O_TIMEOUT,
        O_MAXOUT,
        O_HELP
    };
    static const struct option opts[] = {
        {"to", required_argument, 0, O_TO},
        {"users", required_argument, 0, O_USERS},
        {"start", required_argument, 0, O_START},
        {"prefix", required_argument, 0, O_PREFIX},
        {"sockets", required_argument, 0, O_SOCKETS},
        {"src", required_argument, 0, O_SRC},
        {"domain", required_argument, 0, O_DOMAIN},
        {"expires", required_argument, 0, O_EXPIRES},
        {"rate", required_argument, 0, O_RATE},
        {"open-loop", no_argument, 0, O_OPEN},
        {"duration", required_argument, 0, O_DURATION},
        {"register-timeout", required_argument, 0, O_REGTO},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"max-outstanding", required_argument, 0, O_MAXOUT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    bool have_to = false;
    static char domain_buf[64];
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_TO:
            if (parse_addr(optarg, &o.to) < 0) {
                fprintf(stderr, "sipload: bad --to %s\n", optarg);
                return 2;
            }
            have_to = true;
            break;
        case O_USERS:
            o.users = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case O_START:
            o.start = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case O_PREFIX:
            o.prefix = optarg;
            break;
        case O_SOCKETS:
            o.nsock = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case O_SRC: {
            char *save = NULL;
            for (char *t = strtok_r(optarg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o.nsrcs == MAX_SRCS || inet_pton(AF_INET, t, &o.srcs[o.nsrcs]) != 1) {
                    fprintf(stderr, "sipload: bad --src address %s\n", t);
                    return 2;
                }
                o.nsrcs++;
            }
            break;
        }
        case O_DOMAIN:
            o.domain = optarg;
            break;
        case O_EXPIRES:
            o.expires = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case O_RATE:
            o.rate = strtod(optarg, NULL);
            break;
        case O_OPEN:
            o.open_loop = true;
            break;
        case O_DURATION:
            o.duration = strtod(optarg, NULL);
            break;
        case O_REGTO:
            o.reg_timeout_s = strtod(optarg, NULL);
            break;
        case O_TIMEOUT:
            o.timeout_ms = strtod(optarg, NULL);
            break;
        case O_MAXOUT:
            o.max_out = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!have_to || optind != argc || o.users == 0 || o.nsock == 0 || o.nsock > MAX_SOCKETS ||
        o.nsock > o.users || (!o.open_loop && !(o.rate > 0)) || !(o.duration >= 0) ||
        !(o.timeout_ms > 0) || o.max_out == 0 || !(o.reg_timeout_s > 0) || strlen(o.prefix) > 32) {
        usage(stderr);
        return 2;
    }
    if (!o.domain) {
        inet_ntop(AF_INET, &o.to.sin_addr, domain_buf, sizeof(domain_buf));
        o.domain = domain_buf;
    }
    if (strlen(o.domain) > 48) {
        fprintf(stderr, "sipload: --domain too long\n");
        return 2;
    }
    g_ruri_len = (size_t)snprintf(g_ruri, sizeof(g_ruri), "sip:%s", o.domain);
    g_md_ctx = EVP_MD_CTX_new();
    g_md5 = EVP_MD_fetch(NULL, "MD5", NULL);
    if (!g_md_ctx || !g_md5) {
        fprintf(stderr, "sipload: no MD5 in OpenSSL\n");
        return 1;
    }
    {
        char a2[160];
        int n = snprintf(a2, sizeof(a2), "REGISTER:%s", g_ruri);
        md5_hex(a2, (size_t)n, NULL, 0, g_ha2);
    }
    g_pid = (int)getpid();
    if (setup() < 0)
        return 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int ep = epoll_create1(0);
    for (uint32_t k = 0; k < o.nsock; k++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = k};
        epoll_ctl(ep, EPOLL_CTL_ADD, S[k].fd, &ev);
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = now_ns(), t_last = t0, t_scan = t0;
    uint64_t reg_deadline = t0 + (uint64_t)(o.reg_timeout_s * 1e9);
    uint64_t t_reg_done = 0, t_refresh_end = 0, drain_end = 0;
    double tokens = 0, burst = o.rate / 10 > 8 ? o.rate / 10 : 8;
    /* Send when about 1 ms of tokens are there, so replies waking the loop do not split
     * the offered load into one-datagram sendmmsg calls. */
    double min_batch = o.rate / 1000 < 1 ? 1 : o.rate / 1000 > BATCH ? BATCH : o.rate / 1000;
    uint32_t sock_rr = 0;
    uint32_t *pickbuf = calloc(BATCH, sizeof(uint32_t));
    g_phase = PH_REGISTER;

    while (g_phase != PH_DONE) {
        uint64_t t = now_ns();
        if (g_stop)
            break;
        if (g_phase == PH_REGISTER && (st.registered + st.failed == o.users || t >= reg_deadline)) {
            g_phase = PH_REFRESH;
            t_reg_done = t;
            t_refresh_end = t + (uint64_t)(o.duration * 1e9);
            tokens = 0;
            t_last = t;
            fprintf(stderr, "sipload: %llu of %u registered in %.3f s, refreshing\n",
                    (unsigned long long)st.registered, o.users, (double)(t - t0) / 1e9);
        }
        if (g_phase == PH_REFRESH && t >= t_refresh_end) {
            g_phase = PH_DRAIN;
            t_refresh_end = t;
            drain_end = t + (uint64_t)(o.timeout_ms * 1e6) + 20000000u;
        }
        if (g_phase == PH_DRAIN && (outstanding_total() == 0 || t >= drain_end)) {
            if (t >= drain_end)
                check_timeouts(UINT64_MAX / 2 + t); /* whatever is left counts as timed out */
            g_phase = PH_DONE;
            break;
        }
        if (t - t_scan >= 20000000u) {
            check_timeouts(t);
            t_scan = t;
        }

        /* Send what the pacing allows. */
        if (g_phase <= PH_REFRESH) {
            if (!o.open_loop) {
                tokens += (double)(t - t_last) * 1e-9 * o.rate;
                if (tokens > burst)
                    tokens = burst;
            }
            t_last = t;
            for (uint32_t tries = 0; tries < o.nsock; tries++) {
                if (!o.open_loop && tokens < (tries ? 1 : min_batch))
                    break;
                struct sock *s = &S[sock_rr];
                sock_rr = sock_rr + 1 == o.nsock ? 0 : sock_rr + 1;
                uint32_t room = s->outstanding < o.max_out ? o.max_out - s->outstanding : 0;
                uint32_t want = room < BATCH ? room : BATCH;
                if (!o.open_loop && (double)want > tokens)
                    want = (uint32_t)tokens;
                if (!want)
                    continue;
                uint32_t n = pick(s, want, pickbuf);
                n = send_users(s, pickbuf, n);
                if (!o.open_loop)
                    tokens -= n;
            }
        }

        /* Wait for replies, at most until the next token or the next timeout scan. */
        int wait_ms = 20;
        if (g_phase <= PH_REFRESH) {
            if (o.open_loop)
                wait_ms = outstanding_total() < o.max_out * o.nsock ? 0 : 20;
            else if (tokens < min_batch)
                wait_ms = (int)((min_batch - tokens) * 1000 / o.rate) + 1;
            else
                wait_ms = 1;
            if (wait_ms > 20)
                wait_ms = 20;
        }
        struct epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, wait_ms);
        for (int j = 0; j < n; j++)
            drain_socket(&S[evs[j].data.u32]);
    }
    uint64_t t_end = now_ns();
    getrusage(RUSAGE_SELF, &ru1);
    if (!t_reg_done)
        t_reg_done = t_end;
    if (!t_refresh_end || t_refresh_end < t_reg_done)
        t_refresh_end = t_end;

    double cpu_us = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1e6 +
                    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
                    (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6 +
                    (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);
    double msgs = (double)(st.sent + st.recv);
    double refresh_s = (double)(t_refresh_end - t_reg_done) / 1e9;
    double rate200 = refresh_s > 0 ? (double)st.refresh_ok / refresh_s : 0;
    printf("users=%u\nregistered=%llu\nfailed=%llu\nsent=%llu\nreceived=%llu\nok_200=%llu\n"
           "challenged_401=%llu\nother_final=%llu\ntimeouts=%llu\nstray=%llu\n"
           "register_seconds=%.3f\nrefresh_seconds=%.3f\nrefresh_200=%llu\n"
           "offered_rate=%.0f\nrate_200=%.1f\nlatency_p50_us=%llu\nlatency_p90_us=%llu\n"
           "latency_p99_us=%llu\nrefresh_latency_p50_us=%llu\nrefresh_latency_p90_us=%llu\n"
           "refresh_latency_p99_us=%llu\ncpu_us=%.0f\ncpu_us_per_msg=%.3f\ninterrupted=%d\n",
           o.users, (unsigned long long)st.registered, (unsigned long long)st.failed,
           (unsigned long long)st.sent, (unsigned long long)st.recv, (unsigned long long)st.ok,
           (unsigned long long)st.c401, (unsigned long long)st.other,
           (unsigned long long)st.timeouts, (unsigned long long)st.stray,
           (double)(t_reg_done - t0) / 1e9, refresh_s, (unsigned long long)st.refresh_ok,
           o.open_loop ? 0.0 : o.rate, rate200, (unsigned long long)hist_pct(&g_lat, 0.50),
           (unsigned long long)hist_pct(&g_lat, 0.90), (unsigned long long)hist_pct(&g_lat, 0.99),
           (unsigned long long)hist_pct(&g_lat_refresh, 0.50),
           (unsigned long long)hist_pct(&g_lat_refresh, 0.90),
           (unsigned long long)hist_pct(&g_lat_refresh, 0.99), cpu_us,
           msgs > 0 ? cpu_us / msgs : 0.0, g_stop ? 1 : 0);
    printf(
        "# sipload: %llu/%u registered (%llu failed), %llu sent, %llu 200, %llu 401, %llu other, "
        "%llu timeouts; %.1f 200/s over %.2f s of refreshes (offered %s); latency "
        "p50/p90/p99 %llu/%llu/%llu us; %.2f us CPU per message\n",
        (unsigned long long)st.registered, o.users, (unsigned long long)st.failed,
        (unsigned long long)st.sent, (unsigned long long)st.ok, (unsigned long long)st.c401,
        (unsigned long long)st.other, (unsigned long long)st.timeouts, rate200, refresh_s,
        o.open_loop ? "open loop" : "paced", (unsigned long long)hist_pct(&g_lat, 0.50),
        (unsigned long long)hist_pct(&g_lat, 0.90), (unsigned long long)hist_pct(&g_lat, 0.99),
        msgs > 0 ? cpu_us / msgs : 0.0);
    fflush(stdout);
    for (uint32_t k = 0; k < o.nsock; k++) {
        close(S[k].fd);
        free(S[k].queue);
        free(S[k].members);
    }
    close(ep);
    free(pickbuf);
    free(U);
    EVP_MD_free(g_md5);
    EVP_MD_CTX_free(g_md_ctx);
    return st.registered == o.users ? 0 : 1;
}
