//! The demo: nine phases of traffic through the gateway, each showing one
//! layer at work, with a table per phase and a check of what it should
//! show.
//!
//! 1. Healthy traffic.
//! 2. The product service fails every call: after fifteen failed calls in a
//!    row the breaker opens and the gateway answers 503 `circuit_open` at
//!    once.
//! 3. Faults cleared: half-open probes, the circuit closes, traffic
//!    recovers.
//! 4. The product service takes 3 s: each attempt is cut at the 2 s attempt
//!    timeout and the answer is a 504.
//! 5. One client goes over its rate limit and gets 429s while another is
//!    unaffected.
//! 6. The payment service fails: orders are cancelled and their stock is
//!    restored.
//! 7. The product service fails 30 % of its calls at random: through the
//!    layers callers are served more often than straight from the service,
//!    the service sees at most 1.5 times the requests, and its breaker
//!    stays closed.
//! 8. On a stack of its own with three product replicas behind the
//!    balancer, one replica fails every call: once its breaker ejects it,
//!    under 1 % of requests fail, and none reaches it.
//! 9. The product list, fetched while the product service is well, then
//!    asked for while it fails every call and its circuit is open: the
//!    last good copy, byte for byte, marked `X-Degraded: true`; a list
//!    never fetched, and a product's own page, get their 503. Once the
//!    service is back, the list is its own again, unmarked.
//!
//! It expects the default settings ([`crate::config::DEFAULTS`]) and a key
//! of its own to sign customers' tokens with ([`with_demo_key`]): it plays
//! the identity provider. Product browsing is anonymous; users and orders
//! are called as customer 1, phase 5's two clients are customers 2 and 3,
//! calling from the same address, phase 7 spreads its requests over
//! customers 100 to 119, so that no one of them meets the rate limit, and
//! phase 9 is customer 5.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::report::{BreakerSample, BreakerState, PhaseSpan, Recording, RequestRecord};
use crate::upstream::{HttpClient, Upstream, http_client};
use crate::{Running, ShopOptions, auth, config};

/// The `kid` of the demo's key.
const DEMO_KID: &str = "demo";
/// Requests in phase 2, while the product service fails every call.
const PRODUCT_FAILS_REQUESTS: usize = 80;
/// Phase 8: the most requests to wait for the failing replica's ejection,
/// and the requests sent once it is out (3 s of them, within its 5 s out).
const REPLICA_REQUESTS_BEFORE: usize = 1_000;
const REPLICA_REQUESTS: usize = 300;

/// `options` with a key for the demo to sign customers' tokens with: an
/// HS256 secret made up for this run, so that no token outlives it.
pub fn with_demo_key(mut options: ShopOptions) -> ShopOptions {
    let mut key = toml::Table::new();
    key.insert("kid".into(), DEMO_KID.into());
    key.insert("alg".into(), "HS256".into());
    key.insert("secret".into(), auth::random_secret().into());
    let mut auth = toml::Table::new();
    auth.insert("keys".into(), toml::Value::Array(vec![key.into()]));
    let mut gateway = toml::Table::new();
    gateway.insert("auth".into(), auth.into());
    let mut document = toml::Table::new();
    document.insert("gateway".into(), gateway.into());
    config::merge(&mut options.overrides, &document);
    options
}

/// What one phase did and whether it showed what it should.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    pub title: &'static str,
    pub requests: usize,
    /// Answers by status; 0 for a request that got no answer.
    pub statuses: BTreeMap<u16, usize>,
    pub p50: Duration,
    pub p99: Duration,
    /// Breaker changes seen, as `gateway→product closed→open`.
    pub transitions: Vec<String>,
    /// Retries made by every upstream stack, and retries the retry budget
    /// refused.
    pub retries: u64,
    pub budget_refusals: u64,
    /// What the phase should show, and whether it did.
    pub checks: Vec<(String, bool)>,
}

impl PhaseReport {
    /// Every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, held)| *held)
    }

    /// The phase as a small table.
    pub fn table(&self, number: usize) -> String {
        let mut out = String::new();
        let statuses = self
            .statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("{n} × no answer"),
                s => format!("{n} × {s}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let transitions = if self.transitions.is_empty() {
            "none".to_owned()
        } else {
            self.transitions.join(", ")
        };
        let _ = writeln!(out, "\nPhase {number}: {}", self.title);
        let _ = writeln!(out, "  requests     {}", self.requests);
        let _ = writeln!(out, "  answers      {statuses}");
        let _ = writeln!(
            out,
            "  latency      p50 {}  p99 {}",
            millis(self.p50),
            millis(self.p99)
        );
        let _ = writeln!(out, "  breakers     {transitions}");
        let _ = writeln!(
            out,
            "  retries      {} ({} refused by the retry budget)",
            self.retries, self.budget_refusals
        );
        for (check, held) in &self.checks {
            let _ = writeln!(out, "  {} {check}", if *held { "ok  " } else { "FAIL" });
        }
        out
    }
}

