/* guard_state: bans saved to <state_dir>/bans.state and restored at start. Userspace
 * backend, explicit monotonic time, a fake wall clock. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

#include "guard/guard_internal.h"
#include "sipedge/config.h"
#include "sipedge/guard.h"
#include "sipedge/log.h"
#include "sipedge/statefile.h"
#include "worker/loop_offload.h"

static struct config cfg;
static struct policy pol;
static char evpath[64];
static char dir[64];
static char path[128];
static uint64_t fake_wall;

static uint64_t wall_fake(void)
{
    return fake_wall;
}

static const struct sockaddr *sa_ptr(const char *ip, uint16_t port)
{
    static struct sockaddr_storage ring[8];
    static unsigned i;
    struct sockaddr_storage *s = &ring[i++ % 8];
    memset(s, 0, sizeof(*s));
    struct sockaddr_in *in = (struct sockaddr_in *)s;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return (const struct sockaddr *)s;
}

static struct ban_key key(const char *text)
{
    struct ban_key k;
    assert_int_equal(ban_key_parse(text, &k), 0);
    return k;
}

static int setup(void **state)
{
    config_defaults(&cfg);
    snprintf(cfg.domains[0], sizeof(cfg.domains[0]), "example.com");
    cfg.n_domains = 1;
    policy_defaults(&pol);
    pol.guard_threshold = 6;
    pol.guard_ip_threshold = 20;
    pol.guard_w_auth_failure = 2;
    pol.guard_ban_durations_s[0] = 60;
    pol.guard_ban_durations_s[1] = 600;
    pol.guard_ban_durations_s[2] = 3600;
    pol.n_guard_ban_durations = 3;
    pol.guard_ban_memory_s = 86400;
    snprintf(evpath, sizeof(evpath), "/tmp/test_guard_state_ev_%d", (int)getpid());
    unlink(evpath);
    snprintf(pol.guard_event_log, sizeof(pol.guard_event_log), "%s", evpath);
    snprintf(dir, sizeof(dir), "/tmp/sipedge-guard-state-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(statefile_path(path, sizeof(path), dir, "bans.state"), 0);
    fake_wall = 1700000000000ULL;
    guard_state_wall_ms = wall_fake;
    *state = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    unlink(evpath);
    return 0;
}

static uint64_t mono_us(void)
{
    return uv_hrtime() / 1000;
}

static struct guard *mk(uint64_t now, struct uv_loop_s *loop)
{
    struct guard *g;
    struct guard_opts o = {.cfg = &cfg, .policy = &pol, .mono_us = mono_us, .seed = 42};
    if (loop != NULL)
        o.offload = (struct guard_offload){.queue = loop_offload_queue, .ctx = loop};
    assert_int_equal(guard_new(&g, &o, now), 0);
    assert_int_equal(guard_state_open(g, dir, now), 0);
    return g;
}

static unsigned count_moved_aside(void)
{
    unsigned n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strncmp(e->d_name, "bans.state.bad-", 15) == 0;
    closedir(d);
    return n;
}

/* Three auth failures with credentials (weight 2, threshold 6) ban the (address, port). */
static void fail_auth(struct guard *g, const struct sockaddr *src, uint64_t now)
{
    guard_note_proven(g, src, now);
    for (int i = 0; i < 3; i++)
        guard_on_response(g, src, 401, true, SLICE_LIT("sip:alice@example.com"), now);
}

/* An operator ban at step 2, a ban from strikes and a history entry come back after a
 * restart with their origin, step, time left and escalation memory. */
static void test_state_keeps_origin_level_history(void **state)
{
    (void)state;
    struct guard *g = mk(1000, NULL);
    struct ban_key op = key("198.18.7.7"), old = key("198.18.7.8");
    struct ban_key atk = key("198.18.8.8");
    struct ban_entry e;
    assert_int_equal(guard_ban(g, &op, 0, 2000, &e), 0);
    assert_int_equal(guard_ban(g, &op, 0, 3000, &e), 0);
    assert_int_equal(e.level, 1);
    assert_int_equal(e.duration_s, 600);
    assert_int_equal(guard_ban(g, &old, 5, 2000, NULL), 0);
    fail_auth(g, sa_ptr("198.18.8.8", 5090), 4000);
    assert_int_equal(ban_find(guard_bans(g), &atk, 4000, &e), 0);
    assert_int_equal(e.origin, BAN_ORIGIN_STRIKES);
    guard_tick(g, 9000); /* old expires into history */
    assert_int_equal(ban_stats(guard_bans(g))->n_history, 1);
    guard_state_save(g, 9000, true);
    /* The tick at 9000 saved too (no loop: on this thread), then the stop. */
    assert_int_equal(guard_state_stats(g)->n_writes, 2);
    guard_free(g);

    /* 10 s of wall time down; the new process's monotonic clock starts elsewhere. */
    fake_wall += 10000;
    g = mk(500000, NULL);
    const struct ban *b = guard_bans(g);
    assert_int_equal(ban_stats(b)->n_active, 2);
    assert_int_equal(ban_stats(b)->n_history, 1);
    assert_int_equal(ban_find(b, &op, 500000, &e), 0);
    assert_int_equal(e.origin, BAN_ORIGIN_ADMIN);
    assert_int_equal(e.level, 1);
    assert_int_equal(e.duration_s, 600);
    /* 600 s from t=3000, saved at t=9000, then 10 s down: 584 s left. */
    assert_int_equal(e.expires_ms - 500000, 584000);
    assert_int_equal(ban_find(b, &atk, 500000, &e), 0);
    assert_int_equal(e.origin, BAN_ORIGIN_STRIKES);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.8.8", 5090), 500001).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.7.7", 5060), 500001).reason,
                     GUARD_REASON_BANNED);
    assert_int_equal(ban_find(b, &old, 500000, NULL), -ENOENT);
    /* The history entry still remembers the first ban: the next one climbs. */
    assert_int_equal(guard_ban(g, &old, 0, 501000, &e), 0);
    assert_int_equal(e.level, 1);
    /* And the operator ban keeps climbing from step 2. */
    assert_int_equal(guard_ban(g, &op, 0, 501000, &e), 0);
    assert_int_equal(e.level, 2);
    guard_free(g);
}

