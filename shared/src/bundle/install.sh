#!/bin/sh
# install.sh: written by `kubectl meshvm bundle` (@ERA@ era). Puts the files of this bundle
# where the Istio sidecar on this VM reads them, and the control-plane names into /etc/hosts;
# optionally installs the sidecar package and starts it.
#
#   sudo ./install.sh              install; running it again changes nothing. Run it from the
#                                  bundle's folder or by its path (sudo ./expandvm/install.sh):
#                                  it reads the files beside itself.
#   --package FILE                 first install the sidecar package (istio-sidecar.deb with
#                                  dpkg -i, istio-sidecar.rpm with rpm -i)
#   --start                        then enable and start the sidecar's systemd services and wait
#                                  (at most --timeout, default 120s) until the sidecar is ready
#   sudo ./install.sh --renew      swap in this bundle's new credentials (from `kubectl meshvm
#                                  bundle --renew`), each file atomically, and restart the sidecar
#   sudo ./install.sh --uninstall  stop and disable what --start started, remove the installed
#                                  files, the folders install created and the /etc/hosts block
#                                  (restoring the lines it replaced)
#   --no-chown                     leave ownership alone (without it, a missing istio-proxy
#                                  user is an error: the sidecar could not read its files)
#   ./install.sh --check           for each control-plane host and port: does the name resolve
#                                  to the gateway, does the port accept a TCP connection?
#   --dry-run                      print what would change and every command, run none
#   --prefix DIR                   place files under DIR instead of / (tests, image builds);
#                                  packages and services are still those of this machine
set -eu

ERA='@ERA@'
# Bundle file, where the sidecar reads it, its mode.
FILES='@FILES@'
# The credentials among them: what `bundle --renew` re-issues and --renew swaps.
CREDENTIALS='@CREDENTIALS@'
# Directories the sidecar's user owns (chown -R, as the Istio VM docs do).
OWNED_DIRS='@DIRS@'
# Control-plane host and port the VM must reach.
ENDPOINTS='@ENDPOINTS@'
# The systemd units of the istio-sidecar package, in start order. Istio 1.4.2 ships two:
# tools/packaging/common/istio-auth-node-agent.service (node_agent: keeps /etc/certs' key and
# certificate renewed through Citadel) and istio.service (istio-start.sh: iptables, pilot-agent,
# Envoy); modern packages ship istio.service only (istio@1.8.0 tools/packaging/common/).
UNITS='@UNITS@'
MARK_BEGIN='# BEGIN meshvm bundle (managed by install.sh, do not edit)'
MARK_END='# END meshvm bundle'
# Inside the block: a line for the same names that was in /etc/hosts before install (e.g. from
# the runbook's `tee -a`), kept commented out so --uninstall restores it.
SAVED='# meshvm-saved: '
# The folders install created (one per line), so --uninstall removes those and only those.
CREATED_STATE=/var/lib/istio/meshvm-created-dirs
# The units --start enabled or started (one per line), so --uninstall stops and disables those.
STARTED_STATE=/var/lib/istio/meshvm-started-units
PROXY_USER=istio-proxy
# Modern: pilot-agent reads the bootstrap token at ./var/run/secrets/tokens/istio-token from its
# working directory, / under istio.service (istio@1.8.0 pilot/cmd/pilot-agent/main.go:56,
# istio@1.22.0 pkg/config/constants/constants.go:151). /var/run is a tmpfs that a reboot empties,
# so the bundle's token is kept under /var/lib/istio (FILES) and copied there by install, by
# --renew, and by the unit itself before every start (this drop-in), reboots included.
TOKEN_RUN=/var/run/secrets/tokens/istio-token
TOKEN_DROPIN=/etc/systemd/system/istio.service.d/meshvm-token.conf

