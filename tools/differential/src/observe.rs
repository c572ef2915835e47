// Compiled twice (src/main.rs), like script.rs beside which it is included: once in `old`, once
// in `new`, so both sides write their outcome down the same way.

/// Runs the script `data` on this side's crate and writes down everything it shows, as text
/// the two sides can be compared by (and a person can read): after every step, how much the
/// server had written, its `ConnState`, whether it closed (and how), its next deadline; every
/// responder and stream call's result; what the handler answered; the access records; a failed
/// check of the interpreter (its panic message); and at the end every byte written, with the
/// wall-clock `Date:` values masked (the only bytes that depend on when the script ran). The
/// output only grows, so its length after each step and the bytes at the end are every byte
/// written up to each step.
pub fn trace(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut trace = Vec::with_capacity(4096);
    let mut out = Vec::new();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(data, &mut |seen| match seen {
            Seen::Step(conn) => {
                let output = conn.output();
                if output.len() < out.len() || output[..out.len()] != out[..] {
                    let _ = writeln!(trace, "the output changed what it had written");
                    out.clear();
                }
                out.extend_from_slice(&output[out.len()..]);
                let _ = writeln!(
                    trace,
                    "step out={} state={:?} write_shut={} reset={} by_drain={} deadline={:?}",
                    output.len(),
                    conn.state(),
                    conn.write_shut(),
                    conn.was_reset(),
                    conn.closed_by_drain(),
                    conn.until_deadline(),
                );
            }
            Seen::Call(result) => {
                let _ = writeln!(trace, "{result}");
            }
            Seen::End { answers, records } => {
                for a in answers {
                    let _ = write!(trace, "answer status={} head={} http10={} ", a.status, a.head, a.http10);
                    let _ = match &a.body {
                        Body::Fixed(body) => writeln!(trace, "body={:?}", body.escape_ascii().to_string()),
                        Body::Pending => writeln!(trace, "pending"),
                        Body::Streamed(sent, end) => writeln!(trace, "streamed {} bytes, {end:?}", sent.len()),
                    };
                }
                for r in records.unwrap_or_default() {
                    let _ = writeln!(trace, "record {r:?}");
                }
            }
        })
    }));
    if let Err(panic) = ran {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(not a string)");
        let _ = writeln!(trace, "{}{message}", crate::PANIC);
    }
    crate::mask_dates(&mut out);
    trace.extend_from_slice(b"output:\n");
    trace.extend_from_slice(&out);
    trace
}
