//! Runs palisade's sample shop: a gateway on 127.0.0.1:8000 in front of the
//! user (8001), order (8002), product (8003) and payment (8004) services.
//!
//! ```text
//! cargo run --release --example shop -- [--demo] [OPTIONS]
//! cargo run --release --example shop -- serve SERVICE [OPTIONS]
//! ```
//!
//! Serves until SIGTERM or Ctrl-C (SIGINT), then lets the requests in
//! flight finish, for up to a grace period. `--demo` instead runs the
//! six-phase demo against the stack and exits. `serve` runs one service
//! alone, finding the others through `USER_SERVICE_URL`,
//! `ORDER_SERVICE_URL`, `PRODUCT_SERVICE_URL` and `PAYMENT_SERVICE_URL`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use palisade_shop::config::{ShopConfig, merge, rate_limit_override};
use palisade_shop::{
    ServeOptions, ShopOptions, demo, start, start_service, stop_signal, urls_from_env,
};

const USAGE: &str = "\
usage: shop [--demo] [OPTIONS]
       shop serve (gateway|user|order|product|payment) [OPTIONS]

options:
  --base-port N          the gateway's port; the services take N+1..N+4 (default 8000;
                         the demo uses free ports unless this is given)
  --config FILE          TOML settings, reloaded when the file changes or on SIGHUP
  --rate-limit N/SECS    requests per client per window at the gateway (default 100/60)
  --admin-token TOKEN    admin endpoints need `Authorization: Bearer TOKEN`
                         (without it they answer loopback peers only)
  --no-resilience        call upstreams without palisade's layers (for comparison)
  --demo                 run the six-phase demo and exit (0 when every phase showed
                         what it should)";

/// What the command line asks for.
struct Command {
    options: ShopOptions,
    demo: bool,
    /// `serve NAME`: one service alone.
    service: Option<String>,
    base_port_given: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut command = Command {
        options: ShopOptions {
            reload_on_sighup: true,
            ..ShopOptions::default()
        },
        demo: false,
        service: None,
        base_port_given: false,
    };
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some("serve") {
        args.next();
        command.service = Some(args.next().ok_or("serve needs a service name")?);
    }
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let options = &mut command.options;
        match arg.as_str() {
            "--base-port" => {
                let port: u16 = value("--base-port")?
                    .parse()
                    .map_err(|_| "--base-port must be a port number".to_owned())?;
                if port == 0 || port > u16::MAX - 4 {
                    return Err(format!("--base-port must be 1 to {}", u16::MAX - 4));
                }
                options.base_port = port;
                command.base_port_given = true;
            }
            "--config" => options.config_file = Some(PathBuf::from(value("--config")?)),
            "--rate-limit" => {
                let (limit, window) = rate_limit(&value("--rate-limit")?)?;
                merge(&mut options.overrides, &rate_limit_override(limit, window));
            }
            "--admin-token" => {
                let token = value("--admin-token")?;
                if token.is_empty() {
                    return Err("--admin-token must not be empty".into());
                }
                options.admin_token = Some(token);
            }
            "--no-resilience" => options.resilience = false,
            "--demo" => command.demo = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if command.demo && command.service.is_some() {
        return Err("--demo runs the whole stack; it does not go with serve".into());
    }
    // The demo's phases are written for the default settings (a limit of
    // 100, an open period of 5 s, a 2 s attempt timeout).
    if command.demo
        && (command.options.config_file.is_some() || !command.options.overrides.is_empty())
    {
        return Err(
            "--demo runs with the default settings; leave out --config and --rate-limit".into(),
        );
    }
    Ok(command)
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
    let command = match parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The demo prints its own tables; the services' warnings would
    // interleave with them.
    let default_filter = if command.demo {
        "error"
    } else {
        "warn,palisade_shop=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    // Refuse a bad file before binding anything, naming the field.
    let config = match command.options.load_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    if command.demo {
        return run_demo(command).await;
    }
    if let Some(service) = &command.service {
        return serve_one(service, command.options).await;
    }
    serve_all(command.options, &config).await
}

async fn serve_all(options: ShopOptions, config: &ShopConfig) -> ExitCode {
    // Before starting: a signal from then on stops the shop gracefully.
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(err) => {
            eprintln!("cannot take SIGTERM and SIGINT: {err}");
            return ExitCode::FAILURE;
        }
    };
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
    let (limit, window) = config.rate_limit();
    println!(
        "resilience {}; {limit} requests per {}s per client; Ctrl-C or SIGTERM to stop",
        if options.resilience { "on" } else { "off" },
        window.as_secs_f64()
    );
    stopping(stop.await, &options.serve);
    match running.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shutdown: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_one(service: &str, options: ShopOptions) -> ExitCode {
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(err) => {
            eprintln!("cannot take SIGTERM and SIGINT: {err}");
            return ExitCode::FAILURE;
        }
    };
    let serve = options.serve;
    let urls = urls_from_env(options.base_port, |var| std::env::var(var).ok());
    let single = match start_service(service, options, urls).await {
        Ok(single) => single,
        Err(err) => {
            eprintln!("cannot start {service}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{:>8}  http://{}  (Ctrl-C or SIGTERM to stop)",
        single.name, single.addr
    );
    stopping(stop.await, &serve);
    match single.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shutdown: {err}");
            ExitCode::FAILURE
        }
    }
}

fn stopping(signal: &str, serve: &ServeOptions) {
    println!(
        "{signal}: shutting down; letting requests in flight finish (for up to {} s)",
        serve.shutdown_grace.as_secs()
    );
}

async fn run_demo(command: Command) -> ExitCode {
    let mut options = command.options;
    if !command.base_port_given {
        options.base_port = 0;
    }
    let running = match start(options).await {
        Ok(running) => running,
        Err(err) => {
            eprintln!("cannot start the shop: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "palisade shop demo: gateway http://{} in front of user, order, product and payment",
        running.gateway
    );
    let started = std::time::Instant::now();
    let mut stdout = std::io::stdout();
    let reports = demo::run(&running, &mut stdout, true).await;
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!(
        "\n{} of {} phases showed what they should, in {:.1} s",
        reports.len() - failed,
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = running.shutdown().await;
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
