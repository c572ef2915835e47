#!/usr/bin/env bash
# The crate's documentation and its library-only build, as a user of the crate sees them.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo doc (warnings are errors), with the features docs.rs builds with (json, tls)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --no-default-features --features json,tls --quiet
# rustdoc leaves a link it cannot resolve to another crate as literal brackets, silently.
target=${CARGO_TARGET_DIR:-target}
[ -f "$target/doc/quiesce/index.html" ] || { echo "error: no rendered docs in $target/doc/quiesce" >&2; exit 1; }
if grep -rlE '\[<code>[^<]*</code>\]' "$target/doc/quiesce" >/dev/null; then
    echo "error: unresolved doc links (literal [\`...\`] on the rendered pages):" >&2
    grep -rhoE '\[<code>[^<]*</code>\]' "$target/doc/quiesce" | sort -u >&2
    exit 1
fi

# The binary's demo routes (feature demo) and the in-memory harness (feature harness) are not
# part of the library's surface.
# (The crate's index, rewritten by every build; a module's directory may be left from another.)
for module in app harness; do
    if grep -q "href=\"$module/index.html\"" "$target/doc/quiesce/index.html"; then
        echo "error: quiesce::$module is in the library's documentation without its feature" >&2
        exit 1
    fi
done

echo "== the library alone (default-features = false) compiles the core crates only"
cargo check --lib --no-default-features --quiet
tree=$(cargo tree --no-default-features --edges normal --prefix none --format '{p}')
grep -q '^mio ' <<<"$tree" || { echo "error: cargo tree gave no dependency list" >&2; exit 1; }
# env_logger, itoa and lexopt are the binary's; serde and serde_json come with the `json` feature
# only, rustls and its crypto with the `tls` feature only.
extra=$(awk '{print $1}' <<<"$tree" | grep -E '^(env_logger|itoa|lexopt|serde|serde_json|serde_core|rustls|aws-lc-rs|aws-lc-sys)$' || true)
if [ -n "$extra" ]; then
    echo "error: the library without features depends on what it does not need: $extra" >&2
    exit 1
fi
echo "ok"
