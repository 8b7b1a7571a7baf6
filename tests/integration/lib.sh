# shellcheck shell=bash disable=SC2034
# Helpers for tests/integration/t_*.sh. Source it, then call it_init.
#
# Environment (set by CTest, defaults for running a test by hand from the repo):
#   SIPEDGE_SRC    repo root
#   SIPEDGE_BUILD  build dir
#   SIPEDGE_BIN    the daemon
#   CI=true        a missing peer or tool fails the test instead of skipping it
#   IT_KEEP=1      keep the temp dir (logs, sipp traces) after the test
#
# Exit codes: 0 pass, 1 fail, 77 skipped (CTest needs SKIP_RETURN_CODE 77).
#
# Addresses: every test run gets its own 127.A.B.0/24 block on loopback (A from the
# test name, B from the PID), so tests run in parallel by ctest never share a port.

set -uo pipefail

IT_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${SIPEDGE_SRC:=$(cd "$IT_LIB_DIR/../.." && pwd)}"
: "${SIPEDGE_BUILD:=$SIPEDGE_SRC/build}"
: "${SIPEDGE_BIN:=$SIPEDGE_BUILD/sipedge}"
IT_SIPP_DIR=$IT_LIB_DIR/sipp
IT_KAM_DIR=$IT_LIB_DIR/kamailio

IT_NAME=
IT_TMP=
IT_NET=
IT_PIDS=()          # every background process we started, in start order
SIPEDGE_PID=
SIPEDGE_LOG=
KAM_PID=
KAM_LOG=
KAM_CTL=

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${IT_NAME:-it}" -1 "$*" >&2; }

