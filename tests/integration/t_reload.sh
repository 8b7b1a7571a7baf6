#!/usr/bin/env bash
# SIGHUP applies every policy key it can, and names the ones that need a restart:
#   1. registrar.min_expires raised above what the client asks: after SIGHUP the embedded
#      registrar answers 423 (its policy was reloaded), and the edge's own key
#      (limits.max_message_bytes) applies at once too;
#   2. limits.max_flows changed: a log line names it and the running value is kept, while
#      the rest of the file applies.
. "$(dirname "$0")/lib.sh"
it_init reload
need_cmd python3
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
CLI=$(it_addr 10)

make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy" $'registrar:\n  digest: md5\n  min_expires: 60'
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
    --users "$IT_TMP/users.txt" --policy "$IT_TMP/policy" --log-level debug

out=$(py_register "$CLI" "$PUB:5060" 1000 pw1000 "$PUB") ||
    fail "REGISTER (Expires 600) before the reload: $out"
log "before reload: $out"

# 600 s is now too brief for the registrar; the flow table size changes too.
printf '%s\n' 'registrar:' '  digest: md5' '  min_expires: 900' 'limits:' '  max_flows: 4096' \
    >"$IT_TMP/policy/zz-test.yaml"
kill -HUP "$SIPEDGE_PID"
wait_for_line "$SIPEDGE_LOG" 'policy reloaded from' 5 "$SIPEDGE_PID" ||
    fail "no 'policy reloaded' line after SIGHUP"
grep -q 'limits.max_flows changes only at restart' "$SIPEDGE_LOG" ||
    fail "the reload did not name limits.max_flows as a restart-only key"

out=$(py_register "$CLI" "$PUB:5060" 1001 pw1001 "$PUB")
log "after reload: $out"
case $out in
    *" 423 "*) ;;
    *) fail "REGISTER with Expires 600 after min_expires went to 900: want 423, got: $out" ;;
esac
sipedge_alive || fail "sipedge died after the reload"
stop_sipedge
log PASS
