//! palisade's sample stack: a small shop split into services the way many
//! teams split theirs, with palisade's layers where a real team would put
//! them.
//!
//! - **user**, **product**, **payment**: JSON services with in-memory data.
//! - **order**: places an order by calling user, product and payment, each
//!   through a palisade stack; releases the stock when payment fails.
//! - **gateway**: proxies `/api/...` to them behind a per-client rate limit,
//!   with retry, a circuit breaker, an attempt timeout and a bulkhead in
//!   front of each.
//!
//! Every service injects faults on demand (`PUT /admin/faults`), so the
//! layers can be seen at work; [`demo`] runs six phases of them. The
//! gateway's settings come from a TOML file ([`config`]) that it reloads
//! when the file changes.

pub mod api;
pub mod auth;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod order;
pub mod payment;
pub mod product;
pub mod upstream;
pub mod user;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use palisade::chaos::Handle as FaultHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use api::AdminAuth;
use config::{ConfigFileError, ShopConfig};
use gateway::{Gateway, UpstreamUrls};
use upstream::{Upstream, http_client};

/// How to start the shop.
#[derive(Clone, Debug)]
pub struct ShopOptions {
    /// The gateway's port; the services take the next four. 0: every
    /// service on an ephemeral port (tests).
    pub base_port: u16,
    /// A TOML file of settings (see [`config`]), watched for changes.
    pub config_file: Option<PathBuf>,
    /// Settings laid over the file's (`--rate-limit`), as a TOML table.
    pub overrides: toml::Table,
    /// Take SIGHUP (Unix): reload the file then, if there is one.
    pub reload_on_sighup: bool,
    /// palisade's layers on (`false`: `--no-resilience`, for comparison).
    pub resilience: bool,
    pub admin_token: Option<String>,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            base_port: 8000,
            config_file: None,
            overrides: toml::Table::new(),
            reload_on_sighup: false,
            resilience: true,
            admin_token: None,
        }
    }
}

impl ShopOptions {
    /// Lays `settings` (TOML, as in a configuration file) over the
    /// overrides so far.
    pub fn settings(mut self, settings: &str) -> Result<Self, toml::de::Error> {
        config::merge(&mut self.overrides, &settings.parse()?);
        Ok(self)
    }

    /// The configuration these options give: the file, if any, with the
    /// overrides laid over it.
    pub fn load_config(&self) -> Result<ShopConfig, ConfigFileError> {
        match &self.config_file {
            Some(path) => ShopConfig::load(path, &self.overrides),
            None => ShopConfig::from_layers("", &self.overrides),
        }
    }
}

/// The fault handles of the four services.
#[derive(Clone, Debug)]
pub struct Faults {
    pub user: FaultHandle,
    pub order: FaultHandle,
    pub product: FaultHandle,
    pub payment: FaultHandle,
}

/// The five services, running.
#[derive(Debug)]
pub struct Running {
    pub gateway: SocketAddr,
    pub user: SocketAddr,
    pub order: SocketAddr,
    pub product: SocketAddr,
    pub payment: SocketAddr,
    /// The gateway's settings in force, its limiter and its upstreams.
    pub control: Gateway,
    /// Each service's faults: user, order, product, payment.
    pub faults: Faults,
    /// The order service, with the upstreams it calls.
    pub orders: order::OrderService,
    reloader: Reloader,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

/// Re-reads the configuration file and puts it in force.
#[derive(Clone, Debug)]
struct Reloader {
    options: Arc<ShopOptions>,
    gateway: Gateway,
    /// One reload at a time, so that the file watcher and SIGHUP cannot
    /// put an older read in force after a newer one.
    reloading: Arc<std::sync::Mutex<()>>,
}

impl Reloader {
    /// Reloads now. An invalid file changes nothing.
    fn reload(&self) -> Result<Vec<String>, ConfigFileError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.options.load_config()?;
        self.gateway.apply(config).map_err(|e| ConfigFileError {
            path: self.options.config_file.clone(),
            message: e.to_string(),
        })
    }

    /// Reloads, logging the outcome.
    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(changed) if changed.is_empty() => {
                tracing::info!(why, "configuration reloaded; nothing changed")
            }
            Ok(changed) => tracing::info!(why, ?changed, "configuration reloaded"),
            Err(error) => {
                tracing::error!(why, %error, "configuration refused; the settings in force stay")
            }
        }
    }

    /// Reloads whenever the file's contents change, checking every
    /// [`WATCH_EVERY`], until `stop`. New contents are applied once two
    /// checks in a row read the same, so that a file caught half written
    /// (an editor saving in place) is not put in force for a moment.
    async fn watch(self, path: PathBuf, mut stop: watch::Receiver<bool>) -> io::Result<()> {
        let mut applied = std::fs::read(&path).ok();
        let mut last = applied.clone();
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = std::fs::read(&path).ok();
            let settled = now == last;
            last = now;
            if settled && last != applied {
                applied = last.clone();
                self.reload_and_log("the file changed");
            }
        }
    }

    /// Reloads on every SIGHUP, until `stop`. Without a file there is
    /// nothing to reload; the signal is still taken (and logged), so that
    /// it does not end the process.
    #[cfg(unix)]
    async fn on_sighup(self, mut stop: watch::Receiver<bool>) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                Some(()) = hangups.recv() => {
                    if self.options.config_file.is_some() {
                        self.reload_and_log("SIGHUP");
                    } else {
                        tracing::info!("SIGHUP: no --config file to reload");
                    }
                }
            }
        }
    }
}

