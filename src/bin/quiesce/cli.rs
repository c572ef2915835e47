//! Command-line parsing for `quiesce`.
//!
//! [`parse`] turns the arguments (without the program name) into a [`Command`]: run the server
//! with a [`Cli`] configuration, print the help, or print the version. Errors come back as a
//! single-line [`UsageError`] that the caller prints after `quiesce: ` before exiting with
//! code 2. Values are checked here, so the caller gets a ready-to-bind [`SocketAddr`] and
//! plain [`Duration`]s; no DNS lookup is ever made (only `localhost` is understood as a name).
//!
//! Every option is one row of [`OPTIONS`]: its names, the value it takes and what it sets, its
//! help, its section and its default, rendered from [`Cli::default`]. [`parse`] looks options up
//! there and [`help_text`] prints them from there, so the two cannot disagree.

use std::{
    ffi::OsString,
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    time::Duration,
};

use quiesce::ServerConfig;
use quiesce::app::AppConfig;
use quiesce::app::events::EventsConfig;
use quiesce::app::work::QUEUE_PER_THREAD;

use crate::logging::LogFormat;

/// Largest duration [`parse_duration`] accepts: one year (365.25 days, humantime's `1y`).
///
/// The cap keeps later arithmetic such as `Instant::now() + timeout` far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// Most header fields `--max-headers` allows (the parser's fixed number of slots).
pub const MAX_HEADERS_CAP: usize = quiesce::MAX_HEADER_SLOTS;

/// Most worker threads `--workers` allows.
pub const MAX_WORKERS: usize = 1024;

/// Most threads `--blocking-threads` allows.
pub const MAX_BLOCKING_THREADS: usize = 1024;

/// What a size should look like, for error messages.
const SIZE_HINT: &str = "expected a size like 8192, 8KiB or 1MiB";

/// What a duration should look like, for error messages.
const DURATION_HINT: &str = "expected a duration like 250ms, 10s or 2m";

/// Everything the command line sets: the server's configuration and the routes', as the
/// library takes them, and what only the binary uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Cli {
    /// The server (`--addr`, `--shutdown-timeout`, `--drain-delay`, `--max-connections`,
    /// `--backlog`, `--blocking-threads`, the limits and timeouts).
    pub server: ServerConfig,
    /// The built-in routes (`--delay`, `--max-delay`).
    pub app: AppConfig,
    /// The `/events` streams (`--sse-retry`, `--sse-drain-retry`).
    pub events: EventsConfig,
    /// Log verbosity: 0 is info; each `-v` adds one, each `-q` takes one away.
    pub verbosity: i8,
    /// Worker threads, each with its own loop and listening socket (`--workers N`).
    pub workers: usize,
    /// How log lines (and access log lines) are written (`--log-format text|json`).
    pub log_format: LogFormat,
    /// Where the access log goes (`--access-log PATH`, `-` for stdout); none by default.
    pub access_log: Option<String>,
    /// HTTPS (`--tls-cert`, `--tls-key`, `--tls-addr`, `--tls-resumption`).
    pub tls: TlsCli,
}

/// What the command line says about HTTPS: served when a certificate and key are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCli {
    /// Where HTTPS is served (`--tls-addr`), beside plain HTTP on `--addr`.
    pub addr: SocketAddr,
    /// The certificate chain, PEM (`--tls-cert`).
    pub cert: Option<String>,
    /// Its private key, PEM: PKCS#8, RSA or SEC1 (`--tls-key`).
    pub key: Option<String>,
    /// Session resumption (tickets in TLS 1.3, a session cache): `--tls-resumption on|off`.
    pub resumption: bool,
}

/// HTTPS is served here unless `--tls-addr` says otherwise.
pub const DEFAULT_TLS_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8443));

impl Default for Cli {
    fn default() -> Self {
        Cli {
            server: ServerConfig::DEFAULT,
            app: AppConfig::DEFAULT,
            events: EventsConfig::DEFAULT,
            verbosity: 0,
            workers: 1,
            log_format: LogFormat::Text,
            access_log: None,
            tls: TlsCli { addr: DEFAULT_TLS_ADDR, cert: None, key: None, resumption: true },
        }
    }
}

impl Cli {
    /// The server configuration these options describe.
    pub fn server_config(&self) -> ServerConfig {
        self.server.clone()
    }

