//! [`ReadDeadlineLayer`] and [`WriteDeadlineLayer`].

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use super::{GRPC_TIMEOUT, ReadDeadline, ReadDeadlineHandle, ReadShared, WriteDeadline};
use crate::error::ConfigError;

/// Reads a caller's deadline from the `grpc-timeout` header (or another)
/// into the request's extensions, refusing a request that arrives with no
/// time left. See the [module docs](super).
///
/// One layer value is one set of counts, shared by every service it builds.
#[derive(Clone, Debug)]
pub struct ReadDeadlineLayer {
    shared: Arc<ReadShared>,
}

impl ReadDeadlineLayer {
    /// Reads `grpc-timeout`, with no cap of its own.
    pub fn new() -> Self {
        ReadDeadlineLayer {
            shared: Arc::new(ReadShared::new(GRPC_TIMEOUT, None)),
        }
    }

    /// Reads `header` instead.
    pub fn header(self, header: HeaderName) -> Self {
        let max = self.shared.max;
        ReadDeadlineLayer {
            shared: Arc::new(ReadShared::new(header, max)),
        }
    }

    /// Caps what a caller may ask for: a header saying more than `max`
    /// gives a deadline `max` away. (A request without the header gets no
    /// deadline from this layer; the server's own timeouts still apply.)
    ///
    /// # Errors
    ///
    /// A zero `max` is a [`ConfigError`]: every request would arrive
    /// expired.
    pub fn max(self, max: Duration) -> Result<Self, ConfigError> {
        if max.is_zero() {
            return Err(ConfigError::new(
                "deadline",
                "max",
                "must be greater than zero (a zero cap would refuse every request with a deadline)",
            ));
        }
        let header = self.shared.header.clone();
        Ok(ReadDeadlineLayer {
            shared: Arc::new(ReadShared::new(header, Some(max))),
        })
    }

    /// Counts of expired arrivals and malformed headers.
    pub fn handle(&self) -> ReadDeadlineHandle {
        ReadDeadlineHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Default for ReadDeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ReadDeadlineLayer {
    type Service = ReadDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadDeadline {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Writes the time left before a request's deadline into the
/// `grpc-timeout` header (or another) as it leaves, and refuses to send a
/// request with no time left. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct WriteDeadlineLayer {
    header: HeaderName,
}

impl WriteDeadlineLayer {
    /// Writes `grpc-timeout`.
    pub fn new() -> Self {
        WriteDeadlineLayer {
            header: GRPC_TIMEOUT,
        }
    }

    /// Writes `header` instead.
    pub fn header(self, header: HeaderName) -> Self {
        WriteDeadlineLayer { header }
    }
}

impl Default for WriteDeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for WriteDeadlineLayer {
    type Service = WriteDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WriteDeadline {
            inner,
            header: self.header.clone(),
        }
    }
}