/* Bans that ran out while the process was down come back as history (level kept); history
 * older than the memory is dropped. */
static void test_state_expired_while_down_become_history(void **state)
{
    (void)state;
    struct guard *g = mk(1000, NULL);
    struct ban_key a = key("198.18.9.1"), c = key("198.18.9.3");
    struct ban_entry e;
    assert_int_equal(guard_ban(g, &a, 0, 1000, NULL), 0);
    assert_int_equal(guard_ban(g, &a, 0, 1000, &e), 0); /* step 2: 600 s */
    assert_int_equal(guard_ban(g, &c, 3600, 1000, NULL), 0);
    guard_state_save(g, 1000, true);
    guard_free(g);

    fake_wall += 700 * 1000; /* a (600 s) ran out, c (3600 s) did not */
    g = mk(1000, NULL);
    const struct ban *b = guard_bans(g);
    assert_int_equal(ban_find(b, &a, 1000, NULL), -ENOENT);
    assert_int_equal(ban_find(b, &c, 1000, &e), 0);
    assert_int_equal(e.expires_ms - 1000, (3600 - 700) * 1000);
    assert_int_equal(ban_stats(b)->n_active, 1);
    assert_int_equal(ban_stats(b)->n_history, 1);
    assert_int_equal(guard_admit(g, sa_ptr("198.18.9.1", 5060), 1001).action, GUARD_PASS);
    assert_int_equal(guard_ban(g, &a, 0, 2000, &e), 0);
    assert_int_equal(e.level, 2); /* climbed from the remembered step 2 */
    assert_int_equal(guard_unban(g, &a, 3000), 0);
    guard_state_save(g, 3000, true);
    guard_free(g);

    fake_wall += 2 * 86400 * 1000ULL; /* past the memory: everything forgotten */
    g = mk(1000, NULL);
    b = guard_bans(g);
    assert_int_equal(ban_stats(b)->n_active, 0);
    assert_int_equal(ban_stats(b)->n_history, 0);
    guard_free(g);
}

/* A corrupt, foreign or newer file is refused whole and moved aside; the guard starts
 * with no bans and saves a fresh file. */
static void test_state_refuses_bad_files(void **state)
{
    (void)state;
    const uint8_t junk[] = "not a state file at all, not at all.............";
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
    fclose(f);
    struct guard *g = mk(1000, NULL);
    assert_int_equal(ban_stats(guard_bans(g))->n_active, 0);
    assert_int_equal(count_moved_aside(), 1);
    struct ban_key a = key("198.18.9.5");
    assert_int_equal(guard_ban(g, &a, 60, 1000, NULL), 0);
    guard_state_save(g, 1000, true);
    guard_free(g);

    /* A good file with one flipped payload byte: checksum mismatch. */
    f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -1, SEEK_END), 0);
    int last = fgetc(f);
    assert_int_equal(fseek(f, -1, SEEK_END), 0);
    fputc(last ^ 1, f);
    fclose(f);
    char err[256];
    sleep(1); /* moved-aside names carry the second */
    g = mk(1000, NULL);
    assert_int_equal(ban_stats(guard_bans(g))->n_active, 0);
    assert_int_equal(count_moved_aside(), 2);
    guard_free(g);

    /* Another kind, and a newer version of ours. */
    assert_int_equal(statefile_write(path, "flows", 1, "x", 1, err, sizeof(err)), 0);
    sleep(1);
    g = mk(1000, NULL);
    assert_int_equal(count_moved_aside(), 3);
    guard_free(g);
    assert_int_equal(statefile_write(path, "bans", 2, "x", 1, err, sizeof(err)), 0);
    sleep(1);
    g = mk(1000, NULL);
    assert_int_equal(count_moved_aside(), 4);
    guard_free(g);

    /* Right header, records that do not parse (count does not match the length). */
    uint8_t bad[12 + 5] = {0};
    bad[11] = 3;
    assert_int_equal(statefile_write(path, "bans", 1, bad, sizeof(bad), err, sizeof(err)), 0);
    sleep(1);
    g = mk(1000, NULL);
    assert_int_equal(ban_stats(guard_bans(g))->n_active, 0);
    assert_int_equal(count_moved_aside(), 5);
    guard_free(g);
}

