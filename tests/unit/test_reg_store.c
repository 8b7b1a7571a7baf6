/*
 * Registrar persistence: bindings registered through registrar_handle, flushed to the
 * SQLite store, and found again (and routed to) by a new registrar on the same file.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/registrar.h"
#include "sipedge/sip_hdr.h"
#include "sipedge/sip_msg.h"

#define MAX_SENT 8
/* Monotonic clocks of two processes: unrelated to each other and to the wall clock. */
#define T0 1000000ull
#define T1 777000000ull

struct sent {
    struct sockaddr_storage dst;
    socklen_t dst_len;
    char buf[8192];
    size_t len;
};

struct fx {
    struct registrar *r;
    struct config_addr self, edge;
    struct policy pol;
    uint8_t key[REGISTRAR_BRANCH_KEY_LEN];
    char dir[64], db[128];
    struct sent sent[MAX_SENT];
    size_t n_sent;
    struct sip_msg msg;
    struct sip_hdr hdrs[64];
    struct sockaddr_storage other_ss, phone_ss;
    socklen_t other_len, phone_len;
};

static void on_send(void *ctx, const struct sockaddr *dst, socklen_t dst_len, const char *buf,
                    size_t len)
{
    struct fx *f = ctx;
    assert_true(f->n_sent < MAX_SENT);
    assert_true(len < sizeof(f->sent[0].buf));
    struct sent *s = &f->sent[f->n_sent++];
    memcpy(&s->dst, dst, dst_len);
    s->dst_len = dst_len;
    memcpy(s->buf, buf, len);
    s->buf[len] = '\0';
    s->len = len;
}

#include "reg_tx.h"

static void addr_set(struct config_addr *a, const char *ip, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
    a->len = sizeof(*sin);
    snprintf(a->host, sizeof(a->host), "%s", ip);
    snprintf(a->text, sizeof(a->text), "%s:%u", ip, port);
    a->port = port;
}

static int fx_open(struct fx *f, const char *db, char *err, size_t cap)
{
    struct registrar_opts opts = {
        .self = &f->self,
        .realm = "example.com",
        .policy = &f->pol,
        .trusted = &f->edge,
        .n_trusted = 1,
        .branch_key = f->key, /* the same in both runs: old sb= MACs still verify */
        .db_path = db,
    };
    err[0] = '\0';
    return registrar_new_tx(&f->r, &opts, f, err, cap);
}

