//! The product list, the one answer the gateway may give from memory:
//! palisade's fallback, outside the product upstream's stack, answers
//! `GET /api/products` with the last good copy of the same list while the
//! product service cannot answer it, marked `X-Degraded: true`.
//!
//! Only the list. A product's own page, an order and a payment always come
//! from their service, or fail: a catalogue a few minutes old misleads no
//! one for long, while a stale price could be charged at checkout.
//!
//! Outside the stack, so that its breaker still records what the product
//! service really answered (a copy served is never the service's success),
//! and retry has made its attempts before the copy is served.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use palisade::fallback::{
    FallbackBuilder, FallbackConfig, FallbackLayer, Handle, LastGood, Reason,
};
use palisade::http::StatusClassifier;
use palisade::{BoxError, ConfigError};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

use crate::api::{MAX_BODY, REQUEST_ID};
use crate::upstream::Upstream;

/// The route under `/api` the fallback answers for.
pub const CATALOGUE: &str = "/products";

/// A request for the list, as the gateway forwards it.
pub type ListRequest = http::Request<Full<Bytes>>;

/// The list, read whole: a copy to keep must be a value, not a stream.
pub type List = http::Response<Bytes>;

type KeyFn = fn(&ListRequest) -> String;

/// The layer: the last good list per key, judged as the breaker judges.
type CatalogueLayer = FallbackLayer<LastGood<KeyFn, String, List>, StatusClassifier>;

/// The product list's fallback, and its cache of last good lists.
///
/// Cloned, it shares the cache and the counts: a reload that leaves
/// `[gateway.catalogue_fallback]` as it was keeps it.
#[derive(Clone, Debug)]
pub struct CatalogueFallback {
    layer: CatalogueLayer,
}

impl CatalogueFallback {
    /// The fallback `config` describes (named `catalogue` unless it says
    /// otherwise).
    pub fn new(config: &FallbackConfig) -> Result<Self, ConfigError> {
        let mut builder = FallbackBuilder::from_config(config.clone());
        if config.name.is_none() {
            builder = builder.name("catalogue");
        }
        let layer = builder
            // The breaker's classifier: a 5xx, a 408 or a 429 is a failure
            // here too, and a 404 never is.
            .classifier(StatusClassifier::new())
            .last_good(list_key as KeyFn)
            .build()?;
        Ok(CatalogueFallback { layer })
    }

    /// Its counts: copies served by reason, the cache's hits and misses.
    pub fn handle(&self) -> Handle {
        self.layer.handle()
    }

    /// The list from `upstream`, or the last good copy for the same query.
    pub async fn list(&self, upstream: &Upstream, request: ListRequest) -> Result<List, BoxError> {
        let upstream = upstream.clone();
        let fetch = service_fn(move |request| fetch(upstream.clone(), request));
        self.layer.layer(fetch).oneshot(request).await
    }

    /// The counts as `GET /admin/resilience` shows them.
    pub fn counts(&self) -> Value {
        let handle = self.handle();
        let reasons = Reason::REFUSALS.into_iter().chain([Reason::Failure]);
        let served: serde_json::Map<String, Value> = reasons
            .map(|reason| (reason.as_str().to_owned(), json!(handle.served(reason))))
            .collect();
        json!({
            "name": handle.name(),
            "served": served,
            "served_total": handle.served_total(),
            "cache": {
                "hits": handle.cache_hits(),
                "misses": handle.cache_misses(),
                "expired": handle.cache_expired(),
                "entries": handle.cached(),
                "not_kept_full": handle.cache_full(),
            },
        })
    }
}

/// The key a list is kept under: its path and query as the product service
/// gets them (`/products?page=2`). A query never answered while the service
/// was well has no copy, and gets the error it would have got.
fn list_key(request: &ListRequest) -> String {
    request
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_owned())
}

/// The list from the product service, read whole (bounded), without its
/// request id: a copy served later answers another request, which gets
/// its own id.
async fn fetch(upstream: Upstream, request: ListRequest) -> Result<List, BoxError> {
    let (mut parts, body) = upstream.send(request).await?.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await?.to_bytes();
    parts.headers.remove(REQUEST_ID);
    Ok(List::from_parts(parts, body))
}
