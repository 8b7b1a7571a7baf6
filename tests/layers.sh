#!/usr/bin/env bash
# layers.sh: checks the layer rules of docs/ARCHITECTURE.md on the sources.
#
#   1. src/{base,sip,guard,config,edge,registrar} and their public headers include no
#      <uv.h> and no libwebsockets header: they never see the loop or the WebSocket library.
#   2. src/{base,sip,guard,config,edge} and their public headers read no clock
#      (clock_gettime, gettimeofday, time(), uv_now, uv_hrtime): time comes in as now_ms or
#      through a clock the worker installs.
#   3. No include goes up the layers: each layer includes only the layers below it (and its
#      own). A header is placed by its directory (src/<dir>/x.h) or, for include/sipedge, by
#      the table below; an unlisted public header counts as an upper-layer one (transport,
#      ops, worker), which none of the checked layers may include.
#
# Comments are stripped before the checks (the compiler's -fpreprocessed), so a comment
# may name uv.h or a clock. Usage: tests/layers.sh [source root] (default: this repo).
# Exits 0 when clean, 1 with one line per violation.
set -u

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cc=${CC:-cc}
cd "$root" || exit 2

# Exceptions: "path|rule|reason". Keep this list short; every entry says why it is needed.
exceptions=(
)

# Layer of a public header (include/sipedge/<name>.h), into $layer_of.
header_layer() {
  case "$1" in
    slice | log | netaddr | siphash | statefile | cidr | config_addr | transport | keytab | ratelim | strbuf | jsonl | wallclock | mpsc | conn_ids | stats_text) layer_of=base ;;
    sip_msg | sip_hdr | sip_check | sip_build | sip_reply | sip_edit) layer_of=sip ;;
    config) layer_of=config ;;
    guard | ban | events) layer_of=guard ;;
    flow_table | flow_token | stun) layer_of=flows ;;
    edge) layer_of=edge ;;
    registrar) layer_of=registrar ;;
    *) layer_of=upper ;;
  esac
}

# Layer of a private header (src/<dir>/<name>.h), into $layer_of.
dir_layer() {
  case "$1" in
    base | sip | config | guard | edge | registrar) layer_of=$1 ;;
    *) layer_of=upper ;;
  esac
}

# Layers a layer may include (besides libc and the libraries the rules above allow).
declare -A allowed=(
  [base]="base"
  [sip]="base sip"
  [config]="base config"
  [guard]="base sip config guard"
  [flows]="base sip config flows"
  [edge]="base sip config guard flows edge"
  [registrar]="base sip config flows registrar"
)

is_excepted() { # path rule
  local e
  for e in "${exceptions[@]}"; do
    [[ "$e" == "$1|$2|"* ]] && return 0
  done
  return 1
}

fail=0
report() { # path rule message
  if is_excepted "$1" "$2"; then
    return
  fi
  echo "layers: $1: $3"
  fail=1
}

# The file without comments (strings and code kept).
strip() {
  "$cc" -fpreprocessed -dD -E -P -x c "$1" 2>/dev/null
}

check_file() { # path layer check_clock(0|1)
  local f=$1 layer=$2 clock=$3 text
  text=$(strip "$f")
  if [[ "$text" == *include*\<* ]] && grep -Eq '^[[:space:]]*#[[:space:]]*include[[:space:]]*<(uv\.h|uv/|libwebsockets|lws[-_])' <<<"$text"; then
    report "$f" loop "includes $(grep -Eo '<(uv\.h|uv/[^>]*|libwebsockets[^>]*|lws[-_][^>]*)>' <<<"$text" | sort -u | paste -sd, -) (layer $layer sees no loop or WebSocket library)"
  fi
  if [[ $clock == 1 && ( "$text" == *time* || "$text" == *uv_* ) ]] &&
    grep -Eq '(^|[^A-Za-z0-9_])(clock_gettime|gettimeofday|time|uv_now|uv_hrtime)[[:space:]]*\(' <<<"$text"; then
    report "$f" clock "reads the clock: $(grep -Eo '(^|[^A-Za-z0-9_])(clock_gettime|gettimeofday|time|uv_now|uv_hrtime)[[:space:]]*\(' <<<"$text" | sed 's/^[^a-z_]*//; s/[[:space:]]*($/()/' | sort -u | paste -sd, -) (layer $layer takes time as now_ms or an injected clock)"
  fi
  local line inc name
  while IFS= read -r line; do
    [[ "$line" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]] || continue
    inc=${BASH_REMATCH[1]}
    if [[ "$inc" == sipedge/* ]]; then
      name=${inc#sipedge/}
      header_layer "${name%.h}"
    elif [[ "$inc" == */* ]]; then
      dir_layer "${inc%%/*}"
    else
      continue # a same-directory include
    fi
    if [[ " ${allowed[$layer]} " != *" $layer_of "* ]]; then
      report "$f" up "includes \"$inc\" (layer $layer_of; layer $layer may use: ${allowed[$layer]})"
    fi
  done <<<"$text"
}

for dir in base sip guard config edge registrar; do
  clock=1
  [[ $dir == registrar ]] && clock=0 # SQLite expiry is wall-clock time (no uv there either)
  for f in src/$dir/*.c src/$dir/*.h; do
    [[ -e "$f" ]] || continue
    check_file "$f" "$dir" "$clock"
  done
done
for f in include/sipedge/*.h; do
  name=${f##*/}
  header_layer "${name%.h}"
  case "$layer_of" in
    upper) continue ;;
    registrar) check_file "$f" "$layer_of" 0 ;;
    *) check_file "$f" "$layer_of" 1 ;;
  esac
done

if [[ $fail == 0 ]]; then
  echo "layers: clean (${#exceptions[@]} listed exceptions)"
fi
exit $fail