static void fx_restart(struct fx *f)
{
    assert_int_equal(registrar_flush(f->r), 0);
    registrar_free(f->r);
    f->r = NULL;
    char err[512];
    int rc = fx_open(f, f->db, err, sizeof(err));
    if (rc != 0)
        fail_msg("registrar_new: %d %s", rc, err);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    addr_set(&f->self, "127.0.0.1", 5080);
    addr_set(&f->edge, "127.0.0.1", 5070);
    struct config_addr a;
    addr_set(&a, "127.0.0.1", 5071);
    memcpy(&f->other_ss, &a.ss, sizeof(f->other_ss));
    f->other_len = a.len;
    addr_set(&a, "192.0.2.77", 5099);
    memcpy(&f->phone_ss, &a.ss, sizeof(f->phone_ss));
    f->phone_len = a.len;
    memset(f->key, 0x5a, sizeof(f->key));
    f->pol = (struct policy){
        .max_message_bytes = 65535,
        .max_headers = 64,
        .min_expires_s = 60,
        .max_expires_s = 3600,
        .default_expires_s = 600,
        .max_bindings = 8,
        .max_contacts_per_aor = 3,
        .nonce_ttl_s = 30,
    };
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_reg_store.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->db, sizeof(f->db), "%s/registrar.sqlite", f->dir);
    char err[512];
    if (fx_open(f, f->db, err, sizeof(err)) != 0)
        fail_msg("registrar_new: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    registrar_free(f->r);
    char path[192];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s%s", f->db, suffix[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/garbage", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Sends text (LF line ends turned into CRLF) from src; returns datagrams emitted. */
static size_t fx_send_from(struct fx *f, const struct sockaddr_storage *src, socklen_t src_len,
                           uint64_t now_ms, const char *fmt, ...)
{
    char text[8192], wire[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    size_t n = 0;
    for (const char *p = text; *p && n + 2 < sizeof(wire); p++) {
        if (*p == '\n')
            wire[n++] = '\r';
        wire[n++] = *p;
    }
    f->n_sent = 0;
    registrar_handle(f->r, wire, n, (const struct sockaddr *)src, src_len, now_ms);
    return f->n_sent;
}

static const struct sip_msg *fx_out(struct fx *f, size_t i)
{
    assert_true(i < f->n_sent);
    struct sip_limits lim = {.max_msg_bytes = 65535, .max_headers = 64};
    struct sip_err err;
    if (sip_msg_parse(&f->msg, f->sent[i].buf, f->sent[i].len, f->hdrs, &lim, &err) != 0)
        fail_msg("output does not parse (%s):\n%s", err.reason, f->sent[i].buf);
    return &f->msg;
}

static int fx_status(struct fx *f)
{
    if (f->n_sent != 1)
        fail_msg("expected one datagram, got %zu", f->n_sent);
    const struct sip_msg *m = fx_out(f, 0);
    assert_false(m->is_request);
    return m->status;
}

static uint16_t sent_port(const struct sent *s)
{
    return ntohs(((const struct sockaddr_in *)&s->dst)->sin_port);
}

/* REGISTER for user through the edge (with a Path), contacts in extra. */
static int reg_edge(struct fx *f, uint64_t now, const char *user, const char *call_id,
                    unsigned cseq, const char *extra)
{
    struct sockaddr_storage ss;
    memcpy(&ss, &f->edge.ss, sizeof(ss));
    fx_send_from(f, &ss, f->edge.len, now,
                 "REGISTER sip:example.com SIP/2.0\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKe%u\n"
                 "Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bKc%u\n"
                 "Max-Forwards: 69\n"
                 "From: <sip:%s@example.com>;tag=f%u\nTo: <sip:%s@example.com>\n"
                 "Call-ID: %s\nCSeq: %u REGISTER\nSupported: path, outbound\n"
                 "Path: <sip:tok1@127.0.0.1:5070;lr>\n"
                 "%sContent-Length: 0\n\n",
                 cseq, cseq, user, cseq, user, call_id, cseq, extra);
    return fx_status(f);
}

/* REGISTER for user straight from a phone (no Path: routed to the Contact). */
static int reg_direct(struct fx *f, uint64_t now, const char *user, unsigned expires)
{
    fx_send_from(f, &f->phone_ss, f->phone_len, now,
                 "REGISTER sip:example.com SIP/2.0\n"
                 "Via: SIP/2.0/UDP 192.0.2.77:5099;branch=z9hG4bKd%u\n"
                 "From: <sip:%s@example.com>;tag=1\nTo: <sip:%s@example.com>\n"
                 "Call-ID: d-%s\nCSeq: 1 REGISTER\nMax-Forwards: 70\n"
                 "Contact: <sip:%s@192.0.2.77:5099>;expires=%u\nContent-Length: 0\n\n",
                 expires, user, user, user, user, expires);
    return fx_status(f);
}

static size_t invite(struct fx *f, uint64_t now, const char *user)
{
    return fx_send_from(f, &f->other_ss, f->other_len, now,
                        "INVITE sip:%s@example.com SIP/2.0\n"
                        "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcaller1\n"
                        "Max-Forwards: 70\n"
                        "From: <sip:bob@example.com>;tag=b1\nTo: <sip:%s@example.com>\n"
                        "Call-ID: inv1\nCSeq: 1 INVITE\n"
                        "Contact: <sip:bob@10.0.0.9:5060>\nContent-Length: 0\n\n",
                        user, user);
}

/* A 430 from the edge for a request that carried our Via value via. */
static void flow_failed(struct fx *f, uint64_t now, const char *via)
{
    struct sockaddr_storage ss;
    memcpy(&ss, &f->edge.ss, sizeof(ss));
    fx_send_from(f, &ss, f->edge.len, now,
                 "SIP/2.0 430 Flow Failed\nVia: %s\n"
                 "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKcaller1;received=10.0.0.99\n"
                 "From: <sip:bob@example.com>;tag=b1\nTo: <sip:alice@example.com>;tag=a9\n"
                 "Call-ID: inv1\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
                 via);
}

/* Runs one SQL statement on the store file behind the registrar's back; returns the
 * first column of the first row (count queries), or 0. */
static long long db_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    long long v = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        assert_int_equal(rc, SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void test_reg_store_bindings_survive_a_restart(void **state)
{
    struct fx *f = *state;
    assert_int_equal(
        reg_edge(f, T0, "alice", "c1", 5,
                 "User-Agent: phone/1\n"
                 "Contact: <sip:alice@192.0.2.1:5062;transport=udp>;q=0.9;"
                 "+sip.instance=\"<urn:uuid:1>\";reg-id=1, <sip:alice@192.0.2.2>;q=0.2\n"),
        200);
    assert_int_equal(reg_direct(f, T0, "dave", 600), 200);
    assert_int_equal(reg_direct(f, T0, "carol", 600), 200);
    /* Nothing is written until the flush. */
    assert_int_equal(db_exec(f->db, "SELECT count(*) FROM bindings"), 0);
    assert_int_equal(registrar_flush(f->r), 0);
    assert_int_equal(db_exec(f->db, "SELECT count(*) FROM bindings"), 4);
    /* carol's binding ran out while the registrar was down. */
    db_exec(f->db, "UPDATE bindings SET expires_unix_ms = 1000 WHERE aor LIKE 'carol@%'");

    fx_restart(f);
    assert_int_equal(registrar_n_bindings(f->r), 3);
    assert_int_equal(db_exec(f->db, "SELECT count(*) FROM bindings"), 3);
    assert_int_equal(db_exec(f->db, "SELECT count(*) FROM bindings WHERE aor LIKE 'carol@%'"), 0);

    /* alice: routed through her stored Path to the preferred contact. */
    assert_int_equal(invite(f, T1, "alice"), 1);
    const struct sip_msg *m = fx_out(f, 0);
    assert_true(m->is_request);
    assert_true(slice_eq(m->ruri, SLICE_LIT("sip:alice@192.0.2.1:5062;transport=udp")));
    const struct sip_hdr *route = sip_msg_hdr(m, SIP_HDR_ROUTE);
    assert_non_null(route);
    assert_true(slice_eq(route->value, SLICE_LIT("<sip:tok1@127.0.0.1:5070;lr>")));
    assert_int_equal(sent_port(&f->sent[0]), 5070);
    /* dave: no Path, straight to the contact. */
    assert_int_equal(invite(f, T1, "dave"), 1);
    assert_null(sip_msg_hdr(fx_out(f, 0), SIP_HDR_ROUTE));
    assert_int_equal(sent_port(&f->sent[0]), 5099);
    /* Call-ID and CSeq came back: an older CSeq of the same Call-ID is out of order. */
    assert_int_equal(reg_edge(f, T1, "alice", "c1", 4, "Contact: <sip:alice@192.0.2.2>\n"), 500);
    /* The remaining lifetime moved onto the new clock: gone after 600 s, not before. */
    registrar_tick(f->r, T1 + 590 * 1000);
    assert_int_equal(registrar_n_bindings(f->r), 3);
    registrar_tick(f->r, T1 + 601 * 1000);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    assert_int_equal(registrar_flush(f->r), 0);
    assert_int_equal(db_exec(f->db, "SELECT count(*) FROM bindings"), 0);
}

static void test_reg_store_refresh_and_removal_are_written(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_direct(f, T0, "dave", 600), 200);
    assert_int_equal(reg_edge(f, T0, "alice", "c1", 1,
                              "Contact: <sip:alice@192.0.2.1>, <sip:alice@192.0.2.2>\n"),
                     200);
    assert_int_equal(registrar_flush(f->r), 0);
    /* A refresh to 3600 s and a removal, in one flush. */
    assert_int_equal(reg_direct(f, T0 + 1000, "dave", 3600), 200);
    assert_int_equal(
        reg_edge(f, T0 + 1000, "alice", "c1", 2, "Contact: <sip:alice@192.0.2.1>;expires=0\n"),
        200);
    assert_int_equal(registrar_flush(f->r), 0);
    assert_int_equal(registrar_flush(f->r), 0); /* nothing queued: no-op */
    fx_restart(f);
    assert_int_equal(registrar_n_bindings(f->r), 2);
    assert_int_equal(invite(f, T1, "alice"), 1);
    assert_true(slice_eq(fx_out(f, 0)->ruri, SLICE_LIT("sip:alice@192.0.2.2")));
    registrar_tick(f->r, T1 + 700 * 1000);
    assert_int_equal(registrar_n_bindings(f->r), 1); /* dave's refresh held */
}

/*
 * sb=SLOT.GEN.MAC of a request routed before the restart: the key is the same, but the
 * restored bindings live in other slots and generations, so its 430 removes nothing;
 * a 430 for a request routed after the restart does.
 */
static void test_reg_store_old_sb_does_not_name_a_restored_binding(void **state)
{
    struct fx *f = *state;
    assert_int_equal(reg_edge(f, T0, "alice", "c1", 1, "Contact: <sip:alice@192.0.2.1>\n"), 200);
    assert_int_equal(invite(f, T0, "alice"), 1);
    char old_via[256], new_via[256];
    slice_copy_cstr(old_via, sizeof(old_via), sip_msg_hdr(fx_out(f, 0), SIP_HDR_VIA)->value);
    assert_non_null(strstr(old_via, ";sb="));
    fx_restart(f);
    flow_failed(f, T1, old_via);
    assert_int_equal(registrar_n_bindings(f->r), 1);
    assert_int_equal(invite(f, T1, "alice"), 1);
    slice_copy_cstr(new_via, sizeof(new_via), sip_msg_hdr(fx_out(f, 0), SIP_HDR_VIA)->value);
    flow_failed(f, T1, new_via);
    assert_int_equal(registrar_n_bindings(f->r), 0);
    assert_int_equal(registrar_flush(f->r), 0);
    assert_int_equal(db_exec(f->db, "SELECT count(*) FROM bindings"), 0);
}

static void test_reg_store_garbage_file_refused(void **state)
{
    struct fx *f = *state;
    char path[192], err[512];
    snprintf(path, sizeof(path), "%s/garbage", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database\n", fp);
    fclose(fp);
    struct registrar *keep = f->r;
    f->r = NULL;
    int rc = fx_open(f, path, err, sizeof(err));
    assert_int_equal(rc, -EIO);
    assert_null(f->r);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "not a database"));
    f->r = keep;
}

static void test_reg_store_foreign_schema_refused(void **state)
{
    struct fx *f = *state;
    char path[192], err[512];
    snprintf(path, sizeof(path), "%s/garbage", f->dir);
    db_exec(path, "CREATE TABLE bindings (id INTEGER, name TEXT)");
    struct registrar *keep = f->r;
    f->r = NULL;
    int rc = fx_open(f, path, err, sizeof(err));
    assert_int_equal(rc, -EPROTO);
    assert_null(f->r);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "foreign schema"));
    /* Left as it was. */
    assert_int_equal(db_exec(path, "SELECT count(*) FROM sqlite_master"), 1);
    f->r = keep;
}