# Print the tail of every log in the temp dir.
it_dump_logs() {
    local f
    [ -n "$IT_TMP" ] && [ -d "$IT_TMP" ] || return 0
    for f in "$IT_TMP"/*.log "$IT_TMP"/*.out; do
        [ -s "$f" ] || continue
        printf '\n----- %s (last 40 lines) -----\n' "${f#"$IT_TMP"/}" >&2
        tail -n 40 "$f" >&2
    done
}

fail() {
    log "FAIL: $*"
    it_dump_logs
    exit 1
}

skip() {
    log "SKIP: $*"
    exit 77
}

# need_cmd CMD...: a missing peer skips the test, or fails it under CI=true.
need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 && continue
        if [ "${CI:-}" = true ]; then
            fail "required command '$c' not found (CI=true: nothing is skipped)"
        fi
        skip "required command '$c' not found"
    done
}

need_sipedge() {
    if [ ! -x "$SIPEDGE_BIN" ]; then
        [ "${CI:-}" = true ] && fail "sipedge binary not found at $SIPEDGE_BIN"
        skip "sipedge binary not found at $SIPEDGE_BIN"
    fi
}

# Kill only what we started, newest first: TERM, grace, then KILL.
it_cleanup() {
    local rc=$? i pid n
    for ((i = ${#IT_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${IT_PIDS[i]}
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null
    done
    for ((i = ${#IT_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${IT_PIDS[i]}
        for ((n = 0; n < 30; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "$IT_TMP" ] && [ -d "$IT_TMP" ]; then
        if [ "${IT_KEEP:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ "${CI:-}" != true ]; }; then
            log "temp dir kept: $IT_TMP"
        else
            rm -rf "$IT_TMP"
        fi
    fi
    exit "$rc"
}

# it_init NAME: temp dir, address block, cleanup trap.
it_init() {
    IT_NAME=$1
    IT_TMP=$(mktemp -d "/tmp/sipedge-it-$IT_NAME.XXXXXX") || exit 1
    trap it_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local h
    h=$(printf '%s' "$IT_NAME" | cksum | cut -d' ' -f1)
    IT_NET=127.$((10 + h % 200)).$(($$ % 250 + 1))
    log "temp $IT_TMP, addresses $IT_NET.0/24"
}

# it_addr N: the Nth address of this test's block.
it_addr() { printf '%s.%s\n' "$IT_NET" "$1"; }

# free_port udp|tcp ADDR: a port currently free on ADDR (free_udp_port, free_tcp_port ADDR).
free_port() {
    python3 - "$1" "$2" <<'EOF'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind((sys.argv[2], 0))
print(s.getsockname()[1])
EOF
}
free_udp_port() { free_port udp "$1"; }
free_tcp_port() { free_port tcp "$1"; }

# bg LOGFILE CMD...: start CMD in the background, stdout+stderr to LOGFILE; sets BG_PID.
bg() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 &
    BG_PID=$!
    IT_PIDS+=("$BG_PID")
}

# wait_for_line FILE PATTERN SECONDS PID: wait until FILE has a line matching PATTERN;
# fails early when PID dies.
wait_for_line() {
    local file=$1 pat=$2 secs=$3 pid=${4:-} n
    for ((n = 0; n < secs * 20; n++)); do
        grep -qE "$pat" "$file" 2>/dev/null && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 2
        fi
        sleep 0.05
    done
    return 1
}

# make_users FILE: the test users: alice:alicepw, bob:bobpw and 1000..1999 with pw<N>
# (the same rule registrar.cfg uses under WITH_AUTH).
make_users() {
    {
        echo "alice:alicepw"
        echo "bob:bobpw"
        for ((u = 1000; u < 2000; u++)); do echo "$u:pw$u"; done
    } >"$1"
}

# make_csv FILE FIRST COUNT: sipp injection file for users FIRST..FIRST+COUNT-1:
# user;password;[authentication username=user password=password]
make_csv() {
    local f=$1 first=$2 count=$3 u
    {
        echo SEQUENTIAL
        for ((u = first; u < first + count; u++)); do
            echo "$u;pw$u;[authentication username=$u password=pw$u]"
        done
    } >"$f"
}

# ---- workers ----------------------------------------------------------------------------
# start_sipedge runs --workers $IT_WORKERS (SIPEDGE_WORKERS, default 1). Worker i has its
# own core-side socket on the --core port + i, so the registrar sees sipedge's requests
# from any of those ports, each flow's from the port of the worker that owns its source.
IT_WORKERS=${SIPEDGE_WORKERS:-1}

# core_ports: the core ports of the $IT_WORKERS workers (the tests' --core port is 5070),
# one a line.
core_ports() {
    local i
    for ((i = 0; i < IT_WORKERS; i++)); do echo $((5070 + i)); done
}

# core_port_re: an extended regex (grep -E, Python re) that matches exactly those ports,
# as a group: "(5070)" for one worker, "(5070|5071)" for two.
core_port_re() { printf '(%s)\n' "$(core_ports | paste -sd'|')"; }

# worker_of ADDR [N]: the index of the worker (of N, default $IT_WORKERS) that owns the
# source address ADDR: the function the kernel runs on each packet to pick a member of the
# SO_REUSEPORT group (src/transport/reuseport_steer.c; IPv4 by address, IPv6 by /64).
worker_of() {
    python3 - "$1" "${2:-$IT_WORKERS}" <<'EOF_PY'
import ipaddress, sys
a, n = ipaddress.ip_address(sys.argv[1]), int(sys.argv[2])
if a.version == 6 and a.ipv4_mapped:
    a = a.ipv4_mapped
if a.version == 4:
    key = int(a)
else:
    b = a.packed
    key = int.from_bytes(b[0:4], "big") ^ int.from_bytes(b[4:8], "big")
m = (key * 0x9E3779B1) & 0xFFFFFFFF
m ^= m >> 16
print(m % n)
EOF_PY
}

# start_sipedge ARGS...: run the daemon, wait up to SIPEDGE_READY_SECONDS (5) for
# "sipedge: ready" on stderr. Sets SIPEDGE_PID, SIPEDGE_LOG.
start_sipedge() {
    need_sipedge
    SIPEDGE_LOG=$IT_TMP/sipedge.log
    log "sipedge $*"
    # Emptied here, not by the background job's redirection: a restart must not find the
    # previous run's ready line before the new process has opened the file.
    : >"$SIPEDGE_LOG"
    "$SIPEDGE_BIN" --workers "${SIPEDGE_WORKERS:-1}" "$@" 2>>"$SIPEDGE_LOG" >/dev/null &
    SIPEDGE_PID=$!
    IT_PIDS+=("$SIPEDGE_PID")
    local rc=0
    wait_for_line "$SIPEDGE_LOG" 'sipedge: ready' "${SIPEDGE_READY_SECONDS:-5}" "$SIPEDGE_PID" || rc=$?
    case $rc in
        0) return 0 ;;
        2) wait "$SIPEDGE_PID"; fail "sipedge exited during startup (status $?)" ;;
        *) fail "sipedge did not print 'sipedge: ready' within ${SIPEDGE_READY_SECONDS:-5}s" ;;
    esac
}

sipedge_alive() { [ -n "$SIPEDGE_PID" ] && kill -0 "$SIPEDGE_PID" 2>/dev/null; }

# stop_sipedge: SIGTERM, expect a clean exit (status 0, no sanitizer report).
stop_sipedge() {
    local n rc
    sipedge_alive || fail "sipedge is not running (died earlier)"
    kill -TERM "$SIPEDGE_PID"
    for ((n = 0; n < 100; n++)); do
        kill -0 "$SIPEDGE_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$SIPEDGE_PID" 2>/dev/null && fail "sipedge did not stop within 5s of SIGTERM"
    wait "$SIPEDGE_PID"
    rc=$?
    SIPEDGE_PID=
    grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$SIPEDGE_LOG" &&
        fail "sanitizer report in sipedge log"
    [ "$rc" -eq 0 ] || fail "sipedge exit status $rc after SIGTERM"
    log "sipedge stopped cleanly"
}

# start_kamailio CFG ADDR PORT [DEFINE...]: Kamailio in the foreground (-DD -E) in the
# background, own runtime dir and ctl socket. Sets KAM_PID, KAM_LOG, KAM_CTL.
start_kamailio() {
    local cfg=$1 addr=$2 port=$3
    shift 3
    need_cmd kamailio kamcmd
    local dir=$IT_TMP/kam
    mkdir -p "$dir/run"
    KAM_LOG=$IT_TMP/kamailio.log
    KAM_CTL=unix:$dir/kamailio_ctl
    local args=(-DD -E -f "$cfg" -l "udp:$addr:$port" -Y "$dir/run" -w "$dir"
        -m "${KAM_SHM_MB:-64}" -M 8 -n "${KAM_CHILDREN:-2}" -a no
        -A "CTL_SOCK=\"$KAM_CTL\"")
    [ "${KAM_TCP:-0}" = 1 ] && args+=(-l "tcp:$addr:$port")
    local d
    for d in "$@"; do args+=(-A "$d"); done
    log "kamailio ${args[*]}"
    kamailio "${args[@]}" >"$KAM_LOG" 2>&1 &
    KAM_PID=$!
    IT_PIDS+=("$KAM_PID")
    local n
    for ((n = 0; n < 100; n++)); do
        kill -0 "$KAM_PID" 2>/dev/null || { wait "$KAM_PID"; fail "kamailio exited during startup (status $?)"; }
        kamcmd -s "$KAM_CTL" core.version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "kamailio control socket did not answer within 10s"
}

kam_ul_dump() { kamcmd -s "$KAM_CTL" ul.dump; }

# ---- counters ---------------------------------------------------------------------------

# STATS_RE KIND: the process's "stats KIND" line (the sum over the workers), not the
# "worker N stats KIND" lines logged before it when there are several workers.
# WORKER_STATS_RE I KIND: worker I's own line.
STATS_RE() { printf 'Z [a-z]+ +stats %s ' "$1"; }
WORKER_STATS_RE() { printf 'Z [a-z]+ +worker %s stats %s ' "$1" "$2"; }

# fresh_stats KIND: SIGUSR1 to sipedge, wait (up to 5 s) for a new "stats KIND" line (the
# sum over the workers), print it. edge_stats, stream_stats: the edge's and the stream
# transport's.
fresh_stats() {
    local before n re
    re=$(STATS_RE "$1")
    before=$(grep -cE "$re" "$SIPEDGE_LOG")
    kill -USR1 "$SIPEDGE_PID" 2>/dev/null || return 1
    for ((n = 0; n < 100; n++)); do
        [ "$(grep -cE "$re" "$SIPEDGE_LOG")" -gt "$before" ] && break
        sleep 0.05
    done
    grep -E "$re" "$SIPEDGE_LOG" | tail -n 1
}
edge_stats() { fresh_stats edge; }
stream_stats() { fresh_stats stream; }

# last_stats KIND: the latest "stats KIND" line (the sum), without asking for a new one.
# last_worker_stats I KIND: the latest "worker I stats KIND" line.
last_stats() { grep -E "$(STATS_RE "$1")" "$SIPEDGE_LOG" | tail -n 1; }
last_worker_stats() { grep -E "$(WORKER_STATS_RE "$1" "$2")" "$SIPEDGE_LOG" | tail -n 1; }

# stat_of LINE KEY: KEY's value in a "k=v k=v" stats line (empty when absent).
stat_of() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }

# edge_stat NAME: one edge counter, from a fresh stats line.
edge_stat() { stat_of "$(edge_stats)" "$1"; }

# kam_bound_count CORE FIRST COUNT: how many of the AoRs FIRST..FIRST+COUNT-1 Kamailio
# holds with a live contact whose Path names sipedge's core address CORE (port 5070, or
# the port of any worker: core_port_re). One ul.lookup per AoR: kamcmd cannot return a
# ul.dump of 1,000 bindings with long Paths ("reply too big").
kam_bound_count() {
    local u
    for ((u = $2; u < $2 + $3; u++)); do echo "ul.lookup location $u@any"; done |
        timeout 30 kamcmd -s "$KAM_CTL" >"$IT_TMP/ul.lookup" 2>&1
    python3 - "$IT_TMP/ul.lookup" "$1" "$2" "$3" "$(core_port_re)" <<'PY'
import re, sys
text, core, first, count = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ports = sys.argv[5]
want = {str(u) for u in range(first, first + count)}
cur, exp, ok = None, None, set()
for line in text.splitlines():
    m = re.search(r'\bAoR: (\S+)', line)
    if m:
        cur, exp = m.group(1), None
        continue
    m = re.search(r'\bExpires: (\S+)', line)
    if m:
        exp = m.group(1)
    m = re.search(r'\bPath: (.*)', line)
    if m and cur in want and exp and exp.lstrip('-').isdigit() and int(exp) > 0 \
            and re.search(r'@' + re.escape(core) + r':' + ports + r';[^>]*lr', m.group(1)):
        ok.add(cur)
print(len(ok))
PY
}

# kam_stop_all: SIGTERM to Kamailio's main process; every process it forked must be gone
# within 5 s (then SIGKILL, by PID).
kam_stop_all() {
    local all=("$KAM_PID") i=0 c n p alive
    while [ "$i" -lt "${#all[@]}" ] && [ "$i" -lt 64 ]; do
        for c in $(cat /proc/"${all[i]}"/task/*/children 2>/dev/null); do all+=("$c"); done
        i=$((i + 1))
    done
    kill -TERM "$KAM_PID"
    for ((n = 0; n < 50; n++)); do
        alive=0
        for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    wait "$KAM_PID" 2>/dev/null
    log "Kamailio stopped: ${#all[@]} processes (${all[*]})"
}

