#!/usr/bin/env bash
# A dead TLS (then TCP) flow: a client registers over TLS through sipedge to Kamailio
# (digest auth) with +sip.instance and reg-id (RFC 5626), so the Path sipedge adds has
# ;ob. An INVITE sent to Kamailio for the AOR reaches the client over its connection
# (the client answers 486). Then the client's connection dies with a reset (SO_LINGER 0):
# an INVITE to the AOR within flows.dead_flow_grace gets 430 Flow Failed from sipedge
# (RFC 5626 §5.3), and within dead_flow_grace + 1 s of the reset Kamailio holds no
# binding for the AOR any more (sipedge's trusted de-REGISTER). The same again over TCP.
. "$(dirname "$0")/lib.sh"
it_init stream_dead_flow
need_cmd sipp python3 kamailio kamcmd openssl
need_sipedge
. "$IT_LIB_DIR/clients/ws_lib.sh" # ws_make_cert, sip_final

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLI=$(it_addr 10)
CALLER=$(it_addr 12)
TCP_PORT=$(free_tcp_port "$PUB")
TLS_PORT=$(free_tcp_port "$PUB")
TOOLS=$IT_LIB_DIR/clients/stream_tools.py
GRACE=6

ws_make_cert "$IT_TMP"
test_policy_dir "$IT_TMP/policy" "$(printf 'flows:\n  dead_flow_grace: %s\n' "$GRACE")"

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
start_sipedge --listen-udp "$PUB:5060" --listen-tcp "$PUB:$TCP_PORT" --listen-tls "$PUB:$TLS_PORT" \
    --tls-cert "$IT_TMP/cert.pem" --tls-key "$IT_TMP/key.pem" --core "$CORE:5070" \
    --registrar "$KAM:5060" --policy "$IT_TMP/policy" --log-level debug

now_ms() { date +%s%3N; }

# lookup USER: Kamailio's location entry for USER into $IT_TMP/lookup-USER.
lookup() { timeout 10 kamcmd -s "$KAM_CTL" ul.lookup location "$1@any" >"$IT_TMP/lookup-$1" 2>&1; }
has_binding() { lookup "$1" && grep -q "AoR: $1\$" "$IT_TMP/lookup-$1"; }

