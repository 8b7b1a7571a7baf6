#!/usr/bin/env bash
# Registration caching at scale: 1,000 clients behind NAT (one socket, so one NAT mapping
# and one sipedge flow, each) register with digest auth at Kamailio through sipedge, then
# refresh every 30 s for 5 minutes (10 refreshes each). sipedge tells them Expires <= 60
# but asks Kamailio for 3600, and answers the unchanged refreshes itself. Checks:
#   - every client's REGISTER and refresh got a 200 (sipp: 1,000 successful calls);
#   - Kamailio received at most 1/10 of the refreshes the clients sent
#     (core:rcv_requests_register after the initial registrations);
#   - every client's binding stays valid at Kamailio the whole time (ul.dump samples);
#   - registrar outage: Kamailio is stopped (SIGSTOP) for 60 s in the middle; the
#     refreshes during it are still answered 200 by sipedge.
# Environment: NAT_CLIENTS (1000), NAT_REFRESH_S (30), NAT_OUTAGE_S (60, 0 = none).
# Runs about 6 minutes: CTest TIMEOUT 480.
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$(dirname "$0")/nat_lib.sh"
nat_enter "$0" "$@"
it_init nat_regcache
need_cmd sipp python3 kamailio kamcmd
need_sipedge

CLIENTS=${NAT_CLIENTS:-1000}
REFRESH_S=${NAT_REFRESH_S:-30}
OUTAGE_S=${NAT_OUTAGE_S:-60}
REFRESHES=10 # fixed in nat_reg_refresh.xml
# All clients share the NAT's one address: stay well inside the per-IP budget of the
# guard (guard.yaml: 200 messages/s), 2 REGISTERs per new client.
RATE=50
RUN_S=$((CLIENTS / RATE + REFRESHES * REFRESH_S))
SIPP_TIMEOUT=$((RUN_S + 60))
[ "$CLIENTS" -le 1000 ] || fail "NAT_CLIENTS at most 1000 (users 1000..1999)"

test_policy_dir "$IT_TMP/policy"
make_csv "$IT_TMP/users.csv" 1000 "$CLIENTS"

KAM_CHILDREN=4 start_kamailio "$IT_KAM_DIR/registrar.cfg" "$SRV_REG" 5060 WITH_AUTH \
    "TRUSTED_EDGE=\"$SRV_CORE\""
start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
    --policy "$IT_TMP/policy" --log-level info

reg0=$(kam_stat core:rcv_requests_register)
[ -n "$reg0" ] || fail "kamcmd stats.get_statistics core:rcv_requests_register gave nothing"

SIPP_NO_MSG=1 cli_bg_sipp clients -sf "$IT_SIPP_DIR/nat_reg_refresh.xml" -inf "$IT_TMP/users.csv" \
    -key domain "$SRV_PUB" -key expires 3600 -t un -max_socket $((CLIENTS + 100)) \
    -i "$NAT_CLI_IP" -m "$CLIENTS" -l "$CLIENTS" -r "$RATE" -d $((REFRESH_S * 1000)) \
    -max_retrans 4 -recv_timeout 10000 "$SRV_PUB:5060"
CLIENTS_PID=$BG_PID
T0=$SECONDS

# live_bindings: how many of the clients' AoRs hold a contact with Expires > 0, and the
# smallest such Expires.
mapfile -t USERS < <(seq 1000 $((1000 + CLIENTS - 1)))
live_bindings() {
    kam_bindings "$IT_TMP/ul.dump" "${USERS[@]}" | sort -u -k1,1 |
        awk 'BEGIN{n=0; m=-1} {n++; if (m < 0 || $2 < m) m = $2} END{print n, m}'
}

# 1. The initial registrations (RATE/s): all bindings present.
n=0
for ((i = 0; i < 120; i++)); do
    read -r n min < <(live_bindings)
    [ "$n" -ge "$CLIENTS" ] && break
    kill -0 "$CLIENTS_PID" 2>/dev/null || fail "sipp clients ended early: $(tail -n 5 "$IT_TMP/sipp-clients-errors.log" 2>/dev/null)"
    sleep 0.5
done
[ "$n" -ge "$CLIENTS" ] || fail "only $n of $CLIENTS clients registered at Kamailio after 60 s"
reg_initial=$(kam_stat core:rcv_requests_register)
S_INIT=$(edge_stats)
log "all $CLIENTS registered after $((SECONDS - T0)) s; Kamailio REGISTERs so far $((reg_initial - reg0)); smallest expires $min"
[ "$(stat_of "$S_INIT" regcache_hit)" = 0 ] || fail "cache answered before any refresh was due: $S_INIT"