/// How often the configuration file is checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

impl Running {
    /// The services' names and addresses, gateway first.
    pub fn addresses(&self) -> [(&'static str, SocketAddr); 5] {
        [
            ("gateway", self.gateway),
            ("user", self.user),
            ("order", self.order),
            ("product", self.product),
            ("payment", self.payment),
        ]
    }

    /// Re-reads the configuration file and puts it in force for new calls.
    /// Answers what changed; an invalid file changes nothing and is
    /// refused with the field at fault.
    pub fn reload_config(&self) -> Result<Vec<String>, ConfigFileError> {
        self.reloader.reload()
    }

    /// Stops accepting connections; returns once the requests in flight
    /// have been answered.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

async fn bind(options: &ShopOptions, offset: u16) -> io::Result<TcpListener> {
    let port = if options.base_port == 0 {
        0
    } else {
        options.base_port.checked_add(offset).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "--base-port leaves no room for 5 ports",
            )
        })?
    };
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await
}

/// Who may use the admin endpoints; an empty token is refused, as it
/// would be a password anyone could guess.
fn admin_auth(options: &ShopOptions) -> io::Result<AdminAuth> {
    match options.admin_token.as_deref() {
        Some("") => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--admin-token must not be empty",
        )),
        token => Ok(AdminAuth {
            token: token.map(Arc::from),
        }),
    }
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The order service, calling the others at `urls` (unless the
/// configuration names others) through the stacks `config` describes,
/// signing charges and voids with `grants`.
fn order_service(
    config: &ShopConfig,
    urls: &UpstreamUrls,
    client: &upstream::HttpClient,
    resilience: bool,
    grants: auth::Grants,
) -> io::Result<order::OrderService> {
    let upstream = |name: &'static str, default: &str| {
        let settings = &config.upstreams[name];
        let base = settings.url.as_deref().unwrap_or(default);
        Upstream::new(name, base, client.clone(), settings, resilience).map_err(invalid)
    };
    Ok(order::OrderService::new(
        upstream("user", &urls.user)?,
        upstream("product", &urls.product)?,
        upstream("payment", &urls.payment)?,
        grants,
    ))
}

/// The order and payment services' shared secret: the configured one, or
/// (only when both run in this process) one made up now.
fn grants(config: &ShopConfig, both_here: bool) -> io::Result<auth::Grants> {
    match &config.charge_secret {
        Some(secret) => Ok(auth::Grants::new(secret)),
        None if both_here => Ok(auth::Grants::new(&auth::random_secret())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the order and payment services, run apart, need the secret they share: \
             `[charges] secret` in the --config file",
        )),
    }
}

/// Says at start when no customer can be let in, so that a wall of 401s
/// is not a mystery.
fn warn_without_keys(config: &ShopConfig) {
    if config.auth.keys.is_empty() {
        tracing::warn!(
            "no [gateway.auth] keys configured: routes that need a customer's token answer 401"
        );
    }
}

/// Keeps `gateway`'s settings in step with the configuration file (polled,
/// and on SIGHUP when asked), until `stop`.
fn spawn_reloader(
    options: &ShopOptions,
    gateway: &Gateway,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<io::Result<()>>>,
) -> Reloader {
    let reloader = Reloader {
        options: Arc::new(options.clone()),
        gateway: gateway.clone(),
        reloading: Arc::default(),
    };
    if let Some(path) = options.config_file.clone() {
        tasks.push(tokio::spawn(reloader.clone().watch(path, stop.clone())));
    }
    #[cfg(unix)]
    if options.reload_on_sighup {
        tasks.push(tokio::spawn(reloader.clone().on_sighup(stop.clone())));
    }
    reloader
}

fn serve_all(
    servers: impl IntoIterator<Item = (TcpListener, Router)>,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<io::Result<()>>> {
    servers
        .into_iter()
        .map(|(listener, router)| {
            let mut stop = stop.clone();
            tokio::spawn(api::serve(listener, router, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }))
        })
        .collect()
}

