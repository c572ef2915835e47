//! The `quiesce` binary: command line -> `ServerConfig` -> workers -> exit code.

mod access_log;
mod cli;
mod logging;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use log::{error, info};
use quiesce::app::App;
use quiesce::app::events::Ticker;
use quiesce::app::work::BlockingPool;
use quiesce::process::{self, InheritedSockets, Options};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("quiesce: {e}\ntry 'quiesce --help'");
            return ExitCode::from(2);
        }
    };
    let cli = match command {
        cli::Command::Help => {
            print!("{}", cli::help_text());
            return ExitCode::SUCCESS;
        }
        cli::Command::Version => {
            println!("quiesce {}", env!("CARGO_PKG_VERSION"));
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
            return ExitCode::from(1);
        }
    };
    if let Some(inherited) = &inherited {
        info!("using {} listening socket(s) from {}", inherited.len(), inherited.origin());
    }

    let access_sink = match cli.access_log.as_deref().map(access_log::open).transpose() {
        Ok(file) => file,
        Err(e) => {
            error!("cannot open the access log {}: {e}", cli.access_log.as_deref().unwrap_or_default());
            return ExitCode::from(1);
        }
    };

    let config = cli.server_config();
    let app_config = cli.app;
    let workers = cli.workers;
    // One pool for blocking work and one ticker for event streams, shared by every worker
    // (their threads start when first used).
    let (pool, ticker) = (BlockingPool::new(cli.blocking_threads), Ticker::with_config(cli.events));
    let options = Options { workers, inherited, restart_on_sighup: true, process_exits_after: true };
    let summary = process::run(
        config,
        options,
        |worker| {
            if worker.index == 0 {
                // The process's drain notice: every event stream ends with it.
                let ticker = ticker.clone();
                worker.handles.drain.on_drain(move || ticker.drain());
            }
            if let Some(sink) = &access_sink {
                worker.set_access_log(access_log::Writer::new(sink.clone(), cli.log_format));
            }
            App::new(app_config)
                .with_metrics(worker.registry.clone())
                .with_pool(pool.clone())
                .with_events(ticker.clone())
        },
        |started| match workers {
            1 => info!(event = "listening", addr:% = started.addr, workers = 1; "listening on http://{}", started.addr),
            n => {
                info!(event = "listening", addr:% = started.addr, workers = n; "listening on http://{} with {n} workers", started.addr)
            }
        },
    );
    // What the access log's writer thread (if any) still holds goes out, or is given up on:
    // a stalled reader must not hold the exit up.
    if let Some(sink) = &access_sink {
        sink.finish(Duration::from_secs(2));
    }
    match summary {
        Ok(summary) => {
            if cli.log_level() != log::LevelFilter::Off {
                eprintln!("{}", output.summary(&summary.to_json(), SystemTime::now()));
            }
            ExitCode::from(u8::try_from(summary.exit_code()).unwrap_or(1))
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}