    /// The log level that [`Cli::verbosity`] selects.
    ///
    /// -3 or less is off, -2 error, -1 warn, 0 info, 1 debug, 2 or more trace.
    pub fn log_level(&self) -> log::LevelFilter {
        match self.verbosity {
            i8::MIN..=-3 => log::LevelFilter::Off,
            -2 => log::LevelFilter::Error,
            -1 => log::LevelFilter::Warn,
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            2..=i8::MAX => log::LevelFilter::Trace,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
#[expect(clippy::large_enum_variant, reason = "made once, at startup: its size does not matter")]
pub enum Command {
    /// Run the server with this configuration.
    Run(Cli),
    /// Print [`help_text`] and exit successfully.
    Help,
    /// Print the version and exit successfully.
    Version,
}

/// A usage error: the message to print (after "quiesce: ") before exiting with code 2.
///
/// The message is a single line with no trailing newline and no hint; the caller adds those.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the command-line arguments, not including the program name (`argv[0]`).
///
/// `-h`/`--help` and `-V`/`--version` are returned as soon as they are seen, whatever follows
/// them. Options that take a value accept both `--flag VALUE` and `--flag=VALUE`; when an
/// option is given twice, the last value wins. Every option is one row of [`OPTIONS`].
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, UsageError> {
    use lexopt::Arg::{Long, Short, Value};

    let mut cli = Cli::default();
    let mut tls_addr_given = false;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(from_lexopt)? {
        let opt = match arg {
            Short(c) => OPTIONS.iter().find(|o| o.short == Some(c)).ok_or_else(|| unknown(format!("-{c}")))?,
            Long(name) => OPTIONS.iter().find(|o| o.long == name).ok_or_else(|| unknown(format!("--{name}")))?,
            Value(value) => {
                return Err(UsageError(format!("unexpected argument '{}'", value.to_string_lossy())));
            }
        };
        let flag = format!("--{}", opt.long);
        match opt.takes {
            Takes::Nothing(set) => set(&mut cli),
            Takes::Command(command) => return Ok(command()),
            Takes::Value { set, .. } => {
                let value = take_value(&mut parser, &flag)?;
                set(&mut cli, &value).map_err(|why| invalid(&flag, &value, &why))?;
            }
            Takes::Count { min, max, set, .. } => {
                let value = take_value(&mut parser, &flag)?;
                set(&mut cli, parse_count(&value, min, max).map_err(|why| invalid(&flag, &value, &why))?);
            }
        }
        tls_addr_given |= opt.long == "tls-addr";
    }
    match (&cli.tls.cert, &cli.tls.key) {
        (Some(_), None) => return Err(UsageError("--tls-cert needs --tls-key".into())),
        (None, Some(_)) => return Err(UsageError("--tls-key needs --tls-cert".into())),
        (None, None) if tls_addr_given => {
            return Err(UsageError("--tls-addr needs --tls-cert and --tls-key".into()));
        }
        _ => {}
    }
    Ok(Command::Run(cli))
}

/// One command-line option: how the parser reads it and what `--help` says of it.
struct Opt {
    /// Its one-letter form (`v` for `-v`), if it has one.
    short: Option<char>,
    /// Its name, without the dashes (`addr` for `--addr`).
    long: &'static str,
    takes: Takes,
    /// What it does, one paragraph (the help wraps it); `{max}` is a count's upper bound.
    help: &'static str,
    /// Its default as the help shows it, rendered from [`Cli::default`].
    default: Option<fn(&Cli) -> String>,
    section: Section,
}

/// What an option takes, and what it sets.
#[derive(Clone, Copy)]
enum Takes {
    /// Nothing: a switch.
    Nothing(fn(&mut Cli)),
    /// Nothing, and the parser stops there with this command (`--help`, `--version`).
    Command(fn() -> Command),
    /// A value called `name` in the help, read by `set` (or why it is not valid).
    Value { name: &'static str, set: fn(&mut Cli, &str) -> Result<(), String> },
    /// A whole number from `min` to `max`.
    Count { name: &'static str, min: usize, max: usize, set: fn(&mut Cli, usize) },
}

/// Where an option appears in the help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Basic,
    Production,
    Limits,
    Other,
    Events,
    Https,
}

impl Section {
    /// In the help's order.
    const ALL: [Section; 6] =
        [Section::Basic, Section::Production, Section::Limits, Section::Other, Section::Events, Section::Https];

    fn title(self) -> &'static str {
        match self {
            Section::Basic => "OPTIONS",
            Section::Production => "PRODUCTION",
            Section::Limits => "LIMITS AND TIMEOUTS",
            Section::Other => "OTHER",
            Section::Events => "SERVER-SENT EVENTS (/events)",
            Section::Https => "HTTPS",
        }
    }

    /// What the help says after the section's options.
    fn notes(self) -> &'static str {
        match self {
            Section::Other => {
                "
    A DURATION is a number with a unit, e.g. 250ms, 10s, 2m, 1h or 1m30s (a bare 0 is fine).
    A SIZE is a number of bytes, optionally with a unit: 8192, 8KiB, 1MiB (K, M, G also work).
    Values go after a space or an '=': --addr 127.0.0.1:0 or --addr=127.0.0.1:0.
"
            }
            Section::Https => {
                "    TLS 1.3 and 1.2, rustls' default cipher suites, ALPN http/1.1. SIGHUP reads the
    certificate and key again in the new process; if they do not load, the new process exits
    and this one keeps serving.
"
            }
            _ => "",
        }
    }
}

/// Every option, in the help's order within each section. The parser looks options up here,
/// and the help is printed from here, defaults included.
static OPTIONS: &[Opt] = &[
    Opt {
        short: None,
        long: "addr",
        takes: Takes::Value { name: "HOST:PORT", set: |c, v| parse_addr(v).map(|x| c.server.addr = x) },
        help: "Address to listen on: an IPv4 address, a bracketed IPv6 address ([::1]:8080) or \
               localhost; port 0 picks a free port",
        default: Some(|c| c.server.addr.to_string()),
        section: Section::Basic,
    },
    Opt {
        short: None,
        long: "delay",
        takes: Takes::Value { name: "DURATION", set: |c, v| parse_duration(v).map(|x| c.app.delay = x) },
        help: "Delay before answering requests to other paths",
        default: Some(|c| show(c.app.delay)),
        section: Section::Basic,
    },
    Opt {
        short: None,
        long: "max-delay",
        takes: Takes::Value { name: "DURATION", set: |c, v| parse_duration(v).map(|x| c.app.max_delay = x) },
        help: "Upper bound for the delay, including ?delay=",
        default: Some(|c| show(c.app.max_delay)),
        section: Section::Basic,
    },
    Opt {
        short: None,
        long: "shutdown-timeout",
        takes: Takes::Value { name: "DURATION", set: |c, v| parse_duration(v).map(|x| c.server.shutdown_timeout = x) },
        help: "Time allowed for in-flight requests after the first signal; 0s closes everything at once",
        default: Some(|c| show(c.server.shutdown_timeout)),
        section: Section::Basic,
    },
    Opt {
        short: None,
        long: "workers",
        takes: Takes::Count { name: "N", min: 1, max: MAX_WORKERS, set: |c, n| c.workers = n },
        help: "Worker threads, each with its own event loop and its own listening socket (SO_REUSEPORT)",
        default: Some(|c| c.workers.to_string()),
        section: Section::Production,
    },
    Opt {
        short: None,
        long: "drain-delay",
        takes: Takes::Value { name: "DURATION", set: |c, v| parse_duration(v).map(|x| c.server.drain_delay = x) },
        help: "After the first signal, keep serving this long with /healthz answering 503, then drain",
        default: Some(|c| show(c.server.drain_delay)),
        section: Section::Production,
    },
    Opt {
        short: None,
        long: "max-connections",
        takes: Takes::Count { name: "N", min: 1, max: 10_000_000, set: |c, n| c.server.max_connections = n },
        help: "Most open connections per worker; at the cap new ones wait in the backlog until below 90%",
        default: Some(|c| c.server.max_connections.to_string()),
        section: Section::Production,
    },
    Opt {
        short: None,
        long: "backlog",
        takes: Takes::Count {
            name: "N",
            min: 1,
            max: i32::MAX as usize,
            set: |c, n| c.server.backlog = i32::try_from(n).unwrap_or(i32::MAX),
        },
        help: "Listen backlog (the kernel may cap it)",
        default: Some(|c| c.server.backlog.to_string()),
        section: Section::Production,
    },
    Opt {
        short: None,
        long: "reuse-port",
        takes: Takes::Nothing(|c| c.server.reuse_port = true),
        help: "Bind with SO_REUSEPORT even with one worker, so a new process can listen beside this \
               one before it stops (overlapping deploys)",
        default: None,
        section: Section::Production,
    },
    Opt {
        short: None,
        long: "blocking-threads",
        takes: Takes::Count {
            name: "N",
            min: 1,
            max: MAX_BLOCKING_THREADS,
            set: |c, threads| {
                // The queue grows with the threads: QUEUE_PER_THREAD jobs may wait per thread.
                c.server.blocking_threads = threads;
                c.server.blocking_queue = threads * QUEUE_PER_THREAD;
            },
        },
        help: "Threads for the blocking work of /work (shared by the workers)",
        default: Some(|c| c.server.blocking_threads.to_string()),
        section: Section::Production,
    },
    Opt {
        short: None,
        long: "max-uri-bytes",
        takes: Takes::Value { name: "SIZE", set: |c, v| size(v).map(|x| c.server.max_uri_bytes = x) },
        help: "Longest request target; longer gets 414",
        default: Some(|c| c.server.max_uri_bytes.to_string()),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "max-header-bytes",
        takes: Takes::Value { name: "SIZE", set: |c, v| size(v).map(|x| c.server.max_head_bytes = x) },
        help: "Largest request head; larger gets 431",
        default: Some(|c| c.server.max_head_bytes.to_string()),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "max-headers",
        takes: Takes::Count { name: "N", min: 1, max: MAX_HEADERS_CAP, set: |c, n| c.server.max_headers = n },
        help: "Most header fields, 1 to {max}; more gets 431",
        default: Some(|c| c.server.max_headers.to_string()),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "max-body-bytes",
        takes: Takes::Value { name: "SIZE", set: |c, v| size(v).map(|x| c.server.max_body_bytes = x) },
        help: "Largest request body; larger gets 413",
        default: Some(|c| c.server.max_body_bytes.to_string()),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "header-timeout",
        takes: Takes::Value { name: "DURATION", set: |c, v| timeout(v).map(|x| c.server.header_timeout = x) },
        help: "Time for a whole request head from its first byte, and longest pause inside a body; then 408",
        default: Some(|c| show(c.server.header_timeout)),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "idle-timeout",
        takes: Takes::Value { name: "DURATION", set: |c, v| timeout(v).map(|x| c.server.idle_timeout = x) },
        help: "Idle keep-alive connections close after this",
        default: Some(|c| show(c.server.idle_timeout)),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "write-timeout",
        takes: Takes::Value { name: "DURATION", set: |c, v| timeout(v).map(|x| c.server.write_timeout = x) },
        help: "A client that takes none of its response for this long is cut (on Linux, one that \
               still reads, however slowly, is kept)",
        default: Some(|c| show(c.server.write_timeout)),
        section: Section::Limits,
    },
    Opt {
        short: None,
        long: "drain-write-timeout",
        takes: Takes::Value { name: "DURATION", set: |c, v| timeout(v).map(|x| c.server.drain_write_timeout = x) },
        help: "The same during a drain, so a client that stopped reading holds the drain up this long at most",
        default: Some(|c| show(c.server.drain_write_timeout)),
        section: Section::Limits,
    },
    Opt {
        short: Some('v'),
        long: "verbose",
        takes: Takes::Nothing(|c| c.verbosity = c.verbosity.saturating_add(1)),
        help: "More logging: -v debug, -vv trace",
        default: None,
        section: Section::Other,
    },
    Opt {
        short: Some('q'),
        long: "quiet",
        takes: Takes::Nothing(|c| c.verbosity = c.verbosity.saturating_sub(1)),
        help: "Less logging: -q warnings, -qq errors, -qqq nothing",
        default: None,
        section: Section::Other,
    },
    Opt {
        short: None,
        long: "log-format",
        takes: Takes::Value {
            name: "FORMAT",
            set: |c, v| {
                c.log_format = LogFormat::ALL
                    .into_iter()
                    .find(|f| f.name() == v)
                    .ok_or_else(|| "expected text or json".to_owned())?;
                Ok(())
            },
        },
        help: "text (a line with its UTC time) or json (an object per line, for log shippers); under \
               systemd's journal, lines carry their syslog priority instead of a time",
        default: Some(|c| c.log_format.name().into()),
        section: Section::Other,
    },
    Opt {
        short: None,
        long: "access-log",
        takes: Takes::Value {
            name: "PATH",
            set: |c, v| {
                if v.is_empty() {
                    return Err("expected a file name, or - for stdout".into());
                }
                c.access_log = Some(v.into());
                Ok(())
            },
        },
        help: "Append a line per answered request to PATH (- for stdout): Common Log Format plus \
               duration, connection and drain, or JSON with --log-format json",
        default: Some(|c| c.access_log.clone().unwrap_or_else(|| "none".into())),
        section: Section::Other,
    },
    Opt {
        short: None,
        long: "slow-turn",
        takes: Takes::Value { name: "DURATION", set: |c, v| parse_duration(v).map(|x| c.server.slow_turn = x) },
        help: "Warn (at most once a second) of an event loop turn longer than this, naming the \
               request whose handler held it; 0s turns it off",
        default: Some(|c| show(c.server.slow_turn)),
        section: Section::Other,
    },
    Opt {
        short: Some('h'),
        long: "help",
        takes: Takes::Command(|| Command::Help),
        help: "Print this help and exit",
        default: None,
        section: Section::Other,
    },
    Opt {
        short: Some('V'),
        long: "version",
        takes: Takes::Command(|| Command::Version),
        help: "Print the version and exit",
        default: None,
        section: Section::Other,
    },
    Opt {
        short: None,
        long: "sse-retry",
        takes: Takes::Value { name: "DURATION", set: |c, v| parse_duration(v).map(|x| c.events.retry = x) },
        help: "The retry: each stream starts with, how long a client waits before it reconnects when \
               the stream breaks",
        default: Some(|c| show(c.events.retry)),
        section: Section::Events,
    },
    Opt {
        short: None,
        long: "sse-drain-retry",
        takes: Takes::Value {
            name: "MIN..MAX",
            set: |c, v| parse_duration_window(v).map(|w| (c.events.drain_retry_min, c.events.drain_retry_max) = w),
        },
        help: "At the drain, each stream's last event carries a retry: drawn at random from this \
               window, so clients come back spread out rather than in one wave; one DURATION for no spread",
        default: Some(|c| format!("{}..{}", show(c.events.drain_retry_min), show(c.events.drain_retry_max))),
        section: Section::Events,
    },
    Opt {
        short: None,
        long: "tls-cert",
        takes: Takes::Value {
            name: "PATH",
            set: |c, v| {
                c.tls.cert = Some(v.into());
                Ok(())
            },
        },
        help: "Serve HTTPS too, with this certificate chain (PEM, the server's certificate first); \
               needs --tls-key",
        default: None,
        section: Section::Https,
    },
    Opt {
        short: None,
        long: "tls-key",
        takes: Takes::Value {
            name: "PATH",
            set: |c, v| {
                c.tls.key = Some(v.into());
                Ok(())
            },
        },
        help: "The certificate's private key (PEM: PKCS#8, RSA or SEC1 EC)",
        default: None,
        section: Section::Https,
    },
    Opt {
        short: None,
        long: "tls-addr",
        takes: Takes::Value { name: "HOST:PORT", set: |c, v| parse_addr(v).map(|x| c.tls.addr = x) },
        help: "Where HTTPS is served, beside plain HTTP on --addr",
        default: Some(|c| c.tls.addr.to_string()),
        section: Section::Https,
    },
    Opt {
        short: None,
        long: "handshake-timeout",
        takes: Takes::Value { name: "DURATION", set: |c, v| timeout(v).map(|x| c.server.handshake_timeout = x) },
        help: "A TLS handshake not done by then is closed",
        default: Some(|c| show(c.server.handshake_timeout)),
        section: Section::Https,
    },
    Opt {
        short: None,
        long: "tls-resumption",
        takes: Takes::Value {
            name: "on|off",
            set: |c, v| {
                c.tls.resumption = match v {
                    "on" => true,
                    "off" => false,
                    _ => return Err("expected on or off".into()),
                };
                Ok(())
            },
        },
        help: "Session resumption (TLS 1.3 tickets, a session cache); off makes every connection a \
               full handshake",
        default: Some(|c| if c.tls.resumption { "on" } else { "off" }.into()),
        section: Section::Https,
    },
];

/// The error for an option that is in no row of [`OPTIONS`].
fn unknown(option: String) -> UsageError {
    UsageError(format!("unknown option '{option}'"))
}

/// Takes the value of `flag` from `parser` as UTF-8 text.
fn take_value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, UsageError> {
    let value = parser.value().map_err(|err| match err {
        lexopt::Error::MissingValue { .. } => UsageError(format!("missing value for {flag}")),
        other => from_lexopt(other),
    })?;
    value.into_string().map_err(|value| invalid(flag, &value.to_string_lossy(), "the value is not valid UTF-8"))
}

/// A timeout: [`parse_duration`], but zero is refused, as a zero timeout would close every
/// connection.
fn timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("the timeout must be longer than 0".into()),
        d => Ok(d),
    }
}

