#!/usr/bin/env bash
# The Debian package and the deployment files: builds the .deb (cargo-deb, from Cargo.toml's
# [package.metadata.deb]), lists it, installs it, runs the installed binary, verifies the
# installed systemd units (systemd-analyze verify) and validates deploy/kubernetes.yaml against
# the Kubernetes schemas (kubernetes-validate, from PyPI). Needs root for dpkg -i (CI is root);
# elsewhere the install steps are skipped, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
skipped=()

apt_install() {
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } ||
        return 1
}

if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
    apt_install dpkg-dev || true
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

echo "== cargo deb"
target=${CARGO_TARGET_DIR:-target}
rm -f "$target"/debian/quiesce_*.deb
cargo deb --quiet
deb=$(ls "$target"/debian/quiesce_*.deb)
echo "$deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb" | tee "$target/debian/contents.txt"
for path in ./usr/bin/quiesce ./usr/lib/systemd/system/quiesce.service ./usr/lib/systemd/system/quiesce.socket \
    ./usr/share/doc/quiesce/copyright ./usr/share/doc/quiesce/LICENSE-MIT ./usr/share/doc/quiesce/LICENSE-APACHE; do
    grep -q " $path\$" "$target/debian/contents.txt" || { echo "error: the package lacks $path" >&2; exit 1; }
done
# The maintainer scripts cargo-deb generates from the units: daemon-reload on install, stop and
# disable on removal. Without them a removed package would leave its socket listening.
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
for script in postinst prerm postrm; do
    grep -qx "\./$script" <<<"$control" || { echo "error: the package has no $script" >&2; exit 1; }
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst | grep -q 'daemon-reload' ||
    { echo "error: postinst does not reload systemd" >&2; exit 1; }
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./prerm | grep -q 'stop quiesce.socket quiesce.service' ||
    { echo "error: prerm does not stop the units" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null 2>&1; then
    echo "== dpkg -i"
    dpkg -i "$deb" >/dev/null
    echo "== the installed quiesce --version"
    installed=$(/usr/bin/quiesce --version)
    echo "$installed"
    [ "$installed" = "quiesce $version" ] || { echo "error: expected 'quiesce $version'" >&2; exit 1; }

    if ! command -v systemd-analyze >/dev/null 2>&1; then
        apt_install systemd || true
    fi
    # ExecReload runs /bin/kill, which verify checks exists: procps (not in slim images).
    if [ ! -x /bin/kill ]; then
        apt_install procps || true
    fi
    if command -v systemd-analyze >/dev/null 2>&1; then
        echo "== systemd-analyze verify (the installed units)"
        # verify prints its findings and exits non-zero on an error in the units.
        out=$(systemd-analyze verify /usr/lib/systemd/system/quiesce.socket /usr/lib/systemd/system/quiesce.service 2>&1) || {
            echo "$out" >&2
            exit 1
        }
        # Warnings about the units themselves count too (not those about the host's own units):
        # verify names them by path or by unit name.
        if echo "$out" | grep -E '^(/(usr/)?lib/systemd/system/)?quiesce\.(service|socket)' >&2; then
            echo "error: systemd-analyze verify complains about the units" >&2
            exit 1
        fi
    else
        skipped+=("systemd-analyze verify (no systemd-analyze)")
    fi
    echo "== dpkg --purge"
    dpkg --purge quiesce >/dev/null
    for path in /usr/bin/quiesce /usr/lib/systemd/system/quiesce.service /usr/lib/systemd/system/quiesce.socket; do
        [ ! -e "$path" ] || { echo "error: $path is still there after dpkg --purge" >&2; exit 1; }
    done
else
    skipped+=("dpkg -i, the installed binary and systemd-analyze verify (not root, or no dpkg)")
fi

echo "== kubernetes-validate deploy/kubernetes.yaml"
venv="$target/kubernetes-validate"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv && python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes.yaml

if ((${#skipped[@]})); then
    printf '\n!!!!!!!!!!\n!!! WARNING: %s: NOT CHECKED\n!!!!!!!!!!\n\n' "${skipped[@]}" >&2
fi
echo "ok"
