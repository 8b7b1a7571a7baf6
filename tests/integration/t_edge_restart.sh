#!/usr/bin/env bash
# UDP flows survive an edge restart. A Kamailio registrar (usrloc in memory, Path on)
# behind sipedge (fixed flow key, state directory in the temp dir); a UDP phone (sipp)
# registers through sipedge and gets a call. Then sipedge is restarted with the same key,
# ports and state directory, and an INVITE sent to Kamailio for the phone must reach it
# along the Path Kamailio stored before the restart:
#   1. restart after SIGTERM (clean exit): two calls reach the phone, sipedge answers no
#      430, and the phone's binding (Path via sipedge) is still at Kamailio;
#   2. the same after kill -9 (no shutdown at all), with a second phone that registered
#      through the restarted sipedge of case 1.
# Only UDP: WebSocket connections end with the process and cannot survive it.
. "$(dirname "$0")/lib.sh"
it_init edge_restart
need_cmd sipp python3 kamailio kamcmd
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
KAM=$(it_addr 3)
PHONE=$(it_addr 11)
CALLER=$(it_addr 12)
KEY=5e1fed9e5e1fed9e00112233445566778899aabbccddeeff0123456789abcdef
STATE=$IT_TMP/state
mkdir -p "$STATE"
test_policy_dir "$IT_TMP/policy"

# TRUSTED_EDGE: sipedge may remove the bindings of a flow it declares dead (430), as in
# production, so a lost flow also shows as a lost binding.
start_kamailio "$IT_KAM_DIR/registrar.cfg" "$KAM" 5060 WITH_AUTH WITH_MSGLOG \
    "TRUSTED_EDGE=\"$CORE\""

RUN=0
edge() {
    RUN=$((RUN + 1))
    start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar "$KAM:5060" \
        --flow-key "$KEY" --state-dir "$STATE" --policy "$IT_TMP/policy" --log-level debug
    log "sipedge run $RUN: pid $SIPEDGE_PID"
}


# keep_edge_log: start_sipedge truncates sipedge.log; keep each run's log.
keep_edge_log() { cp "$SIPEDGE_LOG" "$IT_TMP/sipedge-run$RUN.log"; }

# problem MSG: record a failed check of the current case (the other case still runs).
PROBLEMS=()
problem() {
    log "CHECK FAILED: $*"
    PROBLEMS+=("$*")
    return 1
}

# register USER: a phone (reg_uas_calls.xml: one REGISTER, then three calls) on its own
# port of $PHONE registers USER through sipedge. Sets PHONE_PID, PHONE_CID, PHONE_TAG.
register() {
    local user=$1
    PHONE_TAG=phone-$user
    PHONE_CID="call-$user-$$@$PHONE"
    bg_sipp "$PHONE_TAG" -sf "$IT_SIPP_DIR/reg_uas_calls.xml" -key user "$user" -au "$user" \
        -ap "pw$user" -key domain "$PUB" -key expires 600 -cid_str "$PHONE_CID" -nd -aa \
        -i "$PHONE" -p "$(free_udp_port "$PHONE")" -m 1 -recv_timeout 90000 "$PUB:5060"
    PHONE_PID=$BG_PID
    wait_for_line "$IT_TMP/sipp-$PHONE_TAG-logs.log" "REGISTERED $user" 10 "$PHONE_PID" ||
        fail "phone $user did not register through sipedge"
}

# bound USER: Kamailio holds a live contact of USER whose Path names sipedge's core.
bound() {
    kam_ul_dump >"$IT_TMP/ul.dump" 2>&1 || fail "kamcmd ul.dump failed"
    python3 - "$IT_TMP/ul.dump" "$1" "$CORE" "$(core_port_re)" <<'PY'
import re, sys
text, user, core, ports = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4]
cur, ok = None, False
for line in text.splitlines():
    m = re.search(r'AoR: (\S+)', line)
    if m:
        cur = m.group(1)
    m = re.search(r'Path: (.*)', line)
    if m and cur == user and re.search(r'@' + re.escape(core) + r':' + ports + r';[^>]*lr', m.group(1)):
        ok = True
sys.exit(0 if ok else 1)
PY
}

