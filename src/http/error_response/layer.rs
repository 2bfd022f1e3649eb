//! [`ErrorResponseLayer`].

use std::fmt;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use tower_layer::Layer;

use super::{ErrorResponse, default_error_response};
use crate::error::BoxError;

/// Answers the errors that are not palisade's rejections: implemented by
/// [`DefaultErrors`] and by every `Fn(&BoxError) -> Response<Full<Bytes>>`.
pub trait OtherErrors {
    /// The response for `err`.
    fn respond(&self, err: &BoxError) -> Response<Full<Bytes>>;
}

impl<F> OtherErrors for F
where
    F: Fn(&BoxError) -> Response<Full<Bytes>>,
{
    fn respond(&self, err: &BoxError) -> Response<Full<Bytes>> {
        self(err)
    }
}

/// The [`OtherErrors`] of [`ErrorResponseLayer::new`]:
/// [`default_error_response`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultErrors;

impl OtherErrors for DefaultErrors {
    fn respond(&self, err: &BoxError) -> Response<Full<Bytes>> {
        default_error_response(err)
    }
}

/// Applies [`ErrorResponse`]: palisade's rejections, and every other error,
/// become HTTP responses. See the [module docs](super::super#rejections-as-responses).
#[derive(Clone, Copy)]
pub struct ErrorResponseLayer<F = DefaultErrors> {
    other_errors: F,
}

impl ErrorResponseLayer {
    /// Rejections as documented; other errors through
    /// [`default_error_response`].
    pub fn new() -> Self {
        ErrorResponseLayer {
            other_errors: DefaultErrors,
        }
    }
}

impl Default for ErrorResponseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> ErrorResponseLayer<F> {
    /// Answers errors that are not palisade's rejections with
    /// `other_errors` ([`bad_gateway_response`](super::bad_gateway_response)
    /// for a gateway, say, or a function of your own).
    pub fn other_errors<G: OtherErrors>(self, other_errors: G) -> ErrorResponseLayer<G> {
        ErrorResponseLayer { other_errors }
    }
}

impl<S, F: Clone> Layer<S> for ErrorResponseLayer<F> {
    type Service = ErrorResponse<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner, self.other_errors.clone())
    }
}

impl<F> fmt::Debug for ErrorResponseLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponseLayer").finish_non_exhaustive()
    }
}
