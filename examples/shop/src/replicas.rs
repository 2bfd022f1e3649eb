//! A service run as several replicas, called through tower's p2c balancer
//! over peak-EWMA load, with a palisade breaker in front of each replica
//! that takes it out of the rotation while it fails (outlier ejection).
//!
//! ```text
//! preset (total timeout, retry, throttle, breaker, attempt timeout, bulkhead)
//!   └─ Balanced: p2c, fed by Discovery (the configured endpoints)
//!        ├─ PeakEwma ─ ejecting breaker ─ Replica http://127.0.0.1:8003
//!        └─ PeakEwma ─ ejecting breaker ─ Replica http://127.0.0.1:8005
//! ```
//!
//! The preset's retry sits above the balancer, so a call that failed on one
//! replica is tried again through the balancer: on another replica, unless
//! p2c draws the same one again. The preset's own breaker still sees the
//! service as a whole, and opens when every replica fails.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use palisade::circuit_breaker::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig, CircuitBreakerLayer,
    Handle as BreakerHandle,
};
use palisade::http::StatusClassifier;
use palisade::{BoxError, ConfigError};
use tokio::sync::mpsc;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::{Layer, Service, ServiceExt};

use crate::upstream::SharedClient;

type Call = Request<Full<Bytes>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Failures in a row that take a replica out of the rotation: few, as the
/// others serve its calls meanwhile, but more than one, so that a replica
/// failing now and then stays in.
pub const EJECT_AFTER: u64 = 5;

/// Peak-EWMA's guess of a new replica's round trip, until it has answered:
/// next to none (it must be above zero), so that a replica added is tried
/// at once and its first answers give its real cost. A guess above what the
/// others measure would keep it out of the rotation for a long while (p2c
/// picks the lower cost of two, and a guess only decays with time).
const DEFAULT_RTT: Duration = Duration::from_micros(1);
/// How fast peak-EWMA forgets a round trip (10 s, in nanoseconds).
const DECAY_NS: f64 = 10e9;

/// One replica, called through the shared client: the request's path made
/// absolute with the replica's address.
#[derive(Clone, Debug)]
struct Replica {
    base: Arc<str>,
    client: SharedClient,
}

impl Service<Call> for Replica {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<Response<Incoming>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.client.poll_ready(cx).map_err(BoxError::from)
    }

    fn call(&mut self, mut request: Call) -> Self::Future {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("{}{path}", self.base).parse::<Uri>();
        let mut client = self.client.clone();
        Box::pin(async move {
            *request.uri_mut() = uri?;
            Ok(client.call(request).await?)
        })
    }
}

/// A replica as the balancer sees it: its load, and its breaker.
type Endpoint = PeakEwma<CircuitBreaker<Replica, StatusClassifier>>;

/// Builds the endpoint for each address, each with a breaker of its own.
/// The breaker counts 5xx answers and errors: a replica that hangs is cut
/// off by the attempt timeout above, which the breaker does not hold
/// against it; peak-EWMA steers calls away from a slow replica instead.
#[derive(Clone)]
struct Endpoints {
    name: &'static str,
    client: SharedClient,
    ejection: CircuitBreakerConfig,
    /// Each replica's breaker, by address: what the balancer holds now.
    breakers: Arc<Mutex<BTreeMap<String, BreakerHandle>>>,
}

impl Endpoints {
    fn breaker(&self, base: &str) -> Result<CircuitBreakerLayer<StatusClassifier>, ConfigError> {
        CircuitBreakerBuilder::from_config(self.ejection.clone())
            .name(format!("{}@{base}", self.name))
            .eject_while_open()
            .classifier(StatusClassifier::new())
            .build()
    }

