#!/usr/bin/env bash
# baresip (no sound card: ausine/aufile) registers through sipedge to Kamailio
# (kamailio/registrar.cfg, digest), (a) over TCP as alice, (b) over TLS as bob with
# RFC 5626 outbound (sipnat=outbound: reg-id, +sip.instance, CRLF keepalives) and the
# test CA in sip_cafile. In each:
#   1. baresip reports "200 OK" for its REGISTER over that transport; Kamailio received
#      the REGISTERs from sipedge's core address, never from baresip, and holds the
#      binding with sipedge's Path (a flow token at the core address; ";ob" exactly when
#      the binding is an outbound one: required in (b)).
#   2. sipp sends an INVITE for the user to Kamailio: Kamailio routes it through the
#      Path to sipedge, which delivers it over baresip's own connection; baresip rings
#      (180 at sipp; "Incoming call" in its log), sipp cancels (487).
#   3. SIGTERM: baresip unregisters through sipedge before it exits; within 3 s Kamailio
#      holds no binding for the user, without a de-REGISTER from sipedge.
. "$(dirname "$0")/lib.sh"
it_init stream_baresip
. "$IT_LIB_DIR/clients/stream_lib.sh"
need_cmd sipp python3 openssl kamailio kamcmd
need_sipedge
stream_need_client baresip
[ -f /usr/lib/baresip/modules/account.so ] || {
    [ "${CI:-}" = true ] && fail "baresip modules missing in /usr/lib/baresip/modules"
    skip "baresip modules missing in /usr/lib/baresip/modules"
}

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
CLIENT=$(it_addr 21)
CALLER=$(it_addr 12)
TCP_PORT=$(free_tcp_port "$PUB")
TLS_PORT=$(free_tcp_port "$PUB")
PORTS=$(core_port_re)

stream_make_pki "$IT_TMP/pki" "$PUB"
stream_policy "$IT_TMP/policy" 3

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
start_sipedge --listen-udp "$PUB:5060" --listen-tcp "$PUB:$TCP_PORT" \
    --listen-tls "$PUB:$TLS_PORT" \
    --tls-cert "$IT_TMP/pki/server.pem" --tls-key "$IT_TMP/pki/server.key" \
    --core "$CORE:5070" --registrar "$KAM:5060" --policy "$IT_TMP/policy" --log-level debug

run_baresip() { # NAME TRANSPORT PORT USER PASSWORD EXTRA_ACCOUNT_PARAMS NEED_OB ACCEPTED TLS
    local name=$1 tr=$2 port=$3 user=$4 pw=$5 extra=$6 need_ob=$7 want_accepted=$8 want_tls=$9
    local out n ntrusted
    local TR=${tr^^}
    bs_write_conf "$IT_TMP/bs-$name" "$CLIENT:$(free_tcp_port "$CLIENT")" "$IT_TMP/pki/ca.pem" \
        "<sip:$user@$PUB;transport=$tr>;auth_pass=$pw;outbound=\"sip:$PUB:$port;transport=$tr\";regint=60$extra"
    bs_start "bs-$name" "$IT_TMP/bs-$name"
    out=$IT_TMP/bs-$name.out

    # 1. registration through sipedge, binding with sipedge's Path
    wait_for_line "$out" "$user@$PUB: \{[0-9]+/$TR/v4\} 200 OK" 15 "$BS_PID" ||
        fail "[$name] baresip did not register over $TR: $(grep -aiE 'regist|error|tls|tcp|[0-9]{3} ' "$out" | tail -5 | tr '\n' ' ')"
    log "[$name] $(grep -aE "$user@$PUB: .*200 OK" "$out" | head -1)"
    local st
    st=$(stream_stats)
    [ "$(stat_of "$st" stream_accepted)" -ge "$want_accepted" ] ||
        fail "[$name] sipedge accepted fewer than $want_accepted connections: $st"
    [ "$(stat_of "$st" stream_tls_handshakes_ok)" -ge "$want_tls" ] ||
        fail "[$name] sipedge counted fewer than $want_tls TLS handshakes: $st"
    grep -qE "MSGLOG req src=$CORE:$PORTS .*ft=.* rm=\[REGISTER\]" "$KAM_LOG" ||
        fail "[$name] no REGISTER from sipedge's core address in the Kamailio log"
    grep -qE "MSGLOG req src=($CLIENT|127\.0\.0\.1):" "$KAM_LOG" &&
        fail "[$name] Kamailio received a request straight from baresip"
    kam_ul_dump >"$IT_TMP/ul-$name.txt" 2>&1 || fail "[$name] kamcmd ul.dump failed"
    local b
    b=$(stream_binding "$IT_TMP/ul-$name.txt" "$user" "$CORE" "$PORTS" "$need_ob") ||
        fail "[$name] Kamailio binding for $user: $b"
    log "[$name] Kamailio binding: $b"

    # 2. INVITE via Kamailio and the Path, over baresip's connection
    stream_invite "call-$name" "$user" "$PUB" "$KAM:5060"
    wait_for_line "$out" 'Incoming call from' 5 "$BS_PID" ||
        fail "[$name] baresip did not show the incoming call"
    grep -aqE '^SIP/2\.0 180' "$IT_TMP/sipp-call-$name-msg.log" ||
        fail "[$name] no 180 Ringing from baresip at the caller"
    grep -qE "ROUTE INVITE .*ru=\[sip:${user}[@-].*du=\[sip:[^]]*$CORE:$PORTS" "$KAM_LOG" ||
        fail "[$name] Kamailio did not route the INVITE to sipedge's core address (Path not used)"
    log "[$name] INVITE reached baresip: $(stream_finals "call-$name" | tr '\n' ' ')"

    # 3. SIGTERM: baresip's unregister passes through sipedge
    ntrusted=$(grep -c "TRUSTED de-REGISTER user=$user" "$KAM_LOG")
    bs_stop 10 || fail "[$name] baresip did not exit within 10 s of SIGTERM"
    for ((n = 0; n < 30; n++)); do
        kam_ul_dump >"$IT_TMP/ul-$name-after.txt" 2>&1 || fail "kamcmd ul.dump failed"
        grep -q "AoR: $user\$" "$IT_TMP/ul-$name-after.txt" || break
        sleep 0.1
    done
    grep -q "AoR: $user\$" "$IT_TMP/ul-$name-after.txt" &&
        fail "[$name] Kamailio still holds $user's binding 3 s after baresip unregistered"
    [ "$(grep -c "TRUSTED de-REGISTER user=$user" "$KAM_LOG")" -gt "$ntrusted" ] &&
        fail "[$name] the binding was removed by sipedge's de-REGISTER, not by baresip's unregister"
    sipedge_alive || fail "[$name] sipedge died"
}

# The stream counters are cumulative: the TLS part's connection is the second accepted.
run_baresip tcp tcp "$TCP_PORT" alice alicepw "" 0 1 0
run_baresip tls tls "$TLS_PORT" bob bobpw ";sipnat=outbound" 1 2 1
stop_sipedge
log PASS