fn millis(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// One answer as the demo's client saw it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
    /// Marked `X-Degraded: true`: a copy, not the service's answer.
    degraded: bool,
    /// When it was sent.
    sent: Instant,
    took: Duration,
}

/// A request to send through the gateway.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    /// A customer's token; `None`: anonymous.
    token: Option<String>,
    body: Option<Value>,
    idempotency_key: Option<String>,
}

impl Call {
    /// An anonymous `GET`.
    fn get(path: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            token: None,
            body: None,
            idempotency_key: None,
        }
    }

    /// An order of one of `product_id` for the customer whose `token` it
    /// is, user 1.
    fn order(token: String, product_id: u64, key: String) -> Call {
        Call {
            method: Method::POST,
            path: "/api/orders".into(),
            token: Some(token),
            body: Some(json!({"user_id": 1, "product_id": product_id, "quantity": 1})),
            idempotency_key: Some(key),
        }
    }

    fn by(mut self, token: String) -> Call {
        self.token = Some(token);
        self
    }
}

/// The demo's view of the stack: the gateway to call, the services to
/// break, the breakers to watch.
struct Demo<'a> {
    running: &'a Running,
    client: HttpClient,
    progress: Progress,
    /// The secret of the demo's key, from the gateway's settings.
    secret: String,
    recorder: Recorder,
}

/// Runs the nine phases against `running` and writes a table per phase to
/// `out`; `progress` draws a progress bar on standard error when it is a
/// terminal. Answers each phase's report.
pub async fn run(running: &Running, out: &mut dyn Write, progress: bool) -> Vec<PhaseReport> {
    run_recorded(running, out, progress).await.0
}

/// [`run`], answering as well a recording of the run over time: each
/// request and each upstream's breaker state, for
/// [`crate::report::render`].
pub async fn run_recorded(
    running: &Running,
    out: &mut dyn Write,
    progress: bool,
) -> (Vec<PhaseReport>, Recording) {
    let secret = running
        .control
        .config()
        .auth
        .keys
        .iter()
        .find(|key| key.kid.as_deref() == Some(DEMO_KID))
        .and_then(|key| key.secret.clone());
    if secret.is_none() {
        tracing::error!("no demo key (see with_demo_key): every customer's call will be a 401");
    }
    let mut demo = Demo {
        running,
        client: http_client(),
        progress: Progress::new(progress && std::io::stderr().is_terminal()),
        secret: secret.unwrap_or_default(),
        recorder: Recorder::start(running),
    };
    let mut reports = Vec::new();
    for number in 1..=PHASES.len() {
        let report = demo.phase(number).await;
        demo.progress.clear();
        let _ = out.write_all(report.table(number).as_bytes());
        let _ = out.flush();
        reports.push(report);
    }
    (reports, demo.recorder.recording)
}

const PHASES: [&str; 9] = [
    "healthy traffic",
    "the product service fails every call",
    "faults cleared: the breaker probes and closes",
    "the product service takes 3 s per call",
    "one client goes over its rate limit",
    "the payment service fails",
    "the product service fails 30 % of calls at random",
    "one product replica of three fails every call",
    "the product circuit is open: the list is its last good copy",
];

/// Watches every upstream stack, the gateway's and the order service's:
/// breaker transitions and retry counts.
struct Watch {
    breakers: Vec<(String, Upstream, usize)>,
    retries: (u64, u64),
}

impl Watch {
    fn start(running: &Running) -> Watch {
        let mut breakers = Vec::new();
        for name in crate::config::UPSTREAMS {
            if let Some(upstream) = running.control.upstream(name) {
                breakers.push((format!("gateway→{name}"), upstream, 0));
            }
        }
        let orders = &running.orders;
        for upstream in [&orders.users, &orders.products, &orders.payments] {
            breakers.push((format!("order→{}", upstream.name), upstream.clone(), 0));
        }
        for (_, upstream, seen) in &mut breakers {
            *seen = upstream.transitions.total();
        }
        let retries = Self::retries(&breakers);
        Watch { breakers, retries }
    }

