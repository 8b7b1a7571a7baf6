/*
 * ban_nft: bans as nftables set elements with a kernel timeout.
 *
 * Setup is one libnftables script, run at start and on a scope change: the table, four
 * sets and the input chain (priority -10, ahead of the usual filter chains), then
 * "flush chain" and the rules again, so re-running it never duplicates a rule and keeps
 * every element. The hot path is libnftnl + libmnl on a non-blocking netlink socket that a
 * uv_poll_t watches for ACKs and errors.
 *
 *   set     key                          element key bytes
 *   ban4    ipv4_addr                    addr[4]
 *   ban6    ipv6_addr                    addr[16] (a prefix: the rule masks saddr)
 *   ban4p   ipv4_addr . inet_service     addr[4] port[2, network order] pad[2]
 *   ban6p   ipv6_addr . inet_service     addr[16] port[2, network order] pad[2]
 *
 * nf_tables batches are transactions: one failing message aborts the whole batch. So each
 * operation is its own batch, and an operation that may meet an absent element first makes
 * sure it exists (NEW without EXCL is a no-op on a present element): escalation is
 * NEW, DEL, NEW (a 6.1 kernel may keep the old timeout on a plain NEW), unban is NEW, DEL.
 * Only the last message asks for an ACK, which keeps the receive buffer small (ENOBUFS);
 * errors are reported without one.
 *
 * It lives in src/nft, beside the transports, not in the guard: it is loop I/O (a uv_poll_t
 * on the worker's loop) behind the guard's ban_backend interface, and the guard layer
 * includes no uv.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <nftables/libnftables.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

#include "guard/ban_backend.h"
#include "nft/ban_nft.h"
#include "sipedge/log.h"
#include "sipedge/strbuf.h"
#include "sipedge/strbuf.h"

#define NFT_TABLE "sipedge"
#define NFT_QUEUE_MAX 4096
#define NFT_TIMING_RING 64
#define NFT_READS_PER_WAKEUP 64
#define NFT_RCVBUF (4 * 1024 * 1024)

enum nft_op_kind { NFT_OP_ADD, NFT_OP_REPLACE, NFT_OP_DEL };

struct nft_op {
    struct ban_key key;
    uint32_t timeout_s;
    uint8_t kind;
};

struct nft_timing {
    uint32_t seq;
    uint64_t sent_ns;
};

struct ban_nft {
    struct ban_backend base; /* first: the engine sees a struct ban_backend */
    uv_poll_t poll;
    struct mnl_socket *nl;
    uint32_t portid;
    uint32_t seq;
    struct nft_op *queue; /* ring of ops waiting for the socket to become writable */
    uint32_t q_head, q_len;
    int poll_events;
    struct nft_timing timing[NFT_TIMING_RING];
    uint32_t timing_next;
    uint64_t n_sent, n_acked, n_enobufs, n_queue_full;
    uint64_t last_ack_us, max_ack_us;
    ban_backend_close_cb close_cb;
    void *close_ctx;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- setup script (libnftables) ---------------------------------------------------------- */

static void put_ports(struct strbuf *b, const uint16_t *ports, unsigned n)
{
    strbuf_str(b, "{ ");
    for (unsigned i = 0; i < n; i++)
        strbuf_fmt(b, "%s%u", i ? ", " : "", ports[i]);
    strbuf_str(b, " }");
}

/* " & ffff:ffff:ffff:ffff::" for a /64, or "" when whole addresses are banned. */
static void v6_mask_expr(uint8_t prefix, char *buf, size_t cap)
{
    unsigned char m[16] = {0};
    char text[INET6_ADDRSTRLEN];
    buf[0] = '\0';
    if (prefix == 0 || prefix >= 128)
        return;
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * i : 0;
        m[i] = (unsigned char)(0xff00u >> keep);
    }
    if (inet_ntop(AF_INET6, m, text, sizeof(text)) != NULL)
        snprintf(buf, cap, " & %s", text);
}

