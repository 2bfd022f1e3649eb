//! The two algorithms as Lua scripts: each decision is one `EVALSHA`,
//! atomic in Redis, on Redis's own clock.
//!
//! Times are in microseconds, from `TIME` inside the script: a replica's
//! clock never enters a decision, so replicas whose clocks disagree still
//! share one limit. Lua numbers are doubles, exact up to 2^53, which is why
//! the builder bounds `limit × window` (in microseconds) and a GCRA
//! bucket's length: every product the scripts form stays exact.
//!
//! Both take up to `k` permits (1, or a lease's size): as many as fit,
//! all at once. They answer `{granted, remaining, reset, wait}`: the
//! permits taken (0 for a refusal), the permits left after, the
//! microseconds until the key has counted nothing that matters, and for a
//! refusal the microseconds until one permit fits (at least 1). A refusal
//! writes nothing. Every write sets an expiry at the instant the key's
//! state stops mattering, so keys expire by themselves.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::rate_limit::limiter::Snapshot;

/// The sliding-window counter, as `WindowCounter` decides in process: the
/// previous window's count weighted by the part still covered, plus the
/// current window's. `KEYS[1]`: the key's hash (`e` the window number, `c`
/// its count, `p` the previous window's); `ARGV`: limit, window, n.
const SLIDING_WINDOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local k = tonumber(ARGV[3])
local epoch = math.floor(now / window)
local into = now - epoch * window
local state = redis.call('HMGET', KEYS[1], 'e', 'c', 'p')
local e = tonumber(state[1])
local current, previous = 0, 0
if e ~= nil and e > epoch then
  -- Redis's clock went back (a failover): count from the stored window's
  -- start, which only over-counts.
  epoch, into = e, 0
end
if e == epoch then
  current = tonumber(state[2]) or 0
  previous = tonumber(state[3]) or 0
elseif e == epoch - 1 then
  previous = tonumber(state[2]) or 0
end
local left = window - into
-- The most m with previous * left + (current + m) * window <= limit * window.
local granted = math.floor((limit * window - previous * left) / window) - current
if granted > k then granted = k end
local wait = 0
if granted >= 1 then
  current = current + granted
  redis.call('HSET', KEYS[1], 'e', string.format('%.0f', epoch), 'c', current, 'p', previous)
  redis.call('PEXPIRE', KEYS[1], math.ceil((2 * window - into) / 1000))
else
  granted = 0
  local room = limit - current - 1
  if room >= 0 then
    wait = left - math.floor(room * window / previous)
  elseif current == 0 then
    wait = left
  else
    wait = left + window - math.floor((limit - 1) * window / current)
  end
  if wait < 1 then wait = 1 end
end
local used = math.ceil(previous * left / window) + current
local reset = 0
if current > 0 then reset = 2 * window - into elseif previous > 0 then reset = left end
return {granted, math.max(limit - used, 0), reset, wait}
";

/// GCRA, as `Gcra` decides in process: the key holds its theoretical
/// arrival time (TAT). `KEYS[1]`: the key; `ARGV`: interval, burst, n.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local k = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
-- The most m with tat + m * interval - now <= burst * interval.
local granted = math.floor((burst * interval - (tat - now)) / interval)
if granted > k then granted = k end
if granted < 1 then
  local over = tat + interval - now - interval * burst
  return {0, 0, tat - now, over}
end
local next = tat + interval * granted
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000))
return {granted, math.floor((interval * burst - (next - now)) / interval), next - now, 0}
";

pub(crate) static SLIDING_WINDOW_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(SLIDING_WINDOW));
pub(crate) static GCRA_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));

/// What a script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Permits taken: 0 for a refusal.
    pub(crate) granted: u64,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
    /// For a refusal, how long until the permits fit.
    pub(crate) wait: Duration,
}

impl Answer {
    /// Reads a script's reply, `{granted, remaining, reset, wait}`.
    pub(crate) fn from_reply(reply: [i64; 4]) -> Self {
        let micros = |n: i64| Duration::from_micros(u64::try_from(n).unwrap_or(0));
        Answer {
            granted: u64::try_from(reply[0]).unwrap_or(0),
            remaining: u64::try_from(reply[1]).unwrap_or(0),
            reset: micros(reply[2]),
            wait: micros(reply[3]).max(Duration::from_micros(1)),
        }
    }

    pub(crate) fn snapshot(&self, limit: u64) -> Snapshot {
        Snapshot {
            limit,
            remaining: self.remaining,
            reset: self.reset,
        }
    }
}
