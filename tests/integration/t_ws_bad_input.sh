#!/usr/bin/env bash
# Hostile and broken WebSocket input (raw `ws` client from Node) against sipedge's ws and
# wss listeners, while a good client stays registered on another connection:
#   oversized message (one frame, and fragments) -> close 1009 (ws and wss);
#   junk text, binary garbage, malformed SIP -> never anything but SIP responses back;
#   a text frame that is not UTF-8 -> close 1007; silence after the handshake -> 1008;
#   no subprotocol / only "xmpp" -> handshake refused; wrong Origin -> refused (the
#   allowed origin on another port passes; no Origin passes by default);
#   plain HTTP GET without Upgrade -> no 101, closed; CRLF keepalive -> CRLF;
#   a message whose first fragment arrives and then nothing -> close 1008 within
#   ws.message_timeout; 200 connections announcing 60000-byte frames and sending one
#   byte of each -> buffers sized by what arrived, not by the announcement;
#   a registered client that goes silent and ignores the server's WebSocket Pings ->
#   dropped ws.ping_interval + ws.pong_timeout after its last frame.
# Afterwards the good client (which answers the Pings) is still connected and a new
# client registers, and every refusal shows in sipedge's ws counters. Last, a start with
# 24 listeners, whose list does not fit the "ready" line.
. "$(dirname "$0")/lib.sh"
it_init ws_bad_input
. "$IT_LIB_DIR/clients/ws_lib.sh"
need_cmd python3
need_sipedge
ws_clients_setup

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
WS_PORT=$(free_tcp_port "$PUB")
WSS_PORT=$(free_tcp_port "$PUB")
WS=ws://$PUB:$WS_PORT
WSS=wss://$PUB:$WSS_PORT
GOOD=https://good.example

ws_make_cert "$IT_TMP"
make_users "$IT_TMP/users.txt"
PING=5
PONG=2
MSG_TO=1
test_policy_dir "$IT_TMP/policy" "$(printf 'ws:\n  max_message_bytes: 65536\n  first_message_timeout: 2\n  message_timeout: %s\n  ping_interval: %s\n  pong_timeout: %s\n  max_connections_per_ip: 300\n  handshakes_per_ip_per_s: 200\n' $MSG_TO $PING $PONG)"
start_sipedge --listen-udp "$PUB:5060" --listen-ws "$PUB:$WS_PORT" --listen-wss "$PUB:$WSS_PORT" \
    --tls-cert "$IT_TMP/cert.pem" --tls-key "$IT_TMP/key.pem" --ws-origin "$GOOD" \
    --core "$CORE:5070" --registrar-listen "$REG:5080" --users "$IT_TMP/users.txt" \
    --realm sipedge-test --policy "$IT_TMP/policy" --log-level debug

# A good client that registers first and must stay connected through everything below.
node_bg good sip_ws_raw.js register --url "$WSS" --origin "$GOOD" --user alice \
    --password alicepw --domain "$PUB" --hold 40 --timeout 55
GOOD_PID=$BG_PID
wait_for_line "$IT_TMP/good.out" '^REGISTERED' 10 "$GOOD_PID" ||
    fail "good client did not register: $(tail -2 "$IT_TMP/good.out" | tr '\n' ' ')"
# A client that registers, then neither talks nor answers Pings (a dead browser tab
# whose TCP connection the network still holds open).
node_bg nopong sip_ws_raw.js no-pong --url "$WS" --origin "$GOOD" --user 1001 \
    --password pw1001 --domain "$PUB" --timeout 30
NOPONG_PID=$BG_PID

expect_ok() { # TAG ARGS...: the client case must report ok
    local tag=$1
    shift
    node_run "$tag" sip_ws_raw.js "$@" --origin "$GOOD" ||
        fail "$tag: $(grep -E '^(RESULT|FAIL)' "$IT_TMP/$tag.out" | tail -1)"
}

expect_ok big_ws too-big --url "$WS"
expect_ok big_wss too-big --url "$WSS"
expect_ok bigfrag_ws too-big-frag --url "$WS"
expect_ok junk_ws junk --url "$WS"
expect_ok junk_wss junk --url "$WSS"
expect_ok utf8_ws bad-utf8 --url "$WS"
expect_ok idle_wss idle --url "$WSS"
expect_ok crlf_wss crlf --url "$WSS"
expect_ok nosub_ws no-subprotocol --url "$WS"
expect_ok nosub_wss no-subprotocol --url "$WSS"
expect_ok wrongsub_ws wrong-subprotocol --url "$WS"
expect_ok http_ws http-get --url "$WS"

# A message that starts and then stalls: closed 1008 within ws.message_timeout (the tick
# is one second, so up to two seconds late).
stalled_within() { # TAG MAX_S
    local s
    s=$(sed -n 's/^RESULT stall ok: .* max \([0-9.]*\)s after the start$/\1/p' "$IT_TMP/$1.out")
    awk -v s="$s" -v hi="$2" 'BEGIN { exit !(s != "" && s <= hi) }' ||
        fail "$1: closed after ${s:-?}s, expected within ${2}s"
}
node_run stall_ws ws_stall.js --url "$WS" --origin "$GOOD" --timeout 20 ||
    fail "stall_ws: $(grep -E '^(RESULT|FAIL)' "$IT_TMP/stall_ws.out" | tail -1)"
stalled_within stall_ws $((MSG_TO + 2))
node_run stall_wss ws_stall.js --url "$WSS" --origin "$GOOD" --timeout 20 ||
    fail "stall_wss: $(grep -E '^(RESULT|FAIL)' "$IT_TMP/stall_wss.out" | tail -1)"
