#!/usr/bin/env bash
# The embedded registrar's bindings survive kill -9. sipedge runs with its embedded
# registrar, a fixed flow key and a state directory; two sipp phones register:
#   1500 through sipedge's public listener (binding with a Path via sipedge's core),
#   1501 straight at the registrar (binding without a Path: routed to its Contact).
# Each gets a call via the registrar; then sipedge is killed with SIGKILL (no shutdown,
# no final flush) and started again with the same key, ports and state directory. An
# INVITE sent to the registrar for each phone must reach it: the bindings come back
# from <state_dir>/registrar.sqlite, and 1500's flow from the edge's own snapshot.
# Without the store the registrar answers 404 and both calls fail.
. "$(dirname "$0")/lib.sh"
it_init registrar_persist
need_cmd sipp python3
need_sipedge

PUB=$(it_addr 1)     # public listener
CORE=$(it_addr 2)    # sipedge core-side socket
REG=$(it_addr 4)     # embedded registrar
PHONE=$(it_addr 11)  # sipp phones (UAS)
CALLER=$(it_addr 12) # sipp caller
REALM=sipedge-test
KEY=7e91a5e07e91a5e000112233445566778899aabbccddeeff0123456789abcdef
STATE=$IT_TMP/state
DB=$STATE/registrar.sqlite

make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy" $'registrar:\n  digest: md5-sha256'

RUN=0
sipedge_up() {
    RUN=$((RUN + 1))
    start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
        --users "$IT_TMP/users.txt" --realm "$REALM" --policy "$IT_TMP/policy" \
        --flow-key "$KEY" --state-dir "$STATE" --log-level debug
    log "sipedge run $RUN: pid $SIPEDGE_PID"
}
keep_log() { cp "$SIPEDGE_LOG" "$IT_TMP/sipedge-run$RUN.log"; }

PROBLEMS=()
problem() {
    log "CHECK FAILED: $*"
    PROBLEMS+=("$*")
    return 1
}

# register USER DEST: a phone (reg_uas_calls.xml: one REGISTER, then up to three calls)
# on its own port of $PHONE registers USER@$PUB at DEST. Sets PID_<USER>.
declare -A PID CID
register() {
    local user=$1 dest=$2
    CID[$user]="call-$user-$$@$PHONE"
    bg_sipp "phone-$user" -sf "$IT_SIPP_DIR/reg_uas_calls.xml" -key user "$user" -au "$user" \
        -ap "pw$user" -key domain "$PUB" -key expires 600 -cid_str "${CID[$user]}" -nd -aa \
        -i "$PHONE" -p "$(free_udp_port "$PHONE")" -m 1 -recv_timeout 90000 "$dest"
    PID[$user]=$BG_PID
    wait_for_line "$IT_TMP/sipp-phone-$user-logs.log" "REGISTERED $user" 10 "$BG_PID" ||
        fail "phone $user did not register at $dest"
}

# call USER N WHAT: an INVITE for USER@$PUB sent to the registrar must complete, and the
# phone must log its Nth answered call.
call() {
    local user=$1 n=$2 what=$3 tag=call-$1-$2 rc code
    run_sipp "$tag" -sf "$IT_SIPP_DIR/invite_uac.xml" -key callee "$user" -key domain "$PUB" \
        -cid_str "${CID[$user]}" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 \
        -max_retrans 4 -recv_timeout 8000 "$REG:5080"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        code=$(grep -aoE '^SIP/2.0 [3-6][0-9]{2} [^'$'\r'']*' "$IT_TMP/sipp-$tag-msg.log" | head -n 1)
        problem "$what: INVITE for $user via the registrar failed (sipp status $rc; answer: ${code:-none})"
        return 1
    fi
    wait_for_line "$IT_TMP/sipp-phone-$user-logs.log" "ANSWERED $user $n" 5 ||
        { problem "$what: the caller completed but phone $user did not answer call $n"; return 1; }
    log "$what: call $n reached phone $user"
}

# db_rows: bindings in the store file (read with Python's sqlite3, WAL included).
db_rows() {
    python3 - "$DB" <<'PY'
import sqlite3, sys
db = sqlite3.connect('file:%s?mode=ro' % sys.argv[1], uri=True)
print(db.execute('SELECT count(*) FROM bindings').fetchone()[0])
PY
}

sipedge_up
register 1500 "$PUB:5060"
register 1501 "$REG:5080"
call 1500 1 "before the crash" || fail "the call to 1500 before the crash failed: setup broken"
call 1501 1 "before the crash" || fail "the call to 1501 before the crash failed: setup broken"

# The registrar flushes every 250 ms; the edge snapshots its flows every few seconds.
for ((n = 0; n < 40; n++)); do
    [ "$(db_rows 2>/dev/null)" = 2 ] && break
    sleep 0.05
done
rows=$(db_rows 2>&1)
[ "$rows" = 2 ] || fail "registrar.sqlite holds ${rows:-nothing} bindings 2 s after the REGISTERs, want 2"
sleep 6

sipedge_alive || fail "sipedge died before the crash"
kill -KILL "$SIPEDGE_PID"
wait "$SIPEDGE_PID" 2>/dev/null
SIPEDGE_PID=
log "sipedge killed (SIGKILL)"
keep_log
sipedge_up
grep -qE 'registrar: .*registrar\.sqlite: 2 bindings restored' "$SIPEDGE_LOG" ||
    problem "no '2 bindings restored' line in the log of the restarted sipedge"

call 1501 2 "after kill -9, binding without a Path"
call 1500 2 "after kill -9, binding with a Path via sipedge"

stop_sipedge
keep_log
[ ${#PROBLEMS[@]} -eq 0 ] || fail "$(printf '%s; ' "${PROBLEMS[@]}")"
log PASS
