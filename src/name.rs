//! The name a layer carries into its errors, events and metrics.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A layer's name, cheap to copy into every response future.
///
/// A `&'static str` (the common case, `.name("payments")`) is copied with no
/// reference count at all; an owned `String` is moved into an `Arc<str>` once,
/// at build time, so later clones never allocate.
#[derive(Clone)]
pub(crate) enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }
}

impl From<Cow<'static, str>> for Name {
    fn from(name: Cow<'static, str>) -> Self {
        match name {
            Cow::Borrowed(s) => Name::Static(s),
            Cow::Owned(s) => Name::Shared(s.into()),
        }
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Name::Shared(name.into())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
