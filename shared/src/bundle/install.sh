#!/bin/sh
# install.sh: written by `kubectl meshvm bundle` (@ERA@ era). Puts the files of this bundle
# where the Istio sidecar on this VM reads them, and the control-plane names into /etc/hosts.
#
#   sudo ./install.sh              install; running it again changes nothing
#   sudo ./install.sh --uninstall  remove the installed files and the /etc/hosts block
#   ./install.sh --check           for each control-plane host and port: does the name resolve
#                                  to the gateway, does the port accept a TCP connection?
#   --dry-run                      print what would change, change nothing
#   --prefix DIR                   work under DIR instead of / (tests, image builds)
set -eu

ERA='@ERA@'
# Bundle file, where the sidecar reads it, its mode.
FILES='@FILES@'
# Directories the sidecar's user owns (chown -R, as the Istio VM docs do).
OWNED_DIRS='@DIRS@'
# Control-plane host and port the VM must reach.
ENDPOINTS='@ENDPOINTS@'
MARK_BEGIN='# BEGIN meshvm bundle (managed by install.sh, do not edit)'
MARK_END='# END meshvm bundle'
PROXY_USER=istio-proxy

usage() {
    cat <<'USAGE'
usage: install.sh [--dry-run] [--prefix DIR] [--uninstall | --check]
  (no flag)    install this bundle's files for the Istio sidecar, and its /etc/hosts block
  --uninstall  remove what install placed, and its /etc/hosts block
  --check      check name resolution and TCP reachability of the control plane
  --dry-run    print what would change, change nothing
  --prefix DIR install under DIR instead of /
USAGE
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
action=install
dry_run=0
prefix=''
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --uninstall) action=uninstall ;;
        --check) action=check ;;
        --prefix=*) prefix=${1#--prefix=} ;;
        --prefix)
            if [ $# -lt 2 ] || [ -z "$2" ]; then
                echo "install.sh: --prefix needs a directory" >&2
                exit 2
            fi
            prefix=$2
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
    if ! (cd "$here" && sha256sum -c SHA256SUMS >/dev/null 2>&1); then
        echo "install.sh: the bundle's files do not match SHA256SUMS; copy the bundle again" >&2
        exit 1
    fi
}

# /etc/hosts without this bundle's block, and without lines equal to the bundle's own (as the
# runbook's `tee -a` leaves them), so the block never duplicates a line.
hosts_without_block() {
    if [ ! -f "$hosts_file" ]; then
        return 0
    fi
    if [ -s "$here/hosts" ]; then
        awk -v b="$MARK_BEGIN" -v e="$MARK_END" 'FNR == NR { ours[$0] = 1; next } $0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip && !($0 in ours)' "$here/hosts" "$hosts_file"
    else
        awk -v b="$MARK_BEGIN" -v e="$MARK_END" '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' "$hosts_file"
    fi
}

# Rewrite /etc/hosts in place (it may be a bind mount): without our block, then with the
# bundle's block when installing. Never appends twice.
update_hosts() {
    tmp=$(mktemp 2>/dev/null) || tmp="${TMPDIR:-/tmp}/meshvm-hosts.$$"
    hosts_without_block >"$tmp"
    if [ "$1" = install ] && [ -s "$here/hosts" ]; then
        {
            say "$MARK_BEGIN"
            cat "$here/hosts"
            say "$MARK_END"
        } >>"$tmp"
    fi
    if same_content "$tmp" "$hosts_file" || { [ ! -f "$hosts_file" ] && [ ! -s "$tmp" ]; }; then
        say "unchanged $hosts_file"
    elif [ "$dry_run" = 1 ]; then
        say "would update $hosts_file (block between '$MARK_BEGIN' and '$MARK_END')"
    else
        mkdir -p "$(dirname -- "$hosts_file")"
        cat "$tmp" >"$hosts_file"
        say "updated $hosts_file"
    fi
    rm -f "$tmp"
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
        run mkdir -p "$(dirname -- "$target")"
        # Copy beside the target, then rename: the sidecar never reads a half-written file.
        run cp "$here/$name" "$target.meshvm-new"
        run chmod "$fmode" "$target.meshvm-new"
        run mv -f "$target.meshvm-new" "$target"
    done <<EOF
$FILES
EOF
}

set_owner() {
    for dir in $OWNED_DIRS; do
        run mkdir -p "$prefix$dir"
    done
    if ! id "$PROXY_USER" >/dev/null 2>&1; then
        say "note: user $PROXY_USER does not exist (install the istio-sidecar package first); ownership left unchanged"
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
    if [ "$dry_run" = 0 ]; then
        # Directories only this bundle filled go too; anything still holding files stays.
        for dir in $OWNED_DIRS; do
            rmdir "$prefix$dir" 2>/dev/null || true
        done
    fi
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
        say "installing the $ERA-era VM bundle from $here${prefix:+ under $prefix}"
        install_files
        set_owner
        update_hosts install
        ;;
    uninstall)
        need_root
        say "removing the $ERA-era VM bundle${prefix:+ under $prefix}"
        uninstall_files
        update_hosts uninstall
        ;;
    check)
        check
        ;;
esac