    fn retries(breakers: &[(String, Upstream, usize)]) -> (u64, u64) {
        breakers
            .iter()
            .fold((0, 0), |(retries, refused), (_, upstream, _)| {
                let counts = upstream.retry.counts();
                (retries + counts.retries, refused + counts.budget_refusals)
            })
    }

    /// Retries and budget refusals since the watch started.
    fn retried(&self) -> (u64, u64) {
        let (retries, refused) = Self::retries(&self.breakers);
        (retries - self.retries.0, refused - self.retries.1)
    }

    fn seen(&self) -> Vec<String> {
        self.breakers
            .iter()
            .flat_map(|(label, upstream, seen)| {
                upstream
                    .transitions
                    .since(*seen)
                    .into_iter()
                    .map(move |t| format!("{label} {t}"))
            })
            .collect()
    }
}

/// Records the run for the report, out of the phases' way: each phase's
/// answers once it is over, and the breakers' states whenever an answer
/// comes in (and while the demo waits), kept only when they change.
struct Recorder {
    started: Instant,
    /// Every upstream stack, as [`Watch`] names them, with the breaker
    /// transitions already recorded.
    upstreams: Vec<(String, Upstream, usize)>,
    /// The last state recorded per upstream.
    last: BTreeMap<String, BreakerState>,
    recording: Recording,
}

impl Recorder {
    fn start(running: &Running) -> Recorder {
        let mut recorder = Recorder {
            started: Instant::now(),
            upstreams: Watch::start(running).breakers,
            last: BTreeMap::new(),
            recording: Recording {
                started_at: std::time::SystemTime::now(),
                phases: Vec::new(),
                requests: Vec::new(),
                breakers: Vec::new(),
            },
        };
        recorder.sample();
        recorder
    }

    fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    /// Every watched breaker's state now, after the states it went
    /// through since the last sample: a half-open breaker whose probes
    /// close it within a request is seen too.
    fn sample(&mut self) {
        let now = self.since_start(Instant::now());
        for i in 0..self.upstreams.len() {
            let (label, upstream, seen) = &mut self.upstreams[i];
            let passed = upstream.transitions.changes_since(*seen);
            *seen = upstream.transitions.total();
            let (label, state) = (label.clone(), upstream.breaker.state());
            for (_, to) in passed {
                self.record_state(now, label.clone(), to);
            }
            self.record_state(now, label, state);
        }
    }

    /// [`Recorder::sample`], and the breakers of `upstream`'s replicas
    /// (phase 8's own stack), named by their place in `bases` and the one
    /// at `failing` marked: `gateway→product replica 3 (failing)`.
    fn sample_replicas(&mut self, upstream: &Upstream, bases: &[String], failing: usize) {
        self.sample();
        let Some(replicas) = &upstream.replicas else {
            return;
        };
        let now = self.since_start(Instant::now());
        for (base, breaker) in replicas.replicas() {
            let Some(i) = bases.iter().position(|b| *b == base) else {
                continue;
            };
            let mark = if i == failing { " (failing)" } else { "" };
            let label = format!("gateway→{} replica {}{mark}", upstream.name, i + 1);
            self.record_state(now, label, breaker.state());
        }
    }

    fn record_state(
        &mut self,
        at: Duration,
        upstream: String,
        state: palisade::circuit_breaker::State,
    ) {
        use palisade::circuit_breaker::State;
        let state = match state {
            State::Closed => BreakerState::Closed,
            State::HalfOpen => BreakerState::HalfOpen,
            State::Open => BreakerState::Open,
            _ => BreakerState::Other,
        };
        if self.last.get(&upstream) != Some(&state) {
            self.last.insert(upstream.clone(), state);
            self.recording.breakers.push(BreakerSample {
                at,
                upstream,
                state,
            });
        }
    }

    /// A phase that ran from `started` to now, with its answers.
    fn phase(&mut self, report: &PhaseReport, number: usize, started: Instant, answers: &[Answer]) {
        self.sample();
        for answer in answers {
            self.recording.requests.push(RequestRecord {
                at: self.since_start(answer.sent),
                phase: number,
                outcome: crate::report::outcome(answer.status, answer.body["error"].as_str()),
                latency: answer.took,
            });
        }
        self.recording.phases.push(PhaseSpan {
            number,
            title: report.title.to_owned(),
            start: self.since_start(started),
            end: self.since_start(Instant::now()),
            checks: report.checks.clone(),
        });
    }
}

