//! The shop's configuration: a TOML file read through palisade's serde
//! configurations, laid over built-in defaults.
//!
//! ```toml
//! [gateway.rate_limit]        # palisade::rate_limit::RateLimitConfig
//! limit = 100
//! window = "60s"
//!
//! [gateway.rate_limit.redis]  # optional: the limit kept in Redis, shared by
//! url = "redis://10.0.0.5:6379" # every gateway (palisade's RedisConfig; the
//! on_failure = "local"        # url may come from --redis-url instead)
//!
//! [upstream]                  # every upstream, unless overridden below:
//! attempt_timeout = "2s"      # palisade::preset::ClientConfig
//! total_timeout = "10s"
//! bulkhead = { max_concurrent = 64 }                # BulkheadConfig
//!
//! [upstream.retry]            # RetryConfig
//! max_attempts = 3
//!
//! [upstream.circuit_breaker]  # CircuitBreakerConfig
//! failure_rate = 0.9
//!
//! [upstreams.product]         # one upstream: its URL and its own settings
//! url = "http://10.0.0.7:8003"
//! circuit_breaker = { open_for = "10s" }
//!
//! [upstreams.user]            # or its replicas, behind a balancer; a reload
//! endpoints = ["http://10.0.0.8:8001", "http://10.0.0.9:8001"] # adds and removes them
//!
//! [gateway.catalogue_fallback] # palisade::fallback::FallbackConfig: the
//! max_age = "5m"              # product list's last good copy, served while
//!                             # the product service cannot answer
//!
//! [gateway.auth]              # crate::auth::AuthConfig: customers' tokens
//! audience = "shop"                                 # optional; so is issuer
//! keys = [
//!   { kid = "2026-12", alg = "HS256", secret = "at least 32 bytes ..." },
//!   { kid = "idp-1", alg = "RS256", public_key = "-----BEGIN PUBLIC KEY-----..." },
//! ]
//!
//! [charges]                   # shared by the order and payment services
//! secret = "at least 32 bytes ..."
//! ```
//!
//! The file is laid over [`DEFAULTS`] key by key: a table in the file
//! changes only the keys it names, except `backoff` and `budget`, which are
//! replaced whole (their `kind` decides which keys they have), and a
//! breaker's `count_window` or `time_window`, which drops the other. Each
//! upstream's settings are then `[upstream]` with `[upstreams.<name>]` laid
//! over it. An error names the field it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade::fallback::{FallbackBuilder, FallbackConfig};
use palisade::preset::{ClientConfig, ClientLayer};
use palisade::rate_limit::{RateLimitConfig, RedisConfig};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use toml::{Table, Value};

use crate::auth::{AuthConfig, MIN_SECRET, Verifier};

/// The services a gateway calls, in the order they are shown.
pub const UPSTREAMS: [&str; 4] = ["user", "order", "product", "payment"];

/// The settings the issue describes, as a configuration file would hold
/// them: a file need only name what it changes.
pub const DEFAULTS: &str = r#"
[gateway.rate_limit]
algorithm = "sliding_window"
limit = 100
window = "60s"

# The product list (GET /api/products), answered with its last good copy
# for the same query, marked `X-Degraded: true`, while the product service
# cannot answer it: its circuit is open, its throttle or bulkhead refuses,
# the call times out, or it fails after its retries. A catalogue a few
# minutes old is still worth showing; a product's own page, an order and a
# payment never get a copy (a stale price must not be charged). Not on a
# rate limit: the client's own limit sits outside, and its 429 stands.
[gateway.catalogue_fallback]
on = ["circuit_open", "throttled", "bulkhead_full", "elapsed", "failure"]
max_age = "5m"
max_entries = 1000

# Each upstream is palisade's client preset: a total timeout, retry,
# client-side throttling, a circuit breaker, an attempt timeout and a
# bulkhead, in that order.
[upstream]
total_timeout = "10s"
attempt_timeout = "2s"