/* Periodic saves go through the loop's thread pool, one at a time, only when the bans
 * changed; the guard may be freed with a write in flight. */
static void test_state_periodic_save_off_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct guard *g = mk(1000, &loop);
    struct ban_key a = key("198.18.9.7");
    assert_int_equal(guard_ban(g, &a, 600, 1000, NULL), 0);
    guard_tick(g, 2000); /* under 5 s since open: nothing */
    assert_int_equal(guard_state_stats(g)->n_saves, 0);
    guard_tick(g, 6000);
    assert_int_equal(guard_state_stats(g)->n_saves, 1);
    guard_state_save(g, 6001, false); /* in flight: skipped */
    assert_int_equal(guard_state_stats(g)->n_skipped, 1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(guard_state_stats(g)->n_writes, 1);
    guard_tick(g, 12000); /* nothing changed: no new file */
    assert_int_equal(guard_state_stats(g)->n_saves, 1);
    struct ban_key c = key("198.18.9.8");
    assert_int_equal(guard_ban(g, &c, 0, 12500, NULL), 0);
    guard_tick(g, 18000);
    assert_int_equal(guard_state_stats(g)->n_saves, 2);
    guard_free(g); /* with the write in flight */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);

    g = mk(1000, NULL);
    assert_int_equal(ban_stats(guard_bans(g))->n_active, 2);
    guard_free(g);
}

/* An offload hook that runs the job at once, before it returns. */
static unsigned n_inline_jobs;
static int inline_queue(void *ctx, void (*work)(void *arg), void (*done)(void *arg, bool ran),
                        void *arg)
{
    (void)ctx;
    n_inline_jobs++;
    work(arg);
    done(arg, true);
    return 0;
}

/* A hook that refuses: the guard writes on its own thread instead. */
static int refusing_queue(void *ctx, void (*work)(void *arg), void (*done)(void *arg, bool ran),
                          void *arg)
{
    (void)ctx, (void)work, (void)done, (void)arg;
    return -EAGAIN;
}

/* The guard only needs "run this elsewhere, then tell me": a hook may finish before it
 * returns, or refuse, and every save still lands once. */
static void test_state_offload_hook_contract(void **state)
{
    (void)state;
    struct guard_opts o = {
        .cfg = &cfg, .policy = &pol, .seed = 42, .offload = {.queue = inline_queue}};
    struct guard *g;
    assert_int_equal(guard_new(&g, &o, 1000), 0);
    assert_int_equal(guard_state_open(g, dir, 1000), 0);
    struct ban_key a = key("198.18.9.7");
    assert_int_equal(guard_ban(g, &a, 600, 1000, NULL), 0);
    n_inline_jobs = 0;
    guard_state_save(g, 1000, false);
    guard_state_save(g, 1001, false); /* the first one finished: not skipped */
    assert_int_equal(n_inline_jobs, 2);
    assert_int_equal(guard_state_stats(g)->n_writes, 2);
    assert_int_equal(guard_state_stats(g)->n_skipped, 0);
    guard_free(g);

    o.offload = (struct guard_offload){.queue = refusing_queue};
    assert_int_equal(guard_new(&g, &o, 2000), 0);
    assert_int_equal(guard_state_open(g, dir, 2000), 0);
    assert_int_equal(ban_stats(guard_bans(g))->n_active, 1);
    guard_state_save(g, 2000, false);
    guard_state_save(g, 2001, false);
    assert_int_equal(guard_state_stats(g)->n_writes, 2);
    assert_int_equal(guard_state_stats(g)->n_skipped, 0);
    guard_free(g);
}

/* Building the payload is a walk over the table: measured for a full one. */
static void test_state_build_time(void **state)
{
    (void)state;
    pol.guard_max_bans = 100000;
    struct guard *g = mk(1000, NULL);
    char ip[32];
    log_set_level(LOG_LEVEL_WARN);
    for (unsigned i = 0; i < 100000; i++) {
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
        struct ban_key k = key(ip);
        assert_int_equal(guard_ban(g, &k, 600, 1000, NULL), 0);
    }
    log_set_level(LOG_LEVEL_INFO);
    guard_state_save(g, 2000, true);
    const struct guard_state_stats *st = guard_state_stats(g);
    printf("guard_state: 100000 bans: payload %zu bytes built in %llu us\n", st->last_len,
           (unsigned long long)st->last_build_us);
    guard_free(g);
    g = mk(3000, NULL);
    assert_int_equal(ban_stats(guard_bans(g))->n_active, 100000);
    guard_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_state_keeps_origin_level_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_expired_while_down_become_history, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_refuses_bad_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_periodic_save_off_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_offload_hook_contract, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_build_time, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
