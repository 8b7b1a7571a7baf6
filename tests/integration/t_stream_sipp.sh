#!/usr/bin/env bash
# SIP over TCP through sipedge to a Kamailio registrar (digest auth on):
#   1. sipp with one TCP connection per user (-t tn) registers 1,000 users through
#      sipedge's TCP listener and refreshes each once on the same connection; every
#      call succeeds, and while the connections are held Kamailio holds all 1,000
#      bindings with a Path naming sipedge's core address; sipedge accepted 1,000 TCP
#      connections and relayed every REGISTER.
#   2. A REGISTER with an 8 KiB SDP body over TCP reaches Kamailio intact (Content-Length
#      8192 and the body's MD5 as sent); a REGISTER that large goes to the core over
#      TCP (upstream.udp_max_bytes).
#   3. A MESSAGE with an 8 KiB body sent to Kamailio for a user registered over TCP
#      reaches the client over its connection intact, and the client's 200 reaches the
#      sender.
#   4. CRLFCRLF on a registered connection is answered with CRLF (RFC 5626 §4.4.1), and
#      sipedge counts the keepalive.
. "$(dirname "$0")/lib.sh"
it_init stream_sipp
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)  # public UDP and TCP listeners
CORE=$(it_addr 2) # sipedge core-side socket
KAM=$(it_addr 3)  # Kamailio (UDP and TCP)
CLI=$(it_addr 10) # sipp
BIG=$(it_addr 11) # the 8 KiB client
KA=$(it_addr 12)  # the keepalive client
SENDER=$(it_addr 13)
TOOLS=$IT_LIB_DIR/clients/stream_tools.py
USERS=1000
HOLD_MS=40000
SIPP_TIMEOUT=150

# ---- stream counters (the "stats stream" line, the sum over the workers) ----------------
# stream_stat NAME: NAME (or stream_NAME) from the latest stats stream line.
stream_stat() {
    grep -E "$(STATS_RE stream)" "$SIPEDGE_LOG" | tail -n 1 | tr ' ' '\n' |
        sed -nE "s/^(stream_)?$1=//p" | head -n 1
}

# bound_count FIRST COUNT: how many of the AoRs FIRST..FIRST+COUNT-1 Kamailio holds with
# a live contact whose Path names sipedge's core address (lib.sh kam_bound_count).
bound_count() { kam_bound_count "$CORE" "$1" "$2"; }

# Kamailio on UDP and TCP (sipedge sends REGISTERs over udp_max_bytes to the core over
# TCP), logging each request's transport, Content-Length, body length and body MD5.
sed -e 's/^disable_tcp=yes$/disable_tcp=no/' \
    -e "/^tcp_children=/a listen=tcp:$KAM:5060" \
    -e '/xlog("L_NOTICE", "MSGLOG req /a \	xlog("L_NOTICE", "BODYLOG ci=[$ci] rm=[$rm] proto=[$pr] src=[$si] cl=[$cl] bodylen=[$(rb{s.len})] md5=[$(rb{s.md5})]\\n");' \
    "$IT_KAM_DIR/registrar.cfg" >"$IT_TMP/registrar-tcp.cfg"
grep -q '^disable_tcp=no$' "$IT_TMP/registrar-tcp.cfg" && grep -q "^listen=tcp:$KAM:5060" "$IT_TMP/registrar-tcp.cfg" &&
    grep -q 'BODYLOG' "$IT_TMP/registrar-tcp.cfg" || fail "could not make a TCP copy of registrar.cfg"

make_csv "$IT_TMP/reg.csv" 1000 $USERS
# Guard limits raised as for the UDP load tests (every user comes from one address), the
# stream admission caps raised for 1,000 connections from one address; regcache off, so
# every refresh goes to Kamailio.
test_policy_dir "$IT_TMP/policy" 'guard:
  limits:
    per_ip: {rate: 1000000, burst: 1000000}
    per_ip_port: {rate: 1000000, burst: 1000000}
    per_aor_register: {rate: 1000, burst: 1000}
    registrar: {rate: 1000000, burst: 1000000}
    max_flows_per_ip: 100000
stream:
  max_connections_per_ip: 5000
  connections_per_ip_per_s: 100000
regcache:
  enabled: false'

start_kamailio "$IT_TMP/registrar-tcp.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG
start_sipedge --listen-udp "$PUB:5060" --listen-tcp "$PUB:5060" --core "$CORE:5070" \
    --registrar "$KAM:5060" --policy "$IT_TMP/policy" --log-level info