# No budget named: the preset's, half a retry per request (generous,
# because the throttle below retry refuses locally what an overloaded
# service would refuse).
[upstream.retry]
max_attempts = 3
backoff = { kind = "exponential", base = "50ms", max = "1s", jitter = "full" }

# Open for an upstream that is down, not for one that fails now and then:
# at 50 % over 20 calls, 30 % random errors opened it by chance and clients
# got fewer answers than with no layers at all. Retry and its budget deal
# with scattered failures. Fifteen failures in a row open it at once, as the
# preset's docs advise for light traffic: with the few calls a second this
# shop sees, the throttle would otherwise answer an outage first.
[upstream.circuit_breaker]
count_window = 100
minimum_calls = 20
failure_rate = 0.9
consecutive_failures = 15
open_for = "5s"
half_open_probes = 3

[upstream.bulkhead]
max_concurrent = 64

# Placing an order takes several calls of up to 2 s each: the gateway gives
# it more, and the order service's steps work to that deadline. Each step's
# own 2 s stays shorter than the deadline it brings, so that a step that
# hangs fails against its own timeout, where its breaker sees it (a call
# that only the caller's deadline cut short is not held against the
# service). Three attempts of 5 s need more than the shared 10 s.
[upstreams.order]
attempt_timeout = "5s"
total_timeout = "15s"
"#;

/// Keys whose tables are replaced whole rather than merged.
const REPLACED_WHOLE: [&str; 2] = ["backoff", "budget"];

/// Keys that exclude each other: setting one drops the other.
const EXCLUSIVE: [(&str, &str); 3] = [
    ("count_window", "time_window"),
    ("count_window", "time_window_buckets"),
    ("url", "endpoints"),
];

/// Why a configuration was refused.
#[derive(Debug)]
pub struct ConfigFileError {
    /// The file, when there is one.
    pub path: Option<PathBuf>,
    /// What is wrong, naming the field (`upstreams.product.circuit_breaker.
    /// failure_rate: must be in (0, 1], got 2`).
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

fn refused(message: impl Into<String>) -> ConfigFileError {
    ConfigFileError {
        path: None,
        message: message.into(),
    }
}

/// One upstream's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// Where it is; `None`: where the caller says.
    pub url: Option<String>,
    /// Its replicas, behind a balancer (see [`crate::replicas`]); empty:
    /// `url`, or the replicas the caller knows of.
    pub endpoints: Vec<String>,
    /// Its layers: palisade's client preset.
    pub client: ClientConfig,
}

impl UpstreamConfig {
    /// An upstream's table: its `url` or `endpoints`, and the rest the
    /// preset's settings.
    fn read(mut table: Table, path: &str) -> Result<Self, ConfigFileError> {
        let url = match table.remove("url") {
            None => None,
            Some(Value::String(url)) => Some(url),
            Some(other) => {
                return Err(refused(format!(
                    "{path}.url: expected a string, found {}",
                    other.type_str()
                )));
            }
        };
        let endpoints: Vec<String> = match table.remove("endpoints") {
            None => Vec::new(),
            Some(list) => deserialize(list, &format!("{path}.endpoints"))?,
        };
        let client = deserialize(Value::Table(table), path)?;
        Ok(UpstreamConfig {
            url,
            endpoints,
            client,
        })
    }

    /// Where to call it: the configured `endpoints`, else `url`, else
    /// `default` (the replicas the caller started); and whether through a
    /// balancer: with more than one, or when the file lists `endpoints`
    /// (so that a reload can add replicas to the balancer).
    pub fn endpoints_or(&self, default: &[String]) -> (Vec<String>, bool) {
        if !self.endpoints.is_empty() {
            return (self.endpoints.clone(), true);
        }
        let endpoints = match &self.url {
            Some(url) => vec![url.clone()],
            None => default.to_vec(),
        };
        let balanced = endpoints.len() > 1;
        (endpoints, balanced)
    }
}

