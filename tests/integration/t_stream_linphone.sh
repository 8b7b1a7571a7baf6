#!/usr/bin/env bash
# linphonec (Debian linphone-cli, no sound card, no video) registers over TLS through
# sipedge, verifying sipedge's certificate against a test CA: (a) to the embedded
# registrar (digest, tests/data/users.txt), (b) to Kamailio (kamailio/registrar.cfg,
# digest, trusting sipedge's core address for de-REGISTERs). In each:
#   1. linphonec reports the registration OK; sipedge logged the TLS connection;
#      (b) Kamailio holds alice's binding with sipedge's Path (a flow token at the core
#      address; ";ob" exactly when the binding is an RFC 5626 outbound one).
#   2. sipp sends an INVITE for alice to the registrar: it comes back through the Path
#      and over linphonec's own TLS connection; linphonec rings (180, its console shows
#      the incoming call), sipp cancels (487).
#   3. "quit": linphonec unregisters through sipedge, then exits. At once (well inside
#      dead_flow_grace) the registrar has no binding: an INVITE gets 404/480 from it, not
#      430 from sipedge; (b) Kamailio's ul.dump has no alice and no trusted de-REGISTER
#      from sipedge was needed.
#   4. linphonec registers again and is killed with SIGKILL (its connection closes
#      without an unregister): an INVITE inside the grace time gets 430 from sipedge;
#      within dead_flow_grace + 1 s the registrar holds no binding (sipedge de-registered
#      it with P-Asserted-Identity: (b) "TRUSTED de-REGISTER user=alice" in Kamailio's
#      log, ul.dump without alice; both: an INVITE then gets 404/480).
#   5. (a) once more without the INVITE inside the grace time (the embedded registrar
#      also drops a binding whose flow answered 430): dead_flow_grace + 1 s after the
#      SIGKILL an INVITE gets 404/480, the work of sipedge's de-REGISTER alone.
# (c) mutual TLS (config file: tls.client_ca, tls.require_client_cert) in front of
# Kamailio: linphonec with a client certificate from the test CA registers (binding with
# sipedge's Path; the audit log names the certificate's subject), without one it does not.
. "$(dirname "$0")/lib.sh"
it_init stream_linphone
. "$IT_LIB_DIR/clients/stream_lib.sh"
need_cmd sipp python3 openssl kamailio kamcmd
need_sipedge
stream_need_client linphonec

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
REG=$(it_addr 4)
CALLER=$(it_addr 12)
TLS_PORT=$(free_tcp_port "$PUB")
GRACE=8
REALM=sipedge-test
PORTS=$(core_port_re)

stream_make_pki "$IT_TMP/pki" "$PUB"
stream_policy "$IT_TMP/policy" "$GRACE"

lp_rc() { # FILE
    lp_write_rc "$1" "proxy=<sip:$PUB:$TLS_PORT;transport=tls>" "identity=sip:alice@$PUB" \
        user=alice pass=alicepw expires=120 "ca=$IT_TMP/pki/ca.pem" \
        "cert=$IT_TMP/pki/client.pem" "key=$IT_TMP/pki/client.key"
}

lp_register() { # TAG: start linphonec and wait for its registration through sipedge
    local tag=$1
    lp_rc "$IT_TMP/$tag.rc"
    lp_start "$tag" "$IT_TMP/$tag.rc"
    lp_wait_registered "$tag" 20 ||
        fail "[$tag] linphonec did not register over TLS: $(grep -aE 'Registration|belle-sip-error|TLS|certificate' "$IT_TMP/$tag-debug.log" | tail -5 | tr '\n' ' ')"
    local ok
    ok=$(stream_stat tls_handshakes_ok)
    [ "${ok:-0}" -ge 1 ] || fail "[$tag] sipedge counted no TLS handshake (stream_tls_handshakes_ok=$ok)"
    log "[$tag] linphonec registered over TLS (stream_tls_handshakes_ok=$ok)"
}

kam_binding_ok() { # TAG
    kam_ul_dump >"$IT_TMP/ul-$1.txt" 2>&1 || fail "[$1] kamcmd ul.dump failed"
    local out
    out=$(stream_binding "$IT_TMP/ul-$1.txt" alice "$CORE" "$PORTS") ||
        fail "[$1] Kamailio binding for alice: $out"
    log "[$1] Kamailio binding: $out"
}

