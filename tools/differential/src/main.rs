//! The differential driver: runs the same generated client scripts through two versions of
//! quiesce's in-memory connection (`quiesce::harness::MemoryConnection` serving the demo routes
//! `quiesce::app::App`) and reports any script whose outcome differs. Run it with
//! benches/differential.sh, which exports the base revision and builds this; see
//! benches/README.md.
//!
//! The interpreter of a script is the fuzz target's (fuzz/fuzz_targets/script.rs), compiled
//! twice, once against each crate, so the two sides cannot drift; so is `observe.rs`, which
//! writes each side's outcome down the same way.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod generate;

/// The crate at the base revision.
mod old {
    use quiesce_base as quiesce;
    include!("../../../fuzz/fuzz_targets/script.rs");
    include!("observe.rs");
}

/// The crate in this working tree.
mod new {
    use quiesce_new as quiesce;
    include!("../../../fuzz/fuzz_targets/script.rs");
    include!("observe.rs");
}

/// How a trace line starts when an interpreter's check failed on that side.
const PANIC: &str = "check failed: ";

/// Replaces the 29-byte value of each `Date:` header in `out` with `#`s: the one thing in the
/// output that depends on the wall clock.
fn mask_dates(out: &mut [u8]) {
    const FIELD: &[u8] = b"\r\nDate: ";
    let mut at = 0;
    while let Some(i) = out[at..].windows(FIELD.len()).position(|w| w == FIELD) {
        let start = at + i + FIELD.len();
        let end = (start + 29).min(out.len());
        out[start..end].fill(b'#');
        at = end;
    }
}

/// Both sides' traces of `data`, and whether they differ.
fn compare(data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (old::trace(data), new::trace(data))
}

fn differs(data: &[u8]) -> bool {
    let (a, b) = compare(data);
    a != b
}

struct Options {
    seed: u64,
    scripts: u64,
    threads: usize,
    /// Scripts (the first ones) run twice on each side, to check each side is deterministic.
    determinism: u64,
    seeds: Vec<Vec<u8>>,
    out: PathBuf,
    repro: Option<PathBuf>,
    index: Option<u64>,
    progress: Duration,
}

const USAGE: &str = "\
quiesce-differential [--seed S] [--scripts N] [--threads T] [--determinism K] [--seeds DIR]...
                     [--out DIR] [--progress SECS] [--repro FILE | --index I]

Runs N generated connection scripts (seed S) through the base crate (old) and this tree's (new)
on T threads; the first K are also run twice on each side, which must give the same outcome.
--seeds: a directory of fuzz inputs (connection_script layout) that some scripts start from.
--repro FILE: run one script file (fuzz layout) through both sides and show how they differ.
--index I: the same for script I of seed S (its bytes written to DIR/seedS-indexI.bin first).
A difference is written to DIR (default out/): the script (.bin, a connection_script fuzz
input too), both traces (.old.txt, .new.txt), and the same minimised (.min.*).
Exit status: 0 no difference, 1 a difference (or a side that is not deterministic), 2 usage.";

