#!/usr/bin/env bash
# Cost of the registrar's SQLite store: REGISTERs per second that `sipedge
# --registrar-only` answers with bindings in memory only, and with --state-dir (bindings
# written to <state_dir>/registrar.sqlite in one transaction per 250 ms tick), measured
# in the same run with the same load:
#   sipp (reg_uac.xml, no auth) sends USERS distinct REGISTERs and then the same USERS
#   again with new Call-IDs (new bindings, then refreshes), offered at RATE per second
#   with at most LIMIT outstanding, so the figure is what the registrar sustains.
# Prints, per mode: REGISTERs answered 200, failed, retransmissions, wall time, REGISTERs
# per second, registrar CPU microseconds per REGISTER; for the store also the rows in the
# file after a clean stop (must be USERS) and its size.
#
# sipp is usually the limit on a small machine, so the two modes alternate for ROUNDS
# rounds (the state is wiped between rounds) and the best round of each is compared; CPU
# per REGISTER is the steadier figure of the registrar's own cost.
#
# Env: RATE (50000), USERS (20000), LIMIT (50), ROUNDS (2), SIPEDGE_BIN (build-regbench/sipedge,
#      built in Release when missing), BENCH_KEEP=1 keeps the work dir.
# Loopback only; every sipp run is bounded by -m and -timeout; processes are stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

RATE=${RATE:-50000}
USERS=${USERS:-20000}
LIMIT=${LIMIT:-50}
ROUNDS=${ROUNDS:-2}
SIPEDGE_BIN=${SIPEDGE_BIN:-$root/build-regbench/sipedge}
SIPP_DIR=$root/tests/integration/sipp

for c in sipp python3; do
    command -v "$c" >/dev/null || { echo "bench: missing $c (scripts/deps-debian.sh test)" >&2; exit 1; }
done
if [ ! -x "$SIPEDGE_BIN" ]; then
    scripts/build.sh build-regbench -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_BUILD_TESTS=OFF || exit 1
    SIPEDGE_BIN=$root/build-regbench/sipedge
fi
# Registrar on CPU 0, sipp on CPU 1 when there are two.
srv=() cli=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
    srv=(taskset -c 0)
    cli=(taskset -c 1)
fi

NET=127.78.$(($$ % 250 + 1))
REG=$NET.4
CLI=$NET.10
WORK=$(mktemp -d /tmp/sipedge-bench-regstore.XXXXXX)
# shellcheck source=scripts/bench_lib.sh
. "$root/scripts/bench_lib.sh"