impl Demo<'_> {
    /// A token for customer `user`, good for the demo's run.
    fn token(&self, user: u64) -> String {
        let ttl = Duration::from_secs(3600);
        auth::mint_hs256(
            self.secret.as_bytes(),
            Some(DEMO_KID),
            &user.to_string(),
            ttl,
        )
    }

    async fn phase(&mut self, number: usize) -> PhaseReport {
        let title = PHASES[number - 1];
        self.progress.phase(number, title);
        let started = Instant::now();
        self.recorder.sample();
        let watch = Watch::start(self.running);
        let (answers, checks) = match number {
            1 => self.healthy().await,
            2 => self.product_fails().await,
            3 => self.recovery().await,
            4 => self.product_slow().await,
            5 => self.rate_limited().await,
            6 => self.payment_fails().await,
            7 => self.scattered_failures().await,
            8 => self.replica_fails().await,
            _ => self.catalogue_from_copy().await,
        };
        let mut took: Vec<Duration> = answers.iter().map(|a| a.took).collect();
        took.sort();
        let mut statuses = BTreeMap::new();
        for answer in &answers {
            *statuses.entry(answer.status).or_default() += 1;
        }
        let (retries, budget_refusals) = watch.retried();
        let report = PhaseReport {
            title,
            retries,
            budget_refusals,
            requests: answers.len(),
            statuses,
            p50: percentile(&took, 0.50),
            p99: percentile(&took, 0.99),
            transitions: watch.seen(),
            checks,
        };
        self.recorder.phase(&report, number, started, &answers);
        report
    }

    async fn healthy(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        let mut calls: Vec<Call> = (0..24)
            .map(|i| match i % 2 {
                0 => Call::get(format!("/api/products/{}", i % 4 + 1)),
                _ => Call::get("/api/users/1").by(self.token(1)),
            })
            .collect();
        calls.extend((0..6).map(|i| Call::order(self.token(1), 1, format!("demo-healthy-{i}"))));
        let answers = self.send_all(calls, 4).await;
        let ok = answers.iter().all(|a| (200..300).contains(&a.status));
        (answers, vec![("every answer is 2xx".into(), ok)])
    }

    /// Enough to show the breaker open and answering for a while.
    async fn product_fails(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        self.faults("product", 1.0, 0).await;
        let mut answers = Vec::new();
        // A customer of its own, so that these requests stay within one
        // client's rate limit (100 a minute) whatever the other phases send.
        let token = self.token(4);
        for _ in 0..PRODUCT_FAILS_REQUESTS {
            let call = Call::get("/api/products/1").by(token.clone());
            answers.push(self.send(call).await);
            self.progress.step(answers.len(), PRODUCT_FAILS_REQUESTS);
        }
        self.faults("product", 0.0, 0).await;
        let open: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.status == 503 && a.body["error"] == "circuit_open")
            .collect();
        // The first may be a request whose retry, after its backoff, met
        // the circuit just opened; every one after it is refused at once.
        let slowest_open = open
            .iter()
            .skip(1)
            .map(|a| a.took)
            .max()
            .unwrap_or_default();
        let checks = vec![
            (
                "the product service's 500s come through at first".into(),
                answers.first().is_some_and(|a| a.status == 500),
            ),
            (
                format!(
                    "then, once the circuit opened, 503 circuit_open for every request ({} of {PRODUCT_FAILS_REQUESTS})",
                    open.len()
                ),
                // Fifteen failed calls in a row open it (a few requests,
                // with their retries). Before that, once the failures
                // outnumber phase 1's successes, the throttle may refuse a
                // request or two (503 throttled); once it is open, nothing
                // gets through.
                answers
                    .iter()
                    .skip_while(|a| a.status == 500 || a.body["error"] == "throttled")
                    .all(|a| a.status == 503 && a.body["error"] == "circuit_open")
                    && !open.is_empty(),
            ),
            (
                format!(
                    "answered at once, without calling the product service (slowest {})",
                    millis(slowest_open)
                ),
                !open.is_empty() && slowest_open < Duration::from_millis(100),
            ),
            (
                "each 503 says when to come back (Retry-After)".into(),
                open.iter()
                    .all(|a| a.body["retry_after"].as_u64().is_some()),
            ),
        ];
        (answers, checks)
    }

    /// Waits out the product breaker's open period (5 s), then the
    /// throttle's window (10 s in all): the failures counted before the
    /// breaker opened stay in that window, and until they leave it the
    /// throttle would refuse a share of the first calls after recovery, as
    /// it does for an upstream that has only just come back.
    async fn wait_for_recovery(&mut self) {
        let started = Instant::now();
        let settle = Duration::from_secs(10);
        while started.elapsed() < settle {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.progress.wait(started.elapsed(), settle);
            self.recorder.sample();
        }
    }

    async fn recovery(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        let product = self.running.control.upstream("product");
        if product.is_some() {
            self.wait_for_recovery().await;
        }
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push(self.send(Call::get("/api/products/1")).await);
            self.progress.step(answers.len(), 20);
        }
        let closed = product
            .as_ref()
            .is_some_and(|p| p.breaker.state() == palisade::circuit_breaker::State::Closed);
        let checks = vec![
            (
                "every answer is 200 once the open period is over".into(),
                answers.iter().all(|a| a.status == 200),
            ),
            ("the product circuit is closed again".into(), closed),
        ];
        (answers, checks)
    }

    async fn product_slow(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        self.faults("product", 0.0, 3000).await;
        let attempts_before = self.running.faults.product.delayed();
        // Three callers, so that the breaker (ten calls at least) stays
        // closed and each one ends in the timeout rather than an open
        // circuit.
        let calls = (0..3).map(|_| Call::get("/api/products/2")).collect();
        let answers = self.send_all(calls, 3).await;
        self.faults("product", 0.0, 0).await;
        // Each attempt reached the product service and sat in its delay.
        let attempts = self.running.faults.product.delayed() - attempts_before;
        let waited: Duration = answers.iter().map(|a| a.took).sum();
        let cut = Duration::from_secs(2) * u32::try_from(attempts).unwrap_or(u32::MAX);
        // Retries add their backoff (at most 1 s each) to the callers' wait.
        let retries = attempts.saturating_sub(answers.len() as u64);
        let backoff = Duration::from_secs(1) * u32::try_from(retries).unwrap_or(u32::MAX);
        let checks = vec![
            (
                "every answer is 504 timeout".into(),
                answers
                    .iter()
                    .all(|a| a.status == 504 && a.body["error"] == "timeout"),
            ),
            (
                format!(
                    "{attempts} attempts, each cut at the 2 s attempt timeout instead of \
                     waiting out the 3 s (the callers waited {} in all)",
                    millis(waited)
                ),
                attempts >= answers.len() as u64
                    && waited >= cut
                    && waited < cut + backoff + Duration::from_millis(500),
            ),
        ];
        (answers, checks)
    }

    async fn rate_limited(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        // Both from this one address: the limit keys on who the token
        // says they are.
        let greedy = (0..110)
            .map(|_| Call::get("/api/products/3").by(self.token(2)))
            .collect();
        let mut answers = self.send_all(greedy, 8).await;
        let refused = answers.iter().filter(|a| a.status == 429).count();
        let polite = (0..10)
            .map(|_| Call::get("/api/products/3").by(self.token(3)))
            .collect();
        let polite = self.send_all(polite, 2).await;
        let polite_ok = polite.iter().all(|a| a.status == 200);
        answers.extend(polite);
        let checks = vec![
            (
                format!("customer 2: 100 admitted, {refused} of 110 refused with 429"),
                refused == 10,
            ),
            ("customer 3: all 10 answered 200".into(), polite_ok),
        ];
        (answers, checks)
    }

    async fn payment_fails(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        let stock = |answer: &Answer| answer.body["stock"].as_u64();
        let before = self.send(Call::get("/api/products/2")).await;
        self.faults("payment", 1.0, 0).await;
        let mut answers = Vec::new();
        for i in 0..5 {
            let key = format!("demo-payment-{i}");
            answers.push(self.send(Call::order(self.token(1), 2, key)).await);
            self.progress.step(i + 1, 5);
        }
        self.faults("payment", 0.0, 0).await;
        let after = self.send(Call::get("/api/products/2")).await;
        let cancelled = answers
            .iter()
            .filter(|a| a.status == 402 && a.body["order"]["status"] == "cancelled")
            .count();
        let checks = vec![
            (
                format!("{cancelled} of 5 orders cancelled (402 payment_failed)"),
                cancelled == 5,
            ),
            (
                format!(
                    "stock restored: {} before, {} after",
                    stock(&before).map_or("?".into(), |s| s.to_string()),
                    stock(&after).map_or("?".into(), |s| s.to_string())
                ),
                stock(&before).is_some() && stock(&before) == stock(&after),
            ),
        ];
        (answers, checks)
    }

    /// 1 000 product reads while the product service fails 30 % of its
    /// calls at random, through the gateway and then straight to the
    /// service: retry (within its budget) turns most failures into answers,
    /// the budget keeps the extra load under half, and the breaker, there
    /// for a service that is down, stays closed.
    async fn scattered_failures(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        const REQUESTS: usize = 1_000;
        let product = self.running.control.upstream("product");
        let openings = product.as_ref().map(|p| p.transitions.total());
        let faults = &self.running.faults.product;
        self.faults("product", 0.3, 0).await;
        let failed_before = faults.failed();
        let calls = (0..REQUESTS)
            .map(|i| {
                let customer = 100 + (i % 20) as u64;
                Call::get(format!("/api/products/{}", i % 4 + 1)).by(self.token(customer))
            })
            .collect();
        let answers = self.send_all(calls, 4).await;
        let ok = |answers: &[Answer]| answers.iter().filter(|a| a.status == 200).count();
        let served = ok(&answers);
        // Each failure the service injected, and each answer it gave (a
        // request is answered once).
        let upstream_calls = (faults.failed() - failed_before) as usize + served;
        let direct = (0..REQUESTS)
            .map(|i| Call::get(format!("/products/{}", i % 4 + 1)))
            .collect();
        let direct = self.send_all_to(self.running.product, direct, 4).await;
        self.faults("product", 0.0, 0).await;
        let percent = |n: usize| 100.0 * n as f64 / REQUESTS as f64;
        let amplification = upstream_calls as f64 / REQUESTS as f64;
        let closed = product.as_ref().map(|p| p.transitions.total()) == openings;
        let checks = vec![
            (
                format!(
                    "{:.1} % served through the layers, {:.1} % straight from the service",
                    percent(served),
                    percent(ok(&direct))
                ),
                served >= ok(&direct) && percent(served) >= 85.0,
            ),
            (
                format!("the product service saw {amplification:.2} × the requests (at most 1.5)"),
                amplification <= 1.5,
            ),
            ("the product breaker stayed closed".into(), closed),
        ];
        (answers, checks)
    }

    /// Sets a service's faults through its admin endpoint.
    async fn faults(&self, service: &str, error_rate: f64, latency_ms: u64) {
        let addr = match service {
            "product" => self.running.product,
            _ => self.running.payment,
        };
        let body = json!({"error_rate": error_rate, "latency_ms": latency_ms});
        let answer = send(
            &self.client,
            addr,
            Call {
                method: Method::PUT,
                path: "/admin/faults".into(),
                token: None,
                body: Some(body),
                idempotency_key: None,
            },
        )
        .await;
        if answer.status != 200 {
            tracing::error!(service, status = answer.status, "could not set faults");
        }
    }

    /// A stack of its own, with three product replicas (the phases before
    /// run against one): one of them fails every call; its breaker in the
    /// gateway takes it out of the balancer's rotation.
    async fn replica_fails(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        let options = ShopOptions {
            base_port: 0,
            replicas: 3,
            resilience: true,
            ..ShopOptions::default()
        }
        // Anonymous reads from one address: more than one client's limit.
        .settings("gateway.rate_limit = { limit = 100000, window = \"60s\" }");
        let replicated = match options {
            Ok(options) => crate::start(options).await,
            Err(error) => Err(std::io::Error::other(error)),
        };
        let replicated = match replicated {
            Ok(replicated) => replicated,
            Err(error) => {
                let check = format!("a stack with three product replicas starts: {error}");
                return (Vec::new(), vec![(check, false)]);
            }
        };
        const SICK: usize = 2;
        let (sick, sick_faults) = replicated.products[SICK].clone();
        let bases: Vec<String> = replicated
            .products
            .iter()
            .map(|(addr, _)| format!("http://{addr}"))
            .collect();
        let _ = sick_faults.set_error_rate(1.0);
        // The balancer takes its replicas at its first call: looked up
        // each time.
        let product = replicated.control.upstream("product");
        let sick_url = format!("http://{sick}");
        let is_open = || {
            let replicas = product.as_ref().and_then(|p| p.replicas.as_ref());
            replicas.is_some_and(|replicas| {
                replicas.replicas().iter().any(|(base, breaker)| {
                    *base == sick_url && breaker.state() == palisade::circuit_breaker::State::Open
                })
            })
        };
        // Until its breaker opens, the sick replica fails its share of the
        // attempts (retry takes most of them on to another replica).
        let mut answers = Vec::new();
        let total = REPLICA_REQUESTS_BEFORE + REPLICA_REQUESTS;
        while !is_open() && answers.len() < REPLICA_REQUESTS_BEFORE {
            answers.push(self.paced(replicated.gateway, answers.len()).await);
            self.progress.step(answers.len(), total);
            if let Some(product) = &product {
                self.recorder.sample_replicas(product, &bases, SICK);
            }
        }
        let opened_after = answers.len();
        let opened = is_open();
        let failed_before = sick_faults.failed();
        let mut after = Vec::new();
        while opened && after.len() < REPLICA_REQUESTS {
            after.push(self.paced(replicated.gateway, after.len()).await);
            self.progress.step(opened_after + after.len(), total);
            if let Some(product) = &product {
                self.recorder.sample_replicas(product, &bases, SICK);
            }
        }
        let errors = after.iter().filter(|a| a.status != 200).count();
        let service_breaker = replicated
            .control
            .upstream("product")
            .map(|product| product.breaker.state());
        let _ = replicated.shutdown().await;
        let checks = vec![
            (
                format!("its breaker ejected it, after {opened_after} requests"),
                opened,
            ),
            (
                format!(
                    "then {errors} of {} requests failed (under 1 %)",
                    after.len()
                ),
                opened && errors * 100 < after.len(),
            ),
            (
                "and none of them reached the failing replica".into(),
                opened && sick_faults.failed() == failed_before,
            ),
            (
                "the product service's own breaker stayed closed".into(),
                service_breaker == Some(palisade::circuit_breaker::State::Closed),
            ),
        ];
        answers.extend(after);
        (answers, checks)
    }

    /// The product list, fetched while the product service is well; then
    /// the service fails every call, product pages open its circuit, and
    /// the list is asked for again, with a list never fetched and a
    /// product's page; then the service comes back.
    async fn catalogue_from_copy(&mut self) -> (Vec<Answer>, Vec<(String, bool)>) {
        use palisade::circuit_breaker::State;
        let token = self.token(5);
        let get = |path: &str| Call::get(path).by(token.clone());
        let product = self.running.control.upstream("product");
        let is_open = || {
            product
                .as_ref()
                .is_some_and(|p| p.breaker.state() == State::Open)
        };
        let served = || {
            self.running
                .control
                .catalogue_fallback()
                .map_or(0, |fallback| fallback.handle().served_total())
        };
        let served_before = served();
        let healthy = self.send(get("/api/products")).await;
        let mut answers = vec![healthy.clone()];
        self.faults("product", 1.0, 0).await;
        // Opened by product pages: they get no copy, so each failure is
        // one the breaker counts and the caller sees.
        while !is_open() && answers.len() < 40 {
            answers.push(self.send(get("/api/products/1")).await);
        }
        let opened = is_open();
        let copy = self.send(get("/api/products")).await;
        let unseen = self.send(get("/api/products?sort=price")).await;
        let page = self.send(get("/api/products/2")).await;
        let copies = served() - served_before;
        answers.extend([copy.clone(), unseen.clone(), page.clone()]);
        self.faults("product", 0.0, 0).await;
        self.wait_for_recovery().await;
        let mut fresh = Vec::new();
        for _ in 0..3 {
            fresh.push(self.send(get("/api/products")).await);
        }
        let own = send(&self.client, self.running.product, Call::get("/products")).await;
        let closed = product
            .as_ref()
            .is_some_and(|p| p.breaker.state() == State::Closed);
        let circuit_open = |a: &Answer| a.status == 503 && a.body["error"] == "circuit_open";
        let checks = vec![
            (
                "the list, fetched while the service was well, is 200 and unmarked".into(),
                healthy.status == 200 && !healthy.degraded,
            ),
            ("product pages opened the product circuit".into(), opened),
            (
                "while it is open, the list is the last good copy, marked X-Degraded: true".into(),
                opened
                    && copy.status == 200
                    && copy.degraded
                    && copy.body == healthy.body
                    && copies == 1,
            ),
            (
                "a list never fetched gets its 503 circuit_open, unmarked".into(),
                circuit_open(&unseen) && !unseen.degraded,
            ),
            (
                "a product's own page gets its 503 circuit_open: no stale price".into(),
                circuit_open(&page) && !page.degraded,
            ),
            (
                "once the service is back, the list is its own again, unmarked".into(),
                closed
                    && fresh
                        .iter()
                        .all(|a| a.status == 200 && !a.degraded && a.body == own.body)
                    && served() - served_before == copies,
            ),
        ];
        answers.extend(fresh);
        (answers, checks)
    }

    /// A product read through the gateway at `gateway`, then a pause:
    /// steady traffic, as the replicas' breakers see over time.
    async fn paced(&self, gateway: SocketAddr, n: usize) -> Answer {
        let answer = send(
            &self.client,
            gateway,
            Call::get(format!("/api/products/{}", n % 4 + 1)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer
    }

    async fn send(&mut self, call: Call) -> Answer {
        let answer = send(&self.client, self.running.gateway, call).await;
        self.recorder.sample();
        answer
    }

    /// Sends `calls` through the gateway, `concurrency` at a time; answers
    /// in sending order.
    async fn send_all(&mut self, calls: Vec<Call>, concurrency: usize) -> Vec<Answer> {
        self.send_all_to(self.running.gateway, calls, concurrency)
            .await
    }

    /// Sends `calls` to `addr`, `concurrency` at a time; answers in sending
    /// order.
    async fn send_all_to(
        &mut self,
        addr: SocketAddr,
        calls: Vec<Call>,
        concurrency: usize,
    ) -> Vec<Answer> {
        let total = calls.len();
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut tasks = JoinSet::new();
        for (i, call) in calls.into_iter().enumerate() {
            let (client, permits) = (self.client.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (i, send(&client, addr, call).await)
            });
        }
        let mut answers = vec![None; total];
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, answer)) = joined {
                answers[i] = Some(answer);
            }
            self.recorder.sample();
            done += 1;
            self.progress.step(done, total);
        }
        answers.into_iter().flatten().collect()
    }
}