fn options() -> Options {
    let mut o = Options {
        seed: 1,
        scripts: 100_000,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        determinism: 2_000,
        seeds: Vec::new(),
        out: PathBuf::from("out"),
        repro: None,
        index: None,
        progress: Duration::from_secs(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{flag} needs a value\n\n{USAGE}");
                std::process::exit(2)
            })
        };
        let number = |text: String| -> u64 {
            text.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("not a number: {text}\n\n{USAGE}");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--seed" => o.seed = number(value()),
            "--scripts" => o.scripts = number(value()),
            "--threads" => o.threads = number(value()).max(1) as usize,
            "--determinism" => o.determinism = number(value()),
            "--seeds" => read_seeds(Path::new(&value()), &mut o.seeds),
            "--out" => o.out = PathBuf::from(value()),
            "--progress" => o.progress = Duration::from_secs(number(value()).max(1)),
            "--repro" => o.repro = Some(PathBuf::from(value())),
            "--index" => o.index = Some(number(value())),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => {
                eprintln!("unknown argument {flag}\n\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    o
}

/// The files of `dir`, in name order (a missing directory adds none).
fn read_seeds(dir: &Path, seeds: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_file()).collect();
    paths.sort();
    seeds.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
}

/// Trace lines counted, to show what the scripts reached (on the new side).
const TALLIED: [&str; 10] = [
    "send ok",
    "send refused",
    "stream ok",
    "stream refused",
    "try_send ok",
    "try_send full",
    "try_send gone",
    "finish ok",
    "step out=",
    "record ",
];

/// What the scripts reached: the statuses of the responses written, and the [`TALLIED`] lines.
struct Tally {
    statuses: Vec<u64>,
    lines: [u64; TALLIED.len()],
    closed_by_drain: u64,
    reset: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally { statuses: vec![0; 1000], lines: [0; TALLIED.len()], closed_by_drain: 0, reset: 0 }
    }

    fn add(&mut self, trace: &[u8]) {
        let split = trace.windows(8).position(|w| w == b"output:\n").unwrap_or(trace.len());
        let (lines, output) = trace.split_at(split);
        for line in lines.split(|&c| c == b'\n') {
            if let Some(i) = TALLIED.iter().position(|t| line.starts_with(t.as_bytes())) {
                self.lines[i] += 1;
            }
        }
        let last = lines.split(|&c| c == b'\n').rev().find(|l| l.starts_with(b"step "));
        if let Some(last) = last {
            let has = |text: &[u8]| last.windows(text.len()).any(|w| w == text);
            self.closed_by_drain += u64::from(has(b"by_drain=true"));
            self.reset += u64::from(has(b"reset=true"));
        }
        let output = output.get(8..).unwrap_or_default();
        for (i, w) in output.windows(12).enumerate() {
            if (i == 0 || output[i - 1] == b'\n')
                && w.starts_with(b"HTTP/1.1 ")
                && let Ok(Ok(code)) = std::str::from_utf8(&w[9..12]).map(str::parse::<usize>)
            {
                self.statuses[code.min(999)] += 1;
            }
        }
    }

    fn merge(&mut self, other: &Tally) {
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        for (a, b) in self.lines.iter_mut().zip(&other.lines) {
            *a += b;
        }
        self.closed_by_drain += other.closed_by_drain;
        self.reset += other.reset;
    }

    fn print(&self) {
        let statuses: Vec<String> =
            self.statuses.iter().enumerate().filter(|(_, n)| **n > 0).map(|(code, n)| format!("{code}: {n}")).collect();
        println!("responses written (new side), by status: {}", statuses.join(", "));
        let lines: Vec<String> =
            TALLIED.iter().zip(&self.lines).map(|(t, n)| format!("{}: {n}", t.trim_end_matches([' ', '=']))).collect();
        println!(
            "calls and steps: {}; connections ended by the drain: {}, with a reset: {}",
            lines.join(", "),
            self.closed_by_drain,
            self.reset
        );
    }
}

