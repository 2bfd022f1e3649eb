//! A `tracing` subscriber for tests: it keeps every event and span, with
//! their fields as text, for the test to read.

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
        let index = span.into_u64() as usize - 1;
        values.record(&mut Fields(&mut kept.spans[index].fields));
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