# The default policy, with room for every user and the guard out of the way (registrar
# only: no edge, so no guard runs anyway).
mkdir -p "$WORK/policy"
cp "$root"/policies/default/*.yaml "$WORK/policy/"
cat >"$WORK/policy/zz-bench.yaml" <<EOF
registrar:
  max_bindings: $((USERS + 1000))
EOF
{
    echo SEQUENTIAL
    for ((u = 0; u < USERS; u++)); do echo "u$u"; done
} >"$WORK/users.csv"

# cpu_us PID: user+system CPU time of PID in microseconds.
cpu_us() {
    python3 - "$1" <<'PY'
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) * 1000000 // os.sysconf("SC_CLK_TCK"))
PY
}

# run MODE ROUND [ARGS...]: one sipedge --registrar-only with ARGS, one sipp load;
# appends a result line to $WORK/results.tsv.
run() {
    local mode=$1 round=$2
    shift 2
    "${srv[@]}" "$SIPEDGE_BIN" --registrar-only --registrar-listen "$REG:5080" \
        --policy "$WORK/policy" --log-level warn "$@" >"$WORK/$mode.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        grep -q 'sipedge: ready' "$WORK/$mode.log" && break
        kill -0 "$pid" 2>/dev/null || { echo "bench: sipedge ($mode) exited:" >&2; cat "$WORK/$mode.log" >&2; exit 1; }
        sleep 0.05
    done
    local calls=$((USERS * 2)) cpu0 cpu1 t0 t1
    cpu0=$(cpu_us "$pid")
    t0=$(date +%s%N)
    (cd "$WORK" && "${cli[@]}" timeout -k 5 120 sipp -nostdin \
        -sf "$SIPP_DIR/reg_uac.xml" -inf "$WORK/users.csv" -key domain "$REG" -key expires 3600 \
        -i "$CLI" -p 5099 -t u1 -r "$RATE" -m "$calls" -l "$LIMIT" \
        -max_retrans 2 -recv_timeout 4000 -timeout 100s \
        -trace_stat -stf "$WORK/$mode.csv" -fd 1 "$REG:5080") >"$WORK/sipp-$mode.out" 2>&1
    t1=$(date +%s%N)
    cpu1=$(cpu_us "$pid")
    # A clean stop: the final flush writes what the last tick had not.
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    wait "$pid" 2>/dev/null
    PIDS=()
    local rows=- size=-
    if [ -f "$WORK/state/registrar.sqlite" ] && [ "$mode" = sqlite ]; then
        rows=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM bindings").fetchone()[0])' "$WORK/state/registrar.sqlite")
        size=$(du -sk "$WORK/state" | cut -f1)
    fi
    python3 - "$WORK/$mode.csv" "$mode" "$round" "$t0" "$t1" "$cpu0" "$cpu1" "$rows" "$size" >>"$WORK/results.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h, last = rows[0], rows[-1]
ok, failed = int(last[h.index("SuccessfulCall(C)")]), int(last[h.index("FailedCall(C)")])
retr = int(last[h.index("Retransmissions(C)")])
secs = (int(sys.argv[5]) - int(sys.argv[4])) / 1e9
cpu = (int(sys.argv[7]) - int(sys.argv[6])) / max(ok, 1)
print("\t".join([sys.argv[2], sys.argv[3], str(ok), str(failed), str(retr), f"{secs:.2f}",
                 f"{ok / secs:.0f}", f"{cpu:.1f}", sys.argv[8], sys.argv[9]]))
PY
}

echo "bench: $USERS users x2 (adds, then refreshes), offered $RATE/s, at most $LIMIT outstanding; $SIPEDGE_BIN" >&2
for ((round = 1; round <= ROUNDS; round++)); do
    run memory "$round"
    rm -rf "$WORK/state"
    run sqlite "$round" --state-dir "$WORK/state"
done

python3 - "$WORK/results.tsv" "$USERS" <<'PY'
import sys
all_rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print(f"{'mode':7s} {'round':>5s} {'200 OK':>7s} {'failed':>6s} {'retr':>6s} {'secs':>6s} "
      f"{'REG/s':>7s} {'CPU us/REG':>10s} {'db rows':>8s} {'state KiB':>9s}")
for r in all_rows:
    print(f"{r[0]:7s} {r[1]:>5s} {r[2]:>7s} {r[3]:>6s} {r[4]:>6s} {r[5]:>6s} {r[6]:>7s} "
          f"{r[7]:>10s} {r[8]:>8s} {r[9]:>9s}")
best, cpu = {}, {}
for r in all_rows:
    if int(r[3]) == 0:  # a round with failed REGISTERs does not count
        best[r[0]] = max(best.get(r[0], 0.0), float(r[6]))
    cpu.setdefault(r[0], []).append(float(r[7]))
    if r[0] == "sqlite" and r[8] != sys.argv[2]:
        print(f"WARNING: round {r[1]}: the store holds {r[8]} bindings, want {sys.argv[2]}")
if "memory" in best and "sqlite" in best:
    a, b = best["memory"], best["sqlite"]
    print(f"REGISTERs per second (best round): memory {a:.0f}, sqlite {b:.0f} "
          f"(sqlite / memory x{b / a:.3f})")
if "memory" in cpu and "sqlite" in cpu:
    a, b = min(cpu["memory"]), min(cpu["sqlite"])
    print(f"registrar CPU per REGISTER (best round): memory {a:.1f} us, sqlite {b:.1f} us")
PY
