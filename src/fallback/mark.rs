//! How a degraded answer is marked: [`Mark`] and its implementations.

use super::Reason;

/// Marks an answer the layer made, so that its caller can tell it from a
/// real response.
///
/// Implemented by [`MarkDegradable`] (the default), [`Unmarked`], and every
/// `Fn(&mut Response, Reason)`.
pub trait Mark<Res> {
    /// Marks `response`, made by the layer for `reason`.
    fn mark(&self, response: &mut Res, reason: Reason);
}

impl<F, Res> Mark<Res> for F
where
    F: Fn(&mut Res, Reason),
{
    fn mark(&self, response: &mut Res, reason: Reason) {
        self(response, reason)
    }
}

/// A response type that can carry the degraded mark itself.
///
/// With the `http` feature, implemented for `http::Response<B>`: the
/// header [`DEGRADED_HEADER`] set to `true`, and a [`Degraded`] extension.
pub trait Degradable {
    /// Marks `self` as a degraded answer, made for `reason`.
    fn mark_degraded(&mut self, reason: Reason);
}

/// The default [`Mark`]: the response marks itself, through
/// [`Degradable`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MarkDegradable;

impl<Res: Degradable> Mark<Res> for MarkDegradable {
    fn mark(&self, response: &mut Res, reason: Reason) {
        response.mark_degraded(reason);
    }
}

/// A [`Mark`] that marks nothing: for answers that say what they are by
/// themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unmarked;

impl<Res> Mark<Res> for Unmarked {
    fn mark(&self, _: &mut Res, _: Reason) {}
}

/// The extension a degraded `http::Response` carries: why the layer
/// answered in the upstream's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Degraded {
    /// Why the layer answered.
    pub reason: Reason,
}

/// `x-degraded`: set to `true` on every `http::Response` the layer makes.
#[cfg(feature = "http")]
pub const DEGRADED_HEADER: http::HeaderName = http::HeaderName::from_static("x-degraded");

#[cfg(feature = "http")]
impl<B> Degradable for http::Response<B> {
    fn mark_degraded(&mut self, reason: Reason) {
        self.headers_mut()
            .insert(DEGRADED_HEADER, http::HeaderValue::from_static("true"));
        self.extensions_mut().insert(Degraded { reason });
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn an_http_response_marks_itself_with_the_header_and_the_extension() {
        let mut response = http::Response::new(());
        MarkDegradable.mark(&mut response, Reason::CircuitOpen);
        assert_eq!(response.headers()["x-degraded"], "true");
        assert_eq!(
            response.extensions().get::<Degraded>(),
            Some(&Degraded {
                reason: Reason::CircuitOpen
            })
        );
    }
}