int ban_nft_script(const struct ban_nft_opts *opt, char *buf, size_t cap)
{
    if (cap == 0)
        return -ENOSPC;
    struct strbuf sb;
    strbuf_init(&sb, buf, cap);
    char mask6[8 + INET6_ADDRSTRLEN];
    v6_mask_expr(opt->ipv6_prefix, mask6, sizeof(mask6));
    strbuf_str(&sb, "table inet " NFT_TABLE " {\n"
                    "  set ban4 { type ipv4_addr; flags timeout; }\n"
                    "  set ban6 { type ipv6_addr; flags timeout; }\n"
                    "  set ban4p { type ipv4_addr . inet_service; flags timeout; }\n"
                    "  set ban6p { type ipv6_addr . inet_service; flags timeout; }\n"
                    "  chain input { type filter hook input priority -10; policy accept; }\n"
                    "}\n"
                    "flush chain inet " NFT_TABLE " input\n");
    bool all = opt->drop_all || (opt->n_udp_ports == 0 && opt->n_tcp_ports == 0);
    static const char *const fam[2][2] = {{"ip", "4"}, {"ip6", "6"}};
    for (int f = 0; f < 2; f++) {
        const char *ip = fam[f][0], *v = fam[f][1], *mask = f == 1 ? mask6 : "";
        if (all) {
            strbuf_fmt(&sb, "add rule inet " NFT_TABLE " input %s saddr%s @ban%s counter drop\n",
                       ip, mask, v);
            for (int t = 0; t < 2; t++)
                strbuf_fmt(&sb,
                           "add rule inet " NFT_TABLE
                           " input %s saddr . %s sport @ban%sp counter drop\n",
                           ip, t == 0 ? "udp" : "tcp", v);
            continue;
        }
        for (int t = 0; t < 2; t++) {
            const char *l4 = t == 0 ? "udp" : "tcp";
            const uint16_t *ports = t == 0 ? opt->udp_ports : opt->tcp_ports;
            unsigned n = t == 0 ? opt->n_udp_ports : opt->n_tcp_ports;
            if (n == 0)
                continue;
            strbuf_fmt(&sb, "add rule inet " NFT_TABLE " input %s saddr%s @ban%s %s dport ", ip,
                       mask, v, l4);
            put_ports(&sb, ports, n);
            strbuf_str(&sb, " counter drop\n");
            strbuf_fmt(&sb,
                       "add rule inet " NFT_TABLE " input %s saddr . %s sport @ban%sp %s dport ",
                       ip, l4, v, l4);
            put_ports(&sb, ports, n);
            strbuf_str(&sb, " counter drop\n");
        }
    }
    return strbuf_overflowed(&sb) ? -ENOSPC : (int)strbuf_len(&sb);
}

/* Maps libnftables' error text to an errno: it reports kernel errors only as text. */
static int nft_error_code(const char *text)
{
    if (text == NULL)
        return -EIO;
    if (strstr(text, "Operation not permitted") != NULL || strstr(text, "Permission denied"))
        return -EPERM;
    if (strstr(text, "Protocol not supported") != NULL ||
        strstr(text, "Address family not supported") != NULL)
        return -EPROTONOSUPPORT;
    return -EIO;
}

static void first_line(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    if (cap == 0)
        return;
    while (src != NULL && src[n] != '\0' && src[n] != '\n' && n + 1 < cap)
        n++;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static int run_setup(const struct ban_nft_opts *opt, char *err, size_t errcap)
{
    char script[4096];
    int n = ban_nft_script(opt, script, sizeof(script));
    if (n < 0) {
        snprintf(err, errcap, "setup script too long");
        return n;
    }
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx == NULL) {
        snprintf(err, errcap, "nft_ctx_new failed");
        return -ENOMEM;
    }
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    int rc = 0;
    if (nft_run_cmd_from_buffer(ctx, script) != 0) {
        const char *e = nft_ctx_get_error_buffer(ctx);
        rc = nft_error_code(e);
        first_line(err, errcap, e);
    }
    nft_ctx_free(ctx);
    return rc;
}

/* ---- element keys -------------------------------------------------------------------------- */

static const char *set_name(const struct ban_key *k)
{
    if (k->family == AF_INET)
        return k->port ? "ban4p" : "ban4";
    return k->port ? "ban6p" : "ban6";
}

static size_t key_bytes(const struct ban_key *k, uint8_t out[20])
{
    size_t alen = k->family == AF_INET ? 4 : 16;
    memcpy(out, k->addr, alen);
    if (k->port == 0)
        return alen;
    uint16_t p = htons(k->port);
    memcpy(out + alen, &p, 2);
    out[alen + 2] = out[alen + 3] = 0;
    return alen + 4;
}

/* ---- batches ------------------------------------------------------------------------------ */