/// Starts the gateway and the four services on 127.0.0.1.
pub async fn start(options: ShopOptions) -> io::Result<Running> {
    let config = options.load_config().map_err(invalid)?;
    let listeners = [
        bind(&options, 0).await?,
        bind(&options, 1).await?,
        bind(&options, 2).await?,
        bind(&options, 3).await?,
        bind(&options, 4).await?,
    ];
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<_>>()?;
    let [gateway, user, order, product, payment] =
        [addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]];
    let urls = UpstreamUrls {
        user: url(user),
        product: url(product),
        order: url(order),
        payment: url(payment),
    };
    let auth = admin_auth(&options)?;
    let client = http_client();
    let grants = grants(&config, true)?;
    warn_without_keys(&config);
    let orders = order_service(&config, &urls, &client, options.resilience, grants.clone())?;
    let control = Gateway::new(
        config,
        urls,
        client,
        options.resilience,
        auth.clone(),
        options.config_file.as_deref(),
    )
    .map_err(invalid)?;
    let (user_router, user_faults) = user::router(auth.clone());
    let (order_router, order_faults) = order::router(orders.clone(), auth.clone());
    let (product_router, product_faults) = product::router(auth.clone());
    let (payment_router, payment_faults) = payment::router(auth, grants);
    let routers: [Router; 5] = [
        control.router(),
        user_router,
        order_router,
        product_router,
        payment_router,
    ];
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = serve_all(listeners.into_iter().zip(routers), &stop);
    let reloader = spawn_reloader(&options, &control, &stop, &mut tasks);
    Ok(Running {
        gateway,
        user,
        order,
        product,
        payment,
        control,
        orders,
        faults: Faults {
            user: user_faults,
            order: order_faults,
            product: product_faults,
            payment: payment_faults,
        },
        reloader,
        shutdown,
        tasks,
    })
}

/// The services by name, and each one's port offset from the base port.
pub const SERVICES: [(&str, u16); 5] = [
    ("gateway", 0),
    ("user", 1),
    ("order", 2),
    ("product", 3),
    ("payment", 4),
];

/// Where a service running alone finds the others: `USER_SERVICE_URL`,
/// `ORDER_SERVICE_URL`, `PRODUCT_SERVICE_URL` and `PAYMENT_SERVICE_URL`,
/// else 127.0.0.1 on the ports [`start`] would give them. (A `url` in the
/// configuration file wins over both.)
pub fn urls_from_env(base_port: u16, env: impl Fn(&str) -> Option<String>) -> UpstreamUrls {
    let at = |var: &str, offset: u16| {
        env(var).unwrap_or_else(|| format!("http://127.0.0.1:{}", base_port.saturating_add(offset)))
    };
    UpstreamUrls {
        user: at("USER_SERVICE_URL", 1),
        order: at("ORDER_SERVICE_URL", 2),
        product: at("PRODUCT_SERVICE_URL", 3),
        payment: at("PAYMENT_SERVICE_URL", 4),
    }
}

/// One service running alone.
#[derive(Debug)]
pub struct Single {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// The gateway's settings, when this is the gateway.
    pub control: Option<Gateway>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

impl Single {
    /// Stops accepting connections; returns once the requests in flight
    /// have been answered.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await.map_err(io::Error::other)??;
        }
        Ok(())
    }
}

/// Starts the service called `name` alone on 127.0.0.1, on its port from
/// `options.base_port` (0: an ephemeral one), calling the others at `urls`.
pub async fn start_service(
    name: &str,
    options: ShopOptions,
    urls: UpstreamUrls,
) -> io::Result<Single> {
    let Some(&(name, offset)) = SERVICES.iter().find(|(known, _)| *known == name) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "no service called `{name}`; the services are gateway, user, order, product and payment"
            ),
        ));
    };
    let config = options.load_config().map_err(invalid)?;
    let listener = bind(&options, offset).await?;
    let addr = listener.local_addr()?;
    let auth = admin_auth(&options)?;
    let client = http_client();
    let mut control = None;
    let router = match name {
        "gateway" => {
            warn_without_keys(&config);
            let gateway = Gateway::new(
                config,
                urls,
                client,
                options.resilience,
                auth,
                options.config_file.as_deref(),
            )
            .map_err(invalid)?;
            let router = gateway.router();
            control = Some(gateway);
            router
        }
        "user" => user::router(auth).0,
        "product" => product::router(auth).0,
        "payment" => payment::router(auth, grants(&config, false)?).0,
        _ => {
            let grants = grants(&config, false)?;
            let orders = order_service(&config, &urls, &client, options.resilience, grants)?;
            order::router(orders, auth).0
        }
    };
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = serve_all([(listener, router)], &stop);
    if let Some(gateway) = &control {
        spawn_reloader(&options, gateway, &stop, &mut tasks);
    }
    Ok(Single {
        name,
        addr,
        control,
        shutdown,
        tasks,
    })
}
