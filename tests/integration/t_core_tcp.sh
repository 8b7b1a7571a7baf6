#!/usr/bin/env bash
# The core side over TCP (RFC 3261 §18.1.1, §18.2.2), with Kamailio as the registrar:
# policy upstream.udp_max_bytes is set low, so a UDP phone's REGISTERs reach Kamailio
# over TCP from sipedge (Kamailio logs them with pr=[tcp]); Kamailio, with udp_mtu, sends
# the INVITE for the phone over TCP to sipedge's core address, and the phone's answers
# go back to Kamailio over TCP. The call completes only if every leg of that works. A
# TCP connection to the core address from an address that is not a core peer is closed.
. "$(dirname "$0")/lib.sh"
it_init core_tcp
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
PHONE=$(it_addr 11)
CALLER=$(it_addr 12)
STRANGER=$(it_addr 13)
CORE_PORT=$(free_udp_port "$CORE")

test_policy_dir "$IT_TMP/policy" "$(printf 'upstream:\n  udp_max_bytes: 576\n')"
KAM_TCP=1 start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG WITH_TCP
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:$CORE_PORT" --registrar "$KAM:5060" \
    --policy "$IT_TMP/policy" --log-level debug

PORTS=$(core_port_re)
phone_register 1500
grep -qE "MSGLOG req src=$CORE:[0-9]+ .*rm=\[REGISTER\].* pr=\[tcp\]" "$KAM_LOG" ||
    fail "Kamailio received no REGISTER over TCP from sipedge's core address"
grep -qE "MSGLOG req src=$CORE:[0-9]+ .*rm=\[REGISTER\].* pr=\[udp\]" "$KAM_LOG" &&
    fail "a REGISTER over the udp_max_bytes bound reached Kamailio over UDP"

phone_call 1500 "$KAM:5060"
# The phone's answers reached Kamailio over TCP from sipedge (the INVITE came over TCP).
grep -qE "MSGLOG rpl src=$CORE:[0-9]+ .*rs=\[200\].* pr=\[tcp\]" "$KAM_LOG" ||
    fail "the phone's 200 did not reach Kamailio over TCP"

stats=$(edge_stats)
[ "$(stat_of "$stats" relayed_core_tcp)" -ge 2 ] || fail "relayed_core_tcp: $stats"

# Anyone else's TCP connection to the core address is closed at once.
python3 - "$STRANGER" "$CORE" "$CORE_PORT" <<'PY' || fail "a stranger's TCP connection to the core address stayed open"
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.settimeout(3)
s.connect((sys.argv[2], int(sys.argv[3])))
s.sendall(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
try:
    d = s.recv(100)
except ConnectionResetError:
    d = b""
sys.exit(0 if d == b"" else 1)
PY
edge_stats >/dev/null
st=$(last_stats stream)
[ "$(stat_of "$st" stream_core_refused_not_peer)" -ge 1 ] || fail "refusal not counted: $st"
[ "$(stat_of "$st" stream_core_connects)" -ge 1 ] || fail "no core connection opened: $st"
[ "$(stat_of "$st" stream_core_accepted)" -ge 1 ] || fail "Kamailio never connected to the core address: $st"
stop_sipedge
log PASS
