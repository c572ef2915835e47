#!/usr/bin/env bash
# Differential run: the same generated connection scripts through the in-memory connection of a
# base revision (old) and of this working tree (new); any script whose outcome differs is
# reported (and written to tools/differential/out/), and the exit status is 1.
#
#   BASE=rev SCRIPTS=N SEED=S THREADS=T benches/differential.sh [extra driver flags]
#
# BASE defaults to 31f871a: the request path's reshaping began at 7fd4840, and 31f871a made one
# intended change of behaviour since (the server's own errors to HEAD lost their body), which a
# base before it shows in about 3 % of the scripts; 7fd4840 with that fix alone against 27ff3d0
# gave 0 differing over 2,000,000 (benches/results/concurrent.md). SCRIPTS defaults to 2,000,000,
# SEED to 1, THREADS to the number of CPUs. Extra flags go to the driver (`--help`), e.g.
# `--seeds fuzz/corpus/connection_script` to start some scripts from a local fuzz corpus too (not
# by default: the corpus is not in the repository, and a seed must give the same scripts
# everywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-31f871a79f1c0c47bae6630b1eb86ee3cda18795}
SCRIPTS=${SCRIPTS:-2000000}
SEED=${SEED:-1}
THREADS=${THREADS:-$(nproc)}
tool=tools/differential
base=$tool/base
rev=$(git rev-parse --verify "$BASE^{commit}")

# The base's package, as a dependency the driver can have beside this tree's: renamed
# quiesce_base (cargo takes no two path packages named quiesce), without its targets,
# dev-dependencies (among them the crate itself), profiles and metadata, and with features
# `demo` and `harness` (no-ops where the harness and demo routes were always public).
# Extracted with fresh mtimes (tar -m): cargo decides what to rebuild by mtime, and a base
# older than the last one would otherwise look built.
if [[ "$(cat "$base/.rev" 2>/dev/null)" != "$rev" ]]; then
    rm -rf "$base"
    mkdir -p "$base"
    paths=(Cargo.toml src README.md)
    if git cat-file -e "$rev:build.rs" 2>/dev/null; then paths+=(build.rs); fi
    git archive "$rev" -- "${paths[@]}" | tar -x -m -C "$base"
    awk '
        function features_end() {
            if (!in_features) return
            if (!has_demo) print "demo = []"
            if (!has_harness) print "harness = []"
            in_features = 0; saw_features = 1
        }
        /^\[/ {
            features_end()
            section = $0
            drop = section ~ /^\[\[(bin|bench|test|example)\]\]/ || section ~ /^\[(dev-dependencies|profile|package\.metadata|badges|lints|workspace)/
            in_features = section == "[features]"
            if (!drop) print
            if (section == "[package]") {
                print "autobins = false"; print "autoexamples = false"
                print "autotests = false"; print "autobenches = false"
            }
            next
        }
        drop { next }
        section == "[package]" && /^name *=/ { print "name = \"quiesce_base\""; next }
        section == "[package]" && /^(autobins|autoexamples|autotests|autobenches|default-run|build) *=/ { next }
        in_features && /^demo *=/ { has_demo = 1 }
        in_features && /^harness *=/ { has_harness = 1 }
        { print }
        END {
            features_end()
            if (!saw_features) { print "[features]"; print "demo = []"; print "harness = []" }
        }
    ' "$base/Cargo.toml" >"$base/Cargo.toml.new"
    mv "$base/Cargo.toml.new" "$base/Cargo.toml"
    echo "$rev" >"$base/.rev"
fi

cargo build --release --manifest-path "$tool/Cargo.toml"
target=${CARGO_TARGET_DIR:-$tool/target}
echo "base $rev ($(git log -1 --format=%s "$rev" | cut -c1-60)), new: the working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' + changes')" >&2
exec "$target/release/quiesce-differential" --seed "$SEED" --scripts "$SCRIPTS" --threads "$THREADS" \
    --seeds fuzz/seeds/connection_script --seeds fuzz/regressions/connection_script \
    --out "$tool/out" "$@"
