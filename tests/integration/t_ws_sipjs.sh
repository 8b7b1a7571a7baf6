#!/usr/bin/env bash
# SIP.js (npm "sip.js", in Node with the `ws` package) registers over ws through sipedge
# to the embedded registrar (digest), receives an INVITE that sipp sends to the
# registrar (routed back through the Path and the WebSocket flow), refuses it with 486,
# and unregisters; afterwards an INVITE for the same user fails at the registrar.
. "$(dirname "$0")/lib.sh"
it_init ws_sipjs
. "$IT_LIB_DIR/clients/ws_lib.sh"
need_cmd sipp python3
need_sipedge
ws_clients_setup

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
CALLER=$(it_addr 12)
WS_PORT=$(free_tcp_port "$PUB")

make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy"
start_sipedge --listen-udp "$PUB:5060" --listen-ws "$PUB:$WS_PORT" --core "$CORE:5070" \
    --registrar-listen "$REG:5080" --users "$IT_TMP/users.txt" --realm sipedge-test \
    --policy "$IT_TMP/policy" --log-level debug

node_bg sipjs sipjs_ua.mjs --ws "ws://$PUB:$WS_PORT" --uri "sip:alice@$PUB" --password alicepw \
    --wait-invite 20 --timeout 40
UA_PID=$BG_PID
wait_for_line "$IT_TMP/sipjs.out" '^REGISTERED' 15 "$UA_PID" ||
    fail "SIP.js did not register over ws: $(tail -3 "$IT_TMP/sipjs.out" | tr '\n' ' ')"
grep -q "ws .*connection .* open on $PUB:$WS_PORT" "$SIPEDGE_LOG" ||
    fail "sipedge logged no WebSocket connection on $PUB:$WS_PORT"

run_sipp call -sf "$WS_SIPP_DIR/ws_invite_busy.xml" -key callee alice -key domain "$PUB" \
    -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 4 -recv_timeout 8000 \
    "$REG:5080"
sipp_check call $? 1
wait_for_line "$IT_TMP/sipjs.out" '^INCOMING INVITE' 5 ||
    fail "SIP.js did not report the INVITE"

wait "$UA_PID"
ua_rc=$?
grep -q '^UNREGISTERED' "$IT_TMP/sipjs.out" || fail "SIP.js did not unregister (status $ua_rc)"
[ "$ua_rc" -eq 0 ] || fail "SIP.js client exited with status $ua_rc"

# The binding is gone: the registrar answers a new INVITE with 404/480 itself.
run_sipp gone -sf "$WS_SIPP_DIR/ws_invite_error.xml" -key callee alice -key domain "$PUB" \
    -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 2 -recv_timeout 4000 \
    "$REG:5080"
sipp_check gone $? 1
codes=$(sip_final gone | tr '\n' ' ')
case " $codes " in
    *" 404 "* | *" 480 "*) log "after un-REGISTER the registrar answers: $codes" ;;
    *) fail "after un-REGISTER expected 404/480 from the registrar, got: $codes" ;;
esac

sipedge_alive || fail "sipedge died"
log "ws counters: $(ws_stats)"
[ "$(ws_stat handshakes_ok)" -ge 1 ] || fail "ws_handshakes_ok is not counted"
stop_sipedge
log PASS