grep -q "tcp:$PUB:5060" "$SIPEDGE_LOG" || fail "sipedge's ready line names no tcp:$PUB:5060 listener"

relayed0=$(edge_stat relayed_register)
stream_stats >/dev/null
acc0=$(stream_stat accepted)

# ---- 1. 1,000 users over 1,000 TCP connections: register, refresh, hold --------------
bg_sipp reg -sf "$IT_SIPP_DIR/stream_reg_refresh_hold.xml" -inf "$IT_TMP/reg.csv" -t tn \
    -max_socket 4000 -key domain "$PUB" -key expires 600 -key hold $HOLD_MS -d 2000 \
    -i "$CLI" -m $USERS -r 250 -l $USERS -recv_timeout 10000 "$PUB:5060"
SIPP_PID=$BG_PID
n=0
for ((i = 0; i < 600; i++)); do
    n=$(grep -c '^.*REFRESHED ' "$IT_TMP/sipp-reg-logs.log" 2>/dev/null)
    [ "${n:-0}" -ge $USERS ] && break
    kill -0 "$SIPP_PID" 2>/dev/null || break
    sleep 0.1
done
[ "${n:-0}" -ge $USERS ] || fail "only ${n:-0} of $USERS users registered and refreshed over TCP within 60 s"
log "$USERS users registered and refreshed over TCP; connections held"
sipedge_alive || fail "sipedge died during the TCP registrations"

bound=$(bound_count 1000 $USERS)
log "Kamailio: $bound of $USERS bindings with a Path through $CORE"
[ "$bound" = $USERS ] || fail "Kamailio holds $bound of $USERS bindings with sipedge's Path"
relayed1=$(edge_stat relayed_register)
# 2 REGISTERs per user (challenge, credentials) and at least 1 refresh.
[ $((relayed1 - relayed0)) -ge $((3 * USERS)) ] ||
    fail "sipedge relayed $((relayed1 - relayed0)) REGISTERs, expected >= $((3 * USERS))"
log "stream counters: $(stream_stats)"
acc1=$(stream_stat accepted)
[ -n "$acc1" ] || fail "no 'accepted' counter in sipedge's stats stream line"
[ $((acc1 - ${acc0:-0})) -ge $USERS ] ||
    fail "sipedge accepted $((acc1 - ${acc0:-0})) TCP connections, expected >= $USERS"
grep -q "MSGLOG req src=$CLI:" "$KAM_LOG" && fail "Kamailio received a request straight from sipp"

# Failures of parts 2 and 3 are collected, so that one does not hide the other.
SOFT_FAILS=()
soft_fail() {
    SOFT_FAILS+=("$*")
    log "FAIL (the test goes on): $*"
}

# ---- 2. an 8 KiB REGISTER over TCP --------------------------------------------------------
python3 "$TOOLS" register --src "$BIG" --dst "$PUB:5060" --user 2000 --password pw2000 \
    --domain "$PUB" --body-bytes 8192 --timeout 10 >"$IT_TMP/big.out" 2>&1
if ! grep -q '^REGISTERED 2000 ' "$IT_TMP/big.out"; then
    soft_fail "the 8 KiB REGISTER over TCP failed: $(tail -1 "$IT_TMP/big.out")"
fi
big_cid=$(sed -n 's/^REGISTERED 2000 .* cid=\([^ ]*\) .*/\1/p' "$IT_TMP/big.out")
big_md5=$(sed -n 's/^REGISTERED 2000 .* md5=\([0-9a-f]*\) .*/\1/p' "$IT_TMP/big.out")
if [ -n "$big_cid" ]; then
    grep "BODYLOG ci=\[$big_cid\]" "$KAM_LOG" | tail -n 2 >&2
    grep -q "BODYLOG ci=\[$big_cid\] rm=\[REGISTER\] .* cl=\[8192\] bodylen=\[8192\] md5=\[$big_md5\]" "$KAM_LOG" ||
        soft_fail "the 8 KiB REGISTER did not reach Kamailio intact (Content-Length 8192, body MD5 $big_md5)"
    grep -q "BODYLOG ci=\[$big_cid\] rm=\[REGISTER\] proto=\[tcp\] src=\[$CORE\] cl=\[8192\]" "$KAM_LOG" ||
        soft_fail "the 8 KiB REGISTER did not go to the core over TCP from $CORE (upstream.udp_max_bytes)"
fi
log "edge: relayed_core_tcp=$(edge_stat relayed_core_tcp)"