/// The whole configuration in force: the merged document and what was
/// read from it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopConfig {
    /// The merged document (defaults, file, overrides), as shown by
    /// `GET /admin/config`.
    pub document: Table,
    /// The gateway's per-client limit.
    pub rate_limit: RateLimitConfig,
    /// Where that limit is kept when the gateways share it
    /// (`[gateway.rate_limit.redis]`); `None`: in each gateway's process.
    pub rate_limit_store: Option<RedisConfig>,
    /// The keys customers' tokens are checked with.
    pub auth: AuthConfig,
    /// When the gateway answers the product list with its last good copy
    /// (`[gateway.catalogue_fallback]`).
    pub catalogue_fallback: FallbackConfig,
    /// The secret of the order service's grants to the payment service;
    /// `None`: [`crate::start`] makes one up (both run in one process).
    pub charge_secret: Option<String>,
    /// Each upstream's settings, by name.
    pub upstreams: BTreeMap<&'static str, UpstreamConfig>,
}

impl ShopConfig {
    /// The defaults, then `file` (TOML text), then `overrides` (command-line
    /// flags), each laid over the one before.
    pub fn from_layers(file: &str, overrides: &Table) -> Result<Self, ConfigFileError> {
        let mut document: Table = parse_toml(DEFAULTS)?;
        merge(&mut document, &parse_toml(file)?);
        merge(&mut document, overrides);
        Self::from_document(document)
    }

    /// Reads `path` and lays it over the defaults, then `overrides`.
    pub fn load(path: &Path, overrides: &Table) -> Result<Self, ConfigFileError> {
        let in_file = |mut e: ConfigFileError| {
            e.path = Some(path.to_owned());
            e
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| in_file(refused(format!("cannot read it: {e}"))))?;
        Self::from_layers(&text, overrides).map_err(in_file)
    }

    fn from_document(document: Table) -> Result<Self, ConfigFileError> {
        for key in document.keys() {
            if !["gateway", "upstream", "upstreams", "charges"].contains(&key.as_str()) {
                return Err(refused(format!(
                    "unknown section `{key}`; expected `gateway`, `upstream`, `upstreams` or `charges`"
                )));
            }
        }
        let gateway = table(&document, "gateway")?;
        for key in gateway.keys() {
            if !["rate_limit", "auth", "catalogue_fallback"].contains(&key.as_str()) {
                return Err(refused(format!(
                    "gateway.{key}: unknown field; expected `rate_limit`, `auth` or \
                     `catalogue_fallback`"
                )));
            }
        }
        let (rate_limit, rate_limit_store) = read_rate_limit(&gateway)?;
        let catalogue_fallback = read_catalogue_fallback(&gateway)?;
        let auth: AuthConfig = read(&gateway, "gateway.auth", "auth")?;
        Verifier::new(&auth, "gateway.auth").map_err(refused)?;
        let charges: Charges = read(&document, "charges", "charges")?;
        if let Some(secret) = &charges.secret
            && secret.len() < MIN_SECRET
        {
            return Err(refused(format!(
                "charges.secret: must be at least {MIN_SECRET} bytes"
            )));
        }

        let shared = table(&document, "upstream")?;
        // The shared table on its own first, so that an error in it is
        // named there rather than in the first upstream that inherits it.
        validate(
            &UpstreamConfig::read(shared.clone(), "upstream")?,
            "upstream",
        )?;
        let named = table(&document, "upstreams")?;
        for key in named.keys() {
            if !UPSTREAMS.contains(&key.as_str()) {
                return Err(refused(format!(
                    "upstreams.{key}: unknown upstream; expected one of {}",
                    UPSTREAMS.join(", ")
                )));
            }
        }
        let mut upstreams = BTreeMap::new();
        for name in UPSTREAMS {
            let own = table(&named, name)?;
            if own.contains_key("url") && own.contains_key("endpoints") {
                return Err(refused(format!(
                    "upstreams.{name}: `url` or `endpoints`, not both (one address, or the \
                     replicas')"
                )));
            }
            let mut settings = shared.clone();
            merge(&mut settings, &own);
            let path = format!("upstreams.{name}");
            let config = UpstreamConfig::read(settings, &path)?;
            validate(&config, &path)?;
            upstreams.insert(name, config);
        }
        Ok(ShopConfig {
            document,
            rate_limit,
            rate_limit_store,
            auth,
            catalogue_fallback,
            charge_secret: charges.secret,
            upstreams,
        })
    }

