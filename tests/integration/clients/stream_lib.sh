# shellcheck shell=bash
# Helpers for the SIP-over-TCP/TLS client tests (tests/integration/t_stream_*.sh): real
# SIP clients (linphonec, baresip) behind sipedge's TCP and TLS listeners. Source after
# lib.sh and it_init.
#
#   stream_need_client BIN          a missing client skips the test (fails it under CI=true)
#   stream_make_pki DIR IP          test CA, server certificate for IP, client certificate
#   stream_policy DIR GRACE [YAML]  policy dir with flows.dead_flow_grace GRACE
#   now_ms / sleep_until_ms T       wall clock in ms / sleep until T (ms since the epoch)
#   stream_invite TAG CALLEE DOMAIN DEST    INVITE that must ring at the client (then CANCEL)
#   stream_invite_error TAG CALLEE DOMAIN DEST   INVITE that must fail; prints the codes
#   stream_stats / stream_stat NAME  sipedge's "stats stream" line / one of its counters
#   stream_reply_ms TAG CODE        when sipp[TAG] got its first CODE reply (ms)
#   stream_finals TAG               final codes seen by sipp[TAG], one a line
#   stream_binding DUMP AOR CORE PORTS   check the AoR's binding in a kamcmd ul.dump
#   lp_write_rc FILE KEY=VALUE...   linphonec rc file (see the keys below)
#   lp_start TAG RC / lp_cmd TAG CMD / lp_wait_registered TAG SECS / lp_quit TAG SECS
#   bs_write_conf DIR LISTEN CAFILE ACCOUNT   baresip config directory
#   bs_start TAG DIR / bs_stop TAG
# Every client runs under its own PID, recorded in IT_PIDS (lib.sh's cleanup kills it);
# each wait is bounded.

STREAM_SIPP_DIR=$IT_LIB_DIR/sipp

stream_need_client() {
    local c
    for c in "$@"; do
        [ -x "$c" ] || command -v "$c" >/dev/null 2>&1 && continue
        [ "${CI:-}" = true ] && fail "$c missing (CI=true: nothing is skipped)"
        skip "$c missing"
    done
}

# stream_make_pki DIR IP: DIR/ca.pem (+ca.key), DIR/server.pem + server.key for IP
# (subjectAltName IP:IP and DNS:IP: some TLS stacks match an IP host only against DNS
# names or the CN), DIR/client.pem + client.key (CN=alice, clientAuth), all signed by
# the CA. EC P-256 keys: fast to make.
stream_make_pki() {
    local d=$1 ip=$2
    mkdir -p "$d"
    {
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -days 2 -subj "/CN=sipedge test CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" &&
            printf '%s\n' "basicConstraints=CA:FALSE" \
                "keyUsage=critical,digitalSignature,keyEncipherment" \
                "extendedKeyUsage=serverAuth" \
                "subjectAltName=IP:$ip,DNS:$ip,DNS:localhost" >"$d/server.ext" &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/CN=$ip" -keyout "$d/server.key" -out "$d/server.csr" &&
            openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
                -CAcreateserial -days 2 -extfile "$d/server.ext" -out "$d/server.pem" &&
            printf '%s\n' "basicConstraints=CA:FALSE" \
                "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=clientAuth" >"$d/client.ext" &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/CN=alice" -keyout "$d/client.key" -out "$d/client.csr" &&
            openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
                -CAcreateserial -days 2 -extfile "$d/client.ext" -out "$d/client.pem" &&
            openssl verify -CAfile "$d/ca.pem" "$d/server.pem" "$d/client.pem"
    } >"$d/openssl.log" 2>&1 || fail "openssl could not make the test CA and certificates ($d/openssl.log)"
}

# stream_policy DIR GRACE [EXTRA_YAML]: policies/default plus dead_flow_grace GRACE.
stream_policy() {
    test_policy_dir "$1" "$(printf 'flows:\n  dead_flow_grace: %s\n%s' "$2" "${3:-}")"
}

now_ms() { date +%s%3N; }

sleep_until_ms() {
    local left=$(($1 - $(now_ms)))
    [ "$left" -gt 0 ] && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
    return 0
}

# stream_finals TAG: the final status codes (200 and >= 300) sipp[TAG] received.
stream_finals() {
    grep -aoE '^SIP/2\.0 [2-6][0-9][0-9]' "$IT_TMP/sipp-$1-msg.log" 2>/dev/null |
        awk '{print $2}' | sort -u
}