/// A size in bytes ([`parse_size`]) that fits `T`.
fn size<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    T::try_from(parse_size(s)?).map_err(|_| "too large for this machine".into())
}

/// Parses a size in bytes: a plain number (`8192`) or one with a binary unit (`8KiB`, `8K`,
/// `1MiB`, `1M`, `1GiB`, `1G`). At least 1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(SIZE_HINT.to_owned());
    }
    let scale: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(format!("{SIZE_HINT} (units: KiB, MiB, GiB)")),
    };
    let n: u64 = number.parse().map_err(|_| "the size is too large".to_owned())?;
    match n.checked_mul(scale) {
        Some(0) => Err("the size must be at least 1 byte".to_owned()),
        Some(n) => Ok(n),
        None => Err("the size is too large".to_owned()),
    }
}

/// Parses a decimal count from `min` to `max`.
fn parse_count(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let expected = || format!("expected a number from {min} to {max}");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected());
    }
    match s.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(expected()),
    }
}

/// The error for a value of `flag` that does not parse, saying why.
fn invalid(flag: &str, value: &str, why: &str) -> UsageError {
    UsageError(format!("invalid value '{value}' for {flag}: {why}"))
}

/// Rewords a lexopt error as a single-line usage error.
fn from_lexopt(err: lexopt::Error) -> UsageError {
    use lexopt::Error as E;
    let message = match err {
        E::MissingValue { option: Some(option) } => format!("missing value for {option}"),
        E::MissingValue { option: None } => "missing value".to_owned(),
        E::UnexpectedOption(option) => format!("unknown option '{option}'"),
        E::UnexpectedArgument(value) => {
            format!("unexpected argument '{}'", value.to_string_lossy())
        }
        E::UnexpectedValue { option, value } => {
            format!("option {option} takes no value (got '{}')", value.to_string_lossy())
        }
        E::NonUnicodeValue(value) => {
            format!("argument '{}' is not valid UTF-8", value.to_string_lossy())
        }
        other => other.to_string(),
    };
    UsageError(message)
}