    /// The document as JSON, for `GET /admin/config`, its secrets
    /// redacted: an admin may see that a key is there, not what it is.
    pub fn to_json(&self) -> Json {
        let mut json = serde_json::to_value(&self.document).unwrap_or(Json::Null);
        redact_secrets(&mut json);
        json
    }

    /// The gateway's limit as (limit, window).
    pub fn rate_limit(&self) -> (u64, Duration) {
        (self.rate_limit.limit, self.rate_limit.window)
    }
}

/// `[gateway.rate_limit]`, and the store in its `redis` table if there is
/// one; both checked by building the limiter (nothing connects yet).
fn read_rate_limit(
    gateway: &Table,
) -> Result<(RateLimitConfig, Option<RedisConfig>), ConfigFileError> {
    const PATH: &str = "gateway.rate_limit";
    let mut table = table(gateway, "rate_limit")?;
    let store = match table.remove("redis") {
        None => None,
        Some(redis) => Some(deserialize::<RedisConfig>(
            redis,
            "gateway.rate_limit.redis",
        )?),
    };
    let rate_limit: RateLimitConfig = deserialize(Value::Table(table), PATH)?;
    let builder = palisade::rate_limit::RateLimitBuilder::from_config(rate_limit.clone());
    match &store {
        // The Redis form's own errors name `redis.…` fields already.
        Some(store) => builder.redis(store.clone()).build().map(drop),
        None => builder.build().map(drop),
    }
    .map_err(|e| named(PATH, &e))?;
    Ok((rate_limit, store))
}

/// `[gateway.catalogue_fallback]`, checked by building the layer (with a
/// stand-in key: the key function is code, not a setting).
fn read_catalogue_fallback(gateway: &Table) -> Result<FallbackConfig, ConfigFileError> {
    const PATH: &str = "gateway.catalogue_fallback";
    let config: FallbackConfig = read(gateway, PATH, "catalogue_fallback")?;
    FallbackBuilder::from_config(config.clone())
        .last_good(|_: &()| ())
        .build::<()>()
        .map_err(|e| named(PATH, &e))?;
    Ok(config)
}

/// `[gateway.rate_limit.redis]` with `url` (`--redis-url`), and with
/// `replicas` when given (`--gateway-replicas`): the share of the limit each
/// gateway keeps while Redis is down.
pub fn redis_override(url: &str, replicas: Option<u16>) -> Table {
    let mut redis = Table::new();
    redis.insert("url".into(), Value::String(url.to_owned()));
    if let Some(replicas) = replicas {
        redis.insert("replicas".into(), Value::Integer(i64::from(replicas)));
    }
    let mut rate_limit = Table::new();
    rate_limit.insert("redis".into(), Value::Table(redis));
    let mut gateway = Table::new();
    gateway.insert("rate_limit".into(), Value::Table(rate_limit));
    let mut document = Table::new();
    document.insert("gateway".into(), Value::Table(gateway));
    document
}

/// `[charges]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Charges {
    #[serde(default)]
    secret: Option<String>,
}