# -nd: a failed call is not followed by sipp's default BYE (which Kamailio, with no
# dialog state, would route to the Request-URI's host, sipedge's public address, and
# back: a loop until Max-Forwards runs out).
# stream_invite TAG CALLEE DOMAIN DEST: a sipp caller (on $CALLER) sends an INVITE for
# CALLEE@DOMAIN to the registrar DEST; the client must answer 180 (the caller then
# cancels: 200, 487) or refuse it at once (486/603). Fails the test otherwise.
stream_invite() {
    local tag=$1 callee=$2 domain=$3 dest=$4
    run_sipp "$tag" -sf "$STREAM_SIPP_DIR/stream_invite_ring.xml" -key callee "$callee" \
        -key domain "$domain" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -nd \
        -max_retrans 4 -recv_timeout 8000 "$dest"
    sipp_check "$tag" $? 1
}

# stream_invite_error TAG CALLEE DOMAIN DEST: an INVITE that must fail at once (430 from
# sipedge, 404/480 from the registrar, 410); prints the final codes on one line.
stream_invite_error() {
    local tag=$1 callee=$2 domain=$3 dest=$4
    run_sipp "$tag" -sf "$IT_LIB_DIR/clients/sipp/ws_invite_error.xml" -key callee "$callee" \
        -key domain "$domain" -i "$CALLER" -p "$(free_udp_port "$CALLER")" -m 1 -nd \
        -max_retrans 2 -recv_timeout 3000 "$dest"
    sipp_check "$tag" $? 1 >&2
    stream_finals "$tag" | tr '\n' ' '
}

# stream_stat NAME: one counter (stream_NAME) of a fresh "stats stream" line (lib.sh
# stream_stats).
stream_stat() { stat_of "$(stream_stats)" "stream_$1"; }

# stream_reply_ms TAG CODE: when sipp[TAG] received its first CODE reply, in ms since the
# epoch (from the message trace; sipp's own start and exit take a second or more on a
# loaded machine, so the trace is what tells when sipedge answered). Empty when none.
stream_reply_ms() {
    python3 - "$IT_TMP/sipp-$1-msg.log" "$2" <<'PY'
import re, sys, datetime
stamp = None
for line in open(sys.argv[1], errors='replace'):
    m = re.match(r'^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)', line)
    if m:
        stamp = m.group(1)
        continue
    if line.startswith('SIP/2.0 ' + sys.argv[2]) and stamp:
        t = datetime.datetime.strptime(stamp, '%Y-%m-%d %H:%M:%S.%f').astimezone()
        print(int(t.timestamp() * 1000))
        break
PY
}

# stream_binding DUMP AOR CORE PORTS [NEED_OB]: AOR's contacts in the kamcmd ul.dump
# output DUMP. Passes (prints "Path ... Reg-Id ...") when AOR has a live contact whose
# Path is sipedge's: <sip:TOKEN@CORE:PORT;...lr...> with a non-empty flow token, PORT
# one of PORTS (a regex group, core_port_re), and which carries ";ob" exactly when the
# binding is an RFC 5626 outbound one (Reg-Id > 0). NEED_OB=1: the binding must be an
# outbound one. Fails (status 1, the reason on stdout) otherwise.
stream_binding() {
    python3 - "$@" <<'PY'
import re, sys
text, aor, core, ports = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4]
need_ob = len(sys.argv) > 5 and sys.argv[5] == "1"
cur, contacts, c = None, [], None
for line in text.splitlines():
    m = re.search(r'\bAoR: (\S+)', line)
    if m:
        cur = m.group(1)
        continue
    m = re.search(r'\b(Address|Expires|Path|Reg-Id|Instance): (.*)', line)
    if m and cur == aor:
        if m.group(1) == 'Address':
            c = {}
            contacts.append(c)
        if c is not None:
            c[m.group(1)] = m.group(2).strip()
if not contacts:
    print("no binding for AoR %s" % aor)
    sys.exit(1)
