#!/usr/bin/env bash
# regcache.resync: assert. 40 clients register once through sipedge at Kamailio (usrloc
# in memory), asking for an hour, and then stay silent. Kamailio is stopped for 10 s and
# started again empty. Their own refreshes are an hour away, so nothing but sipedge can
# refill the registrar: it re-registers each client itself, with the flow's Path and the
# AOR asserted in P-Asserted-Identity, which Kamailio trusts from sipedge's core address
# (TRUSTED_EDGE_RESYNC, the lines the README gives). All 40 must be bound again, with a
# Path via sipedge, within 30 s of Kamailio's return.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
it_init registrar_resync
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)
CLIENTS=40

make_csv "$IT_TMP/clients.csv" 1000 "$CLIENTS"
test_policy_dir "$IT_TMP/policy" "regcache:
  enabled: true
  resync: assert"

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH "TRUSTED_EDGE=\"$CORE\"" \
    TRUSTED_EDGE_RESYNC
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$KAM:5060" \
    --policy "$IT_TMP/policy" --log-level info


run_sipp reg -sf "$IT_SIPP_DIR/reg_auth_uac.xml" -inf "$IT_TMP/clients.csv" \
    -key domain "$PUB" -key expires 3600 -t un -max_socket $((CLIENTS + 20)) \
    -i "$CLI" -m "$CLIENTS" -r 20 -l "$CLIENTS" -max_retrans 4 -recv_timeout 5000 "$PUB:5060"
sipp_check reg $? "$CLIENTS"
n=$(kam_bound_count "$CORE" 1000 "$CLIENTS")
[ "$n" -ge "$CLIENTS" ] || fail "only $n of $CLIENTS bound at Kamailio after registering"
log "all $CLIENTS bound; stopping Kamailio for 10 s"

kam_stop_all
sleep 10
[ "$(edge_stat registrar_marked_down)" -ge 1 ] || fail "sipedge did not see the registrar go down"
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH "TRUSTED_EDGE=\"$CORE\"" \
    TRUSTED_EDGE_RESYNC
T_BACK=$SECONDS
n=$(kam_bound_count "$CORE" 1000 "$CLIENTS")
log "Kamailio back, $n of $CLIENTS bound"
[ "$n" = 0 ] || fail "Kamailio came back with $n bindings: the test needs it empty"
while [ $((SECONDS - T_BACK)) -lt 30 ]; do
    n=$(kam_bound_count "$CORE" 1000 "$CLIENTS")
    [ "$n" -ge "$CLIENTS" ] && break
    sleep 1
done
sent=$(edge_stat resync_sent)
okd=$(edge_stat resync_answered_ok)
log "$n of $CLIENTS bound $((SECONDS - T_BACK)) s after the return; resync_sent=$sent resync_answered_ok=$okd"
[ "$n" -ge "$CLIENTS" ] || fail "only $n of $CLIENTS re-registered within 30 s (resync_sent=$sent, ok=$okd)"
[ "${okd:-0}" -ge "$CLIENTS" ] || fail "resync_answered_ok=$okd, want >= $CLIENTS"
stop_sipedge
log PASS