/// Every `secret` anywhere in `json`, as `"<redacted>"`.
fn redact_secrets(json: &mut Json) {
    match json {
        Json::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "secret" && value.is_string() {
                    *value = Json::from("<redacted>");
                } else {
                    redact_secrets(value);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

/// `[gateway.rate_limit]` with `limit` and `window` (`--rate-limit`).
pub fn rate_limit_override(limit: u64, window: Duration) -> Table {
    let mut rate_limit = Table::new();
    rate_limit.insert(
        "limit".into(),
        Value::Integer(limit.min(i64::MAX as u64) as i64),
    );
    rate_limit.insert("window".into(), Value::Float(window.as_secs_f64()));
    let mut gateway = Table::new();
    gateway.insert("rate_limit".into(), Value::Table(rate_limit));
    let mut document = Table::new();
    document.insert("gateway".into(), Value::Table(gateway));
    document
}

/// Builds each layer once, so that a setting palisade refuses (a failure
/// rate of 2) is reported with the file, not at the first call.
fn validate(config: &UpstreamConfig, path: &str) -> Result<(), ConfigFileError> {
    if let Some(url) = &config.url {
        check_url(url).map_err(|rule| refused(format!("{path}.url: {rule}, got {url:?}")))?;
    }
    for (n, url) in config.endpoints.iter().enumerate() {
        check_url(url)
            .map_err(|rule| refused(format!("{path}.endpoints[{n}]: {rule}, got {url:?}")))?;
    }
    ClientLayer::from_config(config.client.clone()).map_err(|e| {
        // A layer's own error names a field of that layer's table; the
        // preset's names its field from the upstream's table.
        match e.layer() {
            "client" => named(path, &e),
            layer => named(&format!("{path}.{layer}"), &e),
        }
    })?;
    Ok(())
}

/// An upstream's address: `http://host:port`, nothing after it (the
/// client speaks plain HTTP/1.1; paths come from the gateway's routes).
fn check_url(url: &str) -> Result<(), &'static str> {
    const RULE: &str = "must be http://host:port (plain HTTP, no path)";
    let uri: http::Uri = url.parse().map_err(|_| RULE)?;
    let plain_http = uri.scheme_str() == Some("http");
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if plain_http && uri.authority().is_some() && bare {
        Ok(())
    } else {
        Err(RULE)
    }
}

/// `section.field: rule`, from palisade's own error.
fn named(section: &str, error: &palisade::ConfigError) -> ConfigFileError {
    refused(format!("{section}.{}: {}", error.field(), error.rule()))
}

fn parse_toml(text: &str) -> Result<Table, ConfigFileError> {
    text.parse::<Table>()
        .map_err(|e| refused(e.to_string().trim_end().to_owned()))
}

/// `document[key]` as a table; absent is empty.
fn table(document: &Table, key: &str) -> Result<Table, ConfigFileError> {
    match document.get(key) {
        None => Ok(Table::new()),
        Some(Value::Table(table)) => Ok(table.clone()),
        Some(other) => Err(refused(format!(
            "{key}: expected a table, found {}",
            other.type_str()
        ))),
    }
}

fn read<T: DeserializeOwned>(parent: &Table, path: &str, key: &str) -> Result<T, ConfigFileError> {
    let value = parent
        .get(key)
        .cloned()
        .unwrap_or_else(|| Value::Table(Table::new()));
    deserialize(value, path)
}

/// Deserializes `value`, naming the field of any error (`path.field: ...`).
fn deserialize<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, ConfigFileError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let at = if field == "." {
            path.to_owned()
        } else {
            format!("{path}.{field}")
        };
        refused(format!("{at}: {}", e.inner()))
    })
}