why = []
for c in contacts:
    exp, path = c.get('Expires', ''), c.get('Path', '')
    regid = int(c.get('Reg-Id', '0') or 0)
    desc = "Address %s Path %s Reg-Id %s Instance %s Expires %s" % (
        c.get('Address'), path, regid, c.get('Instance'), exp)
    if not (exp.lstrip('-').isdigit() and int(exp) > 0):
        why.append("expired: " + desc)
        continue
    m = re.search(r'<sip:([^@>;]+)@' + re.escape(core) + r':' + ports + r'(;[^>]*)>', path)
    if not m or not re.search(r';lr\b', m.group(3)):
        why.append("no Path with a flow token at sipedge's core address: " + desc)
        continue
    ob = re.search(r';ob\b', m.group(3)) is not None
    if need_ob and regid <= 0:
        why.append("not an outbound binding (no reg-id): " + desc)
        continue
    if ob != (regid > 0):
        why.append("Path ;ob %s but Reg-Id %d: %s" % ("present" if ob else "missing", regid, desc))
        continue
    print(desc)
    sys.exit(0)
print("; ".join(why))
sys.exit(1)
PY
}

# ---- linphonec ----------------------------------------------------------------------
# lp_write_rc FILE KEY=VALUE...: a linphonec rc file with no sound card (use_files), no
# video, no UDP, a client-only TCP/TLS stack (sip_tcp_port/sip_tls_port -1: random
# local port; 0 would disable the transport and the REGISTER finds "No listening point"),
# and one proxy that registers at start:
#   proxy=<sip:IP:PORT;transport=tls>  identity=sip:alice@DOMAIN  user=  pass=
#   expires=60  ca=CA.pem (root_ca: the server's certificate is verified, and its name)
#   cert= key= (client certificate chain and key, presented when the server asks)
# linphonec 5.1 always sends +sip.instance, and no reg-id: its bindings are not RFC 5626
# outbound ones (no rc key turns that on; "outbound proxy" in its API is something else).
lp_write_rc() {
    local f=$1 kv proxy='' identity='' user='' pass='' expires=60 ca='' cert='' key=''
    shift
    for kv in "$@"; do
        case $kv in
            proxy=*) proxy=${kv#*=} ;; identity=*) identity=${kv#*=} ;;
            user=*) user=${kv#*=} ;; pass=*) pass=${kv#*=} ;;
            expires=*) expires=${kv#*=} ;; ca=*) ca=${kv#*=} ;;
            cert=*) cert=${kv#*=} ;; key=*) key=${kv#*=} ;;
            *) fail "lp_write_rc: unknown key $kv" ;;
        esac
    done
    {
        echo "[sip]"
        echo "sip_port=0"
        echo "sip_tcp_port=-1"
        echo "sip_tls_port=-1"
        echo "default_proxy=0"
        echo "register_only_when_network_is_up=0"
        echo "register_only_when_upnp_is_ok=0"
        echo "inc_timeout=30"
        echo "guess_hostname=1"
        if [ -n "$ca" ]; then
            echo "root_ca=$ca"
            echo "verify_server_certs=1"
            echo "verify_server_cn=1"
        fi
        if [ -n "$cert" ]; then
            echo "client_cert_chain=$cert"
            echo "client_cert_key=$key"
        fi
        echo "[sound]"
        echo "use_files=1"
        echo "[video]"
        echo "capture=0"
        echo "display=0"
        echo "automatically_initiate=0"
        echo "automatically_accept=0"
        echo "[proxy_0]"
        echo "reg_proxy=$proxy"
        echo "reg_identity=$identity"
        echo "reg_expires=$expires"
        echo "reg_sendregister=1"
        echo "publish=0"
        echo "[auth_info_0]"
        echo "username=$user"
        echo "passwd=$pass"
    } >"$f"
}

# lp_start TAG RC: linphonec -c RC in the background, commands from a fifo
# ($IT_TMP/TAG.in, held open by a sleep), console output in $IT_TMP/TAG.out, its debug
# log in $IT_TMP/TAG-debug.log (-d 6). HOME is a directory of its own: linphonec stops
# short of starting its SIP stack (no listening point, nothing sent) when it cannot open
# ~/.local/share/linphone/linphone.db. Sets LP_PID (linphonec's own PID: no wrapper, so
# that kill -9 hits it).
lp_start() {
    local tag=$1 rc=$2 home=$IT_TMP/$1-home fifo=$IT_TMP/$1.in
    mkdir -p "$home/.local/share/linphone"
    rm -f "$fifo" "$IT_TMP/$tag-debug.log"
    mkfifo "$fifo" || fail "mkfifo $fifo"
    log "linphonec[$tag] -c $rc"
    (export HOME=$home && exec linphonec -c "$rc" -d 6 -l "$IT_TMP/$tag-debug.log") \
        <"$fifo" >"$IT_TMP/$tag.out" 2>&1 &
    LP_PID=$!
    IT_PIDS+=("$LP_PID")
    # The writer end, open for as long as the test runs (linphonec reads EOF as quit).
    sleep 600 >"$fifo" &
    IT_PIDS+=("$!")
    eval "LP_HOLDER_${tag//[^A-Za-z0-9_]/_}=$!"
}

