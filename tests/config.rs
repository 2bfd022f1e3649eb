//! One way to configure every layer: a builder holds its layer's `*Config`,
//! so a layer built from a file and one built with the builder's setters
//! are the same layer, and the builder's defaults are the config's.

use std::time::Duration;

use palisade::bulkhead::{BulkheadBuilder, BulkheadConfig, BulkheadLayer};
use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerConfig, CircuitBreakerLayer};
use palisade::rate_limit::{RateLimitBuilder, RateLimitConfig, RateLimitLayer};
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryBuilder, RetryConfig, RetryLayer};
use palisade::throttle::{ThrottleBuilder, ThrottleConfig, ThrottleLayer};
use palisade::timeout::{TimeoutBuilder, TimeoutConfig, TimeoutLayer};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// Every field is set away from its default, in a file and with setters.
// The layers are built on the paused clock, so that the instants they keep
// (a window's origin) are the same and their `Debug` output can be compared.

#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_circuit_breaker() {
    let file: CircuitBreakerConfig = toml::from_str(
        r#"
        name = "payments"
        time_window = "30s"
        time_window_buckets = 15
        minimum_calls = 10
        failure_rate = 0.5
        slow_call_duration = "500ms"
        slow_call_rate = 0.8
        consecutive_failures = 7
        open_for = "5s"
        open_multiplier = 2.0
        open_max = "2m"
        open_jitter = 0.1
        half_open_probes = 4
        half_open_max_wait = "30s"
        open_on_retry_after = "1m"
        wait_when_open = "200ms"
        "#,
    )
    .unwrap();
    let built = CircuitBreakerLayer::builder()
        .name("payments")
        .time_window_buckets(secs(30), 15)
        .minimum_calls(10)
        .failure_rate(0.5)
        .slow_calls(ms(500), 0.8)
        .consecutive_failures(7)
        .open_for(secs(5))
        .open_backoff(2.0, secs(120))
        .open_jitter(0.1)
        .half_open_probes(4)
        .half_open_max_wait(secs(30))
        .open_on_retry_after(secs(60))
        .wait_when_open(ms(200));
    assert_eq!(built.config(), &file);
    let from_file = CircuitBreakerBuilder::from_config(file)
        .jitter_seed(1)
        .build()
        .unwrap();
    let from_setters = built.jitter_seed(1).build().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_setters:?}"));
    assert_eq!(from_file.handle().name(), "payments");
}

#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_retry() {
    let file: RetryConfig = toml::from_str(
        r#"
        name = "orders"
        max_attempts = 4
        deadline = "3s"
        retry_rate_limited = false
        backoff = { kind = "exponential", base = "50ms", max = "1s", jitter = "full" }
        budget = { kind = "windowed", ttl = "10s", min_per_sec = 5, ratio = 0.5 }
        "#,
    )
    .unwrap();
    let built = RetryLayer::builder()
        .name("orders")
        .max_attempts(4)
        .deadline(secs(3))
        .retry_rate_limited(false)
        .backoff(
            Backoff::exponential(ms(50))
                .max(secs(1))
                .jitter(Jitter::Full),
        )
        .budget(RetryBudget::windowed(secs(10), 5, 0.5));
    assert_eq!(built.config(), &file);
    let from_file = RetryBuilder::from_config(file).build().unwrap();
    let from_setters = built.build().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_setters:?}"));
}

#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_throttle() {
    let file: ThrottleConfig = toml::from_str(
        r#"
        name = "products"
        k = 1.5
        window = "30s"
        window_buckets = 30
        padding = 2.0
        max_probability = 0.8
        seed = 7
        "#,
    )
    .unwrap();
    let built = ThrottleLayer::builder()
        .name("products")
        .k(1.5)
        .window(secs(30))
        .window_buckets(30)
        .padding(2.0)
        .max_probability(0.8)
        .seed(7);
    assert_eq!(built.config(), &file);
    let from_file = ThrottleBuilder::from_config(file).build().unwrap();
    let from_setters = built.build().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_setters:?}"));
}

