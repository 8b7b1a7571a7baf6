#!/usr/bin/env bash
# NAT keepalive: a phone behind a NAT whose UDP mappings close after 20 s idle registers
# (digest, Kamailio registrar) through sipedge and then stays silent. With nat.keepalive
# on, sipedge's pings keep the mapping open: an INVITE sent to the registrar 60 s later
# (3x the NAT timeout) still reaches the phone. With nat.keepalive off, the same INVITE
# is lost at the NAT (the mapping expired) and never reaches the phone.
# About 150 s.
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$(dirname "$0")/nat_lib.sh"
nat_enter "$0" "$@"
it_init nat_keepalive
need_cmd sipp python3 kamailio kamcmd
need_sipedge

SILENCE=${NAT_SILENCE:-60}
PING=5
SIPP_TIMEOUT=$((SILENCE + 120))

policy() { # DIR KEEPALIVE
    test_policy_dir "$1"
    sed -i -e '/^nat:/,/^[a-z]/{s/^\(  keepalive:\).*/\1 '"$2"'/;s/^\(  ping_interval:\).*/\1 '"$PING"'/}' \
        "$1/policy.yaml"
    grep -q "^  keepalive: $2\$" "$1/policy.yaml" && grep -q "^  ping_interval: $PING\$" "$1/policy.yaml" ||
        fail "could not edit the nat section of $1/policy.yaml"
}
policy "$IT_TMP/policy-on" true
policy "$IT_TMP/policy-off" false

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$SRV_REG" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$SRV_CORE\""

# phase USER POLICY_DIR: register USER behind the NAT, stay silent SILENCE s, call it.
# Sets CALL_RC (caller sipp status) and GOT_INVITE (1 when the phone saw the INVITE).
phase() {
    local user=$1 pdir=$2 tag=$3
    start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
        --policy "$pdir" --log-level debug
    mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-$tag.log" && SIPEDGE_LOG=$IT_TMP/sipedge-$tag.log
    local cid="nat-$user-$$@$NAT_CLI_IP"
    cli_bg_sipp "phone-$tag" -sf "$IT_SIPP_DIR/nat_phone.xml" -key user "$user" -au "$user" \
        -ap "pw$user" -key domain "$SRV_PUB" -key expires 600 -cid_str "$cid" -nd -aa \
        -i "$NAT_CLI_IP" -p 5062 -m 1 "$SRV_PUB:5060"
    local phone=$BG_PID
    wait_for_line "$IT_TMP/sipp-phone-$tag-logs.log" "REGISTERED $user" 10 "$phone" ||
        fail "[$tag] phone $user did not register through the NAT and sipedge"
    grep -qE "MSGLOG req src=$SRV_CORE:$(core_port_re) .*rm=\[REGISTER\]" "$KAM_LOG" ||
        fail "[$tag] Kamailio saw no REGISTER from sipedge's core address"
    # The 200 the phone got carries the short NAT expires, not 600.
    local exp
    exp=$(python3 - "$IT_TMP/sipp-phone-$tag-msg.log" <<'PY'
import re, sys
t = open(sys.argv[1], encoding='latin-1').read()
oks = [m for m in re.split(r'\n(?=-+ )', t) if 'SIP/2.0 200' in m and 'REGISTER' in m]
m = re.search(r'expires=(\d+)', oks[-1]) if oks else None
print(m.group(1) if m else '')
PY
)
    log "[$tag] phone $user registered; 2xx Contact expires=$exp; silent for ${SILENCE}s"
    [ -n "$exp" ] && [ "$exp" -le 60 ] ||
        fail "[$tag] NATed phone was granted expires '$exp' (want nat.expires <= 60)"
    sleep "$SILENCE"
    sipedge_alive || fail "[$tag] sipedge died"
    kill -0 "$phone" 2>/dev/null || fail "[$tag] phone sipp ended early: $(tail -n 3 "$IT_TMP/sipp-phone-$tag-errors.log" 2>/dev/null)"
    STATS=$(edge_stats)
    log "[$tag] $STATS"
    run_sipp "call-$tag" -sf "$IT_SIPP_DIR/nat_invite_uac.xml" -key callee "$user" -key domain "$SRV_PUB" \
        -cid_str "$cid" -i "$SRV_CALLER" -p 5090 -m 1 -max_retrans 4 -recv_timeout 15000 \
        "$SRV_REG:5060"
    CALL_RC=$?
    GOT_INVITE=0
    grep -aq '^INVITE sip:' "$IT_TMP/sipp-phone-$tag-msg.log" && GOT_INVITE=1
    local n
    for ((n = 0; n < 50; n++)); do kill -0 "$phone" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$phone" 2>/dev/null
    wait "$phone" 2>/dev/null
    stop_sipedge
}

# 1. keepalive on: pings every 5 s keep the 20 s mapping open.
phase 1501 "$IT_TMP/policy-on" on
pings=$(stat_of "$STATS" ping_sent)
log "keepalive on: ping_sent=$pings, INVITE at phone=$GOT_INVITE, caller status $CALL_RC"
[ "${pings:-0}" -ge $((SILENCE / PING - 2)) ] || fail "keepalive on: only ${pings:-0} pings in ${SILENCE}s (interval ${PING}s)"
[ "$GOT_INVITE" = 1 ] || fail "keepalive on: the INVITE did not reach the phone after ${SILENCE}s of silence"
[ "$CALL_RC" -eq 0 ] || fail "keepalive on: call through the NAT failed (caller sipp status $CALL_RC)"

# 2. keepalive off: nothing crosses the NAT for 60 s, the mapping is gone.
phase 1502 "$IT_TMP/policy-off" off
pings=$(stat_of "$STATS" ping_sent)
log "keepalive off: ping_sent=$pings, INVITE at phone=$GOT_INVITE, caller status $CALL_RC"
[ "${pings:-0}" -eq 0 ] || fail "keepalive off: sipedge still sent $pings pings"
grep -qE "ROUTE INVITE .*du=\[sip:[^]]*$SRV_CORE:$(core_port_re)" "$KAM_LOG" ||
    fail "keepalive off: Kamailio did not route the INVITE to sipedge"
[ "$GOT_INVITE" = 0 ] || fail "keepalive off: the INVITE still reached the phone (the NAT mapping did not expire; is the NAT timeout applied?)"
[ "$CALL_RC" -ne 0 ] || fail "keepalive off: the call succeeded"

log PASS
