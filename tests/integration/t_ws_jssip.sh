#!/usr/bin/env bash
# JsSIP in Debian's headless Chromium (playwright-core, no browser download) registers
# over wss through sipedge, (a) to the embedded registrar and (b) to Kamailio
# (kamailio/registrar.cfg, digest auth). sipp sends an INVITE to the registrar for
# the browser's AOR; the page must report it (newRTCSession, originator remote) and
# refuses it with 486. Then the tab closes: a new INVITE fails at once (430 from sipedge
# while the dead flow is in its grace time, or 404/480), and within grace + 1 s the
# registrar holds no binding any more (sipedge de-registered it with
# P-Asserted-Identity): (a) the embedded registrar answers an INVITE itself with 404/480,
# (b) kamcmd ul.dump has no AoR "alice".
. "$(dirname "$0")/lib.sh"
it_init ws_jssip
. "$IT_LIB_DIR/clients/ws_lib.sh"
need_cmd sipp python3 kamailio kamcmd
need_sipedge
ws_clients_setup
[ -x /usr/bin/chromium ] || { [ "${CI:-}" = true ] && fail "/usr/bin/chromium missing"; skip "/usr/bin/chromium missing"; }

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
REG=$(it_addr 4)
CALLER=$(it_addr 12)
WSS_PORT=$(free_tcp_port "$PUB")
GRACE=2

ws_make_cert "$IT_TMP"
test_policy_dir "$IT_TMP/policy" "$(printf 'flows:\n  dead_flow_grace: %s\n' "$GRACE")"

node_bg pagesrv jssip_server.js 127.0.0.1 0
wait_for_line "$IT_TMP/pagesrv.out" '^LISTENING' 10 "$BG_PID" || fail "page server did not start"
PAGE=$(sed -n 's|^LISTENING http://127.0.0.1:\([0-9]*\)/|http://localhost:\1/|p' "$IT_TMP/pagesrv.out")

now_ms() { date +%s%3N; }

invite_error() { # TAG: an INVITE for alice that must fail; prints the final code(s)
    run_sipp "$1" -sf "$WS_SIPP_DIR/ws_invite_error.xml" -key callee alice -key domain "$PUB" \
        -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 2 -recv_timeout 3000 \
        "$TARGET"
    sipp_check "$1" $? 1 >&2
    sip_final "$1" | tr '\n' ' '
}

run_browser() { # NAME: the page registers, sees an INVITE, closes; checks what follows
    local name=$1 t0 t1 codes
    rm -f "$IT_TMP/close-$name"
    node_bg "page-$name" jssip_run.js --page "$PAGE" --ws "wss://$PUB:$WSS_PORT" \
        --uri "sip:alice@$PUB" --password alicepw --close-when "$IT_TMP/close-$name" \
        --timeout 60 --shot "$IT_TMP/page-$name.png"
    local page_pid=$BG_PID out=$IT_TMP/page-$name.out
    wait_for_line "$out" '^EVENT registered' 30 "$page_pid" ||
        fail "[$name] JsSIP did not register over wss: $(grep -E 'EVENT|FAIL|ERROR' "$out" | tail -3 | tr '\n' ' ')"
    grep -q "ws .*connection .* open on $PUB:$WSS_PORT" "$SIPEDGE_LOG" ||
        fail "[$name] sipedge logged no wss connection"

    run_sipp "call-$name" -sf "$WS_SIPP_DIR/ws_invite_busy.xml" -key callee alice \
        -key domain "$PUB" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -max_retrans 4 \
        -recv_timeout 8000 "$TARGET"
    sipp_check "call-$name" $? 1
    wait_for_line "$out" '^EVENT newRTCSession originator=remote' 5 "$page_pid" ||
        fail "[$name] JsSIP did not report the incoming session"

    touch "$IT_TMP/close-$name"
    wait_for_line "$out" '^TAB CLOSED' 10 "$page_pid" || fail "[$name] the tab did not close"
    t0=$(sed -n 's/^TAB CLOSED //p' "$out")
    wait "$page_pid"

    t1=$(now_ms)
    codes=$(invite_error "gone1-$name")
    log "[$name] INVITE right after the tab closed: $codes in $(($(now_ms) - t1)) ms"
    [ $(($(now_ms) - t1)) -lt 3000 ] || fail "[$name] the INVITE after the tab closed took too long"

    # Within grace + 1 s of the close, the registrar must have let the binding go.
    local wait_ms=$((t0 + (GRACE + 1) * 1000 - $(now_ms)))
    [ "$wait_ms" -gt 0 ] && sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))"
    if [ "$name" = kamailio ]; then
        kam_ul_dump >"$IT_TMP/ul-after.txt" 2>&1 || fail "kamcmd ul.dump failed"
        grep -q 'AoR: alice' "$IT_TMP/ul-after.txt" &&
            fail "[$name] Kamailio still holds alice's binding $GRACE+1 s after the tab closed"
        grep -q 'TRUSTED de-REGISTER user=alice' "$KAM_LOG" ||
            fail "[$name] no trusted de-REGISTER from sipedge in the Kamailio log"
    fi
    codes=$(invite_error "gone2-$name")
    log "[$name] INVITE $GRACE+1 s after the tab closed: $codes"
    case " $codes " in
        *" 404 "* | *" 480 "*) ;;
        *) fail "[$name] expected 404/480 from the registrar after grace, got: $codes" ;;
    esac
}

# (a) embedded registrar. No users file: JsSIP 3.13 answers only the last of several
# WWW-Authenticate headers and gives up when it is not MD5, and the embedded registrar
# offers MD5 and SHA-256; digest through the edge is covered by (b) and t_ws_sipjs.sh.
start_sipedge --listen-udp "$PUB:5060" --listen-wss "$PUB:$WSS_PORT" \
    --tls-cert "$IT_TMP/cert.pem" --tls-key "$IT_TMP/key.pem" --ws-origin http://localhost \
    --core "$CORE:5070" --registrar-listen "$REG:5080" --policy "$IT_TMP/policy" \
    --log-level debug
TARGET=$REG:5080
run_browser embedded
stop_sipedge
mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-embedded.log"

# (b) Kamailio with digest auth, trusting sipedge's core address for de-REGISTERs.
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
start_sipedge --listen-udp "$PUB:5060" --listen-wss "$PUB:$WSS_PORT" \
    --tls-cert "$IT_TMP/cert.pem" --tls-key "$IT_TMP/key.pem" --ws-origin http://localhost \
    --core "$CORE:5070" --registrar "$KAM:5060" --policy "$IT_TMP/policy" --log-level debug
TARGET=$KAM:5060
run_browser kamailio
stop_sipedge
log PASS
