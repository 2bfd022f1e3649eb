//! Runs palisade's sample shop: a gateway on 127.0.0.1:8000 in front of the
//! user (8001), order (8002), product (8003) and payment (8004) services.
//!
//! ```text
//! cargo run --release --example shop [-- --base-port N] [--rate-limit N/SECONDS]
//!                                       [--admin-token TOKEN] [--no-resilience]
//! ```
//!
//! Serves until Ctrl-C, then lets the requests in flight finish.

use std::process::ExitCode;
use std::time::Duration;

use palisade_shop::{ShopOptions, start};

const USAGE: &str =
    "usage: shop [--base-port N] [--rate-limit N/SECONDS] [--admin-token TOKEN] [--no-resilience]";

fn parse(args: impl Iterator<Item = String>) -> Result<ShopOptions, String> {
    let mut options = ShopOptions::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--base-port" => {
                let port: u16 = value("--base-port")?
                    .parse()
                    .map_err(|_| "--base-port must be a port number".to_owned())?;
                if port == 0 || port > u16::MAX - 4 {
                    return Err(format!("--base-port must be 1 to {}", u16::MAX - 4));
                }
                options.base_port = port;
            }
            "--rate-limit" => options.rate_limit = rate_limit(&value("--rate-limit")?)?,
            "--admin-token" => options.admin_token = Some(value("--admin-token")?),
            "--no-resilience" => options.resilience = false,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(options)
}

/// `N/SECONDS`, e.g. `100/60`.
fn rate_limit(text: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("--rate-limit must be N/SECONDS (like 100/60), not `{text}`");
    let (n, secs) = text.split_once('/').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if n == 0 || secs == 0 {
        return Err(bad());
    }
    Ok((n, Duration::from_secs(secs)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,palisade_shop=info".into()),
        )
        .init();
    let running = match start(options.clone()).await {
        Ok(running) => running,
        Err(err) => {
            eprintln!("cannot start the shop: {err}");
            return ExitCode::FAILURE;
        }
    };
    for (name, addr) in running.addresses() {
        println!("{name:>8}  http://{addr}");
    }
    let (limit, window) = options.rate_limit;
    println!(
        "resilience {}; {limit} requests per {}s per client; Ctrl-C to stop",
        if options.resilience { "on" } else { "off" },
        window.as_secs()
    );
    let _ = tokio::signal::ctrl_c().await;
    println!("shutting down; letting requests in flight finish");
    match running.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shutdown: {err}");
            ExitCode::FAILURE
        }
    }
}
