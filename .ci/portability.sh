#!/usr/bin/env bash
# quiesce runs on Linux; macOS and FreeBSD must compile, and so must the oldest Rust it claims
# (Cargo.toml's rust-version). A target or toolchain that cannot be installed here is reported
# loudly and skipped; a compile error fails.
set -euo pipefail
cd "$(dirname "$0")/.."

skipped=()
for target in x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd; do
    if rustup target add "$target" >/dev/null 2>&1; then
        # Without the tls feature: aws-lc-sys compiles C for the target, which needs that
        # target's C compiler and headers (not here). rustls and aws-lc-rs support both systems;
        # quiesce's TLS code is the same Rust on every Unix (mio, socket2).
        echo "== cargo check --all-targets --target $target --no-default-features --features cli,json"
        cargo check --all-targets --target "$target" --no-default-features --features cli,json --quiet
    else
        skipped+=("target $target")
    fi
done

msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
if [ -z "$msrv" ]; then
    echo "error: Cargo.toml declares no rust-version" >&2
    exit 1
fi
if rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
    echo "== cargo +$msrv build --all-targets --features json (the declared rust-version)"
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo +"$msrv" build --all-targets --features json --locked --quiet
else
    skipped+=("toolchain $msrv")
fi

if ((${#skipped[@]})); then
    printf '\n!!!!!!!!!!\n!!! WARNING: could not install %s: NOT CHECKED\n!!!!!!!!!!\n\n' "${skipped[@]}" >&2
fi
echo "ok"
