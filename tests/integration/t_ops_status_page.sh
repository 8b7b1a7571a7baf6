#!/usr/bin/env bash
# Status page in headless Chromium: it shows a device registered through sipedge, a ban
# set with sipedgectl, registrar health and the rate chart; a User-Agent of
# <script>alert(1)</script> appears as text. A screenshot is kept in the temp dir.
. "$(dirname "$0")/lib.sh"
it_init ops_status_page
. "$(dirname "$0")/ops_lib.sh"
. "$(dirname "$0")/clients/ws_lib.sh"
need_cmd python3 curl node chromium
ws_clients_setup
export IT_KEEP=1 # the screenshot is the point of looking afterwards

ops_start --admin-socket "$IT_TMP/admin.sock"
UA='<script>alert(1)</script>'
out=$(ops_register 1300 "$UA") || fail "REGISTER 1300: $out"

CTL=$SIPEDGE_BUILD/tools/sipedgectl
[ -x "$CTL" ] || fail "sipedgectl not built at $CTL"
"$CTL" -s "$IT_TMP/admin.sock" ban 198.51.100.88 600 >"$IT_TMP/ctl.out" 2>&1 ||
    fail "sipedgectl ban failed: $(cat "$IT_TMP/ctl.out")"

SHOT=$IT_TMP/status_page.png
(cd "$WS_CLIENTS_DIR" && timeout -k 5 60 node status_page.js \
    "http://127.0.0.1:$OPS_ADMIN_PORT/" "$SHOT" "sip:1300@" 198.51.100.88 "$UA") \
    >"$IT_TMP/status_page.out" 2>&1 || fail "status page check: $(cat "$IT_TMP/status_page.out")"
cat "$IT_TMP/status_page.out" >&2
[ -s "$SHOT" ] || fail "no screenshot written"
log "screenshot: $SHOT"
stop_sipedge
log PASS