usage() {
    cat <<'USAGE'
usage: install.sh [--dry-run] [--prefix DIR] [--no-chown] [--package FILE] [--start] [--timeout DURATION]
       install.sh [--dry-run] [--prefix DIR] [--no-chown] [--timeout DURATION] --renew
       install.sh [--dry-run] [--prefix DIR] --uninstall | --check
  (no flag)      install this bundle's files for the Istio sidecar, and its /etc/hosts block
  --package FILE install the sidecar package first (.deb: dpkg -i, .rpm: rpm -i)
  --start        enable and start the sidecar's services, wait until it is ready
  --timeout D    how long --start and --renew wait for readiness (120s; 90, 90s, 2m)
  --renew        swap in this bundle's credentials atomically and restart the sidecar
  --uninstall    stop and disable what --start started, remove what install placed, the
                 folders it created, and its /etc/hosts block
  --no-chown     do not give the sidecar's folders to the istio-proxy user
  --check        check name resolution and TCP reachability of the control plane
  --dry-run      print what would change and every command, run none
  --prefix DIR   place files under DIR instead of /
USAGE
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
action=install
dry_run=0
chown=1
prefix=''
created=''
package=''
start=0
timeout=120

# The value of a flag that needs one ($1 the flag, $2 what it names, $3 the value if any).
need_value() {
    if [ -z "${3:-}" ]; then
        echo "install.sh: $1 needs $2" >&2
        exit 2
    fi
}

# Seconds from 120, 120s, 2m or 1h.
parse_timeout() {
    num=$1
    mult=1
    case $1 in
        *s) num=${1%s} ;;
        *m) num=${1%m} && mult=60 ;;
        *h) num=${1%h} && mult=3600 ;;
    esac
    case $num in
        '' | *[!0-9]*)
            echo "install.sh: --timeout $1: not a duration (e.g. 120, 90s, 2m)" >&2
            exit 2
            ;;
    esac
    # Without leading zeros: the shell would read 08 as a bad octal number.
    num=${num#"${num%%[!0]*}"}
    timeout=$((${num:-0} * mult))
}

set_action() {
    if [ "$action" != install ] && [ "$action" != "$1" ]; then
        echo "install.sh: --$action and --$1 cannot be combined" >&2
        exit 2
    fi
    action=$1
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --no-chown) chown=0 ;;
        --uninstall) set_action uninstall ;;
        --check) set_action check ;;
        --renew) set_action renew ;;
        --start) start=1 ;;
        --prefix=*) prefix=${1#--prefix=} ;;
        --prefix)
            need_value --prefix 'a directory' "${2:-}"
            prefix=$2
            shift
            ;;
        --package=*) package=${1#--package=} ;;
        --package)
            need_value --package 'a file (istio-sidecar.deb or .rpm)' "${2:-}"
            package=$2
            shift
            ;;
        --timeout=*) parse_timeout "${1#--timeout=}" ;;
        --timeout)
            need_value --timeout 'a duration (e.g. 120s)' "${2:-}"
            parse_timeout "$2"
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument: $1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done
if [ "$action" != install ] && { [ -n "$package" ] || [ "$start" = 1 ]; }; then
    echo "install.sh: --package and --start go with installing, not with --$action" >&2
    exit 2
fi
# Refuse a package install.sh cannot install before anything changes.
case $package in
    '' | *.deb | *.rpm) ;;
    *)
        echo "install.sh: --package $package: not a .deb or .rpm file; pass the release's istio-sidecar.deb (dpkg) or istio-sidecar.rpm (rpm)" >&2
        exit 2
        ;;
esac
if [ -n "$package" ] && [ ! -f "$package" ]; then
    echo "install.sh: --package $package: no such file; download istio-sidecar.deb or .rpm of the cluster's Istio release first" >&2
    exit 1
fi
prefix=${prefix%/}
hosts_file="$prefix/etc/hosts"

say() {
    printf '%s\n' "$*"
}

# Run a command, or only show it under --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        say "  would run: $*"
    else
        "$@"
    fi
}

same_content() {
    [ -f "$2" ] && cmp -s "$1" "$2"
}

