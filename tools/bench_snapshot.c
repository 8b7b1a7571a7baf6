/*
 * bench_snapshot: cost of the edge's state snapshot with N UDP flows (default 100,000),
 * each holding one confirmed, authenticated registration: time to serialise on the loop
 * thread (edge_state_save), to write the file (statefile_write: write, fsync, rename),
 * to read and check it back, and to restore it into a fresh edge; and the file's size.
 *
 *   bench_snapshot [N] [DIR]
 *
 * The flows are made the way the relay makes them: a REGISTER from each client address
 * through edge_rx_public, and the registrar's 200 back through edge_rx_core.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edge_bench.h"
#include "sipedge/statefile.h"

/* Registers n clients; with jlen, drains the journal every 2500 REGISTERs as the worker's
 * tick does, adding its size to *jlen. */
static void register_all(struct edge *e, uint32_t n, size_t *jlen)
{
    const struct sockaddr_in reg = {
        .sin_family = AF_INET, .sin_port = htons(5080), .sin_addr.s_addr = htonl(0x7f000001)};
    char msg[2048], resp[4096], ip[32], contact[96];
    for (uint32_t i = 0; i < n; i++) {
        struct sockaddr_in c = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)(10000 + i % 50000)),
                                .sin_addr.s_addr = htonl(0xc6120000u + i / 50000)}; /* 198.18.x.x */
        inet_ntop(AF_INET, &c.sin_addr, ip, sizeof(ip));
        snprintf(contact, sizeof(contact), "sip:u%u@%s:%u", i, ip, ntohs(c.sin_port));
        int len = snprintf(msg, sizeof(msg),
                           "REGISTER sip:example.com SIP/2.0\r\n"
                           "Via: SIP/2.0/UDP %s:%u;branch=z9hG4bK%u;rport\r\n"
                           "Max-Forwards: 70\r\nFrom: <sip:u%u@example.com>;tag=t%u\r\n"
                           "To: <sip:u%u@example.com>\r\nCall-ID: c%u@%s\r\nCSeq: 2 REGISTER\r\n"
                           "Contact: <%s>\r\nExpires: 3600\r\nUser-Agent: bench phone 1.0\r\n"
                           "Authorization: Digest username=\"u%u\", realm=\"x\", nonce=\"n\", "
                           "uri=\"sip:example.com\", response=\"r\"\r\nContent-Length: 0\r\n\r\n",
                           ip, ntohs(c.sin_port), i, i, i, i, i, ip, contact, i);
        bench_last_len = 0;
        edge_rx_public(e, 0, msg, (size_t)len, (const struct sockaddr *)&c, 1000);
        size_t rl = bench_ok_for_last(resp, sizeof(resp), contact);
        if (rl)
            edge_rx_core(e, resp, rl, (const struct sockaddr *)&reg, 1001);
        if (jlen && i % 2500 == 2499) {
            struct statefile_buf jb;
            *jlen += edge_journal_take(e, &jb);
            statefile_buf_free(&jb);
        }
    }
}

int main(int argc, char **argv)
{
    uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 100000;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    struct config cfg;
    struct policy pol;
    struct edge *e = bench_edge(&cfg, &pol, n + 16);
    double r0 = bench_now_s();
    register_all(e, n, NULL);
    double r1 = bench_now_s();
    /* The same REGISTERs into a second edge with the journal on: its cost per REGISTER. */
    struct config cfg3;
    struct policy pol3;
    struct edge *e3 = bench_edge(&cfg3, &pol3, n + 16);
    edge_journal_enable(e3, true);
    double r2 = bench_now_s();
    size_t jlen = 0;
    register_all(e3, n, &jlen);
    double r3 = bench_now_s();
    edge_free(e3);
    printf("flows: %u\n", edge_n_flows(e));

    struct statefile_buf b;
    statefile_buf_init(&b);
    double t0 = bench_now_s();
    int saved = edge_state_save(e, 2000, &b);
    double t1 = bench_now_s();
    /* The worker serialises in slices of 8192 table slots, one per 250 ms tick. */
    struct statefile_buf sb;
    statefile_buf_init(&sb);
    struct edge_snapshot cur = {0};
    double slice_max = 0;
    int n_slices = 0, step = 0;
    while (step == 0) {
        double s0 = bench_now_s();
        step = edge_state_save_step(e, 2000, &sb, &cur, 8192);
        double s1 = bench_now_s();
        if (s1 - s0 > slice_max)
            slice_max = s1 - s0;
        n_slices++;
    }
    statefile_buf_free(&sb);
    char path[512], err[256];
    statefile_path(path, sizeof(path), dir, "bench-edge.state");
    double tw = bench_now_s();
    int rc =
        statefile_write(path, EDGE_STATE_KIND, EDGE_STATE_VERSION, b.p, b.len, err, sizeof(err));
    double t2 = bench_now_s();
    if (saved < 0 || rc < 0) {
        fprintf(stderr, "bench_snapshot: %s\n", rc < 0 ? err : "save failed");
        return 1;
    }
    uint8_t *p;
    size_t len;
    uint32_t ver;
    rc =
        statefile_read(path, EDGE_STATE_KIND, EDGE_STATE_VERSION, &p, &len, &ver, err, sizeof(err));
    double t3 = bench_now_s();
    struct config cfg2;
    struct policy pol2;
    struct edge *e2 = bench_edge(&cfg2, &pol2, n + 16);
    struct edge_restore_result res;
    double t4 = bench_now_s();
    if (rc == 0)
        rc = edge_state_restore(e2, p, len, ver, 5000, &res, err, sizeof(err));
    double t5 = bench_now_s();
    if (rc < 0) {
        fprintf(stderr, "bench_snapshot: restore: %s\n", err);
        return 1;
    }
    printf("snapshot of %d UDP flows (%u registrations restored): %zu bytes (%.0f bytes/flow)\n",
           saved, res.n_regs, b.len + STATEFILE_HDR_LEN, (double)b.len / (saved ? saved : 1));
    printf("  serialise in one pass  %8.1f ms\n", (t1 - t0) * 1e3);
    printf("  serialise in slices    %8.1f ms at most per slice (%d slices of 8192 slots, one per "
           "tick: what the loop sees)\n",
           slice_max * 1e3, n_slices);
    printf("  write+fsync+rename     %8.1f ms (off the loop, thread pool)\n", (t2 - tw) * 1e3);
    printf("  read+verify            %8.1f ms\n", (t3 - t2) * 1e3);
    printf("  restore                %8.1f ms\n", (t5 - t4) * 1e3);
    printf("relay of %u REGISTERs and their 2xx: %.2f us each with the journal off, %.2f us on "
           "(x%.3f); %.0f journal bytes per REGISTER\n",
           n, (r1 - r0) * 1e6 / n, (r3 - r2) * 1e6 / n, (r3 - r2) / (r1 - r0), (double)jlen / n);
    unlink(path);
    free(p);
    statefile_buf_free(&b);
    edge_free(e2);
    edge_free(e);
    return 0;
}