# run_sipp TAG ARGS...: sipp in the foreground (bounded by `timeout`), in the temp
# dir, with stats. Output in $IT_TMP/sipp-TAG.out; stats csv $IT_TMP/sipp-TAG.csv.
# Returns sipp's exit status (0: every call succeeded).
run_sipp() {
    local tag=$1
    shift
    need_cmd sipp
    log "sipp[$tag] $*"
    (cd "$IT_TMP" && timeout -k 5 "${SIPP_TIMEOUT:-60}" sipp -nostdin \
        -trace_err -error_file "$IT_TMP/sipp-$tag-errors.log" \
        -trace_msg -message_file "$IT_TMP/sipp-$tag-msg.log" \
        -trace_stat -stf "$IT_TMP/sipp-$tag.csv" -fd 1 \
        -trace_screen -screen_file "$IT_TMP/sipp-$tag-screen.log" \
        "$@") >"$IT_TMP/sipp-$tag.out" 2>&1
}

# bg_sipp TAG ARGS...: same, in the background; sets BG_PID.
bg_sipp() {
    local tag=$1
    shift
    need_cmd sipp
    log "sipp[$tag] (bg) $*"
    (cd "$IT_TMP" && exec timeout -k 5 "${SIPP_TIMEOUT:-60}" sipp -nostdin \
        -trace_err -error_file "$IT_TMP/sipp-$tag-errors.log" \
        -trace_msg -message_file "$IT_TMP/sipp-$tag-msg.log" \
        -trace_logs -log_file "$IT_TMP/sipp-$tag-logs.log" \
        -trace_stat -stf "$IT_TMP/sipp-$tag.csv" -fd 1 \
        -trace_screen -screen_file "$IT_TMP/sipp-$tag-screen.log" \
        "$@") >"$IT_TMP/sipp-$tag.out" 2>&1 &
    BG_PID=$!
    IT_PIDS+=("$BG_PID")
}

