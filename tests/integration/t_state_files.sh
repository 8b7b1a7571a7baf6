#!/usr/bin/env bash
# State files that cannot be trusted are refused whole, moved aside, and sipedge starts
# empty and says so:
#   edge.state  holds text that is no state file at all;
#   bans.state  has a valid header from a newer format version (99);
# then a clean stop writes fresh, readable files in their place.
. "$(dirname "$0")/lib.sh"
it_init state_files
need_cmd python3
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
STATE=$IT_TMP/state
mkdir -p "$STATE"
make_users "$IT_TMP/users.txt"

printf 'this is not what sipedge wrote\n' >"$STATE/edge.state"
# A well-formed header (magic, kind, version 99, empty payload with its checksum).
python3 - "$STATE/bans.state" <<'PY'
import hashlib, struct, sys
hdr = b"SIPEDGE\0" + b"bans".ljust(8, b"\0") + struct.pack(">IIQ", 99, 0, 0)
hdr += hashlib.sha256(b"").digest()[:16]
open(sys.argv[1], "wb").write(hdr)
PY

start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
    --users "$IT_TMP/users.txt" --state-dir "$STATE" --log-level info

grep -q "edge flow state refused: $STATE/edge.state: not a sipedge state file; starting with no edge flow state, the file was moved to $STATE/edge.state.bad-" "$SIPEDGE_LOG" ||
    fail "no clear refusal of the corrupt edge.state in the log"
grep -q "bans state refused: $STATE/bans.state: format version 99, this sipedge reads up to 1; starting with no bans state, the file was moved to $STATE/bans.state.bad-" "$SIPEDGE_LOG" ||
    fail "no clear refusal of the newer-version bans.state in the log"
ls "$STATE"/edge.state.bad-* >/dev/null 2>&1 || fail "the refused edge.state was not kept aside"
ls "$STATE"/bans.state.bad-* >/dev/null 2>&1 || fail "the refused bans.state was not kept aside"

# A REGISTER still works on the empty state.
out=$(py_register "$(it_addr 10)" "$PUB:5060" 1000 pw1000 "$PUB") ||
    fail "REGISTER after starting empty: $out"

stop_sipedge
for f in edge.state bans.state; do
    [ "$(head -c 8 "$STATE/$f" | tr -d '\0')" = SIPEDGE ] || fail "no fresh $f written at stop"
done
# The fresh files load without complaint.
start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
    --users "$IT_TMP/users.txt" --state-dir "$STATE" --log-level info
grep -q "state refused" "$SIPEDGE_LOG" && fail "the state written at stop was refused: $(grep 'state refused' "$SIPEDGE_LOG")"
grep -q "edge state restored from $STATE: " "$SIPEDGE_LOG" || fail "the fresh edge.state was not read back"
stop_sipedge
log PASS
