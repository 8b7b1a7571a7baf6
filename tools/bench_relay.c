/*
 * bench_relay: the edge's CPU per relayed REGISTER and its 2xx, in process, with no
 * socket and no other process in the way: N UDP flows (default 1,000) registered once,
 * then the same REGISTER and the registrar's 200 OK through edge_rx_public and
 * edge_rx_core again and again. Prints the best round of R (default 200), which is what
 * the code costs when the machine leaves it alone.
 *
 *   bench_relay [N] [R]
 *
 * scripts/bench_relay.sh builds it against another commit too and runs both in turn, so
 * a change to the relay is measured against its reference in one invocation. It compiles
 * against the edge API with the output contract (transport.h) and the one before it.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edge_bench.h"

struct client {
    struct sockaddr_in addr;
    char req[1024], resp[2048];
    size_t req_len, resp_len;
};

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1000;
    unsigned rounds = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 200;
    if (n == 0 || n > 50000 || rounds == 0) {
        fprintf(stderr, "usage: bench_relay [N (1..50000)] [ROUNDS]\n");
        return 2;
    }
    static struct config cfg;
    static struct policy pol;
    struct edge *e = bench_edge(&cfg, &pol, n + 16);
    struct client *cl = calloc(n, sizeof(*cl));
    if (!cl) {
        fprintf(stderr, "bench_relay: no memory\n");
        return 1;
    }
    const struct sockaddr_in reg = {
        .sin_family = AF_INET, .sin_port = htons(5080), .sin_addr.s_addr = htonl(0x7f000001)};
    for (unsigned i = 0; i < n; i++) {
        struct client *c = &cl[i];
        char ip[INET_ADDRSTRLEN], contact[96];
        c->addr = (struct sockaddr_in){.sin_family = AF_INET,
                                       .sin_port = htons((uint16_t)(10000 + i % 50000)),
                                       .sin_addr.s_addr = htonl(0xc6120001u)}; /* 198.18.0.1 */
        inet_ntop(AF_INET, &c->addr.sin_addr, ip, sizeof(ip));
        snprintf(contact, sizeof(contact), "sip:u%u@%s:%u", i, ip, ntohs(c->addr.sin_port));
        c->req_len =
            (size_t)snprintf(c->req, sizeof(c->req),
                             "REGISTER sip:example.com SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP %s:%u;branch=z9hG4bK%u;rport\r\n"
                             "Max-Forwards: 70\r\nFrom: <sip:u%u@example.com>;tag=t%u\r\n"
                             "To: <sip:u%u@example.com>\r\nCall-ID: c%u@%s\r\nCSeq: 2 REGISTER\r\n"
                             "Contact: <%s>\r\nExpires: 3600\r\nUser-Agent: bench phone 1.0\r\n"
                             "Authorization: Digest username=\"u%u\", realm=\"x\", nonce=\"n\", "
                             "uri=\"sip:example.com\", response=\"r\"\r\nContent-Length: 0\r\n\r\n",
                             ip, ntohs(c->addr.sin_port), i, i, i, i, i, ip, contact, i);
        bench_last_len = 0;
        edge_rx_public(e, 0, c->req, c->req_len, (const struct sockaddr *)&c->addr, 1000);
        c->resp_len = bench_ok_for_last(c->resp, sizeof(c->resp), contact);
        edge_rx_core(e, c->resp, c->resp_len, (const struct sockaddr *)&reg, 1001);
    }
    double best = 1e30;
    for (unsigned r = 0; r < rounds; r++) {
        double t0 = bench_now_s();
        for (unsigned i = 0; i < n; i++) {
            struct client *c = &cl[i];
            edge_rx_public(e, 0, c->req, c->req_len, (const struct sockaddr *)&c->addr, 2000);
            edge_rx_core(e, c->resp, c->resp_len, (const struct sockaddr *)&reg, 2001);
        }
        double us = (bench_now_s() - t0) / n * 1e6;
        if (us < best)
            best = us;
    }
    const struct edge_stats *st = edge_stats(e);
    unsigned long long want = (unsigned long long)n * (rounds + 1);
    if (st->relayed_register != want || st->relayed_response_to_client != want) {
        fprintf(stderr, "bench_relay: relayed %llu REGISTERs and %llu responses, expected %llu\n",
                (unsigned long long)st->relayed_register,
                (unsigned long long)st->relayed_response_to_client, want);
        return 1;
    }
    printf("%.3f us per relayed REGISTER and 2xx (best of %u rounds of %u flows)\n", best, rounds,
           n);
    edge_free(e);
    free(cl);
    return 0;
}
