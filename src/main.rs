//! The `tusk` binary: parse flags, load settings, serve until SIGTERM/SIGINT (SIGHUP re-reads
//! the TLS certificate); or run one of
//! the maintenance subcommands on a stopped server's data directory.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use tusk::commands::{self, Filter};
use tusk::config::{ByteSize, HumanDuration, Overrides, Settings};
use tusk::tls::{self, TlsFiles};
use tusk::{server, telemetry, AppState};

/// A resumable upload server speaking the tus protocol 1.0.0.
#[derive(Debug, Parser)]
#[command(name = "tusk", version, about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags every subcommand understands.
#[derive(Debug, Args)]
struct Common {
    /// Config file (TOML); see config/tusk.toml for every key.
    #[arg(long, env = "TUSK_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "TUSK_HOST", global = true)]
    host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [default: 1080].
    #[arg(long, env = "TUSK_PORT", global = true)]
    port: Option<u16>,
    /// Directory for upload data and the session database [default: ./data].
    #[arg(long, env = "TUSK_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// URL path of the upload endpoint [default: /files/].
    #[arg(long, env = "TUSK_BASE_PATH", global = true)]
    base_path: Option<String>,
    /// HMAC key file (one key per line: SECRET or KID SECRET); turns token mode on.
    #[arg(long, global = true)]
    auth_secret_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and that the data directory would start, then exit.
    Check,
    /// Rebuild lost records from the copies beside the bytes, while the server is stopped.
    Recover,
    /// Inspect or clean up uploads while the server is stopped.
    #[command(subcommand)]
    Uploads(UploadsCommand),
    /// Print a bearer token (HS256 JWT) for an owner.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Key file to sign with (its first key) [default: auth.secret_file, or TUSK_AUTH_SECRET].
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The owner the token names.
    #[arg(long)]
    sub: String,
    /// How long the token is valid, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Largest upload the token may create, e.g. 100MiB.
    #[arg(long)]
    max_size: Option<String>,
    /// Uploads the owner may create per hour.
    #[arg(long)]
    max_uploads: Option<u32>,
    /// Allowed `filetype` metadata values, e.g. image/* (repeatable).
    #[arg(long = "filetype")]
    filetypes: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum UploadsCommand {
    /// List uploads with their state, offset, length and age.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete uploads (data and record).
    Purge {
        /// Purge expired uploads (same as --state expired).
        #[arg(long)]
        expired: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only uploads in this state: initiated, uploading, interrupted, completed, expired.
    #[arg(long)]
    state: Option<String>,
    /// Only uploads created at least this long ago, e.g. 7d.
    #[arg(long)]
    older_than: Option<String>,
}

/// Threads for file I/O (writes, fsyncs, reads of downloads).
const MAX_BLOCKING_THREADS: usize = 64;

/// mimalloc instead of glibc's allocator: a request makes about a hundred small allocations,
/// and glibc spent a fifth of a HEAD's instructions on them (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        host: cli.common.host,
        port: cli.common.port,
        data_dir: cli.common.data_dir.clone(),
        base_path: cli.common.base_path.clone(),
        auth_secret_file: cli.common.auth_secret_file.clone(),
    };
    let settings = match Settings::load(cli.common.config.as_deref(), std::env::vars(), &overrides)
    {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("tusk: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        return match toml::to_string_pretty(&settings) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(err.to_string()),
        };
    }
    // File I/O runs on tokio's blocking pool. Its default ceiling (512 threads) lets 1,000
    // slow uploads reaching their checkpoints together start hundreds of threads, each with
    // its stack and malloc arena, for a disk that serves a few requests at a time anyway.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start the runtime: {err}")),
    };
    let result = match cli.command {
        None => {
            let _flush_logs_on_exit = telemetry::init(&settings.log);
            runtime.block_on(serve(settings)).map_err(|e| e.to_string())
        }
        Some(Command::Check) => runtime
            .block_on(commands::check(&settings))
            .map(|note| println!("{note}")),
        Some(Command::Recover) => runtime
            .block_on(commands::recover(&settings))
            .map(|report| println!("{report}")),
        Some(Command::Token(args)) => token_request(&args).and_then(|request| {
            commands::mint_token(&settings, args.secret_file.as_deref(), &request)
                .map(|token| println!("{token}"))
        }),
        Some(Command::Uploads(UploadsCommand::List { filter, json })) => runtime.block_on(
            commands::list(&settings, &filter.into(), json, &mut std::io::stdout()),
        ),
        Some(Command::Uploads(UploadsCommand::Purge { expired, filter })) => {
            let mut filter: Filter = filter.into();
            if expired {
                filter.state = Some("expired".to_owned());
            }
            runtime
                .block_on(commands::purge(&settings, &filter, true))
                .map(|(count, bytes)| println!("purged {count} upload(s), freed {bytes} bytes"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

impl From<FilterArgs> for Filter {
    fn from(args: FilterArgs) -> Filter {
        Filter {
            state: args.state,
            older_than: args.older_than,
        }
    }
}

fn token_request(args: &TokenArgs) -> Result<commands::TokenRequest, String> {
    Ok(commands::TokenRequest {
        sub: args.sub.clone(),
        ttl: HumanDuration::parse(&args.ttl)
            .map_err(|e| format!("--ttl: {e}"))?
            .0,
        max_size: args
            .max_size
            .as_deref()
            .map(ByteSize::parse)
            .transpose()
            .map_err(|e| format!("--max-size: {e}"))?
            .map(|size| size.0),
        max_uploads: args.max_uploads,
        filetypes: args.filetypes.clone(),
    })
}

fn fail(message: String) -> ExitCode {
    eprintln!("tusk: {message}");
    ExitCode::FAILURE
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let address = SocketAddr::new(settings.server.host, settings.server.port);
    let base_path = settings.server.base_path.clone();
    let tls = TlsFiles::load(&settings.tls)?;
    #[cfg(unix)]
    let _reloader = tls::reload_on_sighup(tls.clone())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = AppState::open(settings).await?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let bound = listener.local_addr()?;
    // Scripts and the protocol tests read this line to find the port.
    println!("tusk listening on {scheme}://{bound}{base_path}");
    tracing::info!(%bound, %base_path, scheme, "tusk listening");
    server::run(listener, state, tls, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