lp_cmd() {
    log "linphonec[$1] < $2"
    printf '%s\n' "$2" >"$IT_TMP/$1.in"
}

# lp_wait_registered TAG SECS: the account reached LinphoneRegistrationOk.
lp_wait_registered() {
    wait_for_line "$IT_TMP/$1-debug.log" 'to \[LinphoneRegistrationOk\]' "$2" "$LP_PID"
}

# lp_quit TAG SECS: "quit" (linphonec unregisters, then exits); wait for the exit.
lp_quit() {
    local n
    lp_cmd "$1" quit
    for ((n = 0; n < $2 * 10; n++)); do
        kill -0 "$LP_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$LP_PID" 2>/dev/null && return 1
    wait "$LP_PID" 2>/dev/null
    lp_release "$1"
}

# lp_release TAG: stop the fifo holder of linphonec[TAG].
lp_release() {
    local h
    eval "h=\${LP_HOLDER_${1//[^A-Za-z0-9_]/_}:-}"
    [ -n "$h" ] && kill "$h" 2>/dev/null && wait "$h" 2>/dev/null
    return 0
}

# ---- baresip ------------------------------------------------------------------------
# bs_write_conf DIR LISTEN CAFILE ACCOUNT: DIR/config and DIR/accounts for one account.
# No sound card: ausine as the source, aufile (to /dev/null) as player and alert. No
# console module (stdio.so wants a terminal on stdin); baresip is stopped with SIGTERM,
# which unregisters. baresip 1.0.0 loads CAFILE (sip_cafile) but does not verify the
# server's certificate against it (a registration through a server whose certificate
# another CA signed succeeds too). Its TCP and TLS connections come from 127.0.0.1, not
# from the sip_listen address (the Contact and Via name that one). ACCOUNT is one
# accounts line, e.g.
#   <sip:alice@DOMAIN;transport=tls>;auth_pass=PW;outbound="sip:IP:PORT;transport=tls";regint=60
stream_bs_modules='g711.so ausine.so aufile.so'
bs_write_conf() {
    local d=$1 listen=$2 ca=$3 acct=$4 m
    mkdir -p "$d"
    {
        printf '%s\t\t%s\n' poll_method epoll sip_listen "$listen" \
            call_local_timeout 120 call_max_calls 4 \
            audio_player aufile,/dev/null audio_alert aufile,/dev/null \
            audio_source ausine,440 audio_level no \
            module_path /usr/lib/baresip/modules
        [ -n "$ca" ] && printf 'sip_cafile\t\t%s\n' "$ca"
        for m in $stream_bs_modules; do printf 'module\t\t%s\n' "$m"; done
        printf 'module_tmp\t\t%s\n' uuid.so account.so
        printf 'module_app\t\t%s\n' menu.so
    } >"$d/config"
    printf '%s\n' "$acct" >"$d/accounts"
}

# bs_start TAG DIR: baresip -f DIR -v in the background, output in $IT_TMP/TAG.out.
# Sets BS_PID.
bs_start() {
    log "baresip[$1] -f $2"
    baresip -f "$2" -v </dev/null >"$IT_TMP/$1.out" 2>&1 &
    BS_PID=$!
    IT_PIDS+=("$BS_PID")
}

# bs_stop SECS: SIGTERM (baresip unregisters first), wait for the exit.
bs_stop() {
    local n
    kill -TERM "$BS_PID" 2>/dev/null
    for ((n = 0; n < $1 * 10; n++)); do
        kill -0 "$BS_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$BS_PID" 2>/dev/null && return 1
    wait "$BS_PID" 2>/dev/null
    return 0
}
