//! palisade's sample stack: a small shop split into services the way many
//! teams split theirs, with palisade's layers where a real team would put
//! them.
//!
//! - **user**, **product**, **payment**: JSON services with in-memory data.
//! - **order**: places an order by calling user, product and payment, each
//!   through a palisade stack; releases the stock when payment fails.
//! - **gateway**: proxies `/api/...` to them behind a per-client rate limit,
//!   with retry, a circuit breaker, an attempt timeout and a bulkhead in
//!   front of each; answers the product list, and only it, with its last
//!   good copy while the product service cannot ([`catalogue`]).
//!
//! Every service injects faults on demand (`PUT /admin/faults`), so the
//! layers can be seen at work; [`demo`] runs nine phases of them. The
//! gateway's settings come from a TOML file ([`config`]) that it reloads
//! when the file changes.

pub mod api;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod metrics;
pub mod order;
pub mod payment;
pub mod product;
pub mod replicas;
pub mod report;
pub mod upstream;
pub mod user;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use palisade::chaos::Handle as FaultHandle;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use api::AdminAuth;
pub use api::ServeOptions;
use config::{ConfigFileError, ShopConfig};
use gateway::{Gateway, UpstreamUrls};
use upstream::http_client;

/// How to start the shop.
#[derive(Clone, Debug)]
pub struct ShopOptions {
    /// The gateway's port; the services take the next four (after the
    /// gateways' ports with [`gateway_replicas`](Self::gateway_replicas)).
    /// 0: every service on an ephemeral port (tests).
    pub base_port: u16,
    /// How many gateways to start, on consecutive ports, sharing one
    /// per-client limit: more than one needs the limit in Redis
    /// (`[gateway.rate_limit.redis]`, `--redis-url`).
    pub gateway_replicas: u16,
    /// How many replicas of the user and product services to start, each on
    /// its port, behind a balancer in the gateway and the order service.
    pub replicas: u16,
    /// A TOML file of settings (see [`config`]), watched for changes.
    pub config_file: Option<PathBuf>,
    /// Settings laid over the file's (`--rate-limit`), as a TOML table.
    pub overrides: toml::Table,
    /// Take SIGHUP (Unix): reload the file then, if there is one.
    pub reload_on_sighup: bool,
    /// palisade's layers on (`false`: `--no-resilience`, for comparison).
    pub resilience: bool,
    pub admin_token: Option<String>,
    /// Timeouts for slow clients, and the shutdown grace period.
    pub serve: ServeOptions,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            base_port: 8000,
            gateway_replicas: 1,
            replicas: 1,
            config_file: None,
            overrides: toml::Table::new(),
            reload_on_sighup: false,
            resilience: true,
            admin_token: None,
            serve: ServeOptions::default(),
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
    /// The first gateway.
    pub gateway: SocketAddr,
    /// Every gateway, the first one first, each with its own layers in
    /// front of the services (as gateways in processes of their own would
    /// have), sharing the per-client limit in Redis.
    pub gateways: Vec<(SocketAddr, Gateway)>,
    pub user: SocketAddr,
    pub order: SocketAddr,
    pub product: SocketAddr,
    pub payment: SocketAddr,
    /// The first gateway's settings in force, its limiter and its upstreams.
    pub control: Gateway,
    /// Every replica of the user service, the one at `user` first, with
    /// its faults.
    pub users: Vec<(SocketAddr, FaultHandle)>,
    /// Every replica of the product service, the one at `product` first.
    pub products: Vec<(SocketAddr, FaultHandle)>,
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
    /// Every gateway of this process.
    gateways: Vec<Gateway>,
    /// The order service of this process, and where its upstreams are
    /// unless the file says otherwise: a reload gives its balancers the
    /// file's endpoints.
    orders: Option<(order::OrderService, UpstreamUrls)>,
    /// One reload at a time, so that the file watcher and SIGHUP cannot
    /// put an older read in force after a newer one.
    reloading: Arc<std::sync::Mutex<()>>,
    /// How many times the file watcher has read the file.
    reads: Arc<AtomicU64>,
}

