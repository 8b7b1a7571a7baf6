#!/usr/bin/env bash
# A WebSocket client sends a de-REGISTER (Contact "*", Expires 0) for someone else's AOR
# with a forged P-Asserted-Identity. sipedge must not let a client's identity assertion
# through (RFC 3325 §5: only the trust domain asserts): the registrar challenges the
# request, and the victim's binding stays. Checked against (a) the embedded registrar
# (the victim still receives an INVITE afterwards) and (b) Kamailio with
# kamailio/registrar.cfg, which trusts P-Asserted-Identity de-REGISTERs from sipedge's
# core address (ul.dump still holds the victim's binding).
. "$(dirname "$0")/lib.sh"
it_init ws_forged_pai
. "$IT_LIB_DIR/clients/ws_lib.sh"
need_cmd sipp python3 kamailio kamcmd
need_sipedge
ws_clients_setup

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
REG=$(it_addr 4)
CALLER=$(it_addr 12)
WS_PORT=$(free_tcp_port "$PUB")
WS=ws://$PUB:$WS_PORT

make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy"

forge() { # TAG: attacker 1501 (no password) de-registers victim 1500 with a forged PAI
    node_run "$1" sip_ws_raw.js forged-dereg --url "$WS" --victim 1500 --domain "$PUB" ||
        fail "forged de-REGISTER was not refused: $(grep -E '^(RESULT|FAIL|FINAL)' "$IT_TMP/$1.out" | tr '\n' ' ')"
    log "forged de-REGISTER: $(grep '^FINAL' "$IT_TMP/$1.out")"
}

# (a) embedded registrar
start_sipedge --listen-udp "$PUB:5060" --listen-ws "$PUB:$WS_PORT" --core "$CORE:5070" \
    --registrar-listen "$REG:5080" --users "$IT_TMP/users.txt" --realm sipedge-test \
    --policy "$IT_TMP/policy" --log-level debug
node_bg victim_a sip_ws_raw.js register --url "$WS" --user 1500 --password pw1500 \
    --domain "$PUB" --hold 30 --timeout 45
VICTIM=$BG_PID
wait_for_line "$IT_TMP/victim_a.out" '^REGISTERED' 10 "$VICTIM" || fail "victim did not register"
forge forge_a
run_sipp call_a -sf "$WS_SIPP_DIR/ws_invite_busy.xml" -key callee 1500 -key domain "$PUB" \
    -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 4 -recv_timeout 8000 \
    "$REG:5080"
sipp_check call_a $? 1
grep -q '^INCOMING INVITE' "$IT_TMP/victim_a.out" ||
    fail "the victim did not get the INVITE after the forged de-REGISTER"
kill "$VICTIM" 2>/dev/null
wait "$VICTIM" 2>/dev/null
stop_sipedge
mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-embedded.log"

# (b) Kamailio, trusting sipedge's core address for P-Asserted-Identity de-REGISTERs
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
start_sipedge --listen-udp "$PUB:5060" --listen-ws "$PUB:$WS_PORT" --core "$CORE:5070" \
    --registrar "$KAM:5060" --policy "$IT_TMP/policy" --log-level debug
node_bg victim_b sip_ws_raw.js register --url "$WS" --user 1500 --password pw1500 \
    --domain "$PUB" --hold 30 --timeout 45
VICTIM=$BG_PID
wait_for_line "$IT_TMP/victim_b.out" '^REGISTERED' 10 "$VICTIM" || fail "victim did not register at Kamailio"
kam_ul_dump >"$IT_TMP/ul-before.txt" 2>&1
grep -q 'AoR: 1500' "$IT_TMP/ul-before.txt" || fail "Kamailio holds no binding for 1500"
forge forge_b
grep -q 'TRUSTED de-REGISTER user=1500' "$KAM_LOG" &&
    fail "Kamailio received the forged P-Asserted-Identity from sipedge's core address"
kam_ul_dump >"$IT_TMP/ul-after.txt" 2>&1
grep -q 'AoR: 1500' "$IT_TMP/ul-after.txt" ||
    fail "the victim's binding is gone after the forged de-REGISTER"
kill -0 "$VICTIM" 2>/dev/null || fail "the victim's connection dropped"

# Control: the same assertion does remove the binding when it really comes from the
# trusted core address, so the refusal above is sipedge's doing, not the registrar's.
# (From a port of the core address that no worker of sipedge holds.)
reply=$(python3 - "$CORE" "$KAM" "$PUB" "$(free_udp_port "$CORE")" <<'PY'
import socket, sys
core, kam, dom, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
msg = "\r\n".join([
    f"REGISTER sip:{dom} SIP/2.0",
    f"Via: SIP/2.0/UDP {core}:{port};branch=z9hG4bKtrusted;rport",
    "Max-Forwards: 70",
    f"From: <sip:1500@{dom}>;tag=trusted",
    f"To: <sip:1500@{dom}>",
    f"Call-ID: trusted-dereg@{core}",
    "CSeq: 1 REGISTER",
    "Contact: *",
    "Expires: 0",
    f"P-Asserted-Identity: <sip:1500@{dom}>",
    "Content-Length: 0", "", ""])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((core, port))
s.sendto(msg.encode(), (kam, 5060))
s.settimeout(3)
try:
    print(s.recvfrom(65535)[0].split(b"\r\n", 1)[0].decode())
except socket.timeout:
    print("timeout")
PY
)
log "trusted de-REGISTER from $CORE: $reply"
case $reply in "SIP/2.0 200"*) ;; *) fail "control: Kamailio refused a trusted de-REGISTER: $reply" ;; esac
kam_ul_dump >"$IT_TMP/ul-control.txt" 2>&1
grep -q 'AoR: 1500' "$IT_TMP/ul-control.txt" &&
    fail "control: the trusted de-REGISTER did not remove the binding (registrar.cfg rule inactive)"
stop_sipedge
log PASS
