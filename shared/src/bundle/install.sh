#!/bin/sh
# install.sh: written by `kubectl meshvm bundle` (@ERA@ era). Puts the files of this bundle
# where the Istio sidecar on this VM reads them, and the control-plane names into /etc/hosts.
#
#   sudo ./install.sh              install; running it again changes nothing. Run it from the
#                                  bundle's folder or by its path (sudo ./expandvm/install.sh):
#                                  it reads the files beside itself.
#   sudo ./install.sh --uninstall  remove the installed files, the folders install created and
#                                  the /etc/hosts block (restoring the lines it replaced)
#   --no-chown                     leave ownership alone (without it, a missing istio-proxy
#                                  user is an error: the sidecar could not read its files)
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
# Inside the block: a line for the same names that was in /etc/hosts before install (e.g. from
# the runbook's `tee -a`), kept commented out so --uninstall restores it.
SAVED='# meshvm-saved: '
# The folders install created (one per line), so --uninstall removes those and only those.
CREATED_STATE=/var/lib/istio/meshvm-created-dirs
PROXY_USER=istio-proxy

usage() {
    cat <<'USAGE'
usage: install.sh [--dry-run] [--prefix DIR] [--no-chown] [--uninstall | --check]
  (no flag)    install this bundle's files for the Istio sidecar, and its /etc/hosts block
  --uninstall  remove what install placed, the folders it created, and its /etc/hosts block
  --no-chown   do not give the sidecar's folders to the istio-proxy user
  --check      check name resolution and TCP reachability of the control plane
  --dry-run    print what would change, change nothing
  --prefix DIR install under DIR instead of /
USAGE
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
action=install
dry_run=0
chown=1
prefix=''
created=''
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --no-chown) chown=0 ;;
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
        make_dir "$(dirname -- "$target")"
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
        need_proxy_user
        say "installing the $ERA-era VM bundle from $here${prefix:+ under $prefix}"
        install_files
        save_created
        set_owner
        save_created
        update_hosts install
        save_created
        ;;
    uninstall)
        need_root
        say "removing the $ERA-era VM bundle${prefix:+ under $prefix}"
        uninstall_files
        update_hosts uninstall
        remove_created
        ;;
    check)
        check
        ;;
esac