impl Reloader {
    /// Reloads now. An invalid file changes nothing.
    fn reload(&self) -> Result<Vec<String>, ConfigFileError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let config = self.options.load_config()?;
        let mut changed = Vec::new();
        for gateway in &self.gateways {
            // The same file for each: if the first takes it, all do.
            changed = gateway.apply(config.clone()).map_err(|e| ConfigFileError {
                path: self.options.config_file.clone(),
                message: e.to_string(),
            })?;
        }
        if let Some((orders, urls)) = &self.orders {
            for upstream in [&orders.users, &orders.products] {
                let settings = &config.upstreams[upstream.name];
                let (endpoints, balanced) = settings.endpoints_or(&urls.endpoints(upstream.name));
                if let (Some(replicas), true) = (&upstream.replicas, balanced) {
                    replicas.set_replicas(endpoints);
                }
            }
        }
        Ok(changed)
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

    /// The file's contents (`None` when it cannot be read), counted.
    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        std::fs::read(path).ok()
    }

    /// Reloads whenever the file's contents change, until `stop`; `changes`
    /// wakes it when the file system reports one, and `watcher` sends the
    /// reports.
    async fn watch(
        self,
        watcher: RecommendedWatcher,
        path: PathBuf,
        changes: Arc<Notify>,
        mut applied: Option<Vec<u8>>,
        mut stop: watch::Receiver<bool>,
    ) -> io::Result<()> {
        let _reporting = watcher;
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                () = changes.notified() => {}
            }
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Ok(()),
                contents = self.settled(&path, &changes) => if contents != applied {
                    applied = contents;
                    self.reload_and_log("the file changed");
                }
            }
        }
    }

    /// The file's contents once they have stayed the same for [`SETTLE`]:
    /// read at every change reported and again after SETTLE without one, so
    /// that a file caught half written (an editor saving in place writes in
    /// more than one go) is not put in force for a moment.
    async fn settled(&self, path: &Path, changes: &Notify) -> Option<Vec<u8>> {
        let mut contents = self.read(path);
        let mut quiet_until = Instant::now() + SETTLE;
        loop {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(quiet_until) => {
                    let again = self.read(path);
                    if again == contents {
                        return contents;
                    }
                    contents = again;
                    quiet_until = Instant::now() + SETTLE;
                }
                () = changes.notified() => {
                    // One save is often several reports, and the directory
                    // may hold other files: only new contents start the
                    // wait again.
                    let again = self.read(path);
                    if again != contents {
                        contents = again;
                        quiet_until = Instant::now() + SETTLE;
                    }
                }
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

/// How long the configuration file must stay the same after a change
/// before the file watcher puts it in force.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Watches the directory of `path` and wakes `changes` on anything there
/// that may have changed the file. The directory rather than the file:
/// editors that save by renaming a new file over the old one, and mounts
/// that swap a symlinked directory (as Kubernetes does), change the
/// directory's entries, not the file that was watched.
fn watch_directory(path: &Path, changes: Arc<Notify>) -> io::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (reports lost, say) may hide a change: read to be sure.
        if event.map_or(true, |event| may_change_contents(event.kind)) {
            changes.notify_one();
        }
    })
    .map_err(io::Error::other)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    watcher
        .watch(directory, RecursiveMode::NonRecursive)
        .map_err(|e| io::Error::other(format!("cannot watch {}: {e}", directory.display())))?;
    Ok(watcher)
}

/// Whether a report may mean new contents: not an open or a read (the
/// watcher's own reads are reported too), nor a change of metadata.
fn may_change_contents(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C): the signals that ask
/// a server to stop (container runtimes and systemd send SIGTERM). The
/// handlers are in place when this returns, so that a signal sent from
/// then on is taken rather than ending the process. Answers the signal's
/// name.
pub fn stop_signal() -> io::Result<impl Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    })
}

impl Running {
    /// The services' names and addresses, the gateways first.
    pub fn addresses(&self) -> Vec<(&'static str, SocketAddr)> {
        let gateways = self.gateways.iter().map(|(addr, _)| ("gateway", *addr));
        gateways
            .chain([
                ("user", self.user),
                ("order", self.order),
                ("product", self.product),
                ("payment", self.payment),
            ])
            .collect()
    }