/// Parses `HOST:PORT`, where HOST is an IPv4 address, a bracketed IPv6 address or `localhost`.
///
/// Names other than `localhost` are rejected rather than looked up. On failure, returns why
/// the text is not an address, to follow "invalid value '...' for --addr: ".
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    const FORM: &str = "expected HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or localhost:8080";

    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("missing ']' after the IPv6 address; {FORM}"));
        };
        let ip: Ipv6Addr = host.parse().map_err(|_| format!("'{host}' is not an IPv6 address; {FORM}"))?;
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("missing port after ']'; {FORM}"));
        };
        return Ok(SocketAddr::new(ip.into(), parse_port(port)?));
    }

    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("missing port; {FORM}"));
    };
    if host.contains(':') {
        return Err("an IPv6 address must be in brackets with the port after them, e.g. [::1]:8080".to_owned());
    }
    if host.is_empty() {
        return Err(format!("missing host; {FORM}"));
    }
    let port = parse_port(port)?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port));
    }
    match host.parse::<Ipv4Addr>() {
        Ok(ip) => Ok(SocketAddr::new(ip.into(), port)),
        Err(_) => Err(format!(
            "'{host}' is not an IP address; expected an IPv4 address, a bracketed IPv6 address \
             or localhost (host names are not resolved)"
        )),
    }
}

/// Parses a decimal TCP port, 0 to 65535.
fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("missing port after ':'".to_owned());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port '{s}': expected a number from 0 to 65535"));
    }
    s.parse().map_err(|_| format!("port {s} is out of range: expected a number from 0 to 65535"))
}

/// Parses a duration such as `250ms`, `10s`, `2m`, `1h`, `1m30s` or a bare `0`.
///
/// Accepts humantime's syntax, up to [`MAX_DURATION`]. On failure, returns why, without the
/// value or where it came from, so the caller can say both (e.g. `invalid value 'abc' for
/// --delay: expected a duration like 250ms, 10s or 2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) | Err(humantime::DurationError::NumberOverflow) => {
            Err("the duration is too long: the limit is 1y".to_owned())
        }
        Err(humantime::DurationError::UnknownUnit { unit, .. }) if unit.is_empty() => {
            Err(format!("{DURATION_HINT} (a number needs a unit)"))
        }
        Err(_) => Err(DURATION_HINT.to_owned()),
    }
}

/// Parses a window of durations, `MIN..MAX` (`500ms..3s`), or one duration for a window of one
/// value. MIN may not be above MAX.
pub fn parse_duration_window(s: &str) -> Result<(Duration, Duration), String> {
    let Some((min, max)) = s.split_once("..") else {
        let d = parse_duration(s)?;
        return Ok((d, d));
    };
    let (min, max) = (parse_duration(min)?, parse_duration(max)?);
    if min > max {
        return Err("the window's start is after its end; expected MIN..MAX, e.g. 500ms..3s".to_owned());
    }
    Ok((min, max))
}

/// A duration as the help prints it and [`parse_duration`] reads it back: `30s`, `500ms`.
fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        humantime::format_duration(d).to_string().replace(' ', "")
    }
}

/// Where an option's help starts on its line; a longer name puts the help on the next line.
const HELP_COLUMN: usize = 33;
/// The help's lines are wrapped to this width.
const HELP_WIDTH: usize = 96;

