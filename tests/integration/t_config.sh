#!/usr/bin/env bash
# --check-config: a good config exits 0; an unknown key, a duplicate key, a wrong type
# and a YAML syntax error each exit 1 with "file:LINE:COL: reason" naming the line.
# A bad config at start (no --check-config) also exits 1 with the same message.
. "$(dirname "$0")/lib.sh"
it_init config
need_sipedge

make_users "$IT_TMP/users.txt"
POLICY=$SIPEDGE_SRC/policies/default

# write_cfg NAME: the good config (14 lines) on stdin-less form; edits come after.
good_cfg() {
    cat <<YAML
# sipedge test config
listen:
  udp: ["127.0.0.1:15060"]
core:
  address: "127.0.0.1:15070"
registrar:
  embedded:
    listen: "127.0.0.1:15080"
    users: "$IT_TMP/users.txt"
    realm: test
domains: [example.com]
policy: "$POLICY"
log:
  level: info
YAML
}

check() { # check NAME WANT_RC WANT_LINE... : run --check-config on $IT_TMP/NAME.yaml
    local name=$1 want_rc=$2
    shift 2
    local f=$IT_TMP/$name.yaml rc
    "$SIPEDGE_BIN" --check-config -c "$f" >"$IT_TMP/$name.out" 2>&1
    rc=$?
    log "$name: exit $rc: $(head -c 300 "$IT_TMP/$name.out" | tr '\n' ' ')"
    [ "$rc" -eq "$want_rc" ] || { errs+=("$name: exit $rc, want $want_rc;"); return; }
    [ "$want_rc" -eq 0 ] && return
    local got
    got=$(grep -oE "$(printf '%s' "$f" | sed 's/[.[\*^$]/\\&/g'):[0-9]+:[0-9]+: " "$IT_TMP/$name.out" | head -1)
    [ -n "$got" ] || { errs+=("$name: no '$f:LINE:COL: ' in the message;"); return; }
    local line
    line=$(printf '%s' "$got" | awk -F: '{print $(NF-2)}')
    local l
    for l in "$@"; do [ "$line" = "$l" ] && return; done
    errs+=("$name: reported line $line, want $*;")
}

errs=()

good_cfg >"$IT_TMP/good.yaml"
check good 0

# Unknown key at line 15 (under log:), column 3.
{ good_cfg; echo "  bogus_key: 1"; } >"$IT_TMP/unknown.yaml"
check unknown 1 15

# Duplicate key: a second "core:" mapping at line 15.
{ good_cfg; printf 'core:\n  address: "127.0.0.1:15071"\n'; } >"$IT_TMP/duplicate.yaml"
check duplicate 1 15

# Wrong type: workers is an unsigned integer; "lots" at line 15.
{ good_cfg; echo "workers: lots"; } >"$IT_TMP/type.yaml"
check type 1 15

# Wrong type inside a map: core.address is an address, not a sequence (line 5).
good_cfg | sed 's|^  address: "127.0.0.1:15070"|  address: [1, 2]|' >"$IT_TMP/type2.yaml"
check type2 1 5

# Syntax error: unclosed flow sequence at line 11; libyaml may point at the line
# where it gave up (the next one), so 11 or 12 are both right.
good_cfg | sed 's|^domains: \[example.com\]|domains: [example.com, "x"|' >"$IT_TMP/syntax.yaml"
check syntax 1 11 12

# A bad config at start: exit 1 with the same message, never "ready".
"$SIPEDGE_BIN" -c "$IT_TMP/unknown.yaml" >"$IT_TMP/start-bad.out" 2>&1 &
pid=$!
IT_PIDS+=("$pid")
for ((n = 0; n < 50; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    errs+=("start with a bad config: still running after 5s;")
else
    wait "$pid"
    rc=$?
    [ "$rc" -eq 1 ] || errs+=("start with a bad config: exit $rc, want 1;")
    grep -qE "unknown\.yaml:15:[0-9]+: " "$IT_TMP/start-bad.out" ||
        errs+=("start with a bad config: no file:15:COL: message;")
    grep -q 'sipedge: ready' "$IT_TMP/start-bad.out" && errs+=("start with a bad config printed ready;")
fi

[ ${#errs[@]} -eq 0 ] || fail "${errs[*]}"
log PASS