static void put_elem(struct mnl_nlmsg_batch *b, uint16_t type, const struct ban_key *k,
                     uint64_t timeout_ms, uint16_t flags, uint32_t seq)
{
    uint8_t kb[20];
    size_t klen = key_bytes(k, kb);
    struct nftnl_set *s = nftnl_set_alloc();
    struct nftnl_set_elem *e = nftnl_set_elem_alloc();
    if (s == NULL || e == NULL) {
        nftnl_set_free(s);
        nftnl_set_elem_free(e);
        return;
    }
    nftnl_set_set_str(s, NFTNL_SET_TABLE, NFT_TABLE);
    nftnl_set_set_str(s, NFTNL_SET_NAME, set_name(k));
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, kb, (uint32_t)klen);
    if (timeout_ms != 0)
        nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, timeout_ms);
    nftnl_set_elem_add(s, e);
    struct nlmsghdr *nlh =
        nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), type, NFPROTO_INET, flags, seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    mnl_nlmsg_batch_next(b);
}

/* Sends one op as one batch. Returns 0, -EAGAIN (socket full, op not sent) or -errno. */
static int send_op(struct ban_nft *n, const struct nft_op *op)
{
    char buf[2048];
    struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, sizeof(buf));
    if (b == NULL)
        return -ENOMEM;
    uint64_t ms = (uint64_t)op->timeout_s * 1000;
    nftnl_batch_begin(mnl_nlmsg_batch_current(b), n->seq++);
    mnl_nlmsg_batch_next(b);
    uint16_t create = NLM_F_CREATE, ack = NLM_F_ACK;
    uint32_t last_seq;
    switch (op->kind) {
    case NFT_OP_ADD:
        last_seq = n->seq;
        put_elem(b, NFT_MSG_NEWSETELEM, &op->key, ms, create | ack, n->seq++);
        break;
    case NFT_OP_REPLACE:
        put_elem(b, NFT_MSG_NEWSETELEM, &op->key, ms, create, n->seq++);
        put_elem(b, NFT_MSG_DELSETELEM, &op->key, 0, 0, n->seq++);
        last_seq = n->seq;
        put_elem(b, NFT_MSG_NEWSETELEM, &op->key, ms, create | ack, n->seq++);
        break;
    default:
        put_elem(b, NFT_MSG_NEWSETELEM, &op->key, 1000, create, n->seq++);
        last_seq = n->seq;
        put_elem(b, NFT_MSG_DELSETELEM, &op->key, 0, ack, n->seq++);
        break;
    }
    nftnl_batch_end(mnl_nlmsg_batch_current(b), n->seq++);
    mnl_nlmsg_batch_next(b);
    uint64_t t0 = mono_ns();
    ssize_t rc = mnl_socket_sendto(n->nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b));
    mnl_nlmsg_batch_stop(b);
    if (rc < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    struct nft_timing *t = &n->timing[n->timing_next++ % NFT_TIMING_RING];
    t->seq = last_seq;
    t->sent_ns = t0;
    n->n_sent++;
    return 0;
}

static void on_poll(uv_poll_t *h, int status, int events);

static void watch(struct ban_nft *n, bool want_write)
{
    int ev = UV_READABLE | (want_write ? UV_WRITABLE : 0);
    if (n->poll_events != ev) {
        n->poll_events = ev;
        uv_poll_start(&n->poll, ev, on_poll);
    }
}

static void flush_queue(struct ban_nft *n)
{
    while (n->q_len > 0) {
        int rc = send_op(n, &n->queue[n->q_head]);
        if (rc == -EAGAIN)
            break;
        if (rc != 0) {
            char a[BAN_ADDR_MAX];
            n->base.n_errors++;
            log_error("nft: cannot send ban update for %s: %s",
                      ban_key_format_addr(&n->queue[n->q_head].key, a, sizeof(a)), strerror(-rc));
        }
        n->q_head = (n->q_head + 1) % NFT_QUEUE_MAX;
        n->q_len--;
    }
    watch(n, n->q_len > 0);
}

static int enqueue(struct ban_nft *n, const struct ban_key *k, uint32_t timeout_s, uint8_t kind)
{
    if (n->q_len == NFT_QUEUE_MAX) {
        n->n_queue_full++;
        return -ENOSPC;
    }
    struct nft_op *op = &n->queue[(n->q_head + n->q_len) % NFT_QUEUE_MAX];
    op->key = *k;
    op->timeout_s = timeout_s;
    op->kind = kind;
    n->q_len++;
    /* Sent at once when the socket takes it: ban latency is one syscall, not a loop turn. */
    flush_queue(n);
    return 0;
}

static int nft_add(struct ban_backend *be, const struct ban_key *key, uint32_t timeout_s,
                   bool replace)
{
    return enqueue((struct ban_nft *)be, key, timeout_s, replace ? NFT_OP_REPLACE : NFT_OP_ADD);
}

static int nft_del(struct ban_backend *be, const struct ban_key *key)
{
    return enqueue((struct ban_nft *)be, key, 0, NFT_OP_DEL);
}

/* ---- replies ------------------------------------------------------------------------------ */