registrar_has_no_binding() { # NAME TAG [soft]: the registrar answers 404/480 for alice
    local codes msg
    codes=$(stream_invite_error "$2" alice "$PUB" "$TARGET")
    log "[$1] INVITE for alice: $codes"
    case " $codes " in
        *" 404 "* | *" 480 "*) return 0 ;;
    esac
    msg="[$1] expected 404/480 from the registrar (no binding), got: $codes"
    [ "${3:-}" = soft ] || fail "$msg"
    log "ERROR (the test goes on, and fails at the end): $msg"
    ERRS+=("$msg;")
}
ERRS=()

run_linphone() { # NAME
    local name=$1 tag t0 t1 codes ntrusted
    # 1. registration
    tag=lp-$name
    lp_register "$tag"
    [ "$name" = kamailio ] && kam_binding_ok "$name"

    # 2. an INVITE to the registrar reaches linphonec over its TLS connection
    stream_invite "call-$name" alice "$PUB" "$TARGET"
    wait_for_line "$IT_TMP/$tag.out" 'Receiving new incoming call from' 5 ||
        fail "[$name] linphonec did not show the incoming call"
    grep -aqE '^SIP/2\.0 180' "$IT_TMP/sipp-call-$name-msg.log" ||
        fail "[$name] no 180 Ringing from linphonec at the caller"
    log "[$name] INVITE reached linphonec: $(stream_finals "call-$name" | tr '\n' ' ')"

    # 3. quit: the client's own unregister passes through sipedge
    lp_quit "$tag" 10 || fail "[$name] linphonec did not exit within 10 s of quit"
    grep -aq 'to \[LinphoneRegistrationCleared\]' "$IT_TMP/$tag-debug.log" ||
        log "[$name] note: linphonec logged no LinphoneRegistrationCleared"
    t0=$(now_ms)
    if [ "$name" = kamailio ]; then
        kam_ul_dump >"$IT_TMP/ul-quit.txt" 2>&1 || fail "kamcmd ul.dump failed"
        grep -q 'AoR: alice' "$IT_TMP/ul-quit.txt" &&
            fail "[$name] Kamailio still holds alice's binding after linphonec unregistered"
        grep -q 'TRUSTED de-REGISTER user=alice' "$KAM_LOG" &&
            fail "[$name] the binding was removed by sipedge's de-REGISTER, not by linphonec's unregister"
    fi
    registrar_has_no_binding "$name" "quit-$name"
    t1=$(stream_reply_ms "quit-$name" 4)
    if [ -z "$t1" ] || [ $((t1 - t0)) -ge $((GRACE * 1000)) ]; then
        fail "[$name] the registrar's answer after quit came later than the grace time"
    fi

    # 4. SIGKILL: sipedge answers 430 in the grace time, then de-registers the binding
    tag=lp-$name-kill
    lp_register "$tag"
    [ "$name" = kamailio ] && kam_binding_ok "$name-kill"
    ntrusted=0
    [ "$name" = kamailio ] && ntrusted=$(grep -c 'TRUSTED de-REGISTER user=alice' "$KAM_LOG")
    kill -KILL "$LP_PID"
    t0=$(now_ms)
    wait "$LP_PID" 2>/dev/null
    lp_release "$tag"
    codes=$(stream_invite_error "gone1-$name" alice "$PUB" "$TARGET")
    case " $codes " in
        *" 430 "*) ;;
        *) fail "[$name] expected 430 (Flow Failed) from sipedge inside dead_flow_grace, got: $codes" ;;
    esac
    t1=$(stream_reply_ms "gone1-$name" 430)
    log "[$name] INVITE right after SIGKILL: $codes, the 430 $((t1 - t0)) ms after the kill"
    [ $((t1 - t0)) -lt $((GRACE * 1000)) ] ||
        fail "[$name] the 430 came $((t1 - t0)) ms after SIGKILL, not inside the grace time"
    sleep_until_ms $((t0 + (GRACE + 1) * 1000))
    if [ "$name" = kamailio ]; then
        kam_ul_dump >"$IT_TMP/ul-after.txt" 2>&1 || fail "kamcmd ul.dump failed"
        grep -q 'AoR: alice' "$IT_TMP/ul-after.txt" &&
            fail "[$name] Kamailio still holds alice's binding $GRACE+1 s after linphonec was killed"
        [ "$(grep -c 'TRUSTED de-REGISTER user=alice' "$KAM_LOG")" -gt "$ntrusted" ] ||
            fail "[$name] no trusted de-REGISTER from sipedge in the Kamailio log after SIGKILL"
    fi
    registrar_has_no_binding "$name" "gone2-$name"

    # 5. (embedded) the same without an INVITE inside the grace time: the embedded
    # registrar drops a binding whose flow answered 430 by itself, so only this shows
    # that sipedge's de-REGISTER removed it (Kamailio keeps it on a 430: step 4 saw the
    # de-REGISTER there).
    if [ "$name" = embedded ]; then
        tag=lp-$name-kill2
        lp_register "$tag"
        kill -KILL "$LP_PID"
        t0=$(now_ms)
        wait "$LP_PID" 2>/dev/null
        lp_release "$tag"
        sleep_until_ms $((t0 + (GRACE + 1) * 1000))
        registrar_has_no_binding "$name" "gone3-$name" soft
    fi
    sipedge_alive || fail "[$name] sipedge died"
}

