#!/usr/bin/env bash
# The .deb package, checked from outside (issue 7): builds it with cargo-deb, lists it,
# runs lintian, checks the shipped firewall rule with nft, installs it into a fresh Debian
# 12 root file system, runs the installed binary there as user notebox with the shipped
# config, upgrades it over an edited config, removes and purges it, runs
# `systemd-analyze verify` on the installed unit, and finally installs it on a Debian 12
# that runs systemd (booted in a Docker container) to run the unit for real.
#
#   tests/package/run.sh                                  # build target/debian/*.deb, test it
#   NOTEBOX_DEB=path/to/notebox.deb tests/package/run.sh  # test a given package
#   NOTEBOX_PACKAGE_BOOT=0 tests/package/run.sh           # without the systemd part
#   NOTEBOX_PACKAGE_PROFILE=dev tests/package/run.sh      # package target/debug/notebox
#                                                         # as built (tests/run-all.sh)
#   tests/package/run.sh --prepare                        # only install cargo-deb and build
#                                                         # the cached root file system
#
# Needs root (chroot), cargo, and the Debian mirror of the host's apt sources the first
# time on a machine: the root file system is built once with mmdebstrap and cached as a
# tarball in /var/cache/notebox-test (NOTEBOX_TEST_CACHE), keyed by its recipe. Missing
# tools (lintian, mmdebstrap, curl, cargo-deb) are installed when they are missing;
# nft is used when the host has it (it is not installed: a distribution's nftables
# package may enable nftables.service, whose `flush ruleset` would drop Docker's rules).
# About 30 s plus `cargo deb` once the tarball exists; about 40 s more to build it.
#
# Prints one PASS/FAIL (or SKIP) line per check; exits non-zero when any check fails.
#
# Sections 5-10 run in a chroot, where systemd does not run: there the binary is started
# by hand as systemd would start it (user notebox, the shipped config), with
# NOTEBOX_LISTEN=127.0.0.1:0 so that the test never binds 0.0.0.0:8080 on the machine it
# runs on; the chroot shares the host's network, so the host's curl reaches it.
# Section 11 runs the unit itself, under systemd, in its own network namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$SECONDS

SUITE=bookworm # Debian 12, what the package is built for
CACHE=${NOTEBOX_TEST_CACHE:-/var/cache/notebox-test}
CARGO_DEB_VERSION=3.8.0
# The root file system: Debian's required packages + apt (variant "apt"), adduser (a
# dependency of the package; present so that installing needs no network) and systemd
# (for `systemd-analyze verify` of the installed unit against the installed binary, and
# so that deb-systemd-helper enables the unit as on a real machine).
ROOTFS_PACKAGES=adduser,systemd
ROOTFS_RECIPE="v1 $SUITE variant=apt merged-usr packages=$ROOTFS_PACKAGES"

say() { printf '\n==> %s\n' "$*" >&2; }
FAILED=0
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; FAILED=$((FAILED + 1)); }
# check "description" command...: PASS if the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
die() {
    printf 'FAIL: %s\n' "$*"
    exit 1
}

if [ "$(id -u)" != 0 ]; then
    die "tests/package/run.sh needs root (chroot, mmdebstrap): run it with sudo"
fi

# --- tools -------------------------------------------------------------------------
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${NOTEBOX_DEB:-}" ] && ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# The cached root file system's tarball, built when missing (sets ROOTFS_TAR).
ensure_rootfs_tar() {
    mkdir -p "$CACHE"
    ROOTFS_TAR=$CACHE/rootfs-$(printf '%s' "$ROOTFS_RECIPE" | sha256sum | cut -c1-12).tar
    exec 9>"$CACHE/rootfs.lock"
    flock 9 # one build per machine; a concurrent run waits, then reuses it
    if [ ! -s "$ROOTFS_TAR" ]; then
        # The host's own apt sources for $SUITE (as tests/image/build.sh), else Debian's.
        sources=()
        shopt -s nullglob
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
            [[ -s $f ]] || continue
            if grep -v '^[[:space:]]*#' "$f" | grep -qE "(^|[[:space:]])${SUITE}([[:space:]]|$)"; then
                sources+=("$f")
            fi
        done
        shopt -u nullglob
        hooks=()
        for d in /usr/share/mmdebstrap/hooks/maybe-merged-usr /usr/share/mmdebstrap/hooks/merged-usr; do
            if [[ -d $d ]]; then hooks=(--hook-dir="$d"); break; fi
        done
        say "building $ROOTFS_TAR with mmdebstrap (once per machine; about 30 s)"
        mmdebstrap --variant=apt --format=tar "${hooks[@]}" --include="$ROOTFS_PACKAGES" \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            "$SUITE" "$ROOTFS_TAR.tmp" "${sources[@]}" >&2
        mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    fi
    exec 9>&-
}

