//! Circuit breaker (in progress: the sliding windows).

#![allow(dead_code)] // the windows are used by the breaker as it lands

mod window;