need_root() {
    if [ -z "$prefix" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        echo "install.sh: run as root (sudo ./install.sh), or pass --dry-run or --prefix DIR" >&2
        exit 1
    fi
}

verify_bundle() {
    if [ ! -f "$here/SHA256SUMS" ]; then
        return 0
    fi
    if ! command -v sha256sum >/dev/null 2>&1; then
        say "note: sha256sum is not installed; bundle checksums not verified"
        return 0
    fi
    if report=$(cd "$here" && sha256sum -c SHA256SUMS 2>&1); then
        return 0
    fi
    # sha256sum -c prints `NAME: FAILED` (or `NAME: FAILED open or read` when it is missing).
    bad=$(printf '%s\n' "$report" | awk '/: FAILED/ { sub(/: FAILED.*$/, ""); printf "%s%s", sep, $0; sep = ", " }')
    if [ -n "$bad" ]; then
        echo "install.sh: $bad: not as in SHA256SUMS (changed, damaged or missing since bundling); copy the bundle again" >&2
    else
        echo "install.sh: cannot check SHA256SUMS: $(printf '%s\n' "$report" | head -n 1)" >&2
    fi
    exit 1
}

# The user the sidecar runs as must own its folders; without it, stop before changing anything.
need_proxy_user() {
    if [ "$dry_run" = 1 ] && [ -n "$package" ]; then
        return 0 # the package would create it
    fi
    if [ "$chown" = 1 ] && ! id "$PROXY_USER" >/dev/null 2>&1; then
        echo "install.sh: user $PROXY_USER does not exist, so the sidecar could not read the files: install the istio-sidecar package first (it creates the user), or pass --no-chown to install without changing ownership" >&2
        exit 1
    fi
}

# mkdir -p that remembers each folder it creates (as on the VM, without the prefix).
make_dir() {
    if [ -d "$1" ]; then
        return 0
    fi
    make_dir "$(dirname -- "$1")"
    run mkdir "$1"
    created="$created${1#"$prefix"}
"
}

# Append the folders created so far to the record --uninstall reads.
save_created() {
    if [ "$dry_run" = 1 ] || [ -z "$created" ]; then
        created=''
        return 0
    fi
    state="$prefix$CREATED_STATE"
    pending=$created
    created=''
    make_dir "$(dirname -- "$state")"
    printf '%s' "$pending$created" >>"$state"
    created=''
}

# Remove the folders install recorded, deepest first, each only when empty.
remove_created() {
    state="$prefix$CREATED_STATE"
    if [ ! -f "$state" ]; then
        say "note: no record of folders created by install ($CREATED_STATE); folders left in place"
        return 0
    fi
    dirs=$(sort -r -u "$state")
    run rm -f "$state"
    printf '%s\n' "$dirs" | while IFS= read -r dir; do
        [ -n "$dir" ] || continue
        if [ "$dry_run" = 1 ]; then
            say "would remove folder $prefix$dir (if empty)"
        elif rmdir "$prefix$dir" 2>/dev/null; then
            say "remove folder $prefix$dir"
        elif [ -d "$prefix$dir" ]; then
            say "kept folder $prefix$dir: it holds files install did not place"
        fi
    done
}

# The host names of this bundle's hosts file, space-separated.
bundle_names() {
    if [ -s "$here/hosts" ]; then
        awk '$1 !~ /^#/ { for (i = 2; i <= NF; i++) printf "%s ", $i }' "$here/hosts"
    fi
}

# /etc/hosts without this bundle's block and without other lines for the bundle's names ($2),
# on stdout; the lines the block replaces (those, and the ones an earlier block saved) into $1.
split_hosts() {
    : >"$1"
    if [ ! -f "$hosts_file" ]; then
        return 0
    fi
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" -v s="$SAVED" -v saved="$1" -v names="$2" '
        BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) ours[list[i]] = 1 }
        $0 == b { inblock = 1; next }
        $0 == e { inblock = 0; next }
        inblock { if (index($0, s) == 1) print substr($0, length(s) + 1) > saved; next }
        $1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i in ours) { print > saved; next } }
        { print }
    ' "$hosts_file"
}

