//! The `quiesce` binary: command line -> `ServerConfig` -> `Server::bind` -> `run` -> exit code.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use log::{error, info};
use quiesce::Server;
use quiesce::app::{App, AppConfig};

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
    init_logging(&cli);

    let config = cli.server_config();
    let app = App::new(AppConfig { delay: cli.delay, max_delay: cli.max_delay });
    let server = match Server::bind(config, app) {
        Ok(server) => server,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    info!("listening on http://{}", server.local_addr());
    match server.run() {
        Ok(outcome) => ExitCode::from(u8::try_from(outcome.exit_code()).unwrap_or(1)),
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `-v`/`-q` set the level; `RUST_LOG`, when set, takes precedence.
fn init_logging(cli: &cli::Cli) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(cli.log_level());
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder
        .format(|buf, record| writeln!(buf, "quiesce: {}: {}", record.level().as_str().to_lowercase(), record.args()));
    builder.init();
}
