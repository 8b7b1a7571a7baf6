/*
 * keepalive: server pings to registered NATed UDP clients.
 *
 * A CRLFCRLF or OPTIONS ping per flow each ping interval keeps the NAT mapping open;
 * unanswered OPTIONS pings, or a client that stops refreshing, mark the flow dead
 * (flow_reg.c then de-registers it). Answers are absorbed by relay_client_response.
 */
#include <arpa/inet.h>
#include <string.h>

#include "edge/edge_priv.h"
#include "sipedge/flow_table.h"
#include "sipedge/log.h"
#include "sipedge/netaddr.h"
#include "sipedge/sip_build.h"
#include "sipedge/siphash.h"

static void send_ping(struct edge *e, struct flow *f)
{
    struct tx_dest d = edge_dest_flow(f);
    struct sip_build b;
    if (!edge_begin(e, &d, &b))
        return;
    if (e->pol.nat_ping_method == 0) {
        sip_build_str(&b, "\r\n\r\n");
        edge_send(e, &d, &b);
        e->st.ping_sent++;
        return;
    }
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    netaddr_ip(&f->remote.sa, ip, sizeof(ip), &port);
    bool v6 = f->remote.sa.sa_family == AF_INET6;
    const char *lst = edge_flow_listener(e, f)->text;
    uint64_t id = siphash13(e->branch_k0 ^ ++e->dereg_seq, e->branch_k1, f->token, f->token_len);
    sip_build_fmt(&b, "OPTIONS sip:%s%s%s:%u SIP/2.0\r\n", v6 ? "[" : "", ip, v6 ? "]" : "", port);
    sip_build_fmt(&b, "Via: SIP/2.0/UDP %s;branch=" EDGE_BRANCH_PING "%016llx;rport\r\n", lst,
                  (unsigned long long)id);
    sip_build_str(&b, "Max-Forwards: 70\r\n");
    sip_build_fmt(&b, "From: <sip:keepalive@%s>;tag=%08llx\r\n", lst,
                  (unsigned long long)(id >> 32));
    sip_build_fmt(&b, "To: <sip:%s%s%s:%u>\r\n", v6 ? "[" : "", ip, v6 ? "]" : "", port);
    sip_build_fmt(&b, "Call-ID: %016llx@sipedge\r\n", (unsigned long long)id);
    sip_build_str(&b, "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    if (b.err) {
        edge_send(e, &d, &b); /* counts the overflow, sends nothing */
        return;
    }
    edge_send(e, &d, &b);
    f->is_ping_outstanding = true;
    e->st.ping_sent++;
}

/*
 * Server pings to registered NATed UDP flows, every nat_ping_interval_s. Each tick
 * handles the slots congruent to the tick number, so the whole table is covered once
 * per interval without a timer per flow. OPTIONS pings left unanswered
 * nat_max_missed_pings times in a row mark the flow dead.
 */
void edge_nat_pings(struct edge *e, uint64_t now_ms)
{
    if (!e->pol.nat_keepalive || !e->pol.nat_ping_interval_s)
        return;
    uint32_t step = e->pol.nat_ping_interval_s;
    uint32_t cap = flow_table_capacity(e->flows);
    for (uint32_t i = (uint32_t)(e->n_ticks % step); i < cap; i += step) {
        struct flow *f = flow_table_get_slot(e->flows, i);
        if (f->state != FLOW_LIVE || f->transport != FLOW_UDP || !f->is_nat ||
            f->reg_until_ms <= now_ms)
            continue;
        /* A NATed client was told to refresh within edge_nat_expires; one that stays silent
         * for twice that (plus a ping interval) is gone, whatever the ping method. */
        uint64_t overdue_ms = 2ull * edge_nat_expires(e, f) * 1000 + (uint64_t)step * 1000;
        if (now_ms > f->last_rx_ms && now_ms - f->last_rx_ms > overdue_ms) {
            char a[LOG_ADDR_MAX];
            log_info("flow %s dead: no refresh for %llu s",
                     log_fmt_addr(&f->remote.sa, a, sizeof(a)),
                     (unsigned long long)((now_ms - f->last_rx_ms) / 1000));
            edge_flow_die(e, f, now_ms, "refresh overdue");
            continue;
        }
        if (f->is_ping_outstanding && ++f->missed_pings >= e->pol.nat_max_missed_pings) {
            char a[LOG_ADDR_MAX];
            log_info("flow %s dead: %u pings unanswered", log_fmt_addr(&f->remote.sa, a, sizeof(a)),
                     f->missed_pings);
            edge_flow_die(e, f, now_ms, "pings unanswered");
            continue;
        }
        send_ping(e, f);
    }
}
