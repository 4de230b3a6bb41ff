#!/usr/bin/env bash
# The package test: builds the Debian package, installs it on this machine
# and checks what README's "packaging/" section promises, printing each check.
#
#   sudo packaging/test-package.sh
#
# Run it as root on a Debian system that does not have banalytics-box
# installed (it installs, upgrades, removes and purges the package; it
# refuses to start when the package or /var/lib/banalytics is there). It
# installs what it needs when missing: cargo-deb (`cargo install`), Debian's
# lintian, systemd (for systemd-analyze) and adduser. systemd need not run:
# the unit's ExecStart= is run the way the installed unit says (its User=,
# Group=, Environment=, WorkingDirectory=, restarted as Restart=,
# RestartForceExitStatus= and RestartPreventExitStatus= say), against the
# reference portal (tests/portal) on 127.0.0.1, for a first install and one
# upgrade of a module set. The release build in target/ is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STARTED=$(date +%s)

PACKAGE=banalytics-box
HOME_DIR=/var/lib/banalytics
GROUP_ID=com.example.packagetest
ARTIFACT=hello

passed=0
ok() {
    passed=$((passed + 1))
    echo "ok $passed - $*"
}
fail() {
    echo "not ok - $*"
    echo "$passed passed, 1 failed"
    exit 1
}
note() { echo "# $*"; }

[ "$(id -u)" -eq 0 ] || { echo "test-package.sh: run it as root (sudo $0)" >&2; exit 2; }
if dpkg-query -W -f '${Status}' "$PACKAGE" 2>/dev/null | grep -q 'installed\|config-files'; then
    echo "test-package.sh: $PACKAGE is installed here; purge it first (dpkg -P $PACKAGE): this test installs and purges it" >&2
    exit 2
fi
if [ -e "$HOME_DIR" ]; then
    echo "test-package.sh: $HOME_DIR exists; this test would purge it" >&2
    exit 2
fi