stalled_within stall_wss $((MSG_TO + 2))
# 200 connections, each announcing a 60000-byte frame and sending one byte of it: the
# receive buffers grow with what arrived (a receive chunk each), not with what the frame
# header announced (12 MB here), and all of them hit the message deadline.
PINS=200
node_run pin_ws ws_stall.js --url "$WS" --origin "$GOOD" --conns $PINS --announce 60000 --timeout 50 ||
    fail "pin_ws: $(grep -E '^(RESULT|FAIL)' "$IT_TMP/pin_ws.out" | tail -1)"
stalled_within pin_ws $((MSG_TO + 2))

# Origin policy: only https://good.example (any port) is allowed.
node_run origin_bad sip_ws_raw.js handshake --url "$WS" --origin https://evil.example
grep -q 'RESULT handshake ok: refused' "$IT_TMP/origin_bad.out" ||
    fail "handshake with Origin https://evil.example was not refused"
node_run origin_sub sip_ws_raw.js handshake --url "$WSS" --origin https://good.example.evil.example
grep -q 'RESULT handshake ok: refused' "$IT_TMP/origin_sub.out" ||
    fail "handshake with Origin https://good.example.evil.example was not refused"
node_run origin_port sip_ws_raw.js handshake --url "$WSS" --origin https://good.example:8443
grep -q 'RESULT handshake ok: opened protocol="sip"' "$IT_TMP/origin_port.out" ||
    fail "handshake with the allowed Origin on another port was refused"
node_run origin_none sip_ws_raw.js handshake --url "$WS"
grep -q 'RESULT handshake ok: opened protocol="sip"' "$IT_TMP/origin_none.out" ||
    fail "handshake without Origin was refused (policy ws.require_origin is off)"

sipedge_alive || fail "sipedge died under bad WebSocket input"

# The silent client: pinged after $PING s of silence, dropped $PONG s later (the tick is
# one second, so up to two seconds late), never before the Ping.
wait "$NOPONG_PID" || fail "no-pong: $(grep -E '^(RESULT|FAIL)' "$IT_TMP/nopong.out" | tail -1)"
silent=$(sed -n 's/^RESULT no-pong ok: dropped (close [0-9]*) after \([0-9.]*\)s.*/\1/p' "$IT_TMP/nopong.out")
log "no-pong: $(grep '^RESULT' "$IT_TMP/nopong.out")"
awk -v s="$silent" -v lo=$((PING + PONG)) -v hi=$((PING + PONG + 3)) \
    'BEGIN { exit !(s != "" && s >= lo - 0.5 && s <= hi) }' ||
    fail "the silent client was dropped after ${silent:-?}s, expected $((PING + PONG))..$((PING + PONG + 3))s"

# A new client still registers, and the first one is still connected.
expect_ok good2 register --url "$WS" --user bob --password bobpw --domain "$PUB"
kill -0 "$GOOD_PID" 2>/dev/null || fail "the good client's connection did not survive: $(tail -2 "$IT_TMP/good.out")"
grep -q '^CLOSED' "$IT_TMP/good.out" && fail "the good client's connection was closed"

stats=$(ws_stats)
log "ws counters: $stats"
check_stat() { # NAME MIN
    local v
    v=$(ws_stat "$1")
    [ -n "$v" ] && [ "$v" -ge "$2" ] || fail "counter ws_$1=$v, expected >= $2"
}
check_stat close_too_big 3
check_stat refused_no_subprotocol 2
check_stat refused_origin 2
check_stat refused_http 1
check_stat keepalive_rx 1
check_stat close_bad_utf8 1
check_stat close_first_message_timeout 1
check_stat close_message_timeout $((PINS + 2))
buffered_max=$(ws_stat rx_buffered_max)
[ -n "$buffered_max" ] && [ "$buffered_max" -le $((PINS * 4096)) ] ||
    fail "receive buffers peaked at ${buffered_max:-?} bytes for $PINS one-byte frames, expected <= $((PINS * 4096))"
[ "$(ws_stat rx_buffered_bytes)" = 0 ] || fail "ws_rx_buffered_bytes=$(ws_stat rx_buffered_bytes) with no message in flight"
check_stat close_ping_timeout 1
check_stat pings_tx 2
check_stat pongs_rx 1
[ "$(ws_stat refused_no_origin)" = 0 ] || fail "a handshake without Origin was counted as refused"

# The good client answered every Ping it got and was never dropped for it.
wait "$GOOD_PID" || fail "good client: $(grep -E '^(RESULT|CLOSED)' "$IT_TMP/good.out" | tail -1)"
answered=$(sed -n 's/^RESULT register ok: .*, \([0-9]*\) pings answered$/\1/p' "$IT_TMP/good.out")
[ "${answered:-0}" -ge 2 ] || fail "the good client answered ${answered:-0} pings in 40 s, expected >= 2"

stop_sipedge

# The most listeners the command line takes (8 of each kind) make a "ready" line longer
# than its buffer: cut, never written past the end (ASan would stop the start-up).
MANY=$(it_addr 201)
many=()
for ((i = 0; i < 8; i++)); do
    many+=(--listen-udp "$MANY:$((5061 + i))" --listen-ws "$MANY:$(free_tcp_port "$MANY")")
    many+=(--listen-wss "$MANY:$(free_tcp_port "$MANY")")
done
start_sipedge "${many[@]}" --tls-cert "$IT_TMP/cert.pem" --tls-key "$IT_TMP/key.pem" \
    --core "$CORE:5070" --registrar-listen "$REG:5080" --users "$IT_TMP/users.txt" \
    --realm sipedge-test --policy "$IT_TMP/policy"
grep -q "sipedge: ready udp:$MANY:5061," "$SIPEDGE_LOG" || fail "no ready line with 24 listeners"
stop_sipedge
log PASS