#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_timeout() {
    let file: TimeoutConfig = toml::from_str(
        r#"name = "users"
timeout = "2s"
ready_timeout = "100ms""#,
    )
    .unwrap();
    let built = TimeoutLayer::builder()
        .name("users")
        .timeout(secs(2))
        .ready_timeout(ms(100));
    assert_eq!(built.config(), &file);
    let from_file = TimeoutBuilder::from_config(file).build().unwrap();
    let from_setters = built.build().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_setters:?}"));
}

#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_bulkhead() {
    let file: BulkheadConfig = toml::from_str(
        r#"name = "db"
max_concurrent = 16
max_wait = "50ms""#,
    )
    .unwrap();
    let built = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(16)
        .max_wait(ms(50));
    assert_eq!(built.config(), &file);
    let from_file = BulkheadBuilder::from_config(file).build().unwrap();
    let from_setters = built.build().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_setters:?}"));
}

#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_rate_limit() {
    let file: RateLimitConfig = toml::from_str(
        r#"
        name = "api"
        algorithm = "gcra"
        limit = 100
        window = "1m"
        burst = 20
        max_wait = "50ms"
        max_waiters = 10
        "#,
    )
    .unwrap();
    let built = RateLimitLayer::gcra(100, secs(60))
        .name("api")
        .burst(20)
        .max_wait(ms(50))
        .max_waiters(10);
    assert_eq!(built.config(), &file);
    let from_file = RateLimitBuilder::from_config(file).build().unwrap();
    let from_setters = built.build().unwrap();
    assert_eq!(format!("{from_file:?}"), format!("{from_setters:?}"));
}

/// A fallback's settings from a file: the reasons by name, durations as
/// text. The answer is code, added to the builder made from the file.
#[tokio::test(start_paused = true)]
async fn a_file_and_the_builder_make_the_same_fallback() {
    use palisade::fallback::{FallbackBuilder, FallbackConfig, FallbackLayer, Reason, Unmarked};

    let file: FallbackConfig = toml::from_str(
        r#"
        name = "users"
        on = ["circuit_open", "failure"]
        max_entries = 100
        max_age = "30s"
        "#,
    )
    .unwrap();
    let built = FallbackLayer::builder()
        .name("users")
        .on(Reason::CircuitOpen)
        .on(Reason::Failure)
        .max_entries(100)
        .max_age(secs(30));
    assert_eq!(built.config(), &file);
    let layer = FallbackBuilder::from_config(file)
        .last_good(|id: &u64| *id)
        .mark(Unmarked)
        .build::<String>()
        .unwrap();
    assert_eq!(layer.handle().name(), "users");
    let unknown = toml::from_str::<FallbackConfig>(r#"on = ["circuit_closed"]"#);
    assert!(unknown.unwrap_err().to_string().contains("circuit_closed"));
}

/// The defaults live in one place: a builder starts from its config's
/// `Default`, and a file that sets nothing reads as that `Default`.
#[test]
fn builders_start_from_their_configs_defaults() {
    assert_eq!(
        CircuitBreakerLayer::builder().config(),
        &CircuitBreakerConfig::default()
    );
    assert_eq!(
        toml::from_str::<CircuitBreakerConfig>("").unwrap(),
        CircuitBreakerConfig::default()
    );
    assert_eq!(RetryLayer::builder().config(), &RetryConfig::default());
    assert_eq!(
        toml::from_str::<RetryConfig>("").unwrap(),
        RetryConfig::default()
    );
    assert_eq!(
        ThrottleLayer::builder().config(),
        &ThrottleConfig::default()
    );
    assert_eq!(
        toml::from_str::<ThrottleConfig>("").unwrap(),
        ThrottleConfig::default()
    );
    // Layers with a required setting start without it, and say so.
    let err = TimeoutLayer::builder().build().unwrap_err();
    assert_eq!((err.layer(), err.field()), ("timeout", "timeout"));
    let err = BulkheadLayer::builder().build().unwrap_err();
    assert_eq!((err.layer(), err.field()), ("bulkhead", "max_concurrent"));
    assert!(toml::from_str::<TimeoutConfig>("").is_err());
    assert!(toml::from_str::<BulkheadConfig>("").is_err());
}
