//! `treectl-server`: what `treectl serve` runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use treectl_server::{serve, Limits, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "treectl-server",
    version,
    about = "Serve a treectl repository over HTTP: its files for every client and mirror, plus uploads, publishing, reverts and history under /v1/"
)]
struct Args {
    /// Repository to serve (default: $TREECTL_REPO)
    #[arg(long, env = "TREECTL_REPO", value_name = "PATH")]
    repo: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0: any free port;
    /// the bound address is printed on stdout)
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// ed25519 secret key (from `treectl keygen`) that signs the ref index
    /// and published commits. Repeat it to hold the keys of a rotation
    /// (`treectl key rotate`): the first signs until keys are rotated, then
    /// those of the current key set
    #[arg(long, value_name = "FILE")]
    sign_key: Vec<PathBuf>,
    /// Tokens file (TOML; see docs/http-api.md). Without one, every write is refused
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Largest upload body in bytes
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_upload_bytes)]
    max_upload_bytes: usize,
    /// Largest single object in an upload, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_object_bytes)]
    max_object_bytes: u64,
    /// Uploads processed at once
    #[arg(long, value_name = "N", default_value_t = Limits::default().upload_concurrency)]
    upload_concurrency: usize,
    /// Memory in bytes for small objects (up to 64 KiB each) kept between
    /// requests; 0 turns the cache off
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().object_cache_bytes)]
    object_cache_bytes: u64,
    /// How long a signed index stays valid (re-signed when half has passed)
    #[arg(long, value_name = "DURATION", default_value = "30days", value_parser = humantime::parse_duration)]
    index_validity: std::time::Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(if std::env::var_os("TREECTL_DEBUG").is_some() {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .init();
    let mut config = ServerConfig::new(args.repo, args.listen);
    config.sign_keys = args.sign_key;
    config.tokens = args.tokens;
    config.limits = Limits {
        max_upload_bytes: args.max_upload_bytes,
        max_object_bytes: args.max_object_bytes,
        upload_concurrency: args.upload_concurrency,
        object_cache_bytes: args.object_cache_bytes,
        ..Limits::default()
    };
    config.validity_secs = args.index_validity.as_secs().min(i64::MAX as u64) as i64;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
