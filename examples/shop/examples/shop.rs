//! Runs palisade's sample shop: a gateway on 127.0.0.1:8000 in front of the
//! user (8001), order (8002), product (8003) and payment (8004) services.
//! With `--gateway-replicas G` and `--replicas R` the gateways come first
//! on consecutive ports, then the user replicas, order, the product
//! replicas and payment.
//!
//! ```text
//! cargo run --release --example shop -- [--demo] [OPTIONS]
//! cargo run --release --example shop -- serve SERVICE [OPTIONS]
//! ```
//!
//! Serves until SIGTERM or Ctrl-C (SIGINT), then lets the requests in
//! flight finish, for up to a grace period. `--demo` instead runs the
//! eight-phase demo against the stack and exits. `serve` runs one service
//! alone, finding the others through `USER_SERVICE_URL`,
//! `ORDER_SERVICE_URL`, `PRODUCT_SERVICE_URL` and `PAYMENT_SERVICE_URL`.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use palisade_shop::config::{ShopConfig, merge, rate_limit_override, redis_override};
use palisade_shop::{
    SERVICES, ServeOptions, ShopOptions, demo, report, start, start_service, stop_signal,
    urls_from_env,
};

/// The environment variable the admin token may come from.
const ADMIN_TOKEN_VAR: &str = "SHOP_ADMIN_TOKEN";

/// palisade's sample shop: a gateway on 127.0.0.1:8000 in front of the
/// user, order, product and payment services.
#[derive(Debug, Parser)]
#[command(
    name = "shop",
    disable_help_subcommand = true,
    override_usage = "shop [--demo] [OPTIONS]\n       \
                      shop serve (gateway|user|order|product|payment) [OPTIONS]"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Serve>,
    /// The gateway's port; the services take N+1..N+4 (default 8000; the
    /// demo uses free ports unless this is given)
    #[arg(long, value_name = "N", global = true, value_parser = base_port)]
    base_port: Option<u16>,
    /// TOML settings, reloaded when the file changes or on SIGHUP
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Requests per client per window at the gateway (default 100/60)
    #[arg(long, value_name = "N/SECS", global = true, value_parser = rate_limit)]
    rate_limit: Option<(u64, Duration)>,
    /// Keep the gateways' per-client limit in this Redis, shared by every
    /// gateway (redis://[:password@]host:port[/db]; the failure mode and the
    /// rest in the file's [gateway.rate_limit.redis])
    #[arg(long, value_name = "URL", global = true)]
    redis_url: Option<String>,
    /// Start N gateways on ports N..N+G-1, sharing the per-client limit in
    /// Redis; the services move after them (default 1)
    #[arg(long, value_name = "G", value_parser = clap::value_parser!(u16).range(1..=64))]
    gateway_replicas: Option<u16>,
    /// Start R replicas of the user and product services, each on its own
    /// port; the gateway and the order service balance over them, ejecting
    /// a replica that fails (default 1)
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u16).range(1..=64))]
    replicas: Option<u16>,
    /// Admin endpoints need `Authorization: Bearer TOKEN` (without a token
    /// they answer loopback peers only). Seen by anyone who can list the
    /// processes: prefer --admin-token-file or SHOP_ADMIN_TOKEN
    #[arg(long, value_name = "TOKEN", global = true, value_parser = token)]
    admin_token: Option<String>,
    /// The admin token is this file's contents, surrounding whitespace
    /// left out
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<PathBuf>,
    /// Call upstreams without palisade's layers (for comparison)
    #[arg(long, global = true)]
    no_resilience: bool,
    /// The most a client may take to send a request's headers, and the
    /// longest a keep-alive connection stays idle (default 10)
    #[arg(long, value_name = "SECS", global = true, value_parser = seconds)]
    header_timeout: Option<Duration>,
    /// The longest a client may pause while sending a body; then 408
    /// (default 30)
    #[arg(long, value_name = "SECS", global = true, value_parser = seconds)]
    body_timeout: Option<Duration>,
    /// On SIGTERM or Ctrl-C, how long requests in flight may take to
    /// finish before their connections are closed (default 10)
    #[arg(long, value_name = "SECS", global = true, value_parser = grace)]
    shutdown_grace: Option<Duration>,
    /// Run the eight-phase demo and exit (0 when every phase showed what it
    /// should)
    #[arg(long, global = true)]
    demo: bool,
    /// With --demo: also draw the run as one self-contained HTML page
    /// (requests over time by outcome, breaker states, latency per phase)
    #[arg(long, value_name = "FILE.html", global = true)]
    report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Serve {
    /// Run one service alone, finding the others through USER_SERVICE_URL,
    /// ORDER_SERVICE_URL, PRODUCT_SERVICE_URL and PAYMENT_SERVICE_URL
    Serve {
        #[arg(value_parser = SERVICES.map(|(name, _)| name))]
        service: String,
    },
}