# 2. Refresh phase: sample the bindings; stop Kamailio for OUTAGE_S in the middle.
SAMPLES=()
OUT_AT=$((T0 + RUN_S / 2 - OUTAGE_S / 2))
outage_done=0
while kill -0 "$CLIENTS_PID" 2>/dev/null && [ $((SECONDS - T0)) -lt "$SIPP_TIMEOUT" ]; do
    if [ "$outage_done" = 0 ] && [ "$OUTAGE_S" -gt 0 ] && [ "$SECONDS" -ge "$OUT_AT" ]; then
        hits0=$(edge_stat regcache_hit)
        kam_signal STOP
        log "registrar outage: SIGSTOP to Kamailio's ${#KAM_ALL_PIDS[@]} processes (${KAM_ALL_PIDS[*]}) for ${OUTAGE_S}s"
        for p in "${KAM_ALL_PIDS[@]}"; do
            [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = T ] || fail "Kamailio process $p not stopped"
        done
        reg_stop=$(edge_stat relayed_register)
        sleep "$OUTAGE_S"
        reg_cont=$(edge_stat relayed_register)
        kam_signal CONT
        hits1=$(edge_stat regcache_hit)
        log "registrar outage over: sipedge answered $((hits1 - hits0)) refreshes meanwhile, relayed $((reg_cont - reg_stop)) REGISTERs"
        [ "$reg_cont" = "$reg_stop" ] || fail "REGISTERs were relayed to the stopped registrar during the outage"
        [ $((hits1 - hits0)) -ge $((CLIENTS * (OUTAGE_S / REFRESH_S) / 2)) ] ||
            fail "during the outage sipedge answered only $((hits1 - hits0)) refreshes"
        outage_done=1
        continue
    fi
    read -r n min < <(live_bindings)
    SAMPLES+=("t=$((SECONDS - T0))s:$n/$CLIENTS,min_expires=$min")
    log "bindings at Kamailio t=$((SECONDS - T0))s: $n/$CLIENTS live, smallest expires $min"
    [ "$n" -ge "$CLIENTS" ] || fail "only $n of $CLIENTS bindings valid at Kamailio at t=$((SECONDS - T0))s"
    for ((i = 0; i < 40; i++)); do
        kill -0 "$CLIENTS_PID" 2>/dev/null || break
        [ "$outage_done" = 0 ] && [ "$OUTAGE_S" -gt 0 ] && [ "$SECONDS" -ge "$OUT_AT" ] && break
        sleep 1
    done
done
wait "$CLIENTS_PID"
rc=$?
reg_end=$(kam_stat core:rcv_requests_register)
S_END=$(edge_stats)
read -r n min < <(live_bindings)
log "end t=$((SECONDS - T0))s: bindings $n/$CLIENTS, smallest expires $min"
[ "$n" -ge "$CLIENTS" ] || fail "only $n of $CLIENTS bindings valid at Kamailio at the end"

ok=$(sipp_stat clients 'SuccessfulCall(C)' 2>/dev/null)
bad=$(sipp_stat clients 'FailedCall(C)' 2>/dev/null)
sent=$((${ok:-0} * REFRESHES))
hits=$(stat_of "$S_END" regcache_hit)
upstream=$((reg_end - reg_initial))
log "sipp status $rc: $ok successful, $bad failed clients; refreshes sent $sent"
log "sipedge: regcache_hit=$hits relayed_register=$(stat_of "$S_END" relayed_register) ping_sent=$(stat_of "$S_END" ping_sent) flows=$(stat_of "$S_END" flows)"
log "Kamailio REGISTERs: initial $((reg_initial - reg0)), during refreshes $upstream (limit $((sent / 10)))"
log "samples: ${SAMPLES[*]}"
[ "$rc" -eq 0 ] && [ "$ok" = "$CLIENTS" ] && [ "$bad" = 0 ] ||
    fail "clients: sipp status $rc, successful $ok/$CLIENTS, failed $bad"
[ "$upstream" -le $((sent / 10)) ] ||
    fail "Kamailio saw $upstream REGISTERs for $sent client refreshes (more than 1/10)"
[ "${hits:-0}" -ge $((sent * 9 / 10)) ] || fail "regcache_hit=$hits for $sent refreshes"
stop_sipedge
log PASS