# Rewrite /etc/hosts in place (it may be a bind mount). Installing: lines for the bundle's
# names move into the block, commented out, and the bundle's lines follow them; never twice.
# Uninstalling: the block goes and the lines it replaced come back.
update_hosts() {
    tmp=$(mktemp 2>/dev/null) || tmp="${TMPDIR:-/tmp}/meshvm-hosts.$$"
    saved="$tmp.saved"
    if [ "$1" = install ] && [ -s "$here/hosts" ]; then
        split_hosts "$saved" "$(bundle_names)" >"$tmp"
        {
            say "$MARK_BEGIN"
            sed "s/^/$SAVED/" "$saved"
            cat "$here/hosts"
            say "$MARK_END"
        } >>"$tmp"
    else
        split_hosts "$saved" '' >"$tmp"
        cat "$saved" >>"$tmp"
    fi
    if same_content "$tmp" "$hosts_file" || { [ ! -f "$hosts_file" ] && [ ! -s "$tmp" ]; }; then
        say "unchanged $hosts_file"
    elif [ "$dry_run" = 1 ]; then
        say "would update $hosts_file (block between '$MARK_BEGIN' and '$MARK_END')"
    else
        make_dir "$(dirname -- "$hosts_file")"
        cat "$tmp" >"$hosts_file"
        say "updated $hosts_file"
        if [ -s "$saved" ]; then
            while IFS= read -r line; do
                if [ "$1" = install ]; then
                    say "  replaced (restored by --uninstall): $line"
                else
                    say "  restored: $line"
                fi
            done <"$saved"
        fi
    fi
    rm -f "$tmp" "$saved"
}

install_files() {
    while read -r name dest fmode; do
        [ -n "$name" ] || continue
        target="$prefix$dest"
        if same_content "$here/$name" "$target"; then
            say "unchanged $target"
            run chmod "$fmode" "$target"
            continue
        fi
        say "install $name -> $target (mode $fmode)"
        # Copy beside the target, then rename: the sidecar never reads a half-written file.
        place "$here/$name" "$target" "$fmode"
    done <<EOF
$FILES
EOF
}

set_owner() {
    for dir in $OWNED_DIRS; do
        make_dir "$prefix$dir"
    done
    if [ "$chown" = 0 ]; then
        say "ownership left unchanged (--no-chown)"
        return 0
    fi
    for dir in $OWNED_DIRS; do
        run chown -R "$PROXY_USER" "$prefix$dir"
    done
}

uninstall_files() {
    while read -r name dest _; do
        [ -n "$name" ] || continue
        target="$prefix$dest"
        if [ -e "$target" ]; then
            say "remove $target"
            run rm -f "$target"
        else
            say "absent $target"
        fi
    done <<EOF
$FILES
EOF
    if [ "$ERA" = modern ]; then
        for target in "$prefix$TOKEN_RUN" "$prefix$TOKEN_DROPIN"; do
            if [ -e "$target" ]; then
                say "remove $target"
                run rm -f "$target"
            fi
        done
    fi
}

# --package: the sidecar package, before the files (it creates the istio-proxy user). dpkg -i
# of an installed .deb reinstalls it harmlessly; rpm -i refuses an installed package, so an
# installed one is left alone.
install_package() {
    [ -n "$package" ] || return 0
    case $package in
        *.deb)
            say "install package $package"
            run dpkg -i "$package"
            ;;
        *.rpm)
            if [ "$dry_run" = 0 ] && nevra=$(rpm -q -p "$package" 2>/dev/null) && rpm -q --quiet "$nevra"; then
                say "unchanged package $nevra (installed)"
            else
                say "install package $package"
                run rpm -i "$package"
            fi
            ;;
    esac
}

# Append $1 to the record of units --start enabled or started, once.
record_unit() {
    state="$prefix$STARTED_STATE"
    if [ -f "$state" ] && grep -qx "$1" "$state"; then
        return 0
    fi
    make_dir "$(dirname -- "$state")"
    printf '%s\n' "$1" >>"$state"
}

