//! Which requests may be sent again, and how a copy is made.

/// Makes the copy of a request that a retry sends, or says it may not be
/// retried (`None`): it is not idempotent, or its body cannot be replayed.
///
/// Asked once when the call is made (on the original request) and once more
/// before each retry but the last. Implemented for [`CloneRequest`],
/// [`CloneIf`] and every `Fn(&Req) -> Option<Req>`.
// Over HTTP the usual cause is a request body that streams; the compiler
// stops at this trait and would not show `ReplayBody`'s own note.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy a `{Req}` for a retry",
    note = "`CloneRequest` (the default) and `retry_if` copy requests that are `Clone`",
    note = "over HTTP, `IdempotentReplay` copies only requests whose body can be sent twice (`palisade::http::ReplayBody`: `Full<Bytes>`, `Empty<Bytes>`, `String`, `Bytes`, `ReplayableBody`)",
    note = "a streaming body (hyper's `Incoming`, axum's `Body`, a boxed body) can be retried once buffered: put `palisade::http::BufferRequestBodyLayer` outside the retry"
)]
pub trait Replay<Req> {
    /// A copy of `request` to send again, or `None` if it must not be.
    fn replay(&self, request: &Req) -> Option<Req>;
}

/// Retries every request, by cloning it (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    #[inline]
    fn replay(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Retries the requests a predicate accepts, by cloning them: built by
/// [`RetryBuilder::retry_if`](super::RetryBuilder::retry_if).
#[derive(Clone, Copy, Debug)]
pub struct CloneIf<F>(pub(crate) F);

impl<Req: Clone, F: Fn(&Req) -> bool> Replay<Req> for CloneIf<F> {
    #[inline]
    fn replay(&self, request: &Req) -> Option<Req> {
        (self.0)(request).then(|| request.clone())
    }
}

impl<Req, F: Fn(&Req) -> Option<Req>> Replay<Req> for F {
    fn replay(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}