    /// Re-reads the configuration file and puts it in force for new calls.
    /// Answers what changed; an invalid file changes nothing and is
    /// refused with the field at fault.
    pub fn reload_config(&self) -> Result<Vec<String>, ConfigFileError> {
        self.reloader.reload()
    }

    /// How many times the file watcher has read the configuration file: at
    /// each change the file system reports, and once more before putting
    /// new contents in force. Tests wait on it, as the reports come from a
    /// thread of the operating system, out of step with tokio's clock.
    pub fn config_file_reads(&self) -> u64 {
        self.reloader.reads.load(Ordering::Relaxed)
    }

    /// Stops accepting connections and closes idle ones; returns once the
    /// requests in flight have been answered, or the grace period is over.
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
                format!(
                    "--base-port leaves no room for port {}",
                    u32::from(options.base_port) + u32::from(offset)
                ),
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
    let upstream = |name: &'static str| {
        gateway::build_upstream(name, config, urls, client, resilience).map_err(invalid)
    };
    Ok(order::OrderService::new(
        upstream("user")?,
        upstream("product")?,
        upstream("payment")?,
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

/// Keeps `gateway`'s settings in step with the configuration file (when
/// it changes, and on SIGHUP when asked), until `stop`.
fn spawn_reloader(
    options: &ShopOptions,
    gateways: Vec<Gateway>,
    orders: Option<(order::OrderService, UpstreamUrls)>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<io::Result<()>>>,
) -> io::Result<Reloader> {
    let reloader = Reloader {
        options: Arc::new(options.clone()),
        gateways,
        orders,
        reloading: Arc::default(),
        reads: Arc::default(),
    };
    if let Some(path) = options.config_file.clone() {
        let changes = Arc::new(Notify::new());
        // Watching before reading: a change in between is reported.
        let watcher = watch_directory(&path, changes.clone())?;
        let applied = std::fs::read(&path).ok();
        let watch = reloader
            .clone()
            .watch(watcher, path, changes, applied, stop.clone());
        tasks.push(tokio::spawn(watch));
    }
    #[cfg(unix)]
    if options.reload_on_sighup {
        tasks.push(tokio::spawn(reloader.clone().on_sighup(stop.clone())));
    }
    Ok(reloader)
}

fn serve_all(
    servers: impl IntoIterator<Item = (&'static str, TcpListener, Router)>,
    options: ServeOptions,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<io::Result<()>>> {
    servers
        .into_iter()
        .map(|(name, listener, router)| {
            let mut stop = stop.clone();
            tokio::spawn(api::serve(listener, name, router, options, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }))
        })
        .collect()
}

/// Starts the gateways and the four services on 127.0.0.1, on consecutive
/// ports: the gateways, the user replicas, order, the product replicas,
/// payment (with one of each: 8000 to 8004).
pub async fn start(options: ShopOptions) -> io::Result<Running> {
    // Before any layer is built: palisade's layers bind their metrics to
    // the recorder installed when they are built.
    metrics::install();
    let config = options.load_config().map_err(invalid)?;
    let (gateway_count, replicas) = (options.gateway_replicas, options.replicas);
    if gateway_count == 0 || replicas == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--gateway-replicas and --replicas must be at least 1",
        ));
    }
    if gateway_count > 1 && config.rate_limit_store.is_none() {
        // Each would count on its own: a client would get the limit once
        // per gateway.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--gateway-replicas above 1 needs the per-client limit in Redis, which the \
             gateways share: --redis-url or [gateway.rate_limit.redis] in the --config file",
        ));
    }
    let mut ports = Ports {
        options: &options,
        next: 0,
    };
    let gateway_listeners = ports.bind(gateway_count).await?;
    let user_listeners = ports.bind(replicas).await?;
    let order_listener = ports.bind_one().await?;
    let product_listeners = ports.bind(replicas).await?;
    let payment_listener = ports.bind_one().await?;
    let addrs = |listeners: &[TcpListener]| -> io::Result<Vec<SocketAddr>> {
        listeners.iter().map(TcpListener::local_addr).collect()
    };
    let (user_addrs, product_addrs) = (addrs(&user_listeners)?, addrs(&product_listeners)?);
    let [user, order, product, payment] = [
        user_addrs[0],
        order_listener.local_addr()?,
        product_addrs[0],
        payment_listener.local_addr()?,
    ];
    let urls = UpstreamUrls {
        user: url(user),
        product: url(product),
        order: url(order),
        payment: url(payment),
        replicas: [("user", &user_addrs), ("product", &product_addrs)]
            .into_iter()
            .filter(|(_, addrs)| addrs.len() > 1)
            .map(|(name, addrs)| (name, addrs.iter().copied().map(url).collect()))
            .collect(),
    };
    let auth = admin_auth(&options)?;
    let client = http_client();
    let grants = grants(&config, true)?;
    warn_without_keys(&config);
    let orders = order_service(&config, &urls, &client, options.resilience, grants.clone())?;
    let mut gateways = Vec::new();
    for listener in &gateway_listeners {
        let gateway = Gateway::new(
            config.clone(),
            urls.clone(),
            client.clone(),
            options.resilience,
            auth.clone(),
            options.config_file.as_deref(),
        )
        .map_err(invalid)?;
        gateways.push((listener.local_addr()?, gateway));
    }
    let user_routers = user::replicas(auth.clone(), user_listeners.len());
    let (order_router, order_faults) = order::router(orders.clone(), auth.clone());
    let product_routers = product::replicas(auth.clone(), product_listeners.len());
    let (payment_router, payment_faults) = payment::router(auth, grants);
    let users: Vec<_> = user_addrs
        .iter()
        .zip(&user_routers)
        .map(|(addr, (_, faults))| (*addr, faults.clone()))
        .collect();
    let products: Vec<_> = product_addrs
        .iter()
        .zip(&product_routers)
        .map(|(addr, (_, faults))| (*addr, faults.clone()))
        .collect();
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    let controls = gateways
        .iter()
        .map(|(_, gateway)| gateway.clone())
        .collect();
    let reloader = spawn_reloader(
        &options,
        controls,
        Some((orders.clone(), urls)),
        &stop,
        &mut tasks,
    )?;
    let mut servers: Vec<(&'static str, TcpListener, Router)> = Vec::new();
    for (listener, (_, gateway)) in gateway_listeners.into_iter().zip(&gateways) {
        servers.push(("gateway", listener, gateway.router()));
    }
    for (listener, (router, _)) in user_listeners.into_iter().zip(user_routers) {
        servers.push(("user", listener, router));
    }
    servers.push(("order", order_listener, order_router));
    for (listener, (router, _)) in product_listeners.into_iter().zip(product_routers) {
        servers.push(("product", listener, router));
    }
    servers.push(("payment", payment_listener, payment_router));
    tasks.extend(serve_all(servers, options.serve, &stop));
    let (gateway, control) = gateways[0].clone();
    Ok(Running {
        gateway,
        gateways,
        user,
        order,
        product,
        payment,
        control,
        faults: Faults {
            user: users[0].1.clone(),
            order: order_faults,
            product: products[0].1.clone(),
            payment: payment_faults,
        },
        users,
        products,
        orders,
        reloader,
        shutdown,
        tasks,
    })
}

/// Binds the shop's listeners on consecutive ports from the base port
/// (ephemeral ones with a base port of 0).
struct Ports<'a> {
    options: &'a ShopOptions,
    next: u16,
}

impl Ports<'_> {
    async fn bind(&mut self, n: u16) -> io::Result<Vec<TcpListener>> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(self.bind_one().await?);
        }
        Ok(listeners)
    }

    async fn bind_one(&mut self) -> io::Result<TcpListener> {
        let offset = self.next;
        self.next = self.next.saturating_add(1);
        bind(self.options, offset).await
    }
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
        // A service run alone calls one replica of each; a file's
        // `endpoints` lists more.
        replicas: Default::default(),
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
    /// Stops accepting connections and closes idle ones; returns once the
    /// requests in flight have been answered, or the grace period is over.
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
    let mut tasks = Vec::new();
    if let Some(gateway) = &control {
        spawn_reloader(&options, vec![gateway.clone()], None, &stop, &mut tasks)?;
    }
    tasks.extend(serve_all([(name, listener, router)], options.serve, &stop));
    Ok(Single {
        name,
        addr,
        control,
        shutdown,
        tasks,
    })
}
