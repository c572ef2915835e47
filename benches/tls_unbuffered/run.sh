#!/bin/sh
# Reproduces every number in README.md (one heavy process at a time).
set -e
cd "$(dirname "$0")"
[ -f cert.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout key.pem -out cert.pem -days 2 -subj /CN=localhost
cargo build --release -j1
mkdir -p out
N=20000
for v in buffered unbuffered buffered_q unbuffered_split; do
    # instructions: collection on only inside the variant's per-round server function
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=srv_round_$v \
        --callgrind-out-file=out/cg.$v.$N.out ./target/release/bench $v $N
    callgrind_annotate --auto=no --inclusive=no  out/cg.$v.$N.out > out/annot.$v.self.txt
    callgrind_annotate --auto=no --inclusive=yes out/cg.$v.$N.out > out/annot.$v.incl.txt
    python3 percall.py out/cg.$v.$N.out $N 40 > out/percall.$v.txt
    # call counts: callgrind counts calls even while collection is off, so separate the
    # contexts and keep only the arcs below srv_round_*
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=srv_round_$v --separate-callers=40 \
        --callgrind-out-file=out/cg.$v.ctx.out ./target/release/bench $v $N
    python3 calls.py out/cg.$v.ctx.out $N > out/calls.$v.txt
    # allocations: counting global allocator, server-side round only
    ./target/release/bench_count $v $N > out/allocs.$v.txt
done
python3 callees.py out/cg.buffered.$N.out $N srv_round_buffered > out/callees.txt
python3 callees.py out/cg.unbuffered.$N.out $N srv_round_unbuffered bench::harness::pump >> out/callees.txt
./target/release/bench probes > out/probes.txt