WORK=$(mktemp -d /tmp/banalytics-package-test.XXXXXX)
chmod 0755 "$WORK"
PORTAL_PID=""
RUNNER_PID=""
cleanup() {
    set +e
    stop_box 2>/dev/null
    if [ -n "$PORTAL_PID" ]; then kill "$PORTAL_PID" 2>/dev/null; wait "$PORTAL_PID" 2>/dev/null; fi
    if dpkg-query -W -f '${Status}' "$PACKAGE" 2>/dev/null | grep -q 'installed\|config-files'; then
        dpkg -P "$PACKAGE" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------ tools
missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
command -v sudo >/dev/null || missing+=(sudo)
if [ ${#missing[@]} -gt 0 ]; then
    note "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! cargo deb --version >/dev/null 2>&1; then
    note "installing cargo-deb"
    cargo install cargo-deb --locked
fi

# ------------------------------------------------------------ build
# DEB_PROFILE=dev packs the debug build that `cargo test` already made
# (CI does, to spare a release build of minutes); the default is the
# `dist` build a box receives (Cargo.toml: fat LTO, one codegen unit;
# cargo-deb splits its line tables into the dbgsym package).
profile=(--profile "${DEB_PROFILE:-dist}")
t0=$(date +%s)
mkdir -p "$WORK/deb1" "$WORK/deb2"
cargo deb -p banalytics-runtime "${profile[@]}" --output "$WORK/deb1/" >"$WORK/cargo-deb.log" 2>&1 \
    || { cat "$WORK/cargo-deb.log"; fail "cargo deb -p banalytics-runtime"; }
DEB1=$(ls "$WORK"/deb1/*.deb)
V1=$(dpkg-deb -f "$DEB1" Version)
V2="$V1.1"
# The newer version: the same build, packed again (--fast: a lighter
# compression, 8 s instead of 40).
cargo deb -p banalytics-runtime "${profile[@]}" --no-build --fast --deb-version "$V2" --output "$WORK/deb2/" >>"$WORK/cargo-deb.log" 2>&1 \
    || { cat "$WORK/cargo-deb.log"; fail "cargo deb --no-build --deb-version $V2"; }
DEB2=$(ls "$WORK"/deb2/*.deb)
ok "built $(basename "$DEB1") and $(basename "$DEB2") ($(( $(date +%s) - t0 )) s)"

PORTAL=""
for p in "$ROOT"/target/release/banalytics-portal "$ROOT"/target/debug/banalytics-portal; do
    if [ -x "$p" ] && { [ -z "$PORTAL" ] || [ "$p" -nt "$PORTAL" ]; }; then PORTAL=$p; fi
done
if [ -z "$PORTAL" ]; then
    cargo build -q -p banalytics-portal
    PORTAL="$ROOT/target/debug/banalytics-portal"
fi

# ------------------------------------------------------------ lintian
lintian --tag-display-limit 0 "$DEB1" >"$WORK/lintian.txt" 2>&1 || true
if grep -q '^E: ' "$WORK/lintian.txt"; then
    cat "$WORK/lintian.txt"
    fail "lintian reports errors"
fi
ok "lintian: no error ($(grep -c '^W: ' "$WORK/lintian.txt" || true) warnings)"
sed -n 's/^W: /#   warning: /p' "$WORK/lintian.txt"

# ------------------------------------------------------------ install
dpkg -i "$DEB1" >"$WORK/dpkg-i.log" 2>&1 || { cat "$WORK/dpkg-i.log"; fail "dpkg -i $(basename "$DEB1")"; }
ok "dpkg -i $(basename "$DEB1")"

UNIT=$(dpkg -L "$PACKAGE" | grep '/systemd/system/banalytics-box.service$' || true)
for f in /usr/bin/banalytics-box "$UNIT" \
    /usr/share/banalytics-box/box.toml.example \
    /usr/share/doc/banalytics-box/README.md /usr/share/doc/banalytics-box/SECURITY.md \
    /usr/share/doc/banalytics-box/copyright /usr/share/doc/banalytics-box/changelog.Debian.gz \
    /etc/profile.d/banalytics-box.sh /etc/sudoers.d/banalytics-box; do
    [ -n "$f" ] && dpkg -L "$PACKAGE" | grep -qx "$f" && [ -e "$f" ] || fail "dpkg -L lists ${f:-the unit}"
done
ok "dpkg -L lists /usr/bin/banalytics-box, $UNIT, the example, the docs, the profile.d and sudoers.d snippets"

getent passwd banalytics >/dev/null || fail "postinst made the user banalytics"
[ "$(getent passwd banalytics | cut -d: -f6)" = "$HOME_DIR" ] || fail "banalytics's home is $HOME_DIR"
[ "$(stat -c '%U:%G %a' "$HOME_DIR")" = "banalytics:banalytics 700" ] \
    || fail "$HOME_DIR is banalytics:banalytics 0700 (it is $(stat -c '%U:%G %a' "$HOME_DIR"))"
cmp -s /usr/share/banalytics-box/box.toml.example "$HOME_DIR/config/box.toml" \
    || fail "the first install copied the example to config/box.toml"
[ "$(stat -c '%U %a' "$HOME_DIR/config/box.toml")" = "banalytics 600" ] || fail "config/box.toml is banalytics's, 0600"
ok "postinst: user and group banalytics, home $HOME_DIR (0700), config/box.toml from the example"

# ------------------------------------------------------------ the unit
systemd-analyze verify "$UNIT" >"$WORK/verify.txt" 2>&1 || { cat "$WORK/verify.txt"; fail "systemd-analyze verify $UNIT"; }
[ ! -s "$WORK/verify.txt" ] || { cat "$WORK/verify.txt"; fail "systemd-analyze verify $UNIT is silent"; }
ok "systemd-analyze verify $UNIT"
systemd-analyze security --offline=yes --no-pager "$UNIT" >"$WORK/security.txt" 2>&1 \
    || { tail -n 5 "$WORK/security.txt"; fail "systemd-analyze security --offline=yes"; }
SCORE=$(grep -o 'Overall exposure level.*' "$WORK/security.txt" || true)
[ -n "$SCORE" ] || fail "systemd-analyze security prints a score"
ok "systemd-analyze security --offline=yes: $SCORE"

unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }
U_USER=$(unit_value User)
U_GROUP=$(unit_value Group)
U_DIR=$(unit_value WorkingDirectory)
U_ENV=$(unit_value Environment)
U_EXEC=$(unit_value ExecStart)
U_RESTART=$(unit_value Restart)
U_FORCE=" $(unit_value RestartForceExitStatus) "
U_PREVENT=" $(unit_value RestartPreventExitStatus) "
U_SUCCESS=" 0 $(unit_value SuccessExitStatus) "
U_RESTART_SEC=$(unit_value RestartSec)
note "the unit runs: User=$U_USER Group=$U_GROUP WorkingDirectory=$U_DIR Environment=$U_ENV ExecStart=$U_EXEC Restart=$U_RESTART"
[ "$U_RESTART" = on-failure ] || fail "the unit says Restart=on-failure (this runner knows only that)"

# A service manager of the unit's rules: runs ExecStart= as the unit's user,
# with its environment and working directory; restarts it on a forced exit
# status, and on a failure (as Restart=on-failure) unless the status is one
# that prevents it. Every exit status goes to $WORK/exits.
run_unit() {
    : >"$WORK/exits"
    rm -f "$WORK/stop"
    (
        while :; do
            # shellcheck disable=SC2086 # ExecStart= and Environment= are word lists
            (cd "$U_DIR" && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $U_ENV \
                runuser -u "$U_USER" -g "$U_GROUP" -- $U_EXEC) >>"$WORK/box.log" 2>&1 &
            echo $! >"$WORK/box.pid"
            status=0
            wait $! || status=$?
            echo "$status" >>"$WORK/exits"
            [ -e "$WORK/stop" ] && break
            case "$U_FORCE" in *" $status "*) continue ;; esac
            case "$U_PREVENT" in *" $status "*) break ;; esac
            case "$U_SUCCESS" in *" $status "*) break ;; esac
            sleep "${U_RESTART_SEC:-0}"
        done
    ) &
    RUNNER_PID=$!
}
# Stops the box as systemd would (SIGTERM to the main process: the box, the
# child of runuser; runuser waits for it and exits with its status).
stop_box() {
    [ -n "$RUNNER_PID" ] || return 0
    touch "$WORK/stop"
    local signalled="" box i
    for i in $(seq 600); do
        kill -0 "$RUNNER_PID" 2>/dev/null || break
        box=$(pgrep -P "$(cat "$WORK/box.pid")" || true)
        if [ -n "$box" ] && [ "$box" != "$signalled" ]; then
            kill -TERM "$box" 2>/dev/null || true
            signalled=$box
        fi
        sleep 0.1
    done
    wait "$RUNNER_PID" 2>/dev/null || true
    RUNNER_PID=""
}

# ------------------------------------------------------------ the portal
PORTAL_DATA="$WORK/portal"
export BANALYTICS_PORTAL_TOKEN=package-test-admin-token
"$PORTAL" --data "$PORTAL_DATA" serve --listen 127.0.0.1:0 >"$WORK/portal.log" 2>&1 &
PORTAL_PID=$!
for _ in $(seq 100); do [ -s "$PORTAL_DATA/portal.addr" ] && break; sleep 0.1; done
[ -s "$PORTAL_DATA/portal.addr" ] || { cat "$WORK/portal.log"; fail "the reference portal started"; }
portal() { "$PORTAL" --data "$PORTAL_DATA" "$@"; }
ADDR=$(sed -n 's|^[a-z]*://||p' "$PORTAL_DATA/portal.addr" | head -n 1)
[ -n "$ADDR" ] || ADDR=$(head -n 1 "$PORTAL_DATA/portal.addr")
portal environments add --name package-test >"$WORK/registration" 2>>"$WORK/portal.log" || fail "banalytics-portal environments add"
ENV_UUID=$(sed -n 's/^environmentUuid=//p' "$WORK/registration")
# Publishes version $1 of the test's module and assigns it to the box.
publish_and_assign() {
    echo "module $1 of the package test" >"$WORK/$ARTIFACT-$1.jar"
    portal publish --group "$GROUP_ID" --artifact "$ARTIFACT" --version "$1" --type component \
        --file "$WORK/$ARTIFACT-$1.jar" >/dev/null || fail "banalytics-portal publish $1"
    portal assign --env "$ENV_UUID" "$GROUP_ID:$ARTIFACT:$1" >/dev/null || fail "banalytics-portal assign $1"
}
publish_and_assign 1.0
ok "reference portal on $ADDR: environment $ENV_UUID registered, $GROUP_ID:$ARTIFACT:1.0 published and assigned"

# The operator's part: the registration file, and box.toml's portal and
# upgrade-center tables uncommented from the installed example.
install -o banalytics -g banalytics -m 0600 "$WORK/registration" "$HOME_DIR/config/device-registration.properties"
sed -e 's|^#\[components.portal\]|[components.portal]|' \
    -e 's|^#kind = "portal-integration"|kind = "portal-integration"|' \
    -e "s|^#portal_url = .*|portal_url = \"ws://$ADDR\"|" \
    -e 's|^#\[components.upgrade-center\]|[components.upgrade-center]|' \
    -e 's|^#kind = "software-upgrade-center"|kind = "software-upgrade-center"|' \
    -e "s|^#repository_url = .*|repository_url = \"http://$ADDR/repo\"|" \
    -e 's|^#health_grace_s = .*|health_grace_s = 1|' \
    "$HOME_DIR/config/box.toml" >"$WORK/box.toml"
install -o banalytics -g banalytics -m 0600 "$WORK/box.toml" "$HOME_DIR/config/box.toml"

# `status` as an operator runs it: their shell has /etc/profile.d's
# BANALYTICS_HOME; sudo keeps it (/etc/sudoers.d/banalytics-box).
as_operator() {
    # shellcheck disable=SC1091
    (. /etc/profile.d/banalytics-box.sh && cd / && "$@")
}
box_status() { as_operator sudo -u banalytics banalytics-box status; }
STATUS_CMD="sudo -u banalytics banalytics-box status"

# Waits until `status` shows the host running the set $1, committed.
wait_for_set() {
    local i
    for i in $(seq 600); do
        if box_status >"$WORK/status.txt" 2>&1 \
            && grep -qx 'host: running' "$WORK/status.txt" \
            && grep -qx "modules: $1" "$WORK/status.txt" \
            && ! grep -q 'on probation' "$WORK/status.txt" \
            && ! grep -q '^staged:' "$WORK/status.txt"; then
            return 0
        fi
        sleep 0.2
    done
    cat "$WORK/status.txt"
    tail -n 40 "$WORK/box.log"
    return 1
}

# ------------------------------------------------------------ first install
t0=$(date +%s)
run_unit
wait_for_set "$GROUP_ID:$ARTIFACT:1.0" || fail "the box installed its first set"
ok "first install: $GROUP_ID:$ARTIFACT:1.0 committed ($(( $(date +%s) - t0 )) s; exit statuses so far: $(paste -sd ' ' "$WORK/exits"))"

# ------------------------------------------------------------ one upgrade
t0=$(date +%s)
publish_and_assign 2.0
portal sync --env "$ENV_UUID" >/dev/null || fail "banalytics-portal sync"
wait_for_set "$GROUP_ID:$ARTIFACT:2.0" || fail "the box upgraded to 2.0"
grep -qx 75 "$WORK/exits" || fail "the upgrade restarted the box through exit 75"
ok "upgrade: $GROUP_ID:$ARTIFACT:2.0 committed, restarted on exit 75 as the unit says ($(( $(date +%s) - t0 )) s; exit statuses: $(paste -sd ' ' "$WORK/exits"))"

box_status >"$WORK/status.txt" 2>&1 || { cat "$WORK/status.txt"; fail "$STATUS_CMD"; }
grep -qx "modules: $GROUP_ID:$ARTIFACT:2.0" "$WORK/status.txt" || { cat "$WORK/status.txt"; fail "$STATUS_CMD shows the set"; }
ok "$STATUS_CMD shows the set:"
sed 's/^/#   /' "$WORK/status.txt"

# Another user is refused, and told what to run instead.
if (. /etc/profile.d/banalytics-box.sh && cd / && runuser -u nobody -- banalytics-box status) >"$WORK/denied.txt" 2>&1; then
    fail "status as nobody is refused"
fi
grep -q 'run `sudo -u banalytics banalytics-box status`' "$WORK/denied.txt" \
    || { cat "$WORK/denied.txt"; fail "the refusal names sudo -u banalytics banalytics-box status"; }
ok "status as another user: $(cat "$WORK/denied.txt")"

stop_box
[ "$(tail -n 1 "$WORK/exits")" = 0 ] || fail "SIGTERM stops the box with status 0 (got $(tail -n 1 "$WORK/exits"))"
ok "SIGTERM stopped the box (status 0: not restarted)"

# ------------------------------------------------------------ package upgrade
echo '# edited by the package test' >>"$HOME_DIR/config/box.toml"
cp "$HOME_DIR/config/box.toml" "$WORK/box.toml.edited"
dpkg -i "$DEB2" >"$WORK/dpkg-i2.log" 2>&1 || { cat "$WORK/dpkg-i2.log"; fail "dpkg -i $(basename "$DEB2") over $V1"; }
[ "$(dpkg-query -W -f '${Version}' "$PACKAGE")" = "$V2" ] || fail "$V2 is installed"
cmp -s "$WORK/box.toml.edited" "$HOME_DIR/config/box.toml" || fail "the upgrade kept the edited config/box.toml"
[ "$(stat -c '%U:%G %a' "$HOME_DIR")" = "banalytics:banalytics 700" ] || fail "the upgrade kept the home's owner and mode"
cmp -s /usr/share/banalytics-box/box.toml.example "$HOME_DIR/config/box.toml.example" \
    || fail "the upgrade put the new example beside config/box.toml"
ok "dpkg -i $(basename "$DEB2"): $V1 -> $V2, the edited config/box.toml kept, the new example beside it"
run_unit
wait_for_set "$GROUP_ID:$ARTIFACT:2.0" || fail "the box starts after the package upgrade with its set"
stop_box
ok "after the package upgrade the box starts again with $GROUP_ID:$ARTIFACT:2.0"

# ------------------------------------------------------------ remove, purge
dpkg -r "$PACKAGE" >"$WORK/dpkg-r.log" 2>&1 || { cat "$WORK/dpkg-r.log"; fail "dpkg -r"; }
[ ! -e /usr/bin/banalytics-box ] || fail "dpkg -r removes /usr/bin/banalytics-box"
[ -d "$HOME_DIR/modules" ] && cmp -s "$WORK/box.toml.edited" "$HOME_DIR/config/box.toml" \
    && [ -s "$HOME_DIR/config/device-registration.properties" ] || fail "dpkg -r keeps $HOME_DIR"
getent passwd banalytics >/dev/null || fail "dpkg -r keeps the user banalytics"
ok "dpkg -r: the program is gone, $HOME_DIR (modules, config, registration) and the user are kept"
dpkg -P "$PACKAGE" >"$WORK/dpkg-p.log" 2>&1 || { cat "$WORK/dpkg-p.log"; fail "dpkg -P"; }
[ ! -e "$HOME_DIR" ] || fail "dpkg -P removes $HOME_DIR"
! getent passwd banalytics >/dev/null || fail "dpkg -P removes the user banalytics"
! getent group banalytics >/dev/null || fail "dpkg -P removes the group banalytics"
[ ! -e /etc/profile.d/banalytics-box.sh ] || fail "dpkg -P removes /etc/profile.d/banalytics-box.sh"
ok "dpkg -P: $HOME_DIR, the user and group banalytics and the conffiles are gone"

echo "# package test took $(( $(date +%s) - STARTED )) s"
echo "$passed passed, 0 failed"
