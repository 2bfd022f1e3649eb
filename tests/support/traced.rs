//! A `tracing` subscriber for tests: it keeps every event and span of the
//! test's thread, with their fields as text, for the test to read.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part of this

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event: its level, its target, the span it happened in, and its
/// fields (`message` among them).
#[derive(Clone, Debug)]
pub struct Traced {
    pub level: Level,
    pub target: String,
    pub span: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

impl Traced {
    /// A field's value as text (`Debug` for non-strings), if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// One span: its name, its parent, and its fields, including those
/// recorded after it was made.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub name: &'static str,
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
}

/// What a [`Tracer`] kept.
#[derive(Default)]
struct Kept {
    events: Vec<Traced>,
    spans: Vec<SpanRecord>,
    /// Entered spans, innermost last.
    stack: Vec<u64>,
}

/// The subscriber; clones share what they keep.
#[derive(Clone, Default)]
pub struct Tracer(Arc<Mutex<Kept>>);

impl Tracer {
    /// This thread's tracer until the guard drops.
    ///
    /// One subscriber is installed for the whole test binary, taking every
    /// event and span and handing them to the tracer of the thread they
    /// happen on. Thread-local subscribers (`set_default`) race with the
    /// interest `tracing` caches per call site: a call site another test
    /// reaches first with no subscriber can stay cached as "never", and its
    /// events never reach the next test's subscriber.
    pub fn install(&self) -> Installed {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(Global).expect("no other global subscriber");
        });
        CURRENT.with(|current| *current.borrow_mut() = Some(self.clone()));
        Installed(())
    }

    /// Every event so far whose target starts with `target`.
    pub fn events(&self, target: &str) -> Vec<Traced> {
        let kept = self.0.lock().unwrap();
        kept.events
            .iter()
            .filter(|e| e.target.starts_with(target))
            .cloned()
            .collect()
    }

    /// Every span so far, by id (1 is the first).
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.0.lock().unwrap().spans.clone()
    }
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Tracer>> = const { std::cell::RefCell::new(None) };
}

/// While held, this thread's events and spans go to its [`Tracer`].
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = None);
    }
}

/// The binary's one subscriber: hands everything to this thread's tracer.
struct Global;

/// Span ids given while no tracer is installed; nothing is kept for them.
const UNTRACED: u64 = 1 << 62;

fn with_current<T>(f: impl FnOnce(&Tracer) -> T) -> Option<T> {
    CURRENT.with(|current| current.borrow().as_ref().map(f))
}

impl Subscriber for Global {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        with_current(|tracer| tracer.new_span(span)).unwrap_or_else(|| Id::from_u64(UNTRACED))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if span.into_u64() != UNTRACED {
            with_current(|tracer| tracer.record(span, values));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        with_current(|tracer| tracer.event(event));
    }

    fn enter(&self, span: &Id) {
        if span.into_u64() != UNTRACED {
            with_current(|tracer| tracer.enter(span));
        }
    }

    fn exit(&self, span: &Id) {
        if span.into_u64() != UNTRACED {
            with_current(|tracer| tracer.exit(span));
        }
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Tracer {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut kept = self.0.lock().unwrap();
        let parent = match span.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if span.is_contextual() => kept.stack.last().copied(),
            None => None,
        };
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        kept.spans.push(SpanRecord {
            name: span.metadata().name(),
            parent,
            fields,
        });
        Id::from_u64(kept.spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut kept = self.0.lock().unwrap();
        // A span made before this tracer was installed is not kept.
        let index = span.into_u64() as usize - 1;
        if let Some(span) = kept.spans.get_mut(index) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let mut kept = self.0.lock().unwrap();
        let span = kept.stack.last().copied();
        kept.events.push(Traced {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            span,
            fields,
        });
    }

    fn enter(&self, span: &Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut kept = self.0.lock().unwrap();
        if let Some(at) = kept.stack.iter().rposition(|id| *id == span.into_u64()) {
            kept.stack.remove(at);
        }
    }
}
