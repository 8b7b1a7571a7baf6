# shellcheck shell=bash
# Helpers for the operations tests (t_ops_*.sh). Source after lib.sh and it_init.
#
#   ops_free_tcp_port ADDR        a TCP port currently free on ADDR
#   ops_start ARGS...             sipedge with embedded registrar, users file, policy copy,
#                                 admin on 127.0.0.1:$OPS_ADMIN_PORT, plus ARGS
#   ops_http METHOD PATH [BODY] [CURL ARGS...]  prints "STATUS BODY"
#   ops_metric NAME [LABELS]      one sample value from /metrics (strict parse first)
#   ops_register USER UA [SRC]    digest REGISTER through sipedge with this User-Agent
#                                 (bytes as given, Python escapes allowed); prints status

OPS_PUB=$(it_addr 1)
OPS_CORE=$(it_addr 2)
OPS_REG=$(it_addr 4)
OPS_CLI=$(it_addr 10)
OPS_OTHER=$(it_addr 20) # a non-trusted loopback address (not 127.0.0.1)
OPS_ADMIN_PORT=

ops_free_tcp_port() {
    python3 - "$1" <<'EOF_PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
EOF_PY
}

ops_start() {
    need_cmd python3 curl
    make_users "$IT_TMP/users.txt"
    test_policy_dir "$IT_TMP/policy"
    OPS_ADMIN_PORT=$(ops_free_tcp_port 127.0.0.1)
    start_sipedge --listen-udp "$OPS_PUB:5060" --core "$OPS_CORE:5070" \
        --registrar-listen "$OPS_REG:5080" --users "$IT_TMP/users.txt" --realm ops-test \
        --policy "$IT_TMP/policy" --admin "127.0.0.1:$OPS_ADMIN_PORT" "$@"
}

ops_http() {
    local method=$1 path=$2 body=${3:-}
    shift 3 2>/dev/null || shift $#
    local args=(-s -o "$IT_TMP/http.body" -w '%{http_code}' -X "$method" --max-time 5)
    [ -n "$body" ] && args+=(--data-binary "$body" -H 'Content-Type: application/json')
    local code
    code=$(curl "${args[@]}" "$@" "http://127.0.0.1:$OPS_ADMIN_PORT$path")
    printf '%s %s\n' "$code" "$(cat "$IT_TMP/http.body" 2>/dev/null)"
}

# Strict text-format 0.0.4 check of the whole scrape (every family has HELP and TYPE before
# its samples, names and labels well formed, values numbers, histogram buckets cumulative
# and ending in +Inf == _count), then prints the value of NAME{LABELS}.
ops_metric() {
    curl -s --max-time 5 "http://127.0.0.1:$OPS_ADMIN_PORT/metrics" >"$IT_TMP/metrics.txt" ||
        return 1
    python3 - "$IT_TMP/metrics.txt" "$1" "${2:-}" <<'EOF_PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
want_name, want_labels = sys.argv[2], sys.argv[3]
assert text.endswith("\n"), "scrape does not end in a newline"
name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
sample_re = re.compile(r"^(" + name_re + r")(\{(.*)\})? (\S+)$")
label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')
helps, types, samples = {}, {}, {}
current = None
for ln, line in enumerate(text.split("\n")[:-1], 1):
    if line.startswith("# HELP "):
        n = line.split(" ", 3)[2]
        assert re.fullmatch(name_re, n) and n not in helps, f"line {ln}: bad/dup HELP"
        helps[n] = True
        continue
    if line.startswith("# TYPE "):
        _, _, n, t = line.split(" ")
        assert t in ("counter", "gauge", "histogram", "summary", "untyped"), f"line {ln}: type"
        assert n in helps and n not in types, f"line {ln}: TYPE without HELP or duplicate"
        types[n] = t
        current = n
        continue
    assert not line.startswith("#"), f"line {ln}: stray comment"
    m = sample_re.match(line)
    assert m, f"line {ln}: not a sample: {line!r}"
    n, labels, val = m.group(1), m.group(3) or "", m.group(4)
    base = n
    if types.get(current) == "histogram":
        for suf in ("_bucket", "_sum", "_count"):
            if n == current + suf:
                base = current
    assert base == current, f"line {ln}: sample {n} outside its family {current}"
    if labels:
        parts = label_re.findall(labels)
        rebuilt = ",".join(f'{k}="{v}"' for k, v in parts)
        assert rebuilt == labels, f"line {ln}: bad labels {labels!r}"
    assert val in ("+Inf", "-Inf", "NaN") or re.fullmatch(r"-?[0-9.eE+-]+", val), f"line {ln}"
    float(val)
    if types[current] == "counter":
        assert n.endswith("_total"), f"line {ln}: counter without _total"
    samples[(n, labels)] = float(val)
for fam, t in types.items():
    if t != "histogram":
        continue
    bk = [(k[1], v) for k, v in samples.items() if k[0] == fam + "_bucket"]
    vals = [v for _, v in bk]
    assert vals == sorted(vals), f"{fam}: buckets not cumulative"
    assert bk[-1][0] == 'le="+Inf"', f"{fam}: last bucket is not +Inf"
    assert bk[-1][1] == samples[(fam + "_count", "")], f"{fam}: +Inf != _count"
key = (want_name, want_labels)
assert key in samples, f"no sample {want_name}{{{want_labels}}}"
v = samples[key]
print(int(v) if v == int(v) else v)
EOF_PY
}

ops_register() {
    python3 "$SIPEDGE_SRC/tests/integration/clients/sip_register.py" "${3:-$OPS_CLI}" \
        "$OPS_PUB:5060" "$1" "pw$1" "$OPS_PUB" "" "$2"
}
