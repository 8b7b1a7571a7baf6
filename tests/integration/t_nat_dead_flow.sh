#!/usr/bin/env bash
# Dead NATed flow: with OPTIONS pings (ping_interval 5 s, max_missed_pings 2), a phone
# behind NAT registers through sipedge (digest, Kamailio registrar) and answers the
# pings; then its sipp is killed. Within ping_interval*(missed+1) + dead_flow_grace + 2 s
# sipedge must declare the flow dead and de-REGISTER its contact at Kamailio (trusted
# P-Asserted-Identity from sipedge's core address), so an INVITE to the AOR is answered
# 404 at once instead of timing out.
# Second part: with a long dead_flow_grace, an INVITE routed to the dead flow before its
# de-registration gets 430 Flow Failed from sipedge (RFC 5626 §5.3).
# About 60 s.
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$(dirname "$0")/nat_lib.sh"
nat_enter "$0" "$@"
it_init nat_dead_flow
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PING=5
MISSED=2
GRACE=1
SIPP_TIMEOUT=200

policy() { # DIR GRACE
    test_policy_dir "$1"
    sed -i -e '/^nat:/,/^[a-z]/{s/^\(  ping_method:\).*/\1 options/;s/^\(  ping_interval:\).*/\1 '"$PING"'/;s/^\(  max_missed_pings:\).*/\1 '"$MISSED"'/}' \
        -e '/^flows:/,/^[a-z]/{s/^\(  dead_flow_grace:\).*/\1 '"$2"'/}' "$1/policy.yaml"
    grep -q '^  ping_method: options$' "$1/policy.yaml" && grep -q "^  max_missed_pings: $MISSED\$" "$1/policy.yaml" &&
        grep -q "^  dead_flow_grace: $2\$" "$1/policy.yaml" || fail "could not edit $1/policy.yaml"
}
policy "$IT_TMP/policy" "$GRACE"
policy "$IT_TMP/policy-grace" 60

start_kamailio "$IT_KAM_DIR/registrar.cfg" "$SRV_REG" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$SRV_CORE\""

# register USER TAG: a phone behind NAT that answers OPTIONS (-aa); sets PHONE (timeout's
# PID) and PHONE_SIPP (sipp's own PID).
register() {
    local user=$1 tag=$2
    cli_bg_sipp "$tag" -sf "$IT_SIPP_DIR/nat_phone.xml" -key user "$user" -au "$user" -ap "pw$user" \
        -key domain "$SRV_PUB" -key expires 600 -nd -aa -i "$NAT_CLI_IP" -p 5062 -m 1 "$SRV_PUB:5060"
    PHONE=$BG_PID
    wait_for_line "$IT_TMP/sipp-$tag-logs.log" "REGISTERED $user" 10 "$PHONE" ||
        fail "phone $user did not register through the NAT and sipedge"
    PHONE_SIPP=$(child_pid "$PHONE")
    [ -n "$PHONE_SIPP" ] && [ "$(cat "/proc/$PHONE_SIPP/comm" 2>/dev/null)" = sipp ] ||
        fail "cannot find the phone's sipp process under PID $PHONE"
}

# wait_stat KEY MIN SECONDS: until sipedge's counter KEY reaches MIN; prints the elapsed
# time in tenths of a second, returns 1 on timeout.
wait_stat() {
    local n v
    for ((n = 0; n < $3 * 5; n++)); do
        v=$(edge_stat "$1")
        [ "${v:-0}" -ge "$2" ] && { echo $((n * 2)); return 0; }
        sleep 0.2
    done
    return 1
}

has_binding() { kam_bindings "$IT_TMP/ul.dump" | grep -q "^$1 "; }

# call USER TAG: INVITE to USER via Kamailio; sets CALL_CODE (final status the caller got)
# and CALL_MS.
call() {
    local t0=$EPOCHREALTIME
    run_sipp "$2" -sf "$IT_SIPP_DIR/nat_invite_uac.xml" -key callee "$1" -key domain "$SRV_PUB" \
        -i "$SRV_CALLER" -p 5090 -m 1 -max_retrans 4 -recv_timeout 15000 "$SRV_REG:5060"
    CALL_MS=$(python3 -c "print(int(($EPOCHREALTIME - $t0) * 1000))")
    CALL_CODE=$(grep -aoE '^SIP/2.0 [4-6][0-9][0-9]' "$IT_TMP/sipp-$2-msg.log" | head -n 1 | cut -d' ' -f2)
}

# ---- 1. kill a registered phone: pings unanswered, flow dead, de-REGISTER -----------------
start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
    --policy "$IT_TMP/policy" --log-level debug
