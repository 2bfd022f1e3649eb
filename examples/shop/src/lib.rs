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
//! layers can be seen at work.

pub mod api;
pub mod gateway;
pub mod order;
pub mod payment;
pub mod product;
pub mod upstream;
pub mod user;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use palisade::chaos::Handle as FaultHandle;
use palisade::rate_limit::KeyedHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use api::AdminAuth;
use gateway::{ClientKey, GatewaySettings, UpstreamUrls};
use upstream::{Upstream, UpstreamSettings, http_client};

/// How to start the shop.
#[derive(Clone, Debug)]
pub struct ShopOptions {
    /// The gateway's port; the services take the next four. 0: every
    /// service on an ephemeral port (tests).
    pub base_port: u16,
    /// Requests per client per window at the gateway.
    pub rate_limit: (u64, Duration),
    pub upstream: UpstreamSettings,
    pub resilience: bool,
    pub admin_token: Option<String>,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            base_port: 8000,
            rate_limit: (100, Duration::from_secs(60)),
            upstream: UpstreamSettings::default(),
            resilience: true,
            admin_token: None,
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
    /// The gateway's per-client limiter.
    pub ingress: KeyedHandle<ClientKey>,
    /// Each service's faults: user, order, product, payment.
    pub faults: Faults,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

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

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Starts the gateway and the four services on 127.0.0.1.
pub async fn start(options: ShopOptions) -> io::Result<Running> {
    let invalid = |e: palisade::ConfigError| io::Error::new(io::ErrorKind::InvalidInput, e);
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
    let auth = AdminAuth {
        token: options.admin_token.as_deref().map(Arc::from),
    };
    let client = http_client();
    let upstream = |name, addr| {
        Upstream::new(
            name,
            &url(addr),
            client.clone(),
            &options.upstream,
            options.resilience,
        )
    };
    let orders = order::OrderService::new(
        upstream("user", user).map_err(invalid)?,
        upstream("product", product).map_err(invalid)?,
        upstream("payment", payment).map_err(invalid)?,
    );
    let (gateway_router, ingress) = gateway::router(
        GatewaySettings {
            urls: UpstreamUrls {
                user: url(user),
                product: url(product),
                order: url(order),
                payment: url(payment),
            },
            rate_limit: options.rate_limit,
            upstream: options.upstream.clone(),
            resilience: options.resilience,
        },
        client.clone(),
        auth.clone(),
    )
    .map_err(invalid)?;
    let (user_router, user_faults) = user::router(auth.clone());
    let (order_router, order_faults) = order::router(orders, auth.clone());
    let (product_router, product_faults) = product::router(auth.clone());
    let (payment_router, payment_faults) = payment::router(auth);
    let routers: [Router; 5] = [
        gateway_router,
        user_router,
        order_router,
        product_router,
        payment_router,
    ];
    let (shutdown, stop) = watch::channel(false);
    let tasks = listeners
        .into_iter()
        .zip(routers)
        .map(|(listener, router)| {
            let mut stop = stop.clone();
            tokio::spawn(api::serve(listener, router, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }))
        })
        .collect();
    Ok(Running {
        gateway,
        user,
        order,
        product,
        payment,
        ingress,
        faults: Faults {
            user: user_faults,
            order: order_faults,
            product: product_faults,
            payment: payment_faults,
        },
        shutdown,
        tasks,
    })
}