# (a) embedded registrar
start_sipedge --listen-udp "$PUB:5060" --listen-tls "$PUB:$TLS_PORT" \
    --tls-cert "$IT_TMP/pki/server.pem" --tls-key "$IT_TMP/pki/server.key" \
    --core "$CORE:5070" --registrar-listen "$REG:5080" \
    --users "$SIPEDGE_SRC/tests/data/users.txt" --realm "$REALM" \
    --policy "$IT_TMP/policy" --log-level debug
TARGET=$REG:5080
run_linphone embedded
stop_sipedge
mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-embedded.log"

# (b) Kamailio with digest auth, trusting sipedge's core address for de-REGISTERs.
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""
start_sipedge --listen-udp "$PUB:5060" --listen-tls "$PUB:$TLS_PORT" \
    --tls-cert "$IT_TMP/pki/server.pem" --tls-key "$IT_TMP/pki/server.key" \
    --core "$CORE:5070" --registrar "$KAM:5060" --policy "$IT_TMP/policy" --log-level debug
TARGET=$KAM:5060
run_linphone kamailio
grep -qE "ROUTE INVITE .*du=\[sip:[^]]*$CORE:$PORTS" "$KAM_LOG" ||
    fail "Kamailio did not route the INVITE to sipedge's core address (Path not used)"
stop_sipedge
mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-kamailio.log"

# (c) mutual TLS from the config file (tls.client_ca, tls.require_client_cert): linphonec
# with the client certificate the test CA signed registers, and the audit log's flow-open
# event names its subject; linphonec without a certificate is refused (no registration).
cat >"$IT_TMP/mtls.yaml" <<YAML
listen:
  udp: ["$PUB:5060"]
  tls: ["$PUB:$TLS_PORT"]
tls:
  cert: "$IT_TMP/pki/server.pem"
  key: "$IT_TMP/pki/server.key"
  client_ca: "$IT_TMP/pki/ca.pem"
  require_client_cert: true
core:
  address: "$CORE:5070"
registrar:
  address: "$KAM:5060"
policy: "$IT_TMP/policy"
audit:
  path: "$IT_TMP/audit.jsonl"
log:
  level: debug
YAML
start_sipedge -c "$IT_TMP/mtls.yaml"
lp_register lp-mtls
kam_binding_ok mtls
grep -qE '"event":"flow_open".*"transport":"tls".*cert=[^"]*CN=alice' "$IT_TMP/audit.jsonl" 2>/dev/null ||
    fail "[mtls] the audit log names no client certificate subject (CN=alice): $(tail -c 600 "$IT_TMP/audit.jsonl" 2>/dev/null)"
lp_quit lp-mtls 10 || fail "[mtls] linphonec did not exit within 10 s of quit"
lp_write_rc "$IT_TMP/lp-nocert.rc" "proxy=<sip:$PUB:$TLS_PORT;transport=tls>" \
    "identity=sip:alice@$PUB" user=alice pass=alicepw expires=120 "ca=$IT_TMP/pki/ca.pem"
lp_start lp-nocert "$IT_TMP/lp-nocert.rc"
lp_wait_registered lp-nocert 6 && fail "[mtls] linphonec without a client certificate registered"
st=$(stream_stats)
[ "$(stat_of "$st" stream_tls_handshake_errors)" -ge 1 ] ||
    fail "[mtls] sipedge counted no refused TLS handshake: $st"
kam_ul_dump >"$IT_TMP/ul-nocert.txt" 2>&1
grep -q 'AoR: alice' "$IT_TMP/ul-nocert.txt" &&
    fail "[mtls] Kamailio holds a binding for alice from the client without a certificate"
# (its quit would wait for an unregister it cannot send)
kill -KILL "$LP_PID" 2>/dev/null
wait "$LP_PID" 2>/dev/null
lp_release lp-nocert
stop_sipedge
[ ${#ERRS[@]} -eq 0 ] || fail "${ERRS[*]}"
log PASS