# sipp_stat TAG COLUMN: last value of COLUMN (e.g. SuccessfulCall(C)) in the stats csv.
sipp_stat() {
    python3 - "$IT_TMP/sipp-$1.csv" "$2" <<'EOF'
import sys
rows = [l.rstrip('\n').split(';') for l in open(sys.argv[1]) if l.strip()]
col = rows[0].index(sys.argv[2])
print(rows[-1][col])
EOF
}

# udp_send.py wrapper: send a file or bytes, print the replies (see udp_tool below).
# udp_tool SRC_ADDR DST_ADDR DST_PORT WAIT_MS FILE: sends FILE's bytes as one datagram
# from SRC_ADDR (ephemeral port), prints the first line of each reply received within
# WAIT_MS, one per line.
udp_tool() {
    python3 - "$@" <<'EOF'
import socket, sys, time
src, dst, port, wait_ms, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
data = open(path, 'rb').read()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.sendto(data, (dst, port))
end = time.time() + wait_ms / 1000.0
while True:
    left = end - time.time()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        rep, _ = s.recvfrom(65535)
    except socket.timeout:
        break
    print(rep.split(b'\r\n', 1)[0].decode('latin-1'))
EOF
}

# test_policy_dir DIR [YAML]: a copy of policies/default, plus zz-test.yaml with YAML.
test_policy_dir() {
    local dir=$1
    mkdir -p "$dir"
    cp "$SIPEDGE_SRC"/policies/default/*.yaml "$dir"/ 2>/dev/null
    [ $# -ge 2 ] && printf '%s\n' "$2" >"$dir/zz-test.yaml"
    return 0
}

# sipp_check TAG RC EXPECTED_SUCCESS: sipp exit status 0, EXPECTED_SUCCESS successful
# calls, no failed calls.
sipp_check() {
    local tag=$1 rc=$2 want=$3 ok failed
    ok=$(sipp_stat "$tag" 'SuccessfulCall(C)' 2>/dev/null || echo '?')
    failed=$(sipp_stat "$tag" 'FailedCall(C)' 2>/dev/null || echo '?')
    log "sipp[$tag] status $rc, successful $ok, failed $failed (want $want)"
    [ "$rc" -eq 0 ] && [ "$ok" = "$want" ] && [ "$failed" = 0 ] ||
        fail "sipp[$tag]: status $rc, successful $ok/$want, failed $failed"
}

# phone_register USER [PORT]: a sipp phone (reg_uas.xml) on $PHONE registers USER
# (sipp tag $PHONE_TAG, default "phone": logs in $IT_TMP/sipp-TAG-*)
# (password pwUSER, domain $PUB) through sipedge's public listener $PUB:5060, then waits
# on the same port for one INVITE. Sets PHONE_PID and PHONE_CID; fails the test when the
# phone is not registered within 10 s.
phone_register() {
    local user=$1 port=${2:-} tag=${PHONE_TAG:-phone}
    [ -n "$port" ] || port=$(free_udp_port "$PHONE")
    PHONE_CID="call-$user-$$@$PHONE"
    bg_sipp "$tag" -sf "$IT_SIPP_DIR/reg_uas.xml" -key user "$user" -au "$user" \
        -ap "pw$user" -key domain "$PUB" -key expires 600 -cid_str "$PHONE_CID" -nd -aa \
        -i "$PHONE" -p "$port" -m 1 -recv_timeout 20000 "$PUB:5060"
    PHONE_PID=$BG_PID
    wait_for_line "$IT_TMP/sipp-$tag-logs.log" "REGISTERED $user" 10 "$PHONE_PID" ||
        fail "phone $user did not register through sipedge"
}

# phone_call USER DEST_ADDR:PORT: a sipp caller on $CALLER sends an INVITE for USER@$PUB
# to DEST (the registrar) and the phone of phone_register answers it. Fails the test
# unless both ends completed the call and the INVITE reached the phone through sipedge
# (a Via of sipedge's public address on it).
phone_call() {
    local user=$1 dest=$2 call_rc phone_rc
    run_sipp call -sf "$IT_SIPP_DIR/invite_uac.xml" -key callee "$user" -key domain "$PUB" \
        -cid_str "$PHONE_CID" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 \
        -max_retrans 4 -recv_timeout 8000 "$dest"
    call_rc=$?
    wait "$PHONE_PID"
    phone_rc=$?
    [ "$call_rc" -eq 0 ] || fail "caller: INVITE to $dest failed (sipp status $call_rc)"
    [ "$phone_rc" -eq 0 ] || fail "phone: call not completed (sipp status $phone_rc)"
    grep -aqiE "^Via: SIP/2.0/UDP $PUB(:5060)?[;\r ]" "$IT_TMP/sipp-phone-msg.log" ||
        fail "INVITE at the phone carries no Via of sipedge's public address $PUB"
}

# py_register SRC_ADDR DST_ADDR:PORT USER PASSWORD DOMAIN [ALGORITHM]
# One REGISTER with digest auth (RFC 2617/7616, qop=auth when offered) from an
# ephemeral port on SRC_ADDR. ALGORITHM (MD5 or SHA-256) picks that challenge;
# without it the first challenge is used. Prints the final status line; returns 0 on 200.
py_register() {
    python3 "$SIPEDGE_SRC/tests/integration/clients/sip_register.py" "$@"
}