run_case() { # NAME USER TOOL_FLAGS PORT
    local name=$1 user=$2 flags=$3 port=$4 out t0 gone codes
    out=$IT_TMP/client-$name.out
    rm -f "$IT_TMP/rst-$name"
    # shellcheck disable=SC2086
    python3 "$TOOLS" register $flags --ob --src "$CLI" --dst "$PUB:$port" --user "$user" \
        --password "pw$user" --domain "$PUB" --hold 60 --rst-when "$IT_TMP/rst-$name" \
        --timeout 10 >"$out" 2>&1 &
    local cpid=$!
    IT_PIDS+=("$cpid")
    wait_for_line "$out" "^REGISTERED $user " 10 "$cpid" ||
        fail "[$name] $user did not register: $(tail -2 "$out" | tr '\n' ' ')"
    has_binding "$user" || fail "[$name] no binding for $user at Kamailio after registration"
    grep -qE "Path: <sip:[^>]*@$CORE:$(core_port_re);[^>]*\bob\b" "$IT_TMP/lookup-$user" ||
        fail "[$name] the binding's Path has no ;ob through $CORE: $(grep 'Path:' "$IT_TMP/lookup-$user")"
    log "[$name] registered: $(grep -E 'Path:|Address:' "$IT_TMP/lookup-$user" | tr -s '\t ' ' ' | tr '\n' ' ')"

    # A live flow: the INVITE reaches the client over its connection, the 486 comes back.
    run_sipp "busy-$name" -sf "$IT_LIB_DIR/clients/sipp/ws_invite_busy.xml" -key callee "$user" \
        -key domain "$PUB" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 4 \
        -recv_timeout 8000 "$KAM:5060"
    sipp_check "busy-$name" $? 1
    grep -q "^REQUEST INVITE " "$out" || fail "[$name] the INVITE did not reach the client over its connection"

    # Reset the connection; t0 is when the client closed it (its clock is ours).
    touch "$IT_TMP/rst-$name"
    wait_for_line "$out" '^CLOSED rst' 5 "$cpid" || fail "[$name] the client did not close its connection"
    t0=$(sed -n 's/^CLOSED rst \([0-9]*\)$/\1/p' "$out")
    wait "$cpid"

    # Within the grace: 430 from sipedge, at once. When the INVITE went out and when the
    # 430 came are read from sipp's message trace (sipp's own start and exit take time).
    run_sipp "dead-$name" -sf "$IT_LIB_DIR/clients/sipp/ws_invite_error.xml" -key callee "$user" \
        -key domain "$PUB" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 2 \
        -recv_timeout 3000 "$KAM:5060"
    sipp_check "dead-$name" $? 1
    codes=$(sip_final "dead-$name" | tr '\n' ' ')
    local sent_ms final_ms
    read -r sent_ms final_ms < <(python3 - "$IT_TMP/sipp-dead-$name-msg.log" <<'PY'
import datetime, re, sys
sent = final = None
stamp = None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)", line)
    if m:
        stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        stamp = int(stamp.replace(tzinfo=datetime.datetime.now().astimezone().tzinfo).timestamp() * 1000)
        continue
    if line.startswith("INVITE ") and sent is None:
        sent = stamp
    if re.match(r"^SIP/2\.0 [3-6]\d\d ", line) and final is None:
        final = stamp
print(sent or 0, final or 0)
PY
)
    log "[$name] INVITE sent $((sent_ms - t0)) ms after the reset: $codes after $((final_ms - sent_ms)) ms"
    [ $((sent_ms - t0)) -lt $((GRACE * 1000)) ] ||
        fail "[$name] the INVITE after the reset came too late to test the grace"
    case " $codes " in
        *" 430 "*) ;;
        *) fail "[$name] INVITE to a dead flow within the grace got '$codes', expected 430 Flow Failed" ;;
    esac
    [ $((final_ms - sent_ms)) -lt 1000 ] || fail "[$name] the 430 took $((final_ms - sent_ms)) ms"

    # Within grace + 1 s of the reset: no binding at Kamailio. Each look at the location
    # table is timed from its start; one that starts later than grace + 1 s after the
    # reset must find the binding gone.
    local ts present_ms=0
    gone=
    while [ $(($(now_ms) - t0)) -lt $(((GRACE + 3) * 1000)) ]; do
        ts=$(now_ms)
        if ! has_binding "$user"; then
            gone=$((ts - t0))
            break
        fi
        present_ms=$((ts - t0))
        sleep 0.1
    done
    [ -n "$gone" ] || fail "[$name] Kamailio still holds $user's binding $((GRACE + 3)) s after the reset"
    log "[$name] binding of $user still there ${present_ms} ms after the reset, gone at ${gone} ms (grace $GRACE s)"
    [ "$present_ms" -lt $(((GRACE + 1) * 1000)) ] ||
        fail "[$name] Kamailio still held $user's binding $present_ms ms after the reset, expected gone within $((GRACE + 1)) s"
    grep -q "TRUSTED de-REGISTER user=$user " "$KAM_LOG" ||
        fail "[$name] Kamailio saw no trusted de-REGISTER for $user"
}

run_case tls 1601 --tls "$TLS_PORT"
run_case tcp 1602 "" "$TCP_PORT"

stats=$(edge_stats)
log "$stats"
[ "$(stat_of "$stats" flows_dead)" -ge 2 ] || fail "sipedge counted $(stat_of "$stats" flows_dead) dead flows, expected >= 2"
[ "$(stat_of "$stats" reply_430_flow_failed)" -ge 2 ] || fail "sipedge counted $(stat_of "$stats" reply_430_flow_failed) 430s, expected >= 2"
[ "$(stat_of "$stats" dereg_sent)" -ge 2 ] || fail "sipedge sent $(stat_of "$stats" dereg_sent) de-REGISTERs, expected >= 2"
sipedge_alive || fail "sipedge died"
stop_sipedge
log PASS