static void on_ack(struct ban_nft *n, const struct nlmsghdr *nlh)
{
    const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
    if (e->error != 0) {
        n->base.n_errors++;
        log_error("nft: kernel refused ban update (seq %u): %s", nlh->nlmsg_seq,
                  strerror(-e->error));
        return;
    }
    n->n_acked++;
    for (unsigned i = 0; i < NFT_TIMING_RING; i++) {
        struct nft_timing *t = &n->timing[i];
        if (t->sent_ns != 0 && t->seq == nlh->nlmsg_seq) {
            n->last_ack_us = (mono_ns() - t->sent_ns) / 1000;
            if (n->last_ack_us > n->max_ack_us)
                n->max_ack_us = n->last_ack_us;
            t->sent_ns = 0;
            log_debug("nft: set update committed in %llu us (max %llu us)",
                      (unsigned long long)n->last_ack_us, (unsigned long long)n->max_ack_us);
            break;
        }
    }
}

static void read_replies(struct ban_nft *n)
{
    char buf[16384] __attribute__((aligned(8)));
    for (int i = 0; i < NFT_READS_PER_WAKEUP; i++) {
        ssize_t len = mnl_socket_recvfrom(n->nl, buf, sizeof(buf));
        if (len < 0) {
            if (errno == ENOBUFS) {
                /* ACKs were lost; the elements themselves were committed. */
                n->n_enobufs++;
                log_warn("nft: netlink receive buffer overflowed; some ACKs lost");
                continue;
            }
            return;
        }
        const struct nlmsghdr *nlh = (const struct nlmsghdr *)buf;
        size_t rem = (size_t)len;
        while (mnl_nlmsg_ok(nlh, (int)rem)) {
            if (nlh->nlmsg_type == NLMSG_ERROR)
                on_ack(n, nlh);
            nlh = mnl_nlmsg_next(nlh, (int *)&rem);
        }
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct ban_nft *n = (struct ban_nft *)((char *)h - offsetof(struct ban_nft, poll));
    if (status < 0) {
        log_error("nft: netlink poll error: %s", uv_strerror(status));
        return;
    }
    if (events & UV_READABLE)
        read_replies(n);
    if (events & UV_WRITABLE)
        flush_queue(n);
}

/* ---- restore ------------------------------------------------------------------------------ */

struct dump_ctx {
    const char *set;
    ban_backend_restore_cb cb;
    void *arg;
    unsigned n;
};

static int on_dump_msg(const struct nlmsghdr *nlh, void *data)
{
    struct dump_ctx *d = data;
    struct nftnl_set *s = nftnl_set_alloc();
    if (s == NULL)
        return MNL_CB_ERROR;
    if (nftnl_set_elems_nlmsg_parse(nlh, s) < 0) {
        nftnl_set_free(s);
        return MNL_CB_OK;
    }
    struct nftnl_set_elems_iter *it = nftnl_set_elems_iter_create(s);
    for (struct nftnl_set_elem *e = it ? nftnl_set_elems_iter_next(it) : NULL; e != NULL;
         e = nftnl_set_elems_iter_next(it)) {
        uint32_t klen = 0;
        const uint8_t *kb = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
        struct ban_key k = {0};
        bool v4 = d->set[3] == '4', with_port = d->set[4] == 'p';
        size_t alen = v4 ? 4 : 16;
        if (kb == NULL || klen < alen + (with_port ? 2 : 0))
            continue;
        k.family = v4 ? AF_INET : AF_INET6;
        memcpy(k.addr, kb, alen);
        if (with_port) {
            uint16_t p;
            memcpy(&p, kb + alen, 2);
            k.port = ntohs(p);
            if (k.port == 0)
                continue;
        }
        uint64_t timeout = nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_TIMEOUT);
        uint64_t left = nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION);
        if (left == 0)
            continue;
        d->cb(d->arg, &k, left, timeout);
        d->n++;
    }
    if (it != NULL)
        nftnl_set_elems_iter_destroy(it);
    nftnl_set_free(s);
    return MNL_CB_OK;
}

