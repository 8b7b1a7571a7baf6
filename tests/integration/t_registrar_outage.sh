#!/usr/bin/env bash
# A registrar that comes back empty is refilled. 40 clients register with digest auth at
# Kamailio (usrloc in memory) through sipedge with registration caching on, then refresh
# every 10 s; sipedge answers those refreshes from its cache. Kamailio is stopped (by
# PID, every process of it) for 10 s and started again on the same address with an empty
# location table. sipedge pings the registrar (OPTIONS) and, having seen it go down and
# come back, marks its cached bindings stale, so each client's next refresh goes upstream.
# Checks:
#   - no client REGISTER fails before, during or after the outage (every client's sipp
#     call succeeds: 200 on each refresh, a fresh challenge answered at most once);
#   - the refreshes before the outage were answered from the cache (regcache_hit);
#   - all 40 AoRs are bound at the restarted Kamailio, with a Path via sipedge, within
#     30 s of its return.
# Runs about 75 s.
# shellcheck source=tests/integration/lib.sh disable=SC2034
. "$(dirname "$0")/lib.sh"
it_init registrar_outage
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)

CLIENTS=40
REFRESH_S=10
REFRESHES=6 # fixed in reg_refresh_uac.xml
OUTAGE_S=10
BACK_WITHIN_S=30
SIPP_TIMEOUT=$((REFRESHES * REFRESH_S + 30))

make_csv "$IT_TMP/clients.csv" 1000 "$CLIENTS"
test_policy_dir "$IT_TMP/policy" "regcache:
  enabled: true"

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$KAM:5060" \
    --policy "$IT_TMP/policy" --log-level debug


bound_count() { kam_bound_count "$CORE" 1000 "$CLIENTS"; }

bg_sipp clients -sf "$IT_SIPP_DIR/reg_refresh_uac.xml" -inf "$IT_TMP/clients.csv" \
    -key domain "$PUB" -key expires 3600 -t un -max_socket $((CLIENTS + 20)) \
    -i "$CLI" -m "$CLIENTS" -l "$CLIENTS" -r 20 -d $((REFRESH_S * 1000)) \
    -max_retrans 4 -recv_timeout 8000 "$PUB:5060"
CLIENTS_PID=$BG_PID
T0=$SECONDS
t() { echo "t=$((SECONDS - T0))s"; }

# 1. Initial registrations: every client bound at Kamailio.
n=0
for ((i = 0; i < 30; i++)); do
    n=$(bound_count)
    [ "$n" -ge "$CLIENTS" ] && break
    kill -0 "$CLIENTS_PID" 2>/dev/null || fail "clients ended early: $(tail -n 5 "$IT_TMP/sipp-clients-errors.log" 2>/dev/null)"
    sleep 0.5
done
[ "$n" -ge "$CLIENTS" ] || fail "only $n of $CLIENTS clients bound at Kamailio after 15 s"
log "$(t): all $CLIENTS clients bound at Kamailio"

# 2. The first refresh round is answered by sipedge's cache.
for ((i = 0; i < 2 * (REFRESH_S + 5); i++)); do
    [ "$(grep -c 'REFRESHED ' "$IT_TMP/sipp-clients-logs.log" 2>/dev/null)" -ge "$CLIENTS" ] && break
    sleep 0.5
done
refreshed=$(grep -c 'REFRESHED ' "$IT_TMP/sipp-clients-logs.log" 2>/dev/null)
[ "${refreshed:-0}" -ge "$CLIENTS" ] || fail "$(t): only ${refreshed:-0} of $CLIENTS first refreshes answered"
hits=$(edge_stat regcache_hit)
log "$(t): first refresh round done; regcache_hit=$hits"
[ "${hits:-0}" -ge "$CLIENTS" ] || fail "refreshes not answered from the cache (regcache_hit=${hits:-missing}): precondition of the test"

# 3. Outage: Kamailio gone for OUTAGE_S, then back, empty, on the same address. It
# starts 3 s after the first round, so that the second round falls inside it.
sleep 3
kam_stop_all
cp "$KAM_LOG" "$IT_TMP/kamailio-before.log"
ok_before=$(grep -c 'REFRESHED ' "$IT_TMP/sipp-clients-logs.log")
sleep "$OUTAGE_S"
kill -0 "$CLIENTS_PID" 2>/dev/null || fail "$(t): clients ended during the outage: $(tail -n 5 "$IT_TMP/sipp-clients-errors.log" 2>/dev/null)"
ok_during=$(($(grep -c 'REFRESHED ' "$IT_TMP/sipp-clients-logs.log") - ok_before))
log "$(t): outage over; $ok_during refreshes answered 200 during it"
[ "$ok_during" -ge "$CLIENTS" ] ||
    fail "only $ok_during refreshes answered during the ${OUTAGE_S} s outage (want at least $CLIENTS)"
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
T_BACK=$SECONDS
n=$(bound_count)
log "$(t): Kamailio back (pid $KAM_PID), $n of $CLIENTS bound"

# 4. Refill: all AoRs bound again within BACK_WITHIN_S of the return.
while [ $((SECONDS - T_BACK)) -lt "$BACK_WITHIN_S" ]; do
    n=$(bound_count)
    [ "$n" -ge "$CLIENTS" ] && break
    kill -0 "$CLIENTS_PID" 2>/dev/null || break
    sleep 1
done
log "$(t): $n of $CLIENTS bound at Kamailio $((SECONDS - T_BACK)) s after its return; regcache_hit=$(edge_stat regcache_hit) relayed_register=$(edge_stat relayed_register)"
refill_ok=1
[ "$n" -ge "$CLIENTS" ] || refill_ok=0

# 5. Every client finishes its refreshes with a 200 each.
wait "$CLIENTS_PID"
rc=$?
ok=$(sipp_stat clients 'SuccessfulCall(C)' 2>/dev/null)
bad=$(sipp_stat clients 'FailedCall(C)' 2>/dev/null)
log "$(t): clients: sipp status $rc, successful $ok, failed $bad; refreshes answered $(grep -c 'REFRESHED ' "$IT_TMP/sipp-clients-logs.log")"
[ "$refill_ok" = 1 ] ||
    fail "only $n of $CLIENTS AoRs bound at the restarted Kamailio within ${BACK_WITHIN_S} s of its return (clients: successful $ok, failed $bad)"
[ "$rc" -eq 0 ] && [ "$ok" = "$CLIENTS" ] && [ "$bad" = 0 ] ||
    fail "a client REGISTER failed: sipp status $rc, successful $ok/$CLIENTS, failed $bad"
n=$(bound_count)
[ "$n" -ge "$CLIENTS" ] || fail "at the end only $n of $CLIENTS AoRs bound at Kamailio"
stop_sipedge
log PASS