/// The text printed for `--help`: every row of [`OPTIONS`], by section, then what is not an
/// option (routes, signals, exit codes, environment).
pub fn help_text() -> String {
    let defaults = Cli::default();
    let mut out = String::from(
        "\
Usage: quiesce [OPTIONS]

quiesce: a single-threaded HTTP/1.1 server that stops gracefully: on SIGINT or SIGTERM it stops
accepting, lets in-flight requests finish and exits.
",
    );
    for section in Section::ALL {
        out.push('\n');
        out.push_str(section.title());
        out.push_str(":\n");
        for opt in OPTIONS.iter().filter(|o| o.section == section) {
            push_option(&mut out, opt, &defaults);
        }
        out.push_str(section.notes());
    }
    out.push_str(AFTER_OPTIONS);
    out
}

/// Appends `opt`'s entry: its name and value, then its help, wrapped, with its default.
fn push_option(out: &mut String, opt: &Opt, defaults: &Cli) {
    let mut name = String::from("    ");
    if let Some(c) = opt.short {
        name.push_str(&format!("-{c}, "));
    }
    name.push_str("--");
    name.push_str(opt.long);
    let help = match opt.takes {
        Takes::Value { name: value, .. } => {
            name.push(' ');
            name.push_str(value);
            opt.help.to_owned()
        }
        Takes::Count { name: value, max, .. } => {
            name.push(' ');
            name.push_str(value);
            opt.help.replace("{max}", &max.to_string())
        }
        Takes::Nothing(_) | Takes::Command(_) => opt.help.to_owned(),
    };
    // Words, the default last and in one piece.
    let mut words: Vec<String> = help.split_whitespace().map(str::to_owned).collect();
    if let Some(default) = opt.default {
        words.push(format!("[default: {}]", default(defaults)));
    }
    let mut line = name;
    if line.len() >= HELP_COLUMN {
        out.push_str(&line);
        out.push('\n');
        line = String::new();
    }
    let mut fresh = true;
    for word in words {
        if !fresh && line.len() + 1 + word.len() > HELP_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::new();
            fresh = true;
        }
        if fresh {
            line.push_str(&" ".repeat(HELP_COLUMN - line.len()));
        } else {
            line.push(' ');
        }
        line.push_str(&word);
        fresh = false;
    }
    out.push_str(&line);
    out.push('\n');
}

