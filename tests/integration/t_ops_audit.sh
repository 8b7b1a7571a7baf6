#!/usr/bin/env bash
# Audit log: a digest registration through sipedge (embedded registrar) gives register
# lines with every field; a hostile User-Agent (quotes, backslash, folded line, control
# bytes, invalid UTF-8) stays inside one valid JSON line; a second source for the same AOR
# is flagged device_change; after mv + SIGHUP the daemon writes to a fresh file.
. "$(dirname "$0")/lib.sh"
it_init ops_audit
. "$(dirname "$0")/ops_lib.sh"
need_cmd python3 curl

AUDIT=$IT_TMP/audit.log
ops_start --audit "$AUDIT"

out=$(ops_register 1000 'Phone/1.0') || fail "REGISTER 1000 through sipedge: $out"
# Quote, backslash, a folded continuation line (RFC 3261 §7.3.1 LWS), DEL, bytes >= 0x80.
out=$(ops_register 1001 'Evil "x" \\ y\r\n  {"ua":1}\x7f\xff\xfe <script>') ||
    fail "REGISTER 1001 with a hostile User-Agent: $out"
out=$(ops_register 1000 'Phone/1.0' "$(it_addr 11)") || fail "REGISTER 1000 from a 2nd source"
sleep 0.3

python3 - "$AUDIT" "$OPS_CLI" "$(it_addr 11)" <<'EOF_PY' || fail "audit lines are wrong (audit.log kept)"
import json, sys
path, cli, cli2 = sys.argv[1:4]
raw = open(path, "rb").read()
assert raw.endswith(b"\n"), "last line not terminated"
lines = raw.split(b"\n")[:-1]
recs = []
for i, l in enumerate(lines, 1):
    l.decode("utf-8")  # strict: must be valid UTF-8
    assert all(b >= 0x20 for b in l), f"line {i}: raw control byte"
    recs.append(json.loads(l))
regs = [r for r in recs if r["event"] == "register"]
ok = [r for r in regs if r["status"] == 200 and r["aor"].startswith("sip:1000@")]
assert len(ok) == 2, f"want 2 successful 1000 registrations, got {ok}"
r = ok[0]
for k in ("ts", "aor", "source", "transport", "contacts", "expires", "user_agent", "status",
          "from_cache", "flow"):
    assert k in r, f"field {k} missing: {r}"
assert r["ts"].endswith("Z") and "T" in r["ts"], r["ts"]
assert r["source"].startswith(cli + ":"), r
assert r["transport"] == "udp" and r["expires"] > 0 and r["from_cache"] is False, r
assert r["user_agent"] == "Phone/1.0", r
assert r["contacts"].startswith("<sip:1000@" + cli), r
assert "signals" not in r, r
assert ok[1]["source"].startswith(cli2 + ":"), ok[1]
assert "device_change" in ok[1].get("signals", []), f"no device_change: {ok[1]}"
chal = [x for x in regs if x["status"] == 401]
assert chal, "digest challenges (401) are not audited"
evil = [x for x in regs if x["aor"].startswith("sip:1001@")]
assert evil and all(x["user_agent"].startswith('Evil "x" \\ y') for x in evil), evil
assert any("<script>" in x["user_agent"] for x in evil), evil
assert any(x["status"] == 200 for x in evil), evil
opens = [x for x in recs if x["event"] == "flow_open"]
assert len(opens) >= 3 and all("flow" in x and "reason" in x for x in opens), opens
print(f"{len(recs)} audit lines ok")
EOF_PY
log "audit lines checked"

# logrotate: move the file away, SIGHUP, the next lines go to a new file at the path.
n_before=$(wc -l <"$AUDIT")
mv "$AUDIT" "$AUDIT.1"
kill -HUP "$SIPEDGE_PID"
wait_for_line "$SIPEDGE_LOG" 'policy reloaded' 5 "$SIPEDGE_PID" || fail "no reload after SIGHUP"
[ -f "$AUDIT" ] || fail "audit log not reopened at $AUDIT after SIGHUP"
out=$(ops_register 1002 'Phone/2.0') || fail "REGISTER 1002 after rotation: $out"
sleep 0.3
grep -q '"aor":"sip:1002@' "$AUDIT" || fail "registration after SIGHUP not in the new file"
grep -q '"aor":"sip:1002@' "$AUDIT.1" && fail "registration after SIGHUP went to the old file"
[ "$(wc -l <"$AUDIT.1")" -eq "$n_before" ] || fail "old file grew after rotation"

stop_sipedge
log PASS