async fn send(client: &HttpClient, addr: SocketAddr, call: Call) -> Answer {
    let started = Instant::now();
    let mut request = Request::builder()
        .method(call.method)
        .uri(format!("http://{addr}{}", call.path));
    if let Some(token) = &call.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(key) = &call.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let body = match &call.body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let answer = match request.body(Full::new(body)) {
        Ok(request) => match client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let degraded = response
                    .headers()
                    .get(palisade::fallback::DEGRADED_HEADER)
                    .is_some_and(|v| v == "true");
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Some((
                    status.as_u16(),
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    degraded,
                ))
            }
            Err(error) => {
                tracing::warn!(%error, "no answer");
                None
            }
        },
        Err(_) => None,
    };
    let (status, body, degraded) = answer.unwrap_or((0, Value::Null, false));
    Answer {
        status,
        body,
        degraded,
        sent: started,
        took: started.elapsed(),
    }
}

/// The `q` quantile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A one-line progress bar on standard error, redrawn in place.
struct Progress {
    enabled: bool,
    label: String,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            label: String::new(),
        }
    }

    fn phase(&mut self, number: usize, title: &str) {
        self.label = format!("phase {number}/{}: {title}", PHASES.len());
        self.draw(0.0, "");
    }

    fn step(&self, done: usize, total: usize) {
        self.draw(
            done as f64 / total.max(1) as f64,
            &format!("{done}/{total}"),
        );
    }

    fn wait(&self, waited: Duration, of: Duration) {
        let note = format!("waiting for the open period, {:.1} s", waited.as_secs_f64());
        self.draw((waited.as_secs_f64() / of.as_secs_f64()).min(1.0), &note);
    }

    fn draw(&self, fraction: f64, note: &str) {
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let filled = ((fraction.clamp(0.0, 1.0)) * WIDTH as f64).round() as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "\r\x1b[2K[{bar}] {} {note}", self.label);
        let _ = stderr.flush();
    }

    fn clear(&self) {
        if self.enabled {
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_breaker_state_passed_between_two_samples_is_recorded() {
        use BreakerState::{Closed, Open};
        let running = crate::start(ShopOptions {
            base_port: 0,
            ..ShopOptions::default()
        })
        .await
        .expect("the shop starts");
        let mut recorder = Recorder::start(&running);
        let product = running.control.upstream("product").expect("product");
        // Open and closed again before the next sample looks.
        assert!(product.breaker.open());
        assert!(product.breaker.force_closed());
        recorder.sample();
        let states: Vec<BreakerState> = recorder
            .recording
            .breakers
            .iter()
            .filter(|s| s.upstream == "gateway→product")
            .map(|s| s.state)
            .collect();
        assert_eq!(states, [Closed, Open, Closed]);
        running.shutdown().await.unwrap();
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.5), ms(50));
        assert_eq!(percentile(&sorted, 0.99), ms(99));
        assert_eq!(percentile(&[ms(7)], 0.99), ms(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