/// Lays `over` onto `base`, key by key (see the module docs).
pub fn merge(base: &mut Table, over: &Table) {
    for (key, value) in over {
        for (a, b) in EXCLUSIVE {
            if key == a {
                base.remove(b);
            } else if key == b {
                base.remove(a);
            }
        }
        match (base.get_mut(key), value) {
            (Some(Value::Table(base)), Value::Table(over))
                if !REPLACED_WHOLE.contains(&key.as_str()) =>
            {
                merge(base, over)
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(file: &str) -> Result<ShopConfig, String> {
        ShopConfig::from_layers(file, &Table::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_the_documented_settings() {
        let config = config("").unwrap();
        assert_eq!(config.rate_limit(), (100, Duration::from_secs(60)));
        let product = &config.upstreams["product"];
        let client = &product.client;
        assert_eq!(client.attempt_timeout, Duration::from_secs(2));
        assert_eq!(client.total_timeout, Duration::from_secs(10));
        assert_eq!(client.retry.max_attempts, 3);
        assert_eq!(client.retry.budget, None, "the preset's");
        assert_eq!(client.circuit_breaker.count_window, Some(100));
        assert_eq!(client.circuit_breaker.minimum_calls, Some(20));
        assert_eq!(client.circuit_breaker.failure_rate, 0.9);
        assert_eq!(client.circuit_breaker.open_for, Duration::from_secs(5));
        assert_eq!(client.circuit_breaker.half_open_probes, 3);
        assert_eq!(client.bulkhead.max_concurrent, 64);
        let order = &config.upstreams["order"].client;
        assert_eq!(order.attempt_timeout, Duration::from_secs(5));
        assert_eq!(product.url, None);
        let fallback = &config.catalogue_fallback;
        assert_eq!(fallback.max_age, Some(Duration::from_secs(300)));
        assert_eq!(fallback.max_entries, Some(1000));
        use palisade::fallback::Reason;
        assert_eq!(
            fallback.on,
            [
                Reason::CircuitOpen,
                Reason::Throttled,
                Reason::BulkheadFull,
                Reason::Elapsed,
                Reason::Failure
            ]
        );
    }

    #[test]
    fn admin_config_never_shows_a_secret() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = config(&format!(
            "[gateway.auth]\nkeys = [{{ kid = \"k1\", alg = \"HS256\", secret = \"{secret}\" }}]\n\
             [charges]\nsecret = \"{secret}\"\n"
        ))
        .unwrap();
        assert_eq!(config.charge_secret.as_deref(), Some(secret));
        let shown = config.to_json();
        assert!(!shown.to_string().contains(secret), "{shown}");
        assert_eq!(shown["gateway"]["auth"]["keys"][0]["kid"], "k1");
        assert_eq!(shown["charges"]["secret"], "<redacted>");
    }

    #[test]
    fn upstream_urls_are_plain_http_addresses() {
        for good in [
            "http://127.0.0.1:8003",
            "http://products.internal",
            "http://[::1]:80/",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_file_changes_only_what_it_names_and_one_upstream_can_differ() {
        let config = config(
            r#"
            [upstream.circuit_breaker]
            open_for = "10s"
            [upstreams.product]
            url = "http://10.0.0.7:8003"
            attempt_timeout = "500ms"
            [upstreams.product.circuit_breaker]
            time_window = "30s"
            "#,
        )
        .unwrap();
        let user = &config.upstreams["user"].client;
        assert_eq!(user.circuit_breaker.open_for, Duration::from_secs(10));
        assert_eq!(user.circuit_breaker.count_window, Some(100));
        assert_eq!(user.attempt_timeout, Duration::from_secs(2));
        let product = &config.upstreams["product"];
        assert_eq!(product.url.as_deref(), Some("http://10.0.0.7:8003"));
        let product = &product.client;
        assert_eq!(product.attempt_timeout, Duration::from_millis(500));
        // time_window took count_window's place; the rest stayed.
        assert_eq!(product.circuit_breaker.count_window, None);
        assert_eq!(
            product.circuit_breaker.time_window,
            Some(Duration::from_secs(30))
        );
        assert_eq!(product.circuit_breaker.open_for, Duration::from_secs(10));
        assert_eq!(product.circuit_breaker.failure_rate, 0.9);
    }

    #[test]
    fn the_limit_is_kept_in_redis_only_when_a_store_is_named() {
        assert_eq!(config("").unwrap().rate_limit_store, None);
        let config = ShopConfig::from_layers(
            "[gateway.rate_limit.redis]\non_failure = \"fail_closed\"\nreplicas = 3\n",
            &redis_override("redis://10.0.0.5:6379", None),
        )
        .unwrap();
        let store = config.rate_limit_store.clone().unwrap();
        assert_eq!(store.url, "redis://10.0.0.5:6379");
        assert_eq!(
            store.on_failure,
            palisade::rate_limit::OnStoreFailure::FailClosed
        );
        assert_eq!(store.replicas, 3);
        assert_eq!(config.rate_limit(), (100, Duration::from_secs(60)));
    }

    #[test]
    fn endpoints_in_the_file_replace_a_url_and_put_a_balancer_in_front() {
        let two = [
            "http://10.0.0.8:8003".to_owned(),
            "http://10.0.0.9:8003".to_owned(),
        ];
        let started = ["http://127.0.0.1:8003".to_owned()];
        let config = config(
            "[upstream]\nurl = \"http://10.0.0.7:8003\"\n\
             [upstreams.product]\nendpoints = [\"http://10.0.0.8:8003\", \"http://10.0.0.9:8003\"]\n",
        )
        .unwrap();
        let product = &config.upstreams["product"];
        assert_eq!(product.url, None, "the shared url gave way");
        assert_eq!(product.endpoints_or(&started), (two.to_vec(), true));
        // One replica started and nothing listed: no balancer, as before.
        let user = &config.upstreams["user"];
        assert!(!user.endpoints_or(&started).1);
        let plain = &self::config("").unwrap().upstreams["user"];
        assert_eq!(plain.endpoints_or(&started), (started.to_vec(), false));
        assert_eq!(plain.endpoints_or(&two), (two.to_vec(), true));
    }

    #[test]
    fn a_backoff_is_replaced_whole() {
        let config = config(
            r#"
            [upstream.retry]
            backoff = { kind = "constant", base = "100ms" }
            "#,
        )
        .unwrap();
        assert_eq!(
            config.upstreams["order"].client.retry.backoff,
            palisade::retry::Backoff::constant(Duration::from_millis(100))
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let config = ShopConfig::from_layers(
            "[gateway.rate_limit]\nlimit = 7\n",
            &rate_limit_override(5, Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(config.rate_limit(), (5, Duration::from_secs(10)));
    }

    #[test]
    fn every_error_names_its_field() {
        for (file, named) in [
            // In the shared table: named there (with the ": " that ends the
            // field, so that `upstreams.` does not match).
            (
                "[upstream.circuit_breaker]\nfailure_rate = 2.0",
                "upstream.circuit_breaker.failure_rate: ",
            ),
            (
                "[upstream.circuit_breaker]\nfailure_rate = \"half\"",
                "upstream.circuit_breaker.failure_rate: ",
            ),
            (
                "[upstream.bulkhead]\nmax_concurrent = -1",
                "upstream.bulkhead.max_concurrent: ",
            ),
            (
                "[upstream]\nattempt_timeout = \"soon\"",
                "upstream.attempt_timeout: ",
            ),
            // Settings checked together: named from the upstream's table.
            (
                "[upstream]\nattempt_timeout = \"20s\"",
                "upstream.attempt_timeout: ",
            ),
            (
                "[upstream.circuit_breaker]\ntime_window_buckets = 10",
                "upstream.circuit_breaker.time_window_buckets: ",
            ),
            // In one upstream's table.
            (
                "[upstreams.payment.retry]\nmax_attempts = 0",
                "upstreams.payment.retry.max_attempts: ",
            ),
            (
                "[upstreams.order.circuit_breaker]\nfailure_rate = 0.0",
                "upstreams.order.circuit_breaker.failure_rate: ",
            ),
            ("[upstreams.product]\ntimout = \"1s\"", "timout"),
            (
                "[upstreams.product]\nurl = \"10.0.0.7:8003\"",
                "upstreams.product.url: ",
            ),
            (
                "[upstreams.product]\nurl = \"https://10.0.0.7\"",
                "upstreams.product.url: ",
            ),
            (
                "[upstreams.product]\nurl = \"http://10.0.0.7:8003/v2\"",
                "upstreams.product.url: ",
            ),
            (
                "[upstreams.product]\nurl = \"not a url\"",
                "upstreams.product.url: ",
            ),
            (
                "[upstreams.product]\nendpoints = [\"http://10.0.0.7:8003\", \"10.0.0.8\"]",
                "upstreams.product.endpoints[1]: ",
            ),
            (
                "[upstreams.product]\nendpoints = \"http://10.0.0.7:8003\"",
                "upstreams.product.endpoints: ",
            ),
            (
                "[upstreams.user]\nurl = \"http://10.0.0.7:8001\"\nendpoints = [\"http://10.0.0.8:8001\"]",
                "upstreams.user: `url` or `endpoints`",
            ),
            (
                "[upstreams.inventory]\nurl = \"http://x\"",
                "upstreams.inventory",
            ),
            // The gateway and the document.
            (
                "[gateway.rate_limit]\nlimit = 0",
                "gateway.rate_limit.limit: ",
            ),
            (
                "[gateway.rate_limit]\nwindow = true",
                "gateway.rate_limit.window: ",
            ),
            (
                "[gateway.rate_limit.redis]\nurl = \"redis://127.0.0.1\"\non_failure = \"sometimes\"",
                "gateway.rate_limit.redis.on_failure: ",
            ),
            (
                "[gateway.rate_limit.redis]\nurl = \"redis://127.0.0.1\"\nreplicas = 0",
                "gateway.rate_limit.redis.replicas: ",
            ),
            (
                "[gateway.rate_limit.redis]\nurl = \"http://127.0.0.1\"",
                "gateway.rate_limit.redis.url: ",
            ),
            (
                "[gateway.rate_limit.redis]\non_failure = \"local\"",
                "gateway.rate_limit.redis: missing field `url`",
            ),
            (
                "[gateway.rate_limit]\nalgorithm = \"sliding_log\"\nredis = { url = \"redis://127.0.0.1\" }",
                "gateway.rate_limit.algorithm: ",
            ),
            (
                "[gateway.catalogue_fallback]\nmax_age = \"0s\"",
                "gateway.catalogue_fallback.max_age: ",
            ),
            (
                "[gateway.catalogue_fallback]\nmax_age = -5",
                "gateway.catalogue_fallback.max_age: ",
            ),
            (
                "[gateway.catalogue_fallback]\non = []",
                "gateway.catalogue_fallback.on: ",
            ),
            (
                "[gateway.catalogue_fallback]\nmax_entries = 0",
                "gateway.catalogue_fallback.max_entries: ",
            ),
            ("[gateway]\nrate = 1", "gateway.rate"),
            ("[cache]\nsize = 1", "`cache`"),
            (
                "[gateway.auth]\nkeys = [{ alg = \"HS256\", secret = \"short\" }]",
                "gateway.auth.keys[0].secret: ",
            ),
            (
                "[gateway.auth]\nkeys = [{ alg = \"RS256\", public_key = \"x\" }]",
                "gateway.auth.keys[0].public_key: ",
            ),
            ("[gateway.auth]\nkey = []", "gateway.auth"),
            ("[charges]\nsecret = \"short\"", "charges.secret: "),
            ("upstream = 3", "upstream"),
            ("[upstream\nbroken", "line 1"),
        ] {
            let error = config(file).expect_err(file);
            assert!(
                error.contains(named),
                "{file:?} gave {error:?}, not naming {named}"
            );
        }
    }
}