register 1601 phone1
has_binding 1601 || fail "no binding for 1601 at Kamailio after registration"
t=$(wait_stat ping_answered 2 $((PING * 3))) ||
    fail "the phone's answers to OPTIONS pings were not counted ($(edge_stats))"
log "OPTIONS pings answered by the live phone (2 after $((t / 10)).$((t % 10))s)"
[ "$(edge_stat flows_dead)" = 0 ] || fail "a flow died while the phone answered its pings"

log "killing the phone's sipp (PID $PHONE_SIPP)"
kill -KILL "$PHONE_SIPP"
t0=$EPOCHREALTIME
# Worst case: the kill lands just after a ping was answered (next ping up to PING s later),
# MISSED further intervals, the grace, and up to 1 s of tick granularity each step; the
# table is polled 4x a second. 2 s more are tolerated (and logged) for a loaded CI host.
LIMIT=$((PING * (MISSED + 1) + GRACE + 2))
gone=
for ((n = 0; n < (LIMIT + 2) * 4; n++)); do
    if ! has_binding 1601; then
        gone=$(python3 -c "print(round($EPOCHREALTIME - $t0, 1))")
        break
    fi
    sleep 0.25
done
STATS=$(edge_stats)
log "$STATS"
[ -n "$gone" ] || fail "binding of 1601 still at Kamailio $((LIMIT + 2))s after the phone died"
log "binding removed at Kamailio ${gone}s after the phone died (expected within ${LIMIT}s)"
python3 -c "import sys; sys.exit(0 if $gone <= $LIMIT else 1)" ||
    log "NOTE: removal took ${gone}s, more than ${LIMIT}s (within the 2 s tolerance)"
[ "$(stat_of "$STATS" flows_dead)" -ge 1 ] || fail "sipedge did not count a dead flow"
[ "$(stat_of "$STATS" dereg_sent)" -ge 1 ] || fail "sipedge sent no de-REGISTER"
grep -q "TRUSTED de-REGISTER user=1601 " "$KAM_LOG" || fail "Kamailio did not see a trusted de-REGISTER for 1601"
for ((n = 0; n < 20; n++)); do
    [ "$(edge_stat dereg_answered_ok)" -ge 1 ] && break
    sleep 0.1
done
[ "$(edge_stat dereg_answered_ok)" -ge 1 ] || fail "the de-REGISTER got no 2xx ($(edge_stats))"
grep -q 'flow dead: de-registering sip:1601@' "$SIPEDGE_LOG" || fail "no de-registration line in sipedge's log"

call 1601 call1
log "INVITE to 1601 after the de-registration: ${CALL_CODE:-no} final response in ${CALL_MS} ms"
[ "$CALL_CODE" = 404 ] || [ "$CALL_CODE" = 480 ] || fail "INVITE to a de-registered AOR got '${CALL_CODE:-nothing}' (want 404/480)"
[ "$CALL_MS" -lt 3000 ] || fail "the error took ${CALL_MS} ms (want at once)"
kill -0 "$PHONE" 2>/dev/null && wait "$PHONE" 2>/dev/null
stop_sipedge
mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-1.log"

# ---- 2. dead flow inside the grace period: 430 Flow Failed --------------------------------
start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
    --policy "$IT_TMP/policy-grace" --log-level debug
register 1602 phone2
t=$(wait_stat ping_answered 1 $((PING * 3))) || fail "no OPTIONS ping answered by phone 1602"
kill -KILL "$PHONE_SIPP"
t=$(wait_stat flows_dead 1 $((PING * (MISSED + 1) + 2))) ||
    fail "flow of the killed phone 1602 not dead within $((PING * (MISSED + 1) + 2))s ($(edge_stats))"
log "flow of 1602 dead $((t / 10)).$((t % 10))s after polling began; binding still at Kamailio (grace 60 s)"
has_binding 1602 || fail "binding of 1602 removed before dead_flow_grace ended"
call 1602 call2
log "INVITE to 1602 (dead flow, in grace): ${CALL_CODE:-no} final response in ${CALL_MS} ms"
[ "$(edge_stat reply_430_flow_failed)" -ge 1 ] || fail "sipedge did not answer 430 for the dead flow"
[ "$CALL_CODE" = 430 ] || fail "caller got '${CALL_CODE:-nothing}' for a dead flow (want 430 relayed by Kamailio)"
[ "$CALL_MS" -lt 3000 ] || fail "the 430 took ${CALL_MS} ms"
kill -0 "$PHONE" 2>/dev/null && wait "$PHONE" 2>/dev/null
stop_sipedge

log PASS