# What ready means, for messages.
ready_words() {
    if [ "$ERA" = legacy ]; then
        echo "the node agent's certificate in /etc/certs/cert-chain.pem and Envoy's admin port 15000 reporting LIVE"
    else
        echo "http://localhost:15021/healthz/ready answering 200"
    fi
}

# Whether the sidecar is ready now.
# Legacy (Istio 1.4.2): istio-start.sh runs pilot-agent without --statusPort, whose default is
# 0 (istio@1.4.2 pilot/cmd/pilot-agent/main.go:657), so no :15020 readiness endpoint exists on
# a VM; Envoy's admin port is 15000 (pkg/config/mesh/mesh.go:43) and pilot-agent's own probe
# calls it ready when /server_info reports state LIVE (pilot/cmd/pilot-agent/status/ready/
# probe.go:99-105, status/util/server_info.go:26). The node agent (istio-node-agent-start.sh:
# 55-60) keeps the certificate at /etc/certs/cert-chain.pem.
# Modern: Envoy serves /healthz/ready on 15021, forwarded to pilot-agent's readiness
# (istio@1.8.0 tools/packaging/common/envoy_bootstrap.json:546-560,
# pilot/cmd/pilot-agent/status/server.go:52); it answers 503 until the proxy is ready.
is_ready() {
    if [ "$ERA" = legacy ]; then
        [ -s "$prefix/etc/certs/cert-chain.pem" ] || return 1
        info=$(curl -fs --max-time 2 http://localhost:15000/server_info) || return 1
        printf '%s\n' "$info" | grep -q '"state": *"LIVE"'
    else
        curl -fs -o /dev/null --max-time 2 http://localhost:15021/healthz/ready
    fi
}

# Wait at most --timeout seconds for readiness; on timeout, name the logs and fail.
wait_ready() {
    if [ "$dry_run" = 1 ]; then
        say "  would wait up to ${timeout}s for $(ready_words)"
        return 0
    fi
    began=$(date +%s)
    while ! is_ready; do
        if [ $(($(date +%s) - began)) -ge "$timeout" ]; then
            units=''
            for unit in $UNITS; do
                units="$units -u $unit"
            done
            # istio-start.sh sends pilot-agent's output to /var/log/istio (istio@1.4.2 and
            # istio@1.8.0 tools/packaging/common/istio-start.sh, the `su ... 2>` line).
            echo "install.sh: the sidecar is not ready after ${timeout}s (waited for $(ready_words)): see \`journalctl$units --no-pager -n 100\` and /var/log/istio/istio.err.log, then run install.sh --start again (--timeout to wait longer)" >&2
            exit 1
        fi
        sleep 1
    done
    say "ready: $(ready_words) after $(($(date +%s) - began))s"
}

# --start: enable and start each unit that is not yet (recording it for --uninstall), then wait.
start_units() {
    if [ "$ERA" = modern ]; then
        # Loads the token drop-in (TOKEN_DROPIN) install placed.
        run systemctl daemon-reload
    fi
    for unit in $UNITS; do
        if [ "$dry_run" = 1 ]; then
            say "  would run: systemctl enable $unit (unless enabled)"
            say "  would run: systemctl start $unit (unless active)"
            continue
        fi
        if systemctl is-enabled --quiet "$unit"; then
            say "enabled already: $unit"
        else
            say "enable $unit"
            systemctl enable "$unit"
            record_unit "$unit"
        fi
        if systemctl is-active --quiet "$unit"; then
            say "running already: $unit"
        else
            say "start $unit"
            systemctl start "$unit"
            record_unit "$unit"
        fi
    done
    wait_ready
}

# --uninstall: stop and disable the units --start enabled or started, last started first
# (stopped=1 when there were some).
stop_units() {
    state="$prefix$STARTED_STATE"
    if [ ! -f "$state" ]; then
        say "no services to stop: install.sh --start started none ($STARTED_STATE)"
        return 0
    fi
    stopped=1
    sed -n '1!G;h;$p' "$state" | while IFS= read -r unit; do
        [ -n "$unit" ] || continue
        say "stop and disable $unit"
        run systemctl stop "$unit"
        run systemctl disable "$unit"
    done
    run rm -f "$state"
}

# Flush a file to disk (coreutils sync FILE fsyncs it; a sync without that syncs everything).
flush() {
    if [ "$dry_run" = 1 ]; then
        say "  would run: sync $1"
    else
        sync "$1" 2>/dev/null || sync
    fi
}

# Put $1 at $2 (mode $3) the way the sidecar never sees half of it: a copy beside the target,
# mode (and with $4 = own, owner) set, flushed, renamed over the target.
place() {
    make_dir "$(dirname -- "$2")"
    run cp "$1" "$2.meshvm-new"
    run chmod "$3" "$2.meshvm-new"
    if [ "${4:-}" = own ] && [ "$chown" = 1 ]; then
        run chown "$PROXY_USER" "$2.meshvm-new"
    fi
    flush "$2.meshvm-new"
    run mv -f "$2.meshvm-new" "$2"
}

# Where FILES puts bundle file $1, and its mode (`DEST MODE`).
dest_of() {
    printf '%s\n' "$FILES" | awk -v n="$1" '$1 == n { print $2, $3; exit }'
}

# Modern: the copy of the token pilot-agent reads, and the drop-in that renews it at each start.
install_token_runtime() {
    [ "$ERA" = modern ] || return 0
    # shellcheck disable=SC2046
    set -- $(dest_of istio-token)
    if same_content "$prefix$1" "$prefix$TOKEN_RUN"; then
        say "unchanged $prefix$TOKEN_RUN"
    else
        say "install $1 -> $prefix$TOKEN_RUN (read by pilot-agent; copied again at each start)"
        place "$here/istio-token" "$prefix$TOKEN_RUN" "$2"
    fi
    dropin=${TMPDIR:-/tmp}/meshvm-dropin.$$
    cat >"$dropin" <<DROPIN
# Written by meshvm's install.sh. pilot-agent reads its bootstrap token from $TOKEN_RUN,
# which a reboot empties: copy it there from $1 before every start.
[Service]
ExecStartPre=/bin/mkdir -p $(dirname -- "$TOKEN_RUN")
ExecStartPre=/bin/cp -p $1 $TOKEN_RUN
DROPIN
    if same_content "$dropin" "$prefix$TOKEN_DROPIN"; then
        say "unchanged $prefix$TOKEN_DROPIN"
    else
        say "install $prefix$TOKEN_DROPIN (systemd drop-in for istio.service)"
        place "$dropin" "$prefix$TOKEN_DROPIN" 0644
    fi
    rm -f "$dropin"
}

# --renew: swap the credentials this bundle carries, each atomically, then restart the sidecar.
renew() {
    installed=0
    for name in $CREDENTIALS; do
        # shellcheck disable=SC2046
        set -- $(dest_of "$name")
        if [ -e "$prefix$1" ]; then
            installed=1
        fi
    done
    if [ "$installed" = 0 ]; then
        echo "install.sh: none of this bundle's credentials ($CREDENTIALS) is installed${prefix:+ under $prefix}: run install.sh without --renew first" >&2
        exit 1
    fi
    changed=0
    for name in $CREDENTIALS; do
        # shellcheck disable=SC2046
        set -- $(dest_of "$name")
        if same_content "$here/$name" "$prefix$1"; then
            say "unchanged $prefix$1"
            continue
        fi
        say "renew $name -> $prefix$1"
        place "$here/$name" "$prefix$1" "$2" own
        changed=1
    done
    if [ "$ERA" = modern ] && ! same_content "$here/istio-token" "$prefix$TOKEN_RUN"; then
        # shellcheck disable=SC2046
        set -- $(dest_of istio-token)
        say "renew istio-token -> $prefix$TOKEN_RUN"
        place "$here/istio-token" "$prefix$TOKEN_RUN" "$2" own
        changed=1
    fi
    save_created
    if [ "$changed" = 0 ]; then
        say "the installed credentials are this bundle's already: sidecar not restarted"
        return 0
    fi
    if [ "$ERA" = modern ]; then
        run systemctl daemon-reload
    fi
    for unit in $UNITS; do
        say "restart $unit"
        run systemctl restart "$unit"
    done
    wait_ready
}

# The first address a name resolves to: from the prefix's hosts file under --prefix,
# else from the system resolver (getent), else from /etc/hosts.
resolve() {
    if [ -z "$prefix" ] && command -v getent >/dev/null 2>&1; then
        getent hosts "$1" | awk '{ print $1; exit }'
    elif [ -f "$hosts_file" ]; then
        awk -v h="$1" '$1 !~ /^#/ { for (i = 2; i <= NF; i++) if ($i == h) { print $1; exit } }' "$hosts_file"
    fi
}

# 0: the port accepted a connection; 1: it did not; 2: no tool to test with.
tcp_open() {
    if command -v nc >/dev/null 2>&1; then
        nc -z -w 3 "$1" "$2" >/dev/null 2>&1 && return 0
        return 1
    fi
    if command -v bash >/dev/null 2>&1; then
        # The inner bash expands $1 and $2 itself: single quotes are meant.
        # shellcheck disable=SC2016
        if command -v timeout >/dev/null 2>&1; then
            timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' probe "$1" "$2" 2>/dev/null && return 0
        else
            bash -c 'exec 3<>"/dev/tcp/$1/$2"' probe "$1" "$2" 2>/dev/null && return 0
        fi
        return 1
    fi
    return 2
}

check() {
    gateway=''
    if [ -s "$here/hosts" ]; then
        gateway=$(awk 'NF { print $1; exit }' "$here/hosts")
    fi
    failed=0
    while read -r host port; do
        [ -n "$host" ] || continue
        addr=$(resolve "$host" || true)
        if [ -z "$addr" ]; then
            say "FAIL $host:$port: the name does not resolve (run install.sh to add the /etc/hosts block)"
            failed=1
            target=$gateway
        elif [ -n "$gateway" ] && [ "$addr" != "$gateway" ]; then
            say "FAIL $host:$port: resolves to $addr, not to the gateway $gateway"
            failed=1
            target=$addr
        else
            say "ok   $host:$port: resolves to $addr"
            target=$addr
        fi
        if [ -z "$target" ]; then
            continue
        fi
        rc=0
        tcp_open "$target" "$port" || rc=$?
        case $rc in
            0) say "ok   $host:$port: $target:$port accepts TCP connections" ;;
            1)
                say "FAIL $host:$port: $target:$port does not accept a TCP connection (gateway port, firewall?)"
                failed=1
                ;;
            *) say "skip $host:$port: neither nc nor bash is installed; TCP not tested" ;;
        esac
    done <<EOF
$ENDPOINTS
EOF
    return "$failed"
}

case $action in
    install)
        need_root
        verify_bundle
        install_package
        need_proxy_user
        say "installing the $ERA-era VM bundle from $here${prefix:+ under $prefix}"
        install_files
        install_token_runtime
        save_created
        set_owner
        save_created
        update_hosts install
        save_created
        if [ "$start" = 1 ]; then
            start_units
            save_created
        fi
        ;;
    renew)
        need_root
        verify_bundle
        need_proxy_user
        say "renewing the $ERA-era VM credentials from $here${prefix:+ under $prefix}"
        renew
        ;;
    uninstall)
        need_root
        say "removing the $ERA-era VM bundle${prefix:+ under $prefix}"
        stopped=0
        stop_units
        uninstall_files
        if [ "$stopped" = 1 ] && [ "$ERA" = modern ]; then
            # Forget the removed token drop-in.
            run systemctl daemon-reload
        fi
        update_hosts uninstall
        remove_created
        ;;
    check)
        check
        ;;
esac