# ---- 3. an 8 KiB MESSAGE to a TCP client ---------------------------------------------------
# 2001 (not one of the sipp users, which would get the MESSAGE too) registers over TCP
# and holds its connection; an 8 KiB MESSAGE for it sent to Kamailio over UDP goes
# through the Path to sipedge, then over the client's connection.
python3 "$TOOLS" register --src "$BIG" --dst "$PUB:5060" --user 2001 --password pw2001 \
    --domain "$PUB" --hold 30 --timeout 10 >"$IT_TMP/msg-client.out" 2>&1 &
MSGC_PID=$!
IT_PIDS+=("$MSGC_PID")
wait_for_line "$IT_TMP/msg-client.out" '^REGISTERED 2001 ' 15 "$MSGC_PID" ||
    fail "2001 did not register over TCP: $(tail -2 "$IT_TMP/msg-client.out" | tr '\n' ' ')"
python3 - "$IT_TMP/message.sip" "$SENDER" "$PUB" <<'PY'
import sys
path, src, dom = sys.argv[1:4]
body = (b"stream-test-body " * 600)[:8190] + b"\r\n"
head = (f"MESSAGE sip:2001@{dom} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5099;branch=z9hG4bKbigmsg1;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:sender@{dom}>;tag=bigmsg\r\nTo: <sip:2001@{dom}>\r\n"
        f"Call-ID: bigmsg-1@{src}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode()
open(path, "wb").write(head + body)
PY
msg_md5=$(python3 -c 'import hashlib,sys; d=open(sys.argv[1],"rb").read(); print(hashlib.md5(d.split(b"\r\n\r\n",1)[1]).hexdigest())' "$IT_TMP/message.sip")
replies=$(udp_tool "$SENDER" "$KAM" 5060 4000 "$IT_TMP/message.sip")
log "8 KiB MESSAGE to 2001 via Kamailio: replies: $(echo "$replies" | tr '\n' '|')"
if ! wait_for_line "$IT_TMP/msg-client.out" '^REQUEST MESSAGE ' 5; then
    soft_fail "the 8 KiB MESSAGE did not reach the TCP client"
elif ! grep -q "^REQUEST MESSAGE sip:.* cl=8192 body=8192 md5=$msg_md5" "$IT_TMP/msg-client.out"; then
    soft_fail "the MESSAGE reached the client changed: $(grep '^REQUEST MESSAGE' "$IT_TMP/msg-client.out")"
fi
echo "$replies" | grep -q '^SIP/2.0 200' || soft_fail "the client's 200 for the MESSAGE did not reach the sender"

# ---- 4. CRLFCRLF keepalive on a registered connection -----------------------------------
stream_stats >/dev/null
krx0=$(stream_stat keepalive_rx)
ktx0=$(stream_stat keepalive_tx)
python3 "$TOOLS" register --src "$KA" --dst "$PUB:5060" --user alice --password alicepw \
    --domain "$PUB" --ping --timeout 10 >"$IT_TMP/ka.out" 2>&1 ||
    fail "keepalive client: $(tail -2 "$IT_TMP/ka.out" | tr '\n' ' ')"
grep -q '^PONG after-register' "$IT_TMP/ka.out" || fail "no CRLF answer to CRLFCRLF on a registered connection"
stream_stats >/dev/null
krx1=$(stream_stat keepalive_rx)
ktx1=$(stream_stat keepalive_tx)
log "keepalive: $(grep '^PONG' "$IT_TMP/ka.out"); keepalive_rx $krx0 -> $krx1, keepalive_tx $ktx0 -> $ktx1"
[ -n "$krx1" ] && [ $((krx1 - ${krx0:-0})) -ge 1 ] || fail "sipedge did not count the CRLFCRLF keepalive (keepalive_rx=$krx1)"
[ -n "$ktx1" ] && [ $((ktx1 - ${ktx0:-0})) -ge 1 ] || fail "sipedge did not count the CRLF answer (keepalive_tx=$ktx1)"

# ---- the sipp run ends: every call succeeded ---------------------------------------------
wait "$SIPP_PID"
sipp_rc=$?
sipp_check reg "$sipp_rc" $USERS
kill "$MSGC_PID" 2>/dev/null
wait "$MSGC_PID" 2>/dev/null
[ ${#SOFT_FAILS[@]} -eq 0 ] || fail "$(printf '%s; ' "${SOFT_FAILS[@]}")"
sipedge_alive || fail "sipedge died"
stop_sipedge
log PASS