# call USER N WHAT: a caller sends an INVITE for USER to Kamailio; it must complete, and
# the phone must have answered its Nth call with sipedge's Via on the INVITE.
call() {
    local user=$1 n=$2 what=$3 tag=call-$1-$2 rc code
    run_sipp "$tag" -sf "$IT_SIPP_DIR/invite_uac.xml" -key callee "$user" -key domain "$PUB" \
        -cid_str "$PHONE_CID" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 \
        -max_retrans 4 -recv_timeout 12000 "$KAM:5060"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        code=$(grep -aoE '^SIP/2.0 [3-6][0-9]{2} [^'$'\r'']*' "$IT_TMP/sipp-$tag-msg.log" | head -n 1)
        problem "$what: INVITE for $user via Kamailio failed (sipp status $rc; answer: ${code:-none})"
        return 1
    fi
    wait_for_line "$IT_TMP/sipp-$PHONE_TAG-logs.log" "ANSWERED $user $n" 5 ||
        { problem "$what: the caller completed but phone $user did not answer call $n"; return 1; }
    [ "$(grep -acE "^Via: SIP/2.0/UDP $PUB(:5060)?[;\r ]" "$IT_TMP/sipp-$PHONE_TAG-msg.log")" -ge "$n" ] ||
        { problem "$what: INVITE at phone $user carries no Via of sipedge's public address $PUB"; return 1; }
    log "$what: call $n reached phone $user through sipedge"
}

# no_430 WHAT: sipedge's reply_430_flow_failed counter is 0.
no_430() {
    local n
    n=$(edge_stat reply_430_flow_failed)
    [ "$n" = 0 ] || problem "$1: reply_430_flow_failed=${n:-missing}, want 0"
}

# restored_at_least N WHAT: the restarted sipedge logged restoring N or more UDP flows
# from its snapshot (the state directory, not only the flow tokens, carried them). Each
# worker restores its own directory and logs its own line: the flows are their sum.
restored_at_least() {
    local n
    n=$(sed -n 's/.*edge state restored from .*: \([0-9]*\) UDP flows.*/\1/p' "$SIPEDGE_LOG" |
        awk '{ s += $1; n++ } END { if (n) print s }')
    [ -n "$n" ] && [ "$n" -ge "$1" ] ||
        problem "$2: restored ${n:-no} UDP flows from the snapshot, want >= $1"
}

# still_bound USER WHAT
still_bound() {
    bound "$1" || problem "$2: Kamailio no longer holds $1's binding with a Path via sipedge"
}

# phone_done USER: the phone's sipp ended well after its three calls.
phone_done() {
    local rc
    wait "$PHONE_PID"
    rc=$?
    [ "$rc" -eq 0 ] || problem "phone $1: sipp status $rc after three calls"
}

# restart HOW: stop sipedge (term: SIGTERM and a clean exit; kill: SIGKILL), start it again.
restart() {
    case $1 in
        term) stop_sipedge ;;
        kill)
            sipedge_alive || fail "sipedge is not running (died earlier)"
            kill -KILL "$SIPEDGE_PID"
            wait "$SIPEDGE_PID" 2>/dev/null
            SIPEDGE_PID=
            log "sipedge killed (SIGKILL)"
            ;;
    esac
    keep_edge_log
    edge
}

edge

# ---- 1. SIGTERM ------------------------------------------------------------------------
case_term() {
    local w="after SIGTERM restart"
    register 1500
    bound 1500 || fail "no binding of 1500 with a Path via sipedge at Kamailio after REGISTER"
    call 1500 1 "before any restart" || fail "the call before any restart failed: setup broken"
    restart term
    restored_at_least 1 "$w"
    local ok=1
    call 1500 2 "$w" || ok=0
    no_430 "$w"
    still_bound 1500 "$w"
    call 1500 3 "$w, second call" || ok=0
    [ "$ok" = 1 ] && phone_done 1500
}
case_term

# ---- 2. SIGKILL ------------------------------------------------------------------------
case_kill() {
    local w="after kill -9 restart"
    register 1501
    bound 1501 || fail "no binding of 1501 with a Path via sipedge at Kamailio after REGISTER"
    call 1501 1 "before the crash" || fail "the call before the crash failed: setup broken"
    # 1501's registration reaches the journal on disk within a 250 ms tick; one second
    # is ample, and far less than a snapshot period.
    sleep 1
    restart kill
    restored_at_least 2 "$w"
    local ok=1
    call 1501 2 "$w" || ok=0
    no_430 "$w"
    still_bound 1501 "$w"
    call 1501 3 "$w, second call" || ok=0
    [ "$ok" = 1 ] && phone_done 1501
}
case_kill

stop_sipedge
keep_edge_log
[ ${#PROBLEMS[@]} -eq 0 ] || fail "$(printf '%s; ' "${PROBLEMS[@]}")"
log PASS