/// The help after the options.
const AFTER_OPTIONS: &str = "
ROUTES:
    GET|HEAD /healthz      200 ok; 503 draining from the first signal on
    POST /echo             the request body, sent back
    GET|HEAD /plaintext    Hello, World!
    GET|HEAD /json         {\"message\":\"Hello, World!\"} as application/json
    GET|HEAD /metrics      counters in the Prometheus text format
    GET|HEAD /work?ms=N    N ms of blocking work on a --blocking-threads pool (&spin=1: CPU
                           work), answered from that thread: worked N ms; 503 when queued full
    GET|HEAD /events       Server-Sent Events: id: K, data: tick K every ?every= (default 1s),
                           ?n= events or until the drain, which sends a spread retry:, the
                           last id and event: shutdown, and ends it; Last-Event-ID: K resumes
                           with tick K+1
    OPTIONS                204 with Allow (OPTIONS * lists every method served)
    any other path         Hello, \"<path>\" after --delay; ?delay=DURATION overrides the
                           delay, up to --max-delay

SIGNALS:
    The first SIGINT or SIGTERM starts a graceful drain (after --drain-delay): stop accepting,
    let in-flight requests finish (for up to --shutdown-timeout), then exit. A second one
    exits at once, even while a handler holds an event loop. SIGHUP starts a new copy of
    quiesce on the same listening sockets and drains this one once the new one serves (a
    zero-downtime restart); that drain keeps idle connections until their clients use them
    (the answer closes them) or close them, or until --shutdown-timeout.

EXIT CODES:
    0      drained cleanly: every accepted request answered in full
    1      the drain cut responses (their clients took nothing of them for the write timeout
           or the drain write timeout, or the shutdown timeout was reached), or an error
    2      usage error
    130    second SIGINT
    143    second SIGTERM

ENVIRONMENT:
    RUST_LOG    log filter in env_logger syntax (e.g. RUST_LOG=debug); when set, it is used
                instead of the level chosen with -v and -q
    JOURNAL_STREAM
                set by systemd: when it names stderr, log lines carry syslog priorities (<6>)
                instead of times
";

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's defaults, which the help and the parser must agree with.
    const DEFAULT_ADDR: SocketAddr = ServerConfig::DEFAULT.addr;
    const DEFAULT_DELAY: Duration = AppConfig::DEFAULT.delay;
    const DEFAULT_MAX_DELAY: Duration = AppConfig::DEFAULT.max_delay;
    const DEFAULT_SHUTDOWN_TIMEOUT: Duration = ServerConfig::DEFAULT.shutdown_timeout;

    /// Parses `args` given as string slices.
    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    /// Parses `args`, which must ask to run, and returns the configuration.
    fn run(args: &[&str]) -> Cli {
        match p(args) {
            Ok(Command::Run(cli)) => cli,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    /// Parses `args`, which must fail, and returns the message.
    fn err(args: &[&str]) -> String {
        match p(args) {
            Err(UsageError(message)) => message,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    /// The configuration `args` set, in both `--flag v` and `--flag=v` forms.
    fn both(flag: &str, value: &str) -> Cli {
        let spaced = run(&[flag, value]);
        let joined = run(&[&format!("{flag}={value}")]);
        assert_eq!(spaced, joined, "{flag} {value}");
        spaced
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn defaults() {
        let cli = run(&[]);
        assert_eq!(cli, Cli::default());
        assert_eq!(cli.server.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cli.app.delay, Duration::ZERO);
        assert_eq!(cli.app.max_delay, secs(60));
        assert_eq!(cli.server.shutdown_timeout, secs(30));
        assert_eq!(cli.verbosity, 0);
        assert_eq!(cli.log_level(), log::LevelFilter::Info);
    }

    #[test]
    fn addr_both_forms() {
        let cli = both("--addr", "127.0.0.1:0");
        assert_eq!(cli.server.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            cli,
            Cli { server: ServerConfig { addr: cli.server.addr, ..ServerConfig::DEFAULT }, ..Cli::default() }
        );
        assert_eq!(both("--addr", "0.0.0.0:65535").server.addr, "0.0.0.0:65535".parse().unwrap());
    }

    #[test]
    fn addr_ipv6() {
        assert_eq!(both("--addr", "[::1]:8080").server.addr, "[::1]:8080".parse().unwrap());
        assert_eq!(both("--addr", "[::]:0").server.addr, "[::]:0".parse().unwrap());
        assert_eq!(both("--addr", "[2001:db8::7]:443").server.addr, "[2001:db8::7]:443".parse().unwrap());
    }

    #[test]
    fn addr_localhost() {
        assert_eq!(both("--addr", "localhost:9000").server.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(both("--addr", "LocalHost:0").server.addr, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn delay_both_forms() {
        assert_eq!(both("--delay", "250ms").app.delay, ms(250));
        assert_eq!(both("--delay", "1500ms").app.delay, ms(1500));
        assert_eq!(both("--delay", "0").app.delay, Duration::ZERO);
        let cli = both("--delay", "10s");
        assert_eq!(cli, Cli { app: AppConfig { delay: secs(10), ..AppConfig::DEFAULT }, ..Cli::default() });
    }

    #[test]
    fn max_delay_both_forms() {
        assert_eq!(both("--max-delay", "2m").app.max_delay, secs(120));
        assert_eq!(both("--max-delay", "1m30s").app.max_delay, secs(90));
        let cli = both("--max-delay", "0s");
        assert_eq!(cli, Cli { app: AppConfig { max_delay: Duration::ZERO, ..AppConfig::DEFAULT }, ..Cli::default() });
    }

    #[test]
    fn max_delay_below_delay_is_allowed() {
        let cli = run(&["--delay", "10s", "--max-delay", "1s"]);
        assert_eq!((cli.app.delay, cli.app.max_delay), (secs(10), secs(1)));
    }

    #[test]
    fn shutdown_timeout_both_forms() {
        assert_eq!(both("--shutdown-timeout", "1h").server.shutdown_timeout, secs(3600));
        let cli = both("--shutdown-timeout", "0s");
        assert_eq!(
            cli,
            Cli {
                server: ServerConfig { shutdown_timeout: Duration::ZERO, ..ServerConfig::DEFAULT },
                ..Cli::default()
            }
        );
    }

    #[test]
    fn all_flags_together_last_wins() {
        let cli =
            run(&["--addr=[::1]:0", "--delay", "1s", "--max-delay=5s", "--shutdown-timeout", "2s", "-v", "--delay=2s"]);
        assert_eq!(
            cli,
            Cli {
                server: ServerConfig {
                    addr: "[::1]:0".parse().unwrap(),
                    shutdown_timeout: secs(2),
                    ..ServerConfig::DEFAULT
                },
                app: AppConfig { delay: secs(2), max_delay: secs(5) },
                verbosity: 1,
                ..Cli::default()
            }
        );
    }

    #[test]
    fn limits_and_timeouts() {
        let cli = run(&[
            "--max-uri-bytes=4KiB",
            "--max-header-bytes",
            "32K",
            "--max-headers=50",
            "--max-body-bytes",
            "2MiB",
            "--header-timeout=3s",
            "--idle-timeout",
            "5s",
            "--write-timeout=7s",
        ]);
        let config = cli.server_config();
        assert_eq!((config.max_uri_bytes, config.max_head_bytes, config.max_headers), (4096, 32768, 50));
        assert_eq!(config.max_body_bytes, 2 << 20);
        assert_eq!((config.header_timeout, config.idle_timeout, config.write_timeout), (secs(3), secs(5), secs(7)));
        assert_eq!(Cli::default().server_config(), ServerConfig { addr: DEFAULT_ADDR, ..ServerConfig::default() });
    }

    #[test]
    fn bad_sizes_and_counts() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in ["", "KiB", "1.5KiB", "8kb", "-1", "0", "99999999999999999999", "18446744073709551615K"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        let e = err(&["--max-headers", "0"]);
        assert!(e.contains("expected a number from 1 to 256"), "{e}");
        let e = err(&["--max-headers", "257"]);
        assert!(e.contains("expected a number from 1 to 256"), "{e}");
        let e = err(&["--header-timeout", "0s"]);
        assert!(e.contains("longer than 0"), "{e}");
        let e = err(&["--max-body-bytes", "lots"]);
        assert!(e.starts_with("invalid value 'lots' for --max-body-bytes: expected a size"), "{e}");
    }

    #[test]
    fn event_stream_retries() {
        let d = EventsConfig::DEFAULT;
        assert_eq!(run(&[]).events, d);
        assert_eq!(both("--sse-retry", "10s").events, EventsConfig { retry: secs(10), ..d });
        assert_eq!(both("--sse-retry", "0s").events.retry, Duration::ZERO);
        let spread = both("--sse-drain-retry", "200ms..1m").events;
        assert_eq!((spread.drain_retry_min, spread.drain_retry_max), (ms(200), secs(60)));
        let fixed = both("--sse-drain-retry", "2s").events;
        assert_eq!((fixed.drain_retry_min, fixed.drain_retry_max, fixed.retry), (secs(2), secs(2), d.retry));
        let e = err(&["--sse-drain-retry", "3s..1s"]);
        assert_eq!(
            e,
            "invalid value '3s..1s' for --sse-drain-retry: the window's start is after its end; expected MIN..MAX, e.g. 500ms..3s"
        );
        for bad in ["..", "1s..", "..1s", "1s...2s", "1..2s", "abc"] {
            let e = err(&["--sse-drain-retry", bad]);
            assert!(e.starts_with(&format!("invalid value '{bad}' for --sse-drain-retry: ")), "{e}");
        }
        assert!(err(&["--sse-retry", "3"]).contains("a number needs a unit"));
    }

    #[test]
    fn blocking_threads() {
        let default = run(&[]).server;
        assert_eq!((default.blocking_threads, default.blocking_queue), (8, 8 * QUEUE_PER_THREAD));
        let two = both("--blocking-threads", "2").server;
        assert_eq!((two.blocking_threads, two.blocking_queue), (2, 2 * QUEUE_PER_THREAD));
        let e = err(&["--blocking-threads", "0"]);
        assert!(e.contains("expected a number from 1 to 1024"), "{e}");
    }

    #[test]
    fn verbosity() {
        assert_eq!(run(&["-v"]).verbosity, 1);
        assert_eq!(run(&["-vv"]).verbosity, 2);
        assert_eq!(run(&["-v", "-v", "-v"]).verbosity, 3);
        assert_eq!(run(&["-q"]).verbosity, -1);
        assert_eq!(run(&["-qq"]).verbosity, -2);
        assert_eq!(run(&["-v", "-q"]).verbosity, 0);
        assert_eq!(run(&["-vq"]).verbosity, 0);
        assert_eq!(run(&["--verbose", "--quiet", "--quiet"]).verbosity, -1);
    }

    #[test]
    fn verbosity_saturates() {
        let many_v = format!("-{}", "v".repeat(300));
        assert_eq!(run(&[&many_v]).verbosity, i8::MAX);
        let many_q = format!("-{}", "q".repeat(300));
        assert_eq!(run(&[&many_q]).verbosity, i8::MIN);
    }

    #[test]
    fn log_levels() {
        let level = |verbosity| Cli { verbosity, ..Cli::default() }.log_level();
        assert_eq!(level(i8::MIN), log::LevelFilter::Off);
        assert_eq!(level(-3), log::LevelFilter::Off);
        assert_eq!(level(-2), log::LevelFilter::Error);
        assert_eq!(level(-1), log::LevelFilter::Warn);
        assert_eq!(level(0), log::LevelFilter::Info);
        assert_eq!(level(1), log::LevelFilter::Debug);
        assert_eq!(level(2), log::LevelFilter::Trace);
        assert_eq!(level(i8::MAX), log::LevelFilter::Trace);
        assert_eq!(run(&["-qqq"]).log_level(), log::LevelFilter::Off);
        assert_eq!(run(&["-vv"]).log_level(), log::LevelFilter::Trace);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(p(&["-h"]), Ok(Command::Help));
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        // They win over whatever follows, even errors.
        assert_eq!(p(&["--help", "--bogus", "extra"]), Ok(Command::Help));
        assert_eq!(p(&["-V", "--delay", "abc"]), Ok(Command::Version));
        assert_eq!(p(&["--addr", "127.0.0.1:1", "-h"]), Ok(Command::Help));
        assert_eq!(p(&["-vh"]), Ok(Command::Help));
        assert_eq!(p(&["-qV"]), Ok(Command::Version));
    }

    #[test]
    fn unknown_option() {
        assert_eq!(err(&["--foo"]), "unknown option '--foo'");
        assert_eq!(err(&["--foo=1"]), "unknown option '--foo'");
        assert_eq!(err(&["-x"]), "unknown option '-x'");
        assert_eq!(err(&["-vx"]), "unknown option '-x'");
        assert_eq!(err(&["--Addr", "127.0.0.1:1"]), "unknown option '--Addr'");
    }

    #[test]
    fn missing_value() {
        assert_eq!(err(&["--addr"]), "missing value for --addr");
        assert_eq!(err(&["--delay"]), "missing value for --delay");
        assert_eq!(err(&["--max-delay"]), "missing value for --max-delay");
        assert_eq!(err(&["--shutdown-timeout"]), "missing value for --shutdown-timeout");
        assert_eq!(err(&["-v", "--delay"]), "missing value for --delay");
    }

    #[test]
    fn unexpected_value_for_switch() {
        assert_eq!(err(&["--verbose=2"]), "option --verbose takes no value (got '2')");
        assert_eq!(err(&["-v=2"]), "option -v takes no value (got '2')");
    }

    #[test]
    fn positional_argument() {
        assert_eq!(err(&["serve"]), "unexpected argument 'serve'");
        assert_eq!(err(&["-v", "127.0.0.1:80"]), "unexpected argument '127.0.0.1:80'");
        assert_eq!(err(&["--", "-v"]), "unexpected argument '-v'");
    }

    #[test]
    fn bad_duration() {
        let hint = "expected a duration like 250ms, 10s or 2m";
        assert_eq!(err(&["--delay", "abc"]), format!("invalid value 'abc' for --delay: {hint}"));
        assert_eq!(err(&["--delay="]), format!("invalid value '' for --delay: {hint}"));
        assert_eq!(err(&["--delay", ""]), format!("invalid value '' for --delay: {hint}"));
        assert_eq!(err(&["--max-delay", "-1s"]), format!("invalid value '-1s' for --max-delay: {hint}"));
        assert_eq!(
            err(&["--shutdown-timeout=10parsecs"]),
            format!("invalid value '10parsecs' for --shutdown-timeout: {hint}")
        );
        assert_eq!(err(&["--delay", "5"]), format!("invalid value '5' for --delay: {hint} (a number needs a unit)"));
        assert_eq!(
            err(&["--delay", "2y"]),
            "invalid value '2y' for --delay: the duration is too long: the limit is 1y"
        );
        // A flag where a value was expected is taken as the (bad) value.
        assert_eq!(err(&["--delay", "--addr", "127.0.0.1:1"]), format!("invalid value '--addr' for --delay: {hint}"));
    }

    #[test]
    fn parse_duration_cases() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("10s"), Ok(secs(10)));
        assert_eq!(parse_duration("2m"), Ok(secs(120)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("1500ms"), Ok(ms(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1m30s"), Ok(secs(90)));
        assert_eq!(parse_duration("1y"), Ok(MAX_DURATION));
        for bad in ["", " ", "abc", "-5s", "+5s", "5", "1x", "s", "99999999999999999999h", "2y"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn bad_addr() {
        let e = err(&["--addr", "127.0.0.1"]);
        assert!(e.starts_with("invalid value '127.0.0.1' for --addr: missing port"), "{e}");
        let e = err(&["--addr=127.0.0.1:"]);
        assert!(e.contains("missing port"), "{e}");
        let e = err(&["--addr", ":8080"]);
        assert!(e.contains("missing host"), "{e}");
        let e = err(&["--addr", "127.0.0.1:http"]);
        assert!(e.contains("invalid port 'http'"), "{e}");
        let e = err(&["--addr", "127.0.0.1:+80"]);
        assert!(e.contains("invalid port '+80'"), "{e}");
        let e = err(&["--addr", "256.0.0.1:80"]);
        assert!(e.contains("'256.0.0.1' is not an IP address"), "{e}");
        let e = err(&["--addr", "::1:8080"]);
        assert!(e.contains("must be in brackets"), "{e}");
        let e = err(&["--addr", "[::1]"]);
        assert!(e.contains("missing port after ']'"), "{e}");
        let e = err(&["--addr", "[::1:8080"]);
        assert!(e.contains("missing ']'"), "{e}");
        let e = err(&["--addr", "[127.0.0.1]:80"]);
        assert!(e.contains("'127.0.0.1' is not an IPv6 address"), "{e}");
        let e = err(&["--addr="]);
        assert!(e.starts_with("invalid value '' for --addr: missing port"), "{e}");
    }

    #[test]
    fn addr_hostname_rejected() {
        let e = err(&["--addr", "example.com:80"]);
        assert_eq!(
            e,
            "invalid value 'example.com:80' for --addr: 'example.com' is not an IP address; \
             expected an IPv4 address, a bracketed IPv6 address or localhost \
             (host names are not resolved)"
        );
        let e = err(&["--addr=localhost.localdomain:80"]);
        assert!(e.contains("is not an IP address"), "{e}");
    }

    #[test]
    fn port_out_of_range() {
        assert_eq!(
            err(&["--addr", "127.0.0.1:65536"]),
            "invalid value '127.0.0.1:65536' for --addr: \
             port 65536 is out of range: expected a number from 0 to 65535"
        );
        let e = err(&["--addr=[::1]:99999999999"]);
        assert!(e.contains("out of range"), "{e}");
        let e = err(&["--addr", "localhost:70000"]);
        assert!(e.contains("out of range"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_value() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![OsString::from("--addr"), OsString::from_vec(vec![0xff, b':', b'1'])];
        let Err(UsageError(e)) = parse(args) else {
            panic!("non-UTF-8 value accepted");
        };
        assert_eq!(e, "invalid value '\u{fffd}:1' for --addr: the value is not valid UTF-8");
        let Err(UsageError(e)) = parse([OsString::from_vec(vec![0xff])]) else {
            panic!("non-UTF-8 argument accepted");
        };
        assert_eq!(e, "unexpected argument '\u{fffd}'");
    }

    #[test]
    fn error_messages_are_single_line() {
        for args in [
            &["--foo"][..],
            &["--addr"],
            &["x"],
            &["--delay", "abc"],
            &["--addr", "example.com:80"],
            &["--addr", "1.2.3.4:99999"],
        ] {
            let e = err(args);
            assert!(!e.contains('\n') && !e.is_empty(), "{e:?}");
            assert_eq!(UsageError(e.clone()).to_string(), e);
        }
    }

    #[test]
    fn help_text_content() {
        let help = help_text();
        for needle in [
            "Usage: quiesce [OPTIONS]",
            "quiesce: a single-threaded HTTP/1.1 server that stops gracefully",
            "--addr HOST:PORT",
            "--delay DURATION",
            "--max-delay DURATION",
            "--shutdown-timeout DURATION",
            "[default: 127.0.0.1:8080]",
            "[default: 0s]",
            "[default: 60s]",
            "[default: 30s]",
            "-v, --verbose",
            "-q, --quiet",
            "-h, --help",
            "-V, --version",
            "ROUTES:",
            "/healthz",
            "/echo",
            "/plaintext",
            "/json",
            "Hello, World!",
            "?delay=DURATION",
            "SIGNALS:",
            "SIGINT",
            "SIGTERM",
            "130",
            "143",
            "RUST_LOG",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}");
        }
        for line in help.lines() {
            assert!(line.chars().count() < 100, "line too long: {line:?}");
            assert_eq!(line, line.trim_end(), "trailing space: {line:?}");
        }
    }

    #[test]
    fn slow_turn_threshold() {
        assert_eq!(both("--slow-turn", "250ms").server.slow_turn, Duration::from_millis(250));
        assert_eq!(both("--slow-turn", "0s").server.slow_turn, Duration::ZERO);
        assert!(err(&["--slow-turn", "fast"]).contains("--slow-turn"));
    }

    #[test]
    fn log_format_and_access_log() {
        assert_eq!(both("--log-format", "json").log_format, LogFormat::Json);
        assert_eq!(both("--log-format", "text").log_format, LogFormat::Text);
        assert!(err(&["--log-format", "yaml"]).contains("expected text or json"));
        assert_eq!(
            both("--access-log", "/var/log/quiesce/access.log").access_log.as_deref(),
            Some("/var/log/quiesce/access.log")
        );
        assert_eq!(both("--access-log", "-").access_log.as_deref(), Some("-"));
        assert!(err(&["--access-log="]).contains("--access-log"));
    }

    #[test]
    fn help_defaults_match_parsed_defaults() {
        // The defaults printed in the help must parse back to the real defaults.
        let help = help_text();
        let defaults: Vec<&str> =
            help.split("[default: ").skip(1).filter_map(|rest| rest.split_once(']').map(|(value, _)| value)).collect();
        assert_eq!(defaults.len(), 25, "{defaults:?}");
        assert_eq!(defaults[22].parse::<SocketAddr>(), Ok(DEFAULT_TLS_ADDR));
        assert_eq!(parse_duration(defaults[23]), Ok(Cli::default().server.handshake_timeout));
        assert_eq!((defaults[24], Cli::default().tls.resumption), ("on", true));
        assert_eq!((defaults[17], Cli::default().log_format), ("text", LogFormat::Text));
        assert_eq!((defaults[18], Cli::default().access_log), ("none", None));
        assert_eq!(parse_duration(defaults[19]), Ok(Cli::default().server.slow_turn));
        assert_eq!(defaults[0].parse::<SocketAddr>(), Ok(DEFAULT_ADDR));
        assert_eq!(parse_duration(defaults[1]), Ok(DEFAULT_DELAY));
        assert_eq!(parse_duration(defaults[2]), Ok(DEFAULT_MAX_DELAY));
        assert_eq!(parse_duration(defaults[3]), Ok(DEFAULT_SHUTDOWN_TIMEOUT));
        let d = Cli::default();
        assert_eq!(defaults[4].parse::<usize>(), Ok(d.workers));
        assert_eq!(parse_duration(defaults[5]), Ok(d.server.drain_delay));
        assert_eq!(defaults[6].parse::<usize>(), Ok(d.server.max_connections));
        assert_eq!(defaults[7].parse::<i32>(), Ok(d.server.backlog));
        assert_eq!(defaults[8].parse::<usize>(), Ok(d.server.blocking_threads));
        let defaults = &defaults[5..];
        let c = &d.server;
        let sizes = [c.max_uri_bytes as u64, c.max_head_bytes as u64, c.max_headers as u64, c.max_body_bytes];
        for (text, value) in defaults[4..8].iter().zip(sizes) {
            assert_eq!(parse_size(text), Ok(value));
        }
        let timeouts = [c.header_timeout, c.idle_timeout, c.write_timeout, c.drain_write_timeout];
        for (text, value) in defaults[8..12].iter().zip(timeouts) {
            assert_eq!(parse_duration(text), Ok(value));
        }
        // The event streams' section comes after the notes on values, before the routes.
        let events = d.events;
        assert_eq!((defaults[15], parse_duration(defaults[15])), ("3s", Ok(events.retry)));
        assert_eq!(defaults[16], "500ms..3s");
        assert_eq!(parse_duration_window(defaults[16]), Ok((events.drain_retry_min, events.drain_retry_max)));
    }

    #[test]
    fn each_option_is_one_row_and_in_the_help() {
        let help = help_text();
        for (i, opt) in OPTIONS.iter().enumerate() {
            let rest = &OPTIONS[i + 1..];
            assert!(rest.iter().all(|o| o.long != opt.long), "--{} twice", opt.long);
            assert!(opt.short.is_none() || rest.iter().all(|o| o.short != opt.short), "-{:?} twice", opt.short);
            let shown = match opt.short {
                Some(c) => format!("\n    -{c}, --{}", opt.long),
                None => format!("\n    --{}", opt.long),
            };
            assert_eq!(help.matches(&shown).count(), 1, "{shown:?}");
        }
    }

    #[test]
    fn each_default_the_help_shows_parses_back_to_the_default() {
        for opt in OPTIONS {
            let (Some(default), Takes::Value { .. } | Takes::Count { .. }) = (opt.default, opt.takes) else {
                continue;
            };
            let shown = default(&Cli::default());
            if opt.long == "access-log" {
                // No access log: no value to give.
                assert_eq!(shown, "none");
                continue;
            }
            // (With a certificate, which --tls-addr needs.)
            let cert = ["--tls-cert=c.pem", "--tls-key=k.pem"];
            let given = format!("--{}={shown}", opt.long);
            assert_eq!(run(&[cert[0], cert[1], &given]), run(&cert), "{given}");
        }
    }
}