/// What the command line asks for.
#[derive(Debug)]
struct Command {
    options: ShopOptions,
    demo: bool,
    /// `--report FILE`: the demo's picture goes there.
    report: Option<PathBuf>,
    /// `serve NAME`: one service alone.
    service: Option<String>,
    base_port_given: bool,
}

/// Parses `args` (the program's name first), with `env` for the
/// environment.
fn parse<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let invalid = |kind, message: String| Cli::command().error(kind, message);
    let service = cli
        .command
        .as_ref()
        .map(|Serve::Serve { service }| service.clone());
    if cli.report.is_some() && !cli.demo {
        return Err(invalid(
            ErrorKind::MissingRequiredArgument,
            "--report draws the demo's run; it goes with --demo".into(),
        ));
    }
    if cli.demo && service.is_some() {
        return Err(invalid(
            ErrorKind::ArgumentConflict,
            "--demo runs the whole stack; it does not go with serve".into(),
        ));
    }
    // The demo's phases are written for the default settings (a limit of
    // 100, an open period of 5 s, a 2 s attempt timeout).
    if cli.demo && (cli.config.is_some() || cli.rate_limit.is_some()) {
        return Err(invalid(
            ErrorKind::ArgumentConflict,
            "--demo runs with the default settings; leave out --config and --rate-limit".into(),
        ));
    }
    if service.is_some() && (cli.gateway_replicas.is_some() || cli.replicas.is_some()) {
        return Err(invalid(
            ErrorKind::ArgumentConflict,
            "--gateway-replicas and --replicas start replicas in the whole stack; they do not \
             go with serve (start each replica with serve, and list them as `endpoints` in \
             the --config file)"
                .into(),
        ));
    }
    let admin_token = admin_token(&cli, env).map_err(|e| invalid(ErrorKind::ValueValidation, e))?;
    let mut options = ShopOptions {
        reload_on_sighup: true,
        config_file: cli.config,
        resilience: !cli.no_resilience,
        admin_token,
        ..ShopOptions::default()
    };
    if let Some(port) = cli.base_port {
        options.base_port = port;
    }
    if let Some((limit, window)) = cli.rate_limit {
        merge(&mut options.overrides, &rate_limit_override(limit, window));
    }
    options.gateway_replicas = cli.gateway_replicas.unwrap_or(1);
    options.replicas = cli.replicas.unwrap_or(1);
    if let Some(url) = &cli.redis_url {
        // With the URL on the command line, the gateways started here are
        // the replicas sharing the limit (each keeps its share while Redis
        // is down). Without it, the file's `replicas` stands.
        let replicas = cli.gateway_replicas.filter(|&n| n > 1);
        merge(&mut options.overrides, &redis_override(url, replicas));
    }
    let serve = &mut options.serve;
    serve.header_read_timeout = cli.header_timeout.unwrap_or(serve.header_read_timeout);
    serve.body_read_timeout = cli.body_timeout.unwrap_or(serve.body_read_timeout);
    serve.shutdown_grace = cli.shutdown_grace.unwrap_or(serve.shutdown_grace);
    Ok(Command {
        options,
        demo: cli.demo,
        report: cli.report,
        service,
        base_port_given: cli.base_port.is_some(),
    })
}

/// The admin token: --admin-token, else the contents of
/// --admin-token-file, else `SHOP_ADMIN_TOKEN`. Empty is refused wherever
/// it comes from: it would be a password anyone could guess.
fn admin_token(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    if let Some(token) = &cli.admin_token {
        return Ok(Some(token.clone()));
    }
    if let Some(path) = &cli.admin_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --admin-token-file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("--admin-token-file {} is empty", path.display()));
        }
        return Ok(Some(token.to_owned()));
    }
    match env(ADMIN_TOKEN_VAR) {
        Some(token) if token.is_empty() => Err(format!("{ADMIN_TOKEN_VAR} is set but empty")),
        token => Ok(token),
    }
}

