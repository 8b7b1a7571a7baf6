#!/usr/bin/env bash
# The trust boundary, played from the attacker's side against real processes: sipedge as
# the edge in front of a separate sipedge --registrar-only process, sipp phones and
# callers, and a raw UDP attacker.
#   1. A sweep of forged 430 responses (our branch prefix, the registrar below it, every
#      small sb=SLOT.GEN) from an address with no account removes no binding: the
#      registered phone still gets its call, and the edge counts the forgeries.
#   2. A client OPTIONS with a Route to an internal address never reaches that address.
#   3. The edge restarts with the same flow key; a new client then holds the slot the
#      first phone had. A call for the first phone along its old Path is refused (430):
#      it never reaches the new client.
. "$(dirname "$0")/lib.sh"
it_init trust_boundary
need_cmd sipp python3
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
PHONE=$(it_addr 11)
CALLER=$(it_addr 12)
ATK=$(it_addr 66)
INTERNAL=$(it_addr 99)
KEY=$(python3 -c 'import os; print(os.urandom(32).hex())')

make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy"

# The registrar in a process of its own, trusting the edge's core address: the core
# ports of as many workers as the edge runs (start_sipedge: --workers $IT_WORKERS).
REG_LOG=$IT_TMP/registrar.log
"$SIPEDGE_BIN" --registrar-only --workers "$IT_WORKERS" --registrar-listen "$REG:5080" \
    --core "$CORE:5070" \
    --users "$IT_TMP/users.txt" --realm trust --policy "$IT_TMP/policy" --log-level debug \
    2>"$REG_LOG" >/dev/null &
REG_PID=$!
IT_PIDS+=("$REG_PID")
wait_for_line "$REG_LOG" 'sipedge: ready' 5 "$REG_PID" || fail "registrar did not start"

edge() {
    start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$REG:5080" \
        --flow-key "$KEY" --policy "$IT_TMP/policy" --log-level debug
}
edge

# ---- 1. forged 430 sweep ---------------------------------------------------------------
phone_register 1500
python3 - "$ATK" "$PUB" "$REG" <<'PY'
import os, socket, sys
atk, pub, reg = sys.argv[1:4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((atk, 0))
n = 0
for slot in range(10):
    for gen in range(10):
        msg = ("SIP/2.0 430 Flow Failed\r\n"
               f"Via: SIP/2.0/UDP {pub}:5060;branch=z9hG4bKsE{os.urandom(16).hex()}\r\n"
               f"Via: SIP/2.0/UDP {reg}:5080;branch=z9hG4bK{os.urandom(8).hex()};sb={slot}.{gen}\r\n"
               "From: <sip:caller@example.com>;tag=x\r\n"
               "To: <sip:1500@example.com>;tag=y\r\n"
               f"Call-ID: sweep-{slot}-{gen}\r\n"
               "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), (pub, 5060))
        n += 1
print(f"sent {n} forged responses")
PY
sleep 0.5
forged=$(edge_stat drop_forged_response)
[ "${forged:-0}" -ge 100 ] || fail "edge counted ${forged:-none} forged responses, want 100"
grep -q 'Flow Failed, removed binding' "$REG_LOG" && fail "a forged 430 removed a binding"
phone_call 1500 "$REG:5080"
log "forged 430 sweep: $forged dropped, the phone still gets its call"

# ---- 2. a client Route into the core network -------------------------------------------
python3 - "$ATK" "$PUB" "$INTERNAL" <<'PY' || fail "the client's Route reached the internal address"
import socket, sys
atk, pub, internal = sys.argv[1:4]
victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
victim.bind((internal, 5999))
victim.settimeout(1.5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((atk, 0))
port = s.getsockname()[1]
msg = ("OPTIONS sip:anything@example.com SIP/2.0\r\n"
       f"Via: SIP/2.0/UDP {atk}:{port};branch=z9hG4bKssrf1;rport\r\n"
       f"Route: <sip:{internal}:5999;lr>\r\n"
       "Max-Forwards: 70\r\nFrom: <sip:x@example.com>;tag=1\r\nTo: <sip:anything@example.com>\r\n"
       "Call-ID: ssrf-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
s.sendto(msg.encode(), (pub, 5060))
try:
    data, src = victim.recvfrom(65535)
    print("internal address received:", data.split(b"\r\n", 1)[0], "from", src)
    sys.exit(1)
except socket.timeout:
    print("nothing reached", internal)
PY
stripped=$(edge_stat route_stripped)
[ "${stripped:-0}" -ge 1 ] || fail "route_stripped is ${stripped:-none}, want >= 1"

# ---- 3. a stored Path after an edge restart --------------------------------------------
phone_register 1501
PHONE1_PID=$PHONE_PID
PHONE1_CID=$PHONE_CID
stop_sipedge
edge
# Two flows first, as before the restart (phone 1500, the attacker's OPTIONS), so the new
# client gets the slot and generation phone 1501 had: slot 2, generation 1.
python3 - "$ATK" "$PUB" <<'PY'
import socket, sys
atk, pub = sys.argv[1:3]
for i in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((atk, 0))
    port = s.getsockname()[1]
    s.sendto(("OPTIONS sip:x@example.com SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP {atk}:{port};branch=z9hG4bKfill{i};rport\r\n"
              "Max-Forwards: 70\r\nFrom: <sip:x@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\n"
              f"Call-ID: fill-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
             (pub, 5060))
PY
sleep 0.3
PHONE_SAVE=$PHONE
PHONE=$(it_addr 13)
PHONE_TAG=phone2 phone_register 1502
PHONE=$PHONE_SAVE
run_sipp late -sf "$IT_SIPP_DIR/invite_uac.xml" -key callee 1501 -key domain "$PUB" \
    -cid_str "$PHONE1_CID" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 \
    -max_retrans 2 -recv_timeout 4000 "$REG:5080"
late_rc=$?
sleep 0.5
# The token names phone 1501's address: the call reaches 1501, never the new client that
# holds the slot and generation 1501 had.
grep -aq "^INVITE sip:1501@" "$IT_TMP/sipp-phone2-msg.log" 2>/dev/null &&
    fail "the new client received a call meant for the phone of the previous run"
grep -aq "^INVITE sip:1501@" "$IT_TMP/sipp-phone-msg.log" 2>/dev/null ||
    fail "the call along the Path of the previous run did not reach the phone it was made for"
[ "$late_rc" -eq 0 ] || fail "the call along the Path of the previous run failed (sipp status $late_rc)"
n430=$(edge_stat reply_430_flow_failed)
[ "${n430:-0}" = 0 ] || fail "430 for a valid token of the previous run ($n430)"
kill "$PHONE_PID" "$PHONE1_PID" 2>/dev/null
log "old Path after restart: delivered to its own phone, nothing to the new client"

stop_sipedge
log PASS