static void test_reg_store_without_db_flush_is_a_noop(void **state)
{
    struct fx *f = *state;
    registrar_free(f->r);
    f->r = NULL;
    char err[256];
    assert_int_equal(fx_open(f, NULL, err, sizeof(err)), 0);
    assert_int_equal(reg_direct(f, T0, "dave", 600), 200);
    assert_int_equal(registrar_flush(f->r), 0);
}

static void test_reg_store_set_policy_changes_expires_bounds(void **state)
{
    struct fx *f = *state;
    struct policy pol = f->pol;
    pol.min_expires_s = 300;
    pol.max_bindings = 1; /* a table size: ignored */
    registrar_set_policy(f->r, &pol);
    assert_int_equal(reg_direct(f, T0, "dave", 120), 423);
    assert_int_equal(reg_direct(f, T0, "dave", 600), 200);
    assert_int_equal(reg_direct(f, T0, "erin", 600), 200);
    assert_int_equal(registrar_n_bindings(f->r), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reg_store_bindings_survive_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reg_store_refresh_and_removal_are_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reg_store_old_sb_does_not_name_a_restored_binding,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reg_store_garbage_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reg_store_foreign_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reg_store_without_db_flush_is_a_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reg_store_set_policy_changes_expires_bounds, setup,
                                        teardown),
    };
    log_set_level(LOG_LEVEL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