/* Dumps one set, waiting up to a second per reply: start-up only, before the loop runs. */
static int dump_set(struct ban_nft *n, const char *set, ban_backend_restore_cb cb, void *arg)
{
    char buf[MNL_SOCKET_BUFFER_SIZE * 4] __attribute__((aligned(8)));
    uint32_t seq = n->seq++;
    struct nftnl_set *s = nftnl_set_alloc();
    if (s == NULL)
        return -ENOMEM;
    nftnl_set_set_str(s, NFTNL_SET_TABLE, NFT_TABLE);
    nftnl_set_set_str(s, NFTNL_SET_NAME, set);
    struct nlmsghdr *nlh =
        nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP | NLM_F_ACK, seq);
    nftnl_set_elems_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    if (mnl_socket_sendto(n->nl, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    struct dump_ctx d = {.set = set, .cb = cb, .arg = arg};
    for (;;) {
        struct pollfd pfd = {.fd = mnl_socket_get_fd(n->nl), .events = POLLIN};
        if (poll(&pfd, 1, 1000) <= 0)
            return -ETIMEDOUT;
        ssize_t len = mnl_socket_recvfrom(n->nl, buf, sizeof(buf));
        if (len < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        int rc = mnl_cb_run(buf, (size_t)len, seq, n->portid, on_dump_msg, &d);
        if (rc == MNL_CB_STOP)
            break;
        if (rc < 0)
            return -errno;
    }
    log_debug("nft: %u elements read back from %s", d.n, set);
    return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void on_poll_closed(uv_handle_t *h)
{
    struct ban_nft *n = (struct ban_nft *)((char *)h - offsetof(struct ban_nft, poll));
    ban_backend_close_cb cb = n->close_cb;
    void *ctx = n->close_ctx;
    mnl_socket_close(n->nl);
    free(n->queue);
    free(n);
    if (cb != NULL)
        cb(ctx);
}

static void nft_close(struct ban_backend *be, ban_backend_close_cb cb, void *ctx)
{
    struct ban_nft *n = (struct ban_nft *)be;
    if (n->q_len > 0)
        log_warn("nft: %u ban updates not sent at shutdown", n->q_len);
    n->close_cb = cb;
    n->close_ctx = ctx;
    uv_close((uv_handle_t *)&n->poll, on_poll_closed);
}

static int nft_configure(struct ban_backend *be, const struct ban_nft_opts *o, char *err,
                         size_t errcap)
{
    (void)be;
    return run_setup(o, err, errcap);
}

static int nft_read_back(struct ban_backend *be, ban_backend_restore_cb cb, void *arg, char *err,
                         size_t errcap)
{
    struct ban_nft *n = (struct ban_nft *)be;
    static const char *const sets[] = {"ban4", "ban6", "ban4p", "ban6p"};
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        int rc = dump_set(n, sets[i], cb, arg);
        if (rc != 0) {
            snprintf(err, errcap, "reading back set %s: %s", sets[i], strerror(-rc));
            return rc;
        }
    }
    return 0;
}

static const struct ban_backend_ops nft_ops = {
    .name = "nftables",
    .add = nft_add,
    .del = nft_del,
    .close = nft_close,
    .is_kernel = true,
    .configure = nft_configure,
    .read_back = nft_read_back,
};

int ban_nft_new(struct ban_backend **out, uv_loop_t *loop, char *err, size_t errcap)
{
    if (out == NULL || loop == NULL)
        return -EINVAL;
    struct ban_nft *n = calloc(1, sizeof(*n));
    if (n != NULL)
        n->queue = calloc(NFT_QUEUE_MAX, sizeof(*n->queue));
    if (n == NULL || n->queue == NULL) {
        if (n != NULL)
            free(n->queue);
        free(n);
        return -ENOMEM;
    }
    int rc;
    n->base.ops = &nft_ops;
    n->seq = (uint32_t)time(NULL);
    n->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (n->nl == NULL || mnl_socket_bind(n->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = -errno;
        snprintf(err, errcap, "netlink socket: %s", strerror(errno));
        goto fail;
    }
    n->portid = mnl_socket_get_portid(n->nl);
    int rcvbuf = NFT_RCVBUF;
    /* Needs CAP_NET_ADMIN; without it the setup script fails anyway, and failure here only
     * costs headroom. */
    if (setsockopt(mnl_socket_get_fd(n->nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
                   sizeof(rcvbuf)) != 0)
        log_debug("nft: SO_RCVBUFFORCE: %s", strerror(errno));
    rc = uv_poll_init(loop, &n->poll, mnl_socket_get_fd(n->nl));
    if (rc != 0) {
        snprintf(err, errcap, "uv_poll_init: %s", uv_strerror(rc));
        goto fail;
    }
    /* The netlink socket alone must not keep the loop running: at SIGTERM the loop ends
     * once the listeners are closed, and the worker closes this handle after that. */
    uv_unref((uv_handle_t *)&n->poll);
    watch(n, false);
    *out = &n->base;
    return 0;
fail:
    if (n->nl != NULL)
        mnl_socket_close(n->nl);
    free(n->queue);
    free(n);
    return rc;
}