fn base_port(text: &str) -> Result<u16, String> {
    let highest = u16::MAX - 4;
    match text.parse::<u16>() {
        Ok(port) if (1..=highest).contains(&port) => Ok(port),
        _ => Err(format!("the base port must be 1 to {highest}")),
    }
}

/// `N/SECONDS`, e.g. `100/60`.
fn rate_limit(text: &str) -> Result<(u64, Duration), String> {
    let bad = || "must be N/SECONDS (like 100/60), both above 0".to_owned();
    let (n, secs) = text.split_once('/').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if n == 0 || secs == 0 {
        return Err(bad());
    }
    Ok((n, Duration::from_secs(secs)))
}

fn token(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the admin token must not be empty".into());
    }
    Ok(text.to_owned())
}

/// Whole seconds, at least 1.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err("must be a whole number of seconds, at least 1".into()),
    }
}

/// Whole seconds; 0 closes every connection at once.
fn grace(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| "must be a whole number of seconds".into())
}

/// Whether logs get colours: only on a terminal (escape codes would litter
/// a file or a log collector), and not when `NO_COLOR` is set to anything
/// but "".
fn log_colours(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = match parse(std::env::args_os(), |name| std::env::var(name).ok()) {
        Ok(command) => command,
        Err(error) => error.exit(),
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
        .with_ansi(log_colours(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
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
    let mut options = demo::with_demo_key(command.options);
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
    let (reports, recording) = demo::run_recorded(&running, &mut stdout, true).await;
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!(
        "\n{} of {} phases showed what they should, in {:.1} s",
        reports.len() - failed,
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = running.shutdown().await;
    let mut written = true;
    if let Some(path) = &command.report {
        match report::write(path, &recording) {
            Ok(()) => println!("the run, drawn: {}", path.display()),
            Err(err) => {
                eprintln!("cannot write the report to {}: {err}", path.display());
                written = false;
            }
        }
    }
    if failed == 0 && written {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, clap::Error> {
        let args = std::iter::once("shop").chain(args.iter().copied());
        parse(args, |name| {
            env.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
        let error = parse_with(args, env).expect_err("refused");
        assert_eq!(error.exit_code(), 2, "{error}");
        error.to_string()
    }

    /// A file of its own for one test, removed when dropped.
    struct TokenFile(PathBuf);

    impl TokenFile {
        fn new(name: &str, text: &str) -> TokenFile {
            let path =
                std::env::temp_dir().join(format!("palisade-shop-{}-{name}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            TokenFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn without_arguments_the_whole_stack_runs_with_the_defaults() {
        let command = parse_with(&[], &[]).unwrap();
        assert!(!command.demo && command.service.is_none() && !command.base_port_given);
        let options = command.options;
        assert_eq!(options.base_port, 8000);
        assert!(options.reload_on_sighup && options.resilience);
        assert!(options.overrides.is_empty() && options.config_file.is_none());
        assert_eq!(options.admin_token, None);
        assert_eq!(options.serve, ServeOptions::default());
    }

    #[test]
    fn the_demo_may_be_drawn_into_a_file() {
        let command = parse_with(&["--demo", "--report", "demo.html"], &[]).unwrap();
        assert!(command.demo);
        assert_eq!(command.report, Some(PathBuf::from("demo.html")));
        assert_eq!(parse_with(&["--demo"], &[]).unwrap().report, None);
    }

    #[test]
    fn every_option_is_taken_after_serve() {
        let command = parse_with(
            &[
                "serve",
                "gateway",
                "--base-port",
                "9000",
                "--config",
                "shop.toml",
                "--rate-limit",
                "20/10",
                "--no-resilience",
                "--header-timeout",
                "5",
                "--body-timeout",
                "7",
                "--shutdown-grace",
                "0",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(command.service.as_deref(), Some("gateway"));
        assert!(command.base_port_given);
        let options = command.options;
        assert_eq!(options.base_port, 9000);
        assert_eq!(options.config_file, Some(PathBuf::from("shop.toml")));
        assert_eq!(
            options.overrides,
            rate_limit_override(20, Duration::from_secs(10))
        );
        assert!(!options.resilience);
        assert_eq!(
            options.serve,
            ServeOptions {
                header_read_timeout: Duration::from_secs(5),
                body_read_timeout: Duration::from_secs(7),
                shutdown_grace: Duration::ZERO,
            }
        );
    }

    #[test]
    fn redis_url_keeps_the_limit_in_redis_shared_by_the_gateway_replicas() {
        let command = parse_with(
            &[
                "--redis-url",
                "redis://10.0.0.5:6379",
                "--gateway-replicas",
                "3",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(command.options.gateway_replicas, 3);
        assert_eq!(
            command.options.overrides,
            redis_override("redis://10.0.0.5:6379", Some(3))
        );
        let config = command.options.load_config().unwrap();
        assert_eq!(config.rate_limit_store.unwrap().replicas, 3);
        let without = parse_with(&[], &[]).unwrap().options;
        assert_eq!(without.gateway_replicas, 1);
        assert_eq!(without.replicas, 1);
        assert_eq!(
            parse_with(&["--replicas", "3"], &[])
                .unwrap()
                .options
                .replicas,
            3
        );
        assert_eq!(without.load_config().unwrap().rate_limit_store, None);
    }

    #[test]
    fn bad_arguments_are_refused_with_exit_code_2() {
        for (args, says) in [
            (&["--base-port", "0"][..], "1 to 65531"),
            (&["--base-port", "65532"], "1 to 65531"),
            (&["--base-port", "http"], "1 to 65531"),
            (&["--rate-limit", "0/60"], "N/SECONDS"),
            (&["--rate-limit", "100"], "N/SECONDS"),
            (&["--admin-token", ""], "must not be empty"),
            (&["--header-timeout", "0"], "at least 1"),
            (&["--body-timeout", "1.5"], "whole number"),
            (&["--shutdown-grace", "soon"], "whole number"),
            (&["serve", "inventory"], "inventory"),
            (&["serve"], "SERVICE"),
            (&["--demo", "serve", "user"], "does not go with serve"),
            (&["serve", "user", "--demo"], "does not go with serve"),
            (&["--demo", "--rate-limit", "5/1"], "default settings"),
            (&["--demo", "--config", "shop.toml"], "default settings"),
            (&["--report", "demo.html"], "goes with --demo"),
            (
                &["serve", "user", "--report", "demo.html"],
                "goes with --demo",
            ),
            (&["--gateway-replicas", "0"], "--gateway-replicas"),
            (
                &["serve", "gateway", "--gateway-replicas", "2"],
                "--gateway-replicas",
            ),
            (
                &["--gateway-replicas", "2", "serve", "gateway"],
                "do not go with serve",
            ),
            (
                &["--replicas", "3", "serve", "product"],
                "do not go with serve",
            ),
            (&["--replicas", "0"], "--replicas"),
            (&["--frobnicate"], "--frobnicate"),
        ] {
            let message = refused(args, &[]);
            assert!(message.contains(says), "{args:?}: {message}");
        }
    }

    #[test]
    fn the_admin_token_comes_from_the_flag_a_file_or_the_environment() {
        let from_env = [(ADMIN_TOKEN_VAR, "from-env")];
        let token = |args: &[&str], env: &[(&str, &str)]| {
            parse_with(args, env).unwrap().options.admin_token
        };
        assert_eq!(token(&[], &from_env).as_deref(), Some("from-env"));
        assert_eq!(
            token(&["--admin-token", "flag"], &from_env).as_deref(),
            Some("flag")
        );
        let file = TokenFile::new("token", "  from-file\n");
        assert_eq!(
            token(&["--admin-token-file", file.path()], &from_env).as_deref(),
            Some("from-file")
        );
        assert_eq!(token(&[], &[]), None);
    }

    #[test]
    fn an_empty_or_missing_token_is_refused_naming_its_source() {
        let empty = TokenFile::new("empty-token", " \n");
        let message = refused(&["--admin-token-file", empty.path()], &[]);
        assert!(
            message.contains(&format!("--admin-token-file {} is empty", empty.path())),
            "{message}"
        );
        let message = refused(&["--admin-token-file", "/nonexistent/token"], &[]);
        assert!(
            message.contains("cannot read --admin-token-file /nonexistent/token"),
            "{message}"
        );
        let message = refused(&[], &[(ADMIN_TOKEN_VAR, "")]);
        assert!(
            message.contains("SHOP_ADMIN_TOKEN is set but empty"),
            "{message}"
        );
        let message = refused(
            &["--admin-token", "a", "--admin-token-file", empty.path()],
            &[],
        );
        assert!(message.contains("cannot be used with"), "{message}");
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(log_colours(true, Some(OsStr::new(""))));
    }
}