    fn endpoint(&self, base: &str) -> Result<Endpoint, ConfigError> {
        let breaker = self.breaker(base)?;
        self.lock().insert(base.to_owned(), breaker.handle());
        let replica = Replica {
            base: Arc::from(base),
            client: self.client.clone(),
        };
        let service = breaker.layer(replica);
        Ok(PeakEwma::new(
            service,
            DEFAULT_RTT,
            DECAY_NS,
            CompleteOnResponse::default(),
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BreakerHandle>> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The balancer's discovery: the replicas of the list last given, as
/// tower's changes (each new address inserted, each one gone removed).
struct Discovery {
    lists: mpsc::UnboundedReceiver<Vec<String>>,
    known: BTreeSet<String>,
    changes: VecDeque<Change<String, Endpoint>>,
    endpoints: Endpoints,
}

impl Discovery {
    fn take(&mut self, list: Vec<String>) {
        let wanted: BTreeSet<String> = list.into_iter().collect();
        for gone in self.known.difference(&wanted) {
            self.endpoints.lock().remove(gone);
            self.changes.push_back(Change::Remove(gone.clone()));
        }
        for new in wanted.difference(&self.known) {
            match self.endpoints.endpoint(new) {
                Ok(endpoint) => self
                    .changes
                    .push_back(Change::Insert(new.clone(), endpoint)),
                // Checked when the settings were read: not expected here.
                Err(error) => tracing::error!(%error, replica = %new, "replica left out"),
            }
        }
        self.known = wanted;
    }
}

impl futures_core::Stream for Discovery {
    type Item = Result<Change<String, Endpoint>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.changes.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match std::task::ready!(self.lists.poll_recv(cx)) {
                Some(list) => self.take(list),
                // The upstream is gone, and the balancer with it.
                None => return Poll::Ready(None),
            }
        }
    }
}

/// A replicated service's endpoints behind p2c, shared by every clone of
/// the stack above it.
#[derive(Clone)]
pub struct Balanced {
    /// One caller at a time takes a ready replica and calls it; the call
    /// itself runs unlocked. (tower's `Buffer` would do this with a task.)
    balance: Arc<tokio::sync::Mutex<Balance<Discovery, Call>>>,
    lists: mpsc::UnboundedSender<Vec<String>>,
    endpoints: Endpoints,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("replicas", &self.replicas())
            .finish_non_exhaustive()
    }
}

impl Balanced {
    /// `name`'s replicas at `bases`, through `client`, each ejected as
    /// [`EJECT_AFTER`] failures in a row open its breaker, for `open_for`
    /// (then one probe call decides).
    pub fn new(
        name: &'static str,
        bases: &[String],
        client: SharedClient,
        open_for: Duration,
    ) -> Result<Balanced, ConfigError> {
        let mut ejection = CircuitBreakerConfig::default();
        ejection.consecutive_failures = Some(EJECT_AFTER);
        ejection.open_for = open_for;
        ejection.half_open_probes = 1;
        let endpoints = Endpoints {
            name,
            client,
            ejection,
            breakers: Arc::default(),
        };
        // Once here, so that a setting refused is refused with the file.
        endpoints.breaker("check")?;
        let (lists, receiver) = mpsc::unbounded_channel();
        let discovery = Discovery {
            lists: receiver,
            known: BTreeSet::new(),
            changes: VecDeque::new(),
            endpoints: endpoints.clone(),
        };
        let balanced = Balanced {
            balance: Arc::new(tokio::sync::Mutex::new(Balance::new(discovery))),
            lists,
            endpoints,
        };
        balanced.set_replicas(bases.to_vec());
        Ok(balanced)
    }

    /// Replaces the list of replicas: those gone leave the rotation (calls
    /// in flight on them finish), new ones join it, the rest keep their
    /// breakers and load. Taken at the next call.
    pub fn set_replicas(&self, bases: Vec<String>) {
        // The receiver lives as long as the balancer, which this holds.
        let _ = self.lists.send(bases);
    }

    /// The replicas the balancer holds, each with its breaker.
    pub fn replicas(&self) -> Vec<(String, BreakerHandle)> {
        let breakers = self.endpoints.lock();
        breakers
            .iter()
            .map(|(base, breaker)| (base.clone(), breaker.clone()))
            .collect()
    }
}

impl Service<Call> for Balanced {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<Response<Incoming>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the balancer's, taken in the call: the layers above
        // bound the wait (the attempt timeout), as when every replica is
        // out of the rotation.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Call) -> Self::Future {
        let balance = self.balance.clone();
        Box::pin(async move {
            let call = {
                let mut balance = balance.lock().await;
                balance.ready().await?.call(request)
            };
            call.await
        })
    }
}