/// What the run found.
#[derive(Default)]
struct Found {
    /// Indices of differing scripts.
    differing: Vec<u64>,
    /// Indices whose outcome changed between two runs on the same side.
    unstable: Vec<(u64, &'static str)>,
    /// Scripts where an interpreter check failed, on old and on new.
    failed: [u64; 2],
    /// The first script that failed a check on each side.
    first_failed: [Option<u64>; 2],
    tally: Option<Tally>,
}

fn main() {
    // A failed check is written into the trace; the default hook would print each one.
    std::panic::set_hook(Box::new(|_| {}));
    let o = options();
    if let Some(path) = &o.repro {
        let data = std::fs::read(path).unwrap_or_else(|e| {
            eprintln!("{}: {e}", path.display());
            std::process::exit(2)
        });
        let differ = report(&o.out, "repro", &data);
        std::process::exit(i32::from(differ));
    }
    if let Some(index) = o.index {
        let data = generate::script(o.seed, index, &o.seeds);
        let name = format!("seed{}-index{index}", o.seed);
        write(&o.out.join(format!("{name}.bin")), &data);
        let (a, b) = compare(&data);
        write(&o.out.join(format!("{name}.old.txt")), &a);
        write(&o.out.join(format!("{name}.new.txt")), &b);
        let (a2, b2) = compare(&data);
        if (a2 != a) || (b2 != b) {
            println!("{name}: not deterministic: the second run's traces are {name}.{{old,new}}2.txt");
            write(&o.out.join(format!("{name}.old2.txt")), &a2);
            write(&o.out.join(format!("{name}.new2.txt")), &b2);
        }
        println!("{name}: script and traces in {}/{name}.{{bin,old.txt,new.txt}}", o.out.display());
        let differ = report(&o.out, &name, &data);
        std::process::exit(i32::from(differ));
    }

    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let differing = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let found = Mutex::new(Found::default());
    let started = Instant::now();
    const BATCH: u64 = 64;
    std::thread::scope(|s| {
        for _ in 0..o.threads {
            s.spawn(|| {
                let mut tally = Tally::new();
                loop {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    if from >= o.scripts {
                        break;
                    }
                    for index in from..(from + BATCH).min(o.scripts) {
                        let data = generate::script(o.seed, index, &o.seeds);
                        let (a, b) = compare(&data);
                        tally.add(&b);
                        let note = |f: &mut Found| {
                            for (side, trace) in [&a, &b].into_iter().enumerate() {
                                if failed(trace) {
                                    f.failed[side] += 1;
                                    f.first_failed[side] = Some(f.first_failed[side].map_or(index, |i| i.min(index)));
                                }
                            }
                        };
                        if failed(&a) || failed(&b) {
                            note(&mut found.lock().unwrap());
                        }
                        if a != b {
                            differing.fetch_add(1, Ordering::Relaxed);
                            found.lock().unwrap().differing.push(index);
                        }
                        if index < o.determinism {
                            if old::trace(&data) != a {
                                found.lock().unwrap().unstable.push((index, "old"));
                            }
                            if new::trace(&data) != b {
                                found.lock().unwrap().unstable.push((index, "new"));
                            }
                        }
                    }
                    done.fetch_add((from + BATCH).min(o.scripts) - from, Ordering::Relaxed);
                }
                let mut found = found.lock().unwrap();
                match &mut found.tally {
                    Some(all) => all.merge(&tally),
                    None => found.tally = Some(tally),
                }
            });
        }
        s.spawn(|| {
            let mut last = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= o.progress {
                    last = Instant::now();
                    progress(done.load(Ordering::Relaxed), o.scripts, differing.load(Ordering::Relaxed), started);
                }
            }
        });
        // The workers end when the scripts run out; then the progress line stops.
        while done.load(Ordering::Relaxed) < o.scripts {
            std::thread::sleep(Duration::from_millis(20));
        }
        finished.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();
    progress(o.scripts, o.scripts, differing.load(Ordering::Relaxed), started);

    let mut found = found.into_inner().unwrap();
    found.differing.sort_unstable();
    found.unstable.sort_unstable();
    println!(
        "seed {}: {} scripts on {} threads in {:.1} s ({:.0}/s): {} differing; first {} run twice on each side: {} not deterministic",
        o.seed,
        o.scripts,
        o.threads,
        elapsed.as_secs_f64(),
        o.scripts as f64 / elapsed.as_secs_f64().max(1e-9),
        found.differing.len(),
        o.determinism.min(o.scripts),
        found.unstable.len(),
    );
    if let Some(tally) = &found.tally {
        tally.print();
    }
    for (side, name) in ["old", "new"].iter().enumerate() {
        if let Some(first) = found.first_failed[side] {
            println!(
                "{name}: {} scripts failed one of the fuzz target's checks (the first: index {first}; reproduce with --repro)",
                found.failed[side]
            );
            let data = generate::script(o.seed, first, &o.seeds);
            let path = o.out.join(format!("check-{name}-seed{}-index{first}.bin", o.seed));
            write(&path, &data);
        }
    }
    for (index, side) in &found.unstable {
        println!("not deterministic on {side}: seed {} index {index}", o.seed);
    }
    if let Some(&first) = found.differing.first() {
        let data = generate::script(o.seed, first, &o.seeds);
        println!(
            "first differing script: seed {} index {first} (of {}: {:?}{})",
            o.seed,
            found.differing.len(),
            &found.differing[..found.differing.len().min(10)],
            if found.differing.len() > 10 { " ..." } else { "" }
        );
        report(&o.out, &format!("seed{}-index{first}", o.seed), &data);
    }
    if !found.differing.is_empty() || !found.unstable.is_empty() {
        std::process::exit(1);
    }
}

fn failed(trace: &[u8]) -> bool {
    trace.windows(PANIC.len()).any(|w| w == PANIC.as_bytes())
}

fn progress(done: u64, total: u64, differing: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{done}/{total} scripts ({:.0}%), {differing} differing, {:.0}/s, {:.0} s",
        done as f64 * 100.0 / total.max(1) as f64,
        done as f64 / secs.max(1e-9),
        secs
    );
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, data) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

/// Runs `data` on both sides; when they differ, writes the script and both traces to `dir`
/// as `name.*`, minimises the script and writes that too, and shows where the traces part.
/// Returns whether they differ.
fn report(dir: &Path, name: &str, data: &[u8]) -> bool {
    let (a, b) = compare(data);
    if a == b {
        println!("{name}: the same on both sides ({} bytes of trace)", a.len());
        return false;
    }
    write(&dir.join(format!("{name}.bin")), data);
    write(&dir.join(format!("{name}.old.txt")), &a);
    write(&dir.join(format!("{name}.new.txt")), &b);
    println!("{name}: written to {}/{name}.{{bin,old.txt,new.txt}}", dir.display());
    show(data, &a, &b);
    let small = minimise(data);
    if small.len() < data.len() {
        let (a, b) = compare(&small);
        write(&dir.join(format!("{name}.min.bin")), &small);
        write(&dir.join(format!("{name}.min.old.txt")), &a);
        write(&dir.join(format!("{name}.min.new.txt")), &b);
        println!("minimised to {} bytes: {}/{name}.min.{{bin,old.txt,new.txt}}", small.len(), dir.display());
        show(&small, &a, &b);
    }
    true
}

/// The script (flags, ops, client bytes) and the first line where the traces part.
fn show(data: &[u8], a: &[u8], b: &[u8]) {
    if let [flags, n, rest @ ..] = data {
        let ops = (usize::from(*n) * 2).min(rest.len() & !1);
        let listed: Vec<String> = rest[..ops].chunks(2).map(|op| format!("{}:{}", op[0] % 12, op[1])).collect();
        println!("  flags {flags}, ops (code:arg) [{}]", listed.join(" "));
        println!("  client bytes: \"{}\"", rest[ops..].escape_ascii());
    }
    let line = |t: &[u8], i: usize| -> String {
        t.split(|&c| c == b'\n').nth(i).map_or("(end)".into(), |l| l.escape_ascii().to_string())
    };
    let (la, lb): (Vec<&[u8]>, Vec<&[u8]>) = (a.split(|&c| c == b'\n').collect(), b.split(|&c| c == b'\n').collect());
    let at = la.iter().zip(&lb).position(|(x, y)| x != y).unwrap_or(la.len().min(lb.len()));
    println!("  traces part at line {}:", at + 1);
    if at > 0 {
        println!("    both: {}", line(a, at - 1));
    }
    println!("    old:  {}", line(a, at));
    println!("    new:  {}", line(b, at));
    // And where the bytes written part, if they do.
    let output = |t: &[u8]| -> Vec<u8> {
        let at = t.windows(8).position(|w| w == b"output:\n").map_or(t.len(), |i| i + 8);
        t[at..].to_vec()
    };
    let (oa, ob) = (output(a), output(b));
    if oa != ob {
        let at = oa.iter().zip(&ob).position(|(x, y)| x != y).unwrap_or(oa.len().min(ob.len()));
        let from = at.saturating_sub(40);
        println!("  output parts at byte {at}:");
        println!("    old:  \"{}\"", oa[from..(at + 40).min(oa.len())].escape_ascii());
        println!("    new:  \"{}\"", ob[from..(at + 40).min(ob.len())].escape_ascii());
    }
}

/// A smaller script that still differs: ops taken out one at a time, then pieces of the client
/// bytes, halving the piece size down to one byte, within a budget of runs.
fn minimise(data: &[u8]) -> Vec<u8> {
    let [flags, n, rest @ ..] = data else { return data.to_vec() };
    let op_bytes = (usize::from(*n) * 2).min(rest.len() & !1);
    let mut ops: Vec<[u8; 2]> = rest[..op_bytes].chunks(2).map(|c| [c[0], c[1]]).collect();
    let mut bytes = rest[op_bytes..].to_vec();
    let build = |ops: &[[u8; 2]], bytes: &[u8]| -> Vec<u8> {
        let mut out = vec![*flags, ops.len() as u8];
        out.extend(ops.iter().flatten());
        out.extend_from_slice(bytes);
        out
    };
    let mut budget = 4_000;
    let mut i = ops.len();
    while i > 0 && budget > 0 {
        i -= 1;
        let mut fewer = ops.clone();
        fewer.remove(i);
        budget -= 1;
        if differs(&build(&fewer, &bytes)) {
            ops = fewer;
        }
    }
    let mut piece = bytes.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < bytes.len() && budget > 0 {
            let mut fewer = bytes.clone();
            fewer.drain(at..(at + piece).min(bytes.len()));
            budget -= 1;
            if differs(&build(&ops, &fewer)) {
                bytes = fewer;
            } else {
                at += piece;
            }
        }
        if piece == 1 || budget == 0 {
            break;
        }
        piece = piece.div_ceil(2);
    }
    build(&ops, &bytes)
}