# tests/run-all.sh prepares the tools and the root file system while the tests compile
# (downloads, mostly; cargo-deb's build fills the core the compile leaves idle while it
# links), then runs the checks once the tests have passed.
if [ "${1:-}" = --prepare ]; then
    ensure_rootfs_tar
    say "prepared: cargo-deb $(cargo deb --version 2>/dev/null | cut -d' ' -f2), $ROOTFS_TAR"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/notebox-package.XXXXXX")
ROOT=$WORK/root
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Runs a command inside the root file system with a clean environment (the caller's
# NOTEBOX_* variables, e.g. NOTEBOX_TEST_IMAGE, must not reach notebox: it rejects
# unknown ones).
in_root() {
    chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
apt_in_root() {
    in_root apt-get -y -q -o Dpkg::Use-Pty=0 "$@"
}

# --- 1. build --------------------------------------------------------------------------
if [ -n "${NOTEBOX_DEB:-}" ]; then
    DEB=$(readlink -f "$NOTEBOX_DEB")
    say "testing $DEB"
else
    # The release build by default, as the README builds it. tests/run-all.sh packages
    # the debug binary its tests just ran instead (`--no-build`: the same assets,
    # metadata and maintainer scripts; cargo-deb strips it like the release one), so the
    # suite does not compile every dependency a second time for these checks (~5 min on
    # 2 cores).
    PROFILE=${NOTEBOX_PACKAGE_PROFILE:-release}
    if [ "$PROFILE" = dev ]; then
        [ -x target/debug/notebox ] ||
            die "NOTEBOX_PACKAGE_PROFILE=dev packages target/debug/notebox as built: run cargo build (or the tests) first"
        say "cargo deb of the debug build (target/debug/notebox)"
        cargo deb --locked --profile dev --no-build >"$WORK/cargo-deb.out"
    else
        say "cargo deb (profile $PROFILE)"
        cargo deb --locked --profile "$PROFILE" >"$WORK/cargo-deb.out"
    fi
    DEB=$(tail -n 1 "$WORK/cargo-deb.out")
fi
[ -f "$DEB" ] || die "no package at '$DEB'"
pass "package built: $DEB ($(du -h "$DEB" | cut -f1))"
VERSION=$(dpkg-deb -f "$DEB" Version)

# --- 2. contents -----------------------------------------------------------------------
say "contents"
dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|' >"$WORK/contents"
for path in /usr/bin/notebox /lib/systemd/system/notebox.service /etc/notebox/config.toml \
    /usr/share/doc/notebox/README.md /usr/share/doc/notebox/INSTALL.md \
    /usr/share/doc/notebox/copyright /usr/share/doc/notebox/changelog.Debian.gz \
    /usr/share/man/man1/notebox.1.gz /usr/share/notebox/notebox-firewall.nft \
    /usr/share/notebox/grafana-dashboard.json; do
    check "dpkg-deb -c lists $path" grep -qx "$path" "$WORK/contents"
done
check "binary is mode 0755" sh -c "dpkg-deb -c '$DEB' | grep -q '^-rwxr-xr-x .* ./usr/bin/notebox$'"
check "packaged unit is systemd/notebox.service" \
    sh -c "dpkg-deb --fsys-tarfile '$DEB' | tar -xO ./lib/systemd/system/notebox.service | cmp -s - systemd/notebox.service"
check "packaged config is packaging/config.toml" \
    sh -c "dpkg-deb --fsys-tarfile '$DEB' | tar -xO ./etc/notebox/config.toml | cmp -s - packaging/config.toml"
dpkg-deb -e "$DEB" "$WORK/control"
check "conffiles: /etc/notebox/config.toml" grep -qx /etc/notebox/config.toml "$WORK/control/conffiles"
check "Depends: libc6 and adduser only" \
    sh -c "dpkg-deb -f '$DEB' Depends | grep -Eqx 'adduser, libc6 \(>= [0-9.]+\)|libc6 \(>= [0-9.]+\), adduser'"
check "Recommends: docker.io | docker-ce" sh -c "[ \"\$(dpkg-deb -f '$DEB' Recommends)\" = 'docker.io | docker-ce' ]"
check "Suggests: nvidia-container-toolkit" sh -c "[ \"\$(dpkg-deb -f '$DEB' Suggests)\" = nvidia-container-toolkit ]"
for script in postinst prerm postrm; do
    check "$script: POSIX sh syntax" sh -n "$WORK/control/$script"
done

check "packaged Grafana dashboard is packaging/grafana-dashboard.json, valid JSON on notebox_ metrics" \
    sh -c "dpkg-deb --fsys-tarfile '$DEB' | tar -xO ./usr/share/notebox/grafana-dashboard.json | cmp -s - packaging/grafana-dashboard.json &&
           python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d[\"panels\"] and all(\"notebox_\" in t[\"expr\"] for p in d[\"panels\"] for t in p[\"targets\"])' packaging/grafana-dashboard.json"

# --- 2b. the firewall rule for notebooks (shipped, documented, never loaded) -----------
say "firewall rule"
NFT_FILE=usr/share/notebox/notebox-firewall.nft
dpkg-deb --fsys-tarfile "$DEB" | tar -xO "./$NFT_FILE" >"$WORK/notebox-firewall.nft" || true
check "packaged $NFT_FILE is packaging/notebox-firewall.nft, mode 0644" \
    sh -c "cmp -s '$WORK/notebox-firewall.nft' packaging/notebox-firewall.nft &&
           dpkg-deb -c '$DEB' | grep -q '^-rw-r--r-- .* ./$NFT_FILE\$'"
check "the rule has its own table (inet notebox_isolation) and an editable notebook_bridge" \
    sh -c "grep -q '^table inet notebox_isolation {' '$WORK/notebox-firewall.nft' &&
           grep -q '^define notebook_bridge = ' '$WORK/notebox-firewall.nft'"
check "INSTALL.md documents the rule (section, path, iptables equivalent)" \
    sh -c "grep -q '^### Notebooks and the host network (residual risk)' docs/INSTALL.md &&
           grep -q '/usr/share/notebox/notebox-firewall.nft' docs/INSTALL.md &&
           grep -q 'DOCKER-USER' docs/INSTALL.md"
check "the maintainer scripts never load a firewall rule" \
    sh -c "! grep -qE '\\b(nft|iptables)\\b' '$WORK/control/postinst' '$WORK/control/prerm' '$WORK/control/postrm'"
if ! command -v nft >/dev/null; then
    echo "SKIP: nft -c -f $NFT_FILE (no nft on this host: apt install nftables)"
elif ! printf 'table inet notebox_probe {\n}\n' | nft -c -f - >/dev/null 2>&1; then
    echo "SKIP: nft -c -f $NFT_FILE (nft cannot reach the kernel's nf_tables here)"
else
    # Check mode: the kernel validates the rule set; nothing is loaded.
    if nft -c -f "$WORK/notebox-firewall.nft" >"$WORK/nft-check.out" 2>&1; then
        pass "nft -c -f $NFT_FILE accepts it"
    else
        sed 's/^/  | /' "$WORK/nft-check.out"
        fail "nft -c -f $NFT_FILE accepts it"
    fi
    # Loaded for real, twice (it must replace itself), in a throwaway network namespace.
    if unshare --net true 2>/dev/null; then
        check "loads twice in a private network namespace: input and forward chains on notebook_bridge" \
            unshare --net sh -c "nft -f '$WORK/notebox-firewall.nft' && nft -f '$WORK/notebox-firewall.nft' &&
                nft list table inet notebox_isolation >'$WORK/nft-list.out' &&
                [ \"\$(nft list tables | grep -c notebox_isolation)\" = 1 ] &&
                grep -q 'type filter hook input' '$WORK/nft-list.out' &&
                grep -q 'type filter hook forward' '$WORK/nft-list.out' &&
                grep -q 'iifname != \"[^\"]*\" accept' '$WORK/nft-list.out'"
    else
        echo "SKIP: loading $NFT_FILE in a private network namespace (unshare --net fails here)"
    fi
fi

# --- 3. lintian ------------------------------------------------------------------------
say "lintian"
lintian --pedantic --info "$DEB" >"$WORK/lintian.out" 2>/dev/null || true
grep -E '^[EWIP]:' "$WORK/lintian.out" | sed 's/^/  lintian: /' || true
if grep -q '^E:' "$WORK/lintian.out"; then
    cat "$WORK/lintian.out"
    fail "lintian reports errors"
else
    pass "lintian: no errors ($(grep -c '^W:' "$WORK/lintian.out" || true) warnings)"
fi

# --- 4. the shipped config, and every setting it shows commented out, parse ------------
say "shipped config"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/bin/notebox >"$WORK/notebox"
chmod 755 "$WORK/notebox"
# "#key = value" and "#[section]" are settings shown at their default; "# text" is prose.
sed -E 's/^#(\[|[a-z_]+ *=)/\1/' packaging/config.toml >"$WORK/config-all.toml"
check "every commented-out setting in the shipped config is a real key (notebox user list)" \
    sh -c "env -i PATH=/usr/bin:/bin NOTEBOX_DATA_DIR='$WORK/config-check' \
        '$WORK/notebox' user list --config '$WORK/config-all.toml' >'$WORK/config-check.log' 2>&1 ||
        { sed 's/^/  | /' '$WORK/config-check.log'; false; }"
check "shipped config: listen = \"0.0.0.0:8080\", data_dir = \"/var/lib/notebox\"" \
    sh -c "grep -qx 'listen = \"0.0.0.0:8080\"' packaging/config.toml && grep -qx 'data_dir = \"/var/lib/notebox\"' packaging/config.toml"

# --- 5. a fresh Debian 12 root file system ---------------------------------------------
say "root file system"
ensure_rootfs_tar
mkdir "$ROOT"
tar -C "$ROOT" -xpf "$ROOTFS_TAR"
check "root file system is Debian 12" grep -q '^VERSION_ID="12"' "$ROOT/etc/os-release"
check "root file system has no notebox user yet" sh -c "! chroot '$ROOT' getent passwd notebox >/dev/null"

# --- 6. install ------------------------------------------------------------------------
say "apt install ./notebox_${VERSION}_amd64.deb"
cp "$DEB" "$ROOT/tmp/notebox.deb"
if apt_in_root install /tmp/notebox.deb >"$WORK/install.out" 2>&1; then
    pass "apt-get install ./notebox.deb into a fresh root"
else
    cat "$WORK/install.out"
    fail "apt-get install ./notebox.deb into a fresh root"
fi
sed 's/^/  | /' "$WORK/install.out" | grep -v 'Reading\|Building\|debconf' || true
check "user notebox: system user, home /var/lib/notebox, no login shell" \
    sh -c "chroot '$ROOT' getent passwd notebox | awk -F: '\$3 < 1000 && \$6 == \"/var/lib/notebox\" && \$7 ~ /nologin\$/ {ok=1} END {exit !ok}'"
check "group notebox exists and is notebox's primary group" \
    sh -c "[ \"\$(chroot '$ROOT' id -gn notebox)\" = notebox ]"
check "/etc/notebox/config.toml installed" test -f "$ROOT/etc/notebox/config.toml"
check "/usr/share/notebox/notebox-firewall.nft installed, not a conffile" \
    sh -c "test -f '$ROOT/usr/share/notebox/notebox-firewall.nft' && ! grep -q notebox-firewall '$WORK/control/conffiles'"
check "/var/lib/notebox is notebox:notebox 0750" \
    sh -c "[ \"\$(chroot '$ROOT' stat -c '%U:%G %a' /var/lib/notebox)\" = 'notebox:notebox 750' ]"
check "service enabled (multi-user.target.wants/notebox.service)" \
    test -L "$ROOT/etc/systemd/system/multi-user.target.wants/notebox.service"
check "install says where the initial admin password is" \
    grep -q '/var/lib/notebox/initial-admin-password' "$WORK/install.out"
check "install names the URL" grep -q 'http://.*:8080/' "$WORK/install.out"
check "install says that there is no docker group" grep -q "no group 'docker'" "$WORK/install.out"

# --- 7. systemd-analyze verify on the installed unit ---------------------------------
say "systemd-analyze verify"
# Inside the root: the installed unit with the installed /usr/bin/notebox (verify checks
# that ExecStart= is executable) and the root's own systemd units.
verify_rc=0
in_root systemd-analyze verify /lib/systemd/system/notebox.service >"$WORK/verify.out" 2>&1 || verify_rc=$?
if [ "$verify_rc" = 0 ] && [ ! -s "$WORK/verify.out" ]; then
    pass "systemd-analyze verify notebox.service prints nothing"
else
    sed 's/^/  | /' "$WORK/verify.out"
    fail "systemd-analyze verify notebox.service (exit $verify_rc) printed the above"
fi
exposure=$(in_root systemd-analyze security --offline=yes notebox.service 2>/dev/null | tail -n 1 || true)
printf '  info: systemd-analyze security: %s\n' "${exposure:-n/a}"

# --- 8. run the installed binary as user notebox ----------------------------------------
# Starts `notebox serve` in the root as notebox:notebox; sets PORT from its banner.
start_server() {
    local log=$1
    shift
    PORT=
    : >"$log"
    chroot --userspec=notebox:notebox "$ROOT" env -i PATH=/usr/bin:/bin LANG=C.UTF-8 "$@" \
        /usr/bin/notebox serve --config /etc/notebox/config.toml >"$log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        PORT=$(sed -n 's/^Notebox is listening on 127\.0\.0\.1:\([0-9]*\);.*/\1/p' "$log" | head -n 1)
        [ -n "$PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    sed 's/^/  | /' "$log"
    return 1
}
healthz_ok() {
    local deadline=$((SECONDS + 30)) code
    while [ $SECONDS -lt $deadline ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    return 1
}
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || return 1
    local deadline=$((SECONDS + 20))
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; return 1; }
        sleep 0.2
    done
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

say "notebox serve as user notebox, shipped config"
if start_server "$WORK/serve1.log" NOTEBOX_LISTEN=127.0.0.1:0; then
    pass "notebox serve starts as notebox:notebox with /etc/notebox/config.toml (port $PORT)"
    check "GET /healthz answers 200" healthz_ok
    check "initial admin password file: notebox, mode 0600" \
        sh -c "[ \"\$(chroot '$ROOT' stat -c '%U %a' /var/lib/notebox/initial-admin-password)\" = 'notebox 600' ]"
    check "database in /var/lib/notebox, owned by notebox" \
        sh -c "[ \"\$(chroot '$ROOT' stat -c %U /var/lib/notebox/notebox.db)\" = notebox ]"
    check "log names the password file, not the password" \
        sh -c "grep -q 'initial-admin-password' '$WORK/serve1.log' && ! grep -qF \"\$(cat '$ROOT/var/lib/notebox/initial-admin-password')\" '$WORK/serve1.log'"
    check "notebox stops on SIGTERM" stop_server
else
    fail "notebox serve starts as notebox:notebox with /etc/notebox/config.toml"
fi

# --- 9. upgrade over an edited config ---------------------------------------------------
say "upgrade"
# The admin's edit: serve on loopback, any port (so the restart below reads it).
sed -i 's/^listen = .*/listen = "127.0.0.1:0" # edited by tests\/package/' "$ROOT/etc/notebox/config.toml"
# Docker installed meanwhile: the upgrade adds notebox to its group.
in_root addgroup --system --quiet docker
# The same package with a higher version, as a new release would be.
UPGRADE_VERSION="$VERSION+upgradetest1"
dpkg-deb -R "$DEB" "$WORK/repack"
sed -i "s/^Version: .*/Version: $UPGRADE_VERSION/" "$WORK/repack/DEBIAN/control"
dpkg-deb -Zgzip -z1 -b "$WORK/repack" "$ROOT/tmp/notebox-upgrade.deb" >/dev/null
uid_before=$(in_root id -u notebox)
if apt_in_root install /tmp/notebox-upgrade.deb >"$WORK/upgrade.out" 2>&1; then
    pass "apt-get install of $UPGRADE_VERSION over $VERSION"
else
    cat "$WORK/upgrade.out"
    fail "apt-get install of $UPGRADE_VERSION over $VERSION"
fi
check "upgraded to $UPGRADE_VERSION" \
    sh -c "[ \"\$(chroot '$ROOT' dpkg-query -W -f '\${Version}' notebox)\" = '$UPGRADE_VERSION' ]"
check "edited config kept" grep -q 'edited by tests/package' "$ROOT/etc/notebox/config.toml"
check "no .dpkg-new/.dpkg-dist left next to the config" \
    sh -c "! ls '$ROOT'/etc/notebox/config.toml.dpkg-* 2>/dev/null | grep -q ."
check "notebox keeps its uid" sh -c "[ \"\$(chroot '$ROOT' id -u notebox)\" = '$uid_before' ]"
check "upgrade adds notebox to group docker" sh -c "chroot '$ROOT' id -nG notebox | tr ' ' '\n' | grep -qx docker"
check "upgrade prints no first-install message" sh -c "! grep -q 'Notebox is installed' '$WORK/upgrade.out'"
check "data kept (database, password file)" \
    test -f "$ROOT/var/lib/notebox/notebox.db" -a -f "$ROOT/var/lib/notebox/initial-admin-password"
if start_server "$WORK/serve2.log"; then
    pass "notebox serve after the upgrade, with the edited config (port $PORT)"
    check "GET /healthz answers 200 after the upgrade" healthz_ok
    check "the existing database is reused (no new admin account)" \
        sh -c "! grep -q 'created the first account' '$WORK/serve2.log'"
    check "notebox stops on SIGTERM" stop_server
else
    fail "notebox serve after the upgrade, with the edited config"
fi

# --- 10. remove, purge, reinstall ----------------------------------------------------
say "remove and purge"
# Members' files belong to the container user; purge must not touch them.
mkdir -p "$ROOT/var/lib/notebox/storage/alice"
echo "thesis" >"$ROOT/var/lib/notebox/storage/alice/draft.txt"
chown -R 1000:100 "$ROOT/var/lib/notebox/storage/alice"
apt_in_root remove notebox >"$WORK/remove.out" 2>&1 || { cat "$WORK/remove.out"; fail "apt-get remove notebox"; }
check "remove: binary gone" test ! -e "$ROOT/usr/bin/notebox"
check "remove: config kept" grep -q 'edited by tests/package' "$ROOT/etc/notebox/config.toml"
check "remove: data kept" test -f "$ROOT/var/lib/notebox/notebox.db"
apt_in_root purge notebox >"$WORK/purge.out" 2>&1 || { cat "$WORK/purge.out"; fail "apt-get purge notebox"; }
sed 's/^/  | /' "$WORK/purge.out" | grep 'notebox:' || true
check "purge: config removed" test ! -e "$ROOT/etc/notebox/config.toml"
check "purge: /etc/notebox removed" test ! -e "$ROOT/etc/notebox"
check "purge: /var/lib/notebox kept, members' files untouched" \
    sh -c "[ \"\$(stat -c '%u:%g' '$ROOT/var/lib/notebox/storage/alice/draft.txt')\" = 1000:100 ] && grep -qx thesis '$ROOT/var/lib/notebox/storage/alice/draft.txt' && test -f '$ROOT/var/lib/notebox/notebox.db'"
check "purge: says the data is kept and how to delete it" \
    sh -c "grep -q 'kept /var/lib/notebox' '$WORK/purge.out' && grep -q 'rm -rf /var/lib/notebox' '$WORK/purge.out'"
check "purge: service no longer enabled" test ! -e "$ROOT/etc/systemd/system/multi-user.target.wants/notebox.service"
check "purge: no mask left behind" test ! -L "$ROOT/etc/systemd/system/notebox.service"
if apt_in_root install /tmp/notebox.deb >"$WORK/reinstall.out" 2>&1; then
    pass "reinstall after purge"
else
    cat "$WORK/reinstall.out"
    fail "reinstall after purge"
fi
check "reinstall: fresh config" grep -qx 'listen = "0.0.0.0:8080"' "$ROOT/etc/notebox/config.toml"
check "reinstall: same notebox uid, data dir still notebox:notebox 0750" \
    sh -c "[ \"\$(chroot '$ROOT' id -u notebox)\" = '$uid_before' ] && [ \"\$(chroot '$ROOT' stat -c '%U:%G %a' /var/lib/notebox)\" = 'notebox:notebox 750' ]"
check "reinstall: members' files still 1000:100" \
    sh -c "[ \"\$(stat -c '%u:%g' '$ROOT/var/lib/notebox/storage/alice/draft.txt')\" = 1000:100 ]"

# --- 11. the real unit under a real systemd --------------------------------------------
# A fresh copy of the root file system, with a docker group whose gid is the host
# socket's, boots with systemd as PID 1 in a Docker container that has the host's
# Docker socket. The package is installed there while systemd runs, as an admin would,
# and the shipped unit runs as systemd runs it: Type=notify, watchdog, User=,
# capabilities, the sandbox. Docker is only asked read-only questions (no notebooks).
# The one local change is a drop-in that shortens WatchdogSec to 3 s, so that the pings
# are checked in seconds. NOTEBOX_PACKAGE_BOOT=0 skips this; so does a machine where
# Docker cannot run systemd.
BOOT_NAME=notebox-package-boot-$$
BOOT_ROOT=$WORK/boot-root
boot_cleanup() {
    docker rm -f "$BOOT_NAME" >/dev/null 2>&1 || true
    docker rmi "$BOOT_NAME:latest" >/dev/null 2>&1 || true
}
in_boot() { docker exec "$BOOT_NAME" "$@"; }
apt_in_boot() { in_boot env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 "$@"; }
# Waits until systemd answers in the container; fails after 30 s.
wait_for_systemd() {
    local deadline=$((SECONDS + 30)) state
    while [ $SECONDS -lt $deadline ]; do
        state=$(in_boot systemctl is-system-running 2>/dev/null || true)
        case "$state" in running | degraded | starting | initializing) return 0 ;; esac
        sleep 0.5
    done
    return 1
}
# Waits until notebox.service is active or failed; prints the state.
wait_for_notebox() {
    local deadline=$((SECONDS + 40)) state=
    while [ $SECONDS -lt $deadline ]; do
        state=$(in_boot systemctl is-active notebox 2>/dev/null || true)
        case "$state" in active | failed) break ;; esac
        sleep 0.5
    done
    echo "$state"
}
boot_status() {
    in_boot systemctl status notebox --no-pager 2>&1 | sed 's/^/  | /' || true
    in_boot journalctl -u notebox --no-pager 2>&1 | tail -n 20 | sed 's/^/  | /' || true
}

say "under systemd"
if [ "${NOTEBOX_PACKAGE_BOOT:-1}" = 0 ]; then
    echo "SKIP: under systemd (NOTEBOX_PACKAGE_BOOT=0)"
elif ! docker info >/dev/null 2>&1; then
    echo "SKIP: under systemd (Docker is not reachable)"
else
    trap 'boot_cleanup; cleanup' EXIT
    mkdir "$BOOT_ROOT"
    tar -C "$BOOT_ROOT" -xpf "$ROOTFS_TAR"
    socket_mount=()
    if [ -S /var/run/docker.sock ]; then
        chroot "$BOOT_ROOT" groupadd --system --non-unique --gid "$(stat -c %g /var/run/docker.sock)" docker
        socket_mount=(-v /var/run/docker.sock:/run/docker.sock)
    fi
    mkdir -p "$BOOT_ROOT/etc/systemd/system/notebox.service.d"
    printf '[Service]\nWatchdogSec=3s\n' >"$BOOT_ROOT/etc/systemd/system/notebox.service.d/package-test.conf"
    cp "$DEB" "$BOOT_ROOT/root/notebox.deb"
    cp "$ROOT/tmp/notebox-upgrade.deb" "$BOOT_ROOT/root/notebox-upgrade.deb"
    tar -C "$BOOT_ROOT" -cf - . | docker import - "$BOOT_NAME:latest" >/dev/null
    docker run -d --name "$BOOT_NAME" --stop-signal SIGRTMIN+3 \
        --cap-add SYS_ADMIN --cap-add NET_ADMIN \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw "${socket_mount[@]}" \
        --tmpfs /run --tmpfs /run/lock -e container=docker \
        "$BOOT_NAME:latest" /lib/systemd/systemd >/dev/null 2>"$WORK/boot-run.err" || true
    if ! wait_for_systemd; then
        echo "SKIP: under systemd (systemd does not run in a Docker container here: $(head -c 300 "$WORK/boot-run.err"))"
    else
        # First install on a running system: enabled, started, READY=1 (Type=notify).
        if apt_in_boot install /root/notebox.deb >"$WORK/boot-install.out" 2>&1; then
            pass "systemd: apt-get install ./notebox.deb on a running system"
        else
            sed 's/^/  | /' "$WORK/boot-install.out"
            fail "systemd: apt-get install ./notebox.deb on a running system"
        fi
        sed -n '/Notebox is installed/,$p' "$WORK/boot-install.out" | sed 's/^/  | /'
        check "systemd: the install prints the URL and where the admin password is" \
            sh -c "grep -q 'Open: *http://.*:8080/' '$WORK/boot-install.out' && grep -q 'cat /var/lib/notebox/initial-admin-password' '$WORK/boot-install.out'"
        state=$(wait_for_notebox)
        if [ "$state" != active ] || [ "$(in_boot systemctl is-enabled notebox)" != enabled ]; then
            fail "systemd: notebox.service is '$state' after the install (Type=notify needs READY=1 from notebox serve)"
            boot_status
        else
            pass "systemd: the install enables and starts notebox.service (READY=1 received)"
            pid=$(in_boot systemctl show -p MainPID --value notebox)
            healthz=$(in_boot bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET /healthz HTTP/1.0\r\n\r\n" >&3 && head -n 1 <&3' 2>/dev/null || true)
            check "systemd: GET /healthz answers 200 on the shipped listen address (0.0.0.0:8080)" \
                sh -c "printf '%s' '$healthz' | grep -q ' 200 '"
            check "systemd: initial admin password file written, notebox, mode 0600" \
                sh -c "[ \"\$(docker exec '$BOOT_NAME' stat -c '%U %a' /var/lib/notebox/initial-admin-password)\" = 'notebox 600' ]"
            in_boot cat "/proc/$pid/status" >"$WORK/boot-status" 2>/dev/null || true
            # CAP_CHOWN (bit 0) + CAP_DAC_OVERRIDE (1) + CAP_FOWNER (3) = 0xb
            check "systemd: runs as notebox with CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER only, no new privileges, seccomp" \
                sh -c "grep -q '^CapEff:[[:space:]]*000000000000000b\$' '$WORK/boot-status' &&
                       grep -q '^NoNewPrivs:[[:space:]]*1\$' '$WORK/boot-status' &&
                       grep -q '^Seccomp:[[:space:]]*2\$' '$WORK/boot-status' &&
                       [ \"\$(awk '/^Uid:/ {print \$2}' '$WORK/boot-status')\" = \"\$(docker exec '$BOOT_NAME' id -u notebox)\" ]"
            if [ ${#socket_mount[@]} -gt 0 ]; then
                check "systemd: the sandboxed service reaches the Docker socket (group docker)" \
                    sh -c "docker exec '$BOOT_NAME' journalctl -u notebox --no-pager | grep -qi 'connected to docker'"
            fi
            # Watchdog (3 s here): without pings systemd would kill it and restart it;
            # absence of a restart can only be seen by waiting.
            sleep 8
            check "systemd: watchdog pings keep it alive (same PID after 8 s, no restarts)" \
                sh -c "[ \"\$(docker exec '$BOOT_NAME' systemctl show -p MainPID --value notebox)\" = '$pid' ] &&
                       [ \"\$(docker exec '$BOOT_NAME' systemctl show -p NRestarts --value notebox)\" = 0 ] &&
                       [ \"\$(docker exec '$BOOT_NAME' systemctl is-active notebox)\" = active ]"
            # Upgrade while it runs: the postinst restarts it (deb-systemd-invoke restart
            # returns once the new process has said READY=1).
            if apt_in_boot install /root/notebox-upgrade.deb >"$WORK/boot-upgrade.out" 2>&1; then
                new_pid=$(in_boot systemctl show -p MainPID --value notebox)
                check "systemd: an upgrade restarts the service (new PID, active)" \
                    sh -c "[ '$new_pid' != '$pid' ] && [ '$new_pid' != 0 ] && [ \"\$(docker exec '$BOOT_NAME' systemctl is-active notebox)\" = active ]"
            else
                sed 's/^/  | /' "$WORK/boot-upgrade.out"
                fail "systemd: apt-get install of the upgrade while the service runs"
            fi
            # Reboot: enabled means started at boot.
            if docker restart -t 30 "$BOOT_NAME" >/dev/null && wait_for_systemd &&
                [ "$(wait_for_notebox)" = active ]; then
                pass "systemd: after a reboot the service is running again"
            else
                fail "systemd: after a reboot the service is running again"
                boot_status
            fi
            pid=$(in_boot systemctl show -p MainPID --value notebox)
            apt_in_boot remove notebox >"$WORK/boot-remove.out" 2>&1 || true
            check "systemd: apt-get remove stops the service and keeps config and data" \
                sh -c "[ \"\$(docker exec '$BOOT_NAME' systemctl is-active notebox)\" != active ] &&
                       ! docker exec '$BOOT_NAME' test -d /proc/$pid &&
                       docker exec '$BOOT_NAME' test -f /etc/notebox/config.toml -a -f /var/lib/notebox/notebox.db"
            apt_in_boot purge notebox >"$WORK/boot-purge.out" 2>&1 || true
            check "systemd: apt-get purge deletes the config, keeps /var/lib/notebox" \
                sh -c "! docker exec '$BOOT_NAME' test -e /etc/notebox/config.toml &&
                       docker exec '$BOOT_NAME' test -f /var/lib/notebox/notebox.db"
        fi
    fi
    boot_cleanup
fi

# --------------------------------------------------------------------------------------
echo
if [ "$FAILED" -gt 0 ]; then
    echo "tests/package: $FAILED check(s) failed ($((SECONDS - START)) s)"
    exit 1
fi
echo "tests/package: all checks passed ($((SECONDS - START)) s)"
