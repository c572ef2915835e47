//! The `quiesce` binary: command line -> `ServerConfig` -> workers -> exit code.

mod access_log;
mod cli;
mod handoff;
mod logging;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use quiesce::app::App;
use quiesce::app::events::Ticker;
use quiesce::metrics::{LogHealth, LogStream};
use quiesce::process::{self, InheritedSockets, Options};

/// How long, at most, the exit waits for log lines still queued (stderr, an access log that is
/// not a file): a reader that stalled must not hold it up.
const LOG_FLUSH: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    // Output never stops the server (and never panics it: no print macro here): writing to a
    // pipe whose reader left fails with EPIPE (the standard library ignores SIGPIPE), and
    // writing past a file size limit (RLIMIT_FSIZE) fails with EFBIG instead of killing the
    // process.
    // SAFETY: setting a signal's disposition to SIG_IGN, before any thread starts.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "quiesce: {e}\ntry 'quiesce --help'");
            return ExitCode::from(2);
        }
    };
    let cli = match command {
        cli::Command::Help => {
            let _ = write!(std::io::stdout(), "{}", cli::help_text());
            return ExitCode::SUCCESS;
        }
        cli::Command::Version => {
            let _ = writeln!(std::io::stdout(), "quiesce {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        cli::Command::Run(cli) => cli,
    };
    let output = logging::Output::new(cli.log_format);
    output.install(cli.log_level());

    // Before any thread starts: this reads and clears LISTEN_FDS and friends.
    let inherited = match InheritedSockets::take() {
        Ok(inherited) => inherited,
        Err(e) => {
            error!("cannot use the inherited listening sockets: {e}");
            return fail_early();
        }
    };
    if let Some(inherited) = &inherited {
        info!("using {} listening socket(s) from {}", inherited.len(), inherited.origin());
    }

    let access_destination = match cli.access_log.as_deref().map(access_log::open).transpose() {
        Ok(file) => file,
        Err(e) => {
            error!("cannot open the access log {}: {e}", cli.access_log.as_deref().unwrap_or_default());
            return fail_early();
        }
    };

    // HTTPS: the certificate and key load now, before this process listens or tells a
    // restarting parent that it serves: if they do not, it exits, and the parent keeps serving.
    let tls = match tls_listen(&cli.tls) {
        Ok(tls) => tls,
        Err(e) => {
            error!(event = "tls_load_failed"; "cannot serve HTTPS: {e}");
            return fail_early();
        }
    };

    #[cfg(not(feature = "tls"))]
    let _: Option<()> = tls;

    let config = cli.server_config();
    let app_config = cli.app;
    let workers = cli.workers;
    // One ticker for event streams, shared by every worker (its thread starts when first used);
    // so is the pool for blocking work, which `process::run` makes from the configuration.
    let ticker = Ticker::with_config(cli.events);
    let options = Options {
        workers,
        inherited,
        restart_on_sighup: true,
        process_exits_after: true,
        #[cfg(feature = "tls")]
        tls,
    };
    let summary = process::run(
        config,
        options,
        |worker| {
            if worker.index == 0 {
                // The process's drain notice: every event stream ends with it.
                let (ticker, notice) = (ticker.clone(), worker.handles.drain.clone());
                worker
                    .handles
                    .drain
                    .on_drain(move || if notice.successor_serving() { ticker.hand_over() } else { ticker.drain() });
            }
            if let Some(destination) = &access_destination {
                worker.set_access_log(access_log::Writer::new(destination.clone(), cli.log_format));
            }
            App::new(app_config)
                .with_metrics(worker.registry.clone())
                .with_pool(worker.blocking.clone())
                .with_events(ticker.clone())
        },
        |started| {
            match workers {
                1 => {
                    info!(event = "listening", addr:% = started.addr, workers = 1; "listening on http://{}", started.addr)
                }
                n => {
                    info!(event = "listening", addr:% = started.addr, workers = n; "listening on http://{} with {n} workers", started.addr)
                }
            }
            if let Some(addr) = started.tls_addr {
                info!(event = "listening", addr:% = addr, tls = true; "listening on https://{addr}");
            }
        },
    );
    // What the access log's writer thread (if any) still holds goes out, or is given up on:
    // a stalled reader must not hold the exit up.
    let flush_by = Instant::now() + LOG_FLUSH;
    if let Some(destination) = &access_destination {
        destination.finish(flush_by);
    }
    let code = match summary {
        Ok(mut summary) => {
            // Lines lost since `run` returned count too.
            summary.log = LogHealth::global().counts();
            report_lost_lines(&summary.log);
            if cli.log_level() != log::LevelFilter::Off {
                logging::emit(&output.summary(&summary.to_json(), SystemTime::now()));
            }
            ExitCode::from(u8::try_from(summary.exit_code()).unwrap_or(1))
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    };
    logging::finish(flush_by);
    code
}

/// Exits with 1 before serving, once the line that says why is out (or given up on after
/// `LOG_FLUSH`): a restarting parent and its supervisor read it there.
fn fail_early() -> ExitCode {
    logging::finish(Instant::now() + LOG_FLUSH);
    ExitCode::from(1)
}

/// The HTTPS listener the command line asks for, with its certificate loaded; `None` without
/// `--tls-cert`. A certificate that has expired is served (a client may still accept it, and
/// refusing would turn a late renewal into an outage) with a warning.
#[cfg(feature = "tls")]
fn tls_listen(tls: &cli::TlsCli) -> Result<Option<process::TlsListen>, quiesce::tls::TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else { return Ok(None) };
    let loaded = quiesce::tls::load_pem(cert.as_ref(), key.as_ref(), tls.resumption)?;
    let now = SystemTime::now();
    match loaded.not_after {
        Some(at) if at < now => warn!(
            event = "tls_certificate_expired";
            "the certificate in {cert} expired {} ago: clients will refuse it",
            humantime::format_duration(Duration::from_secs(now.duration_since(at).unwrap_or_default().as_secs()))
        ),
        Some(at) => info!(
            "certificate {cert}: {} in the chain, valid until {}",
            loaded.chain,
            humantime::format_rfc3339_seconds(at)
        ),
        None => warn!("certificate {cert}: its expiry date could not be read"),
    }
    Ok(Some(process::TlsListen { addr: tls.addr, config: quiesce::tls::TlsConfig::new(loaded.config) }))
}

/// A build without the `tls` feature serves no HTTPS: asked to, it says so.
#[cfg(not(feature = "tls"))]
fn tls_listen(tls: &cli::TlsCli) -> Result<Option<()>, &'static str> {
    match tls.cert {
        Some(_) => Err("this quiesce was built without the tls feature"),
        None => Ok(None),
    }
}

/// Log lines lost in the process's life, said once at the end (and counted in the summary):
/// the exit code does not change for them.
fn report_lost_lines(counts: &quiesce::metrics::LogCounts) {
    let (stderr, access) = (counts.lost(LogStream::Stderr), counts.lost(LogStream::Access));
    if stderr > 0 {
        warn!(
            event = "log_lost", log = "stderr", lost = stderr, errors = counts.errors(LogStream::Stderr);
            "{stderr} log lines were lost on their way to stderr (a reader that stalled or left, or a write error)"
        );
    }
    if access > 0 {
        warn!(
            event = "log_lost", log = "access", lost = access, errors = counts.errors(LogStream::Access);
            "access log: {access} lines lost in all"
        );
    }
}
