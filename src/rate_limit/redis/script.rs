//! The two algorithms as Lua scripts: each decision is one `EVALSHA`,
//! atomic in Redis, on Redis's own clock.
//!
//! Times are in microseconds, from `TIME` inside the script: a replica's
//! clock never enters a decision, so replicas whose clocks disagree still
//! share one limit. Lua numbers are doubles, exact up to 2^53, which is why
//! the builder bounds `limit × window` (in microseconds) and a GCRA
//! bucket's length: every product the scripts form stays exact.
//!
//! Both decide for every key of a batch in turn (`KEYS[i]`, with its
//! three arguments at `ARGV[3i-2..3i]`), on one reading of the clock, and
//! take up to `k` permits for each (1, or a lease's size): as many as fit,
//! all at once. For each key they answer four numbers,
//! `{granted, remaining, reset, wait}`: the
//! permits taken (0 for a refusal), the permits left after, the
//! microseconds until the key has counted nothing that matters, and for a
//! refusal the microseconds until one permit fits (at least 1). A refusal
//! writes nothing. Every write sets an expiry at the instant the key's
//! state stops mattering, so keys expire by themselves.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use crate::rate_limit::limiter::Snapshot;

/// Both scripts start by reading Redis's clock once, in microseconds, and
/// an empty table for the answers.
macro_rules! now_and_answers {
    () => {
        "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
"
    };
}

/// The sliding-window counter, as `WindowCounter` decides in process: the
/// previous window's count weighted by the part still covered, plus the
/// current window's. Each key holds `window:count:previous count`, one
/// string (one read and one write per decision); its arguments: limit,
/// window, k.
const SLIDING_WINDOW: &str = concat!(
    now_and_answers!(),
    r"for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 2])
  local window = tonumber(ARGV[3 * i - 1])
  local k = tonumber(ARGV[3 * i])
  local epoch = math.floor(now / window)
  local into = now - epoch * window
  local state = redis.call('GET', KEYS[i])
  local e, c, p = nil, 0, 0
  if state then
    local se, sc, sp = string.match(state, '^(%d+):(%d+):(%d+)$')
    e, c, p = tonumber(se), tonumber(sc) or 0, tonumber(sp) or 0
  end
  local current, previous = 0, 0
  if e ~= nil and e > epoch then
    -- Redis's clock went back (a failover): count from the stored
    -- window's start, which only over-counts.
    epoch, into = e, 0
  end
  if e == epoch then
    current, previous = c, p
  elseif e == epoch - 1 then
    previous = c
  end
  local left = window - into
  -- The most m with previous * left + (current + m) * window <= limit * window.
  local granted = math.floor((limit * window - previous * left) / window) - current
  if granted > k then granted = k end
  local wait = 0
  if granted >= 1 then
    current = current + granted
    -- Whole numbers below 10^14 print without an exponent: the window
    -- number (now / window, at most 2^51) and the counts (at most 2^40).
    local value = epoch .. ':' .. current .. ':' .. previous
    redis.call('SET', KEYS[i], value, 'PX', math.ceil((2 * window - into) / 1000))
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
  out[4 * i - 3] = granted
  out[4 * i - 2] = math.max(limit - used, 0)
  out[4 * i - 1] = reset
  out[4 * i] = wait
end
return out
"
);

/// GCRA, as `Gcra` decides in process: each key holds its theoretical
/// arrival time (TAT); its arguments: interval, burst, k.
const GCRA: &str = concat!(
    now_and_answers!(),
    r"for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local k = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  -- The most m with tat + m * interval - now <= burst * interval.
  local granted = math.floor((burst * interval - (tat - now)) / interval)
  if granted > k then granted = k end
  if granted < 1 then
    out[4 * i - 3] = 0
    out[4 * i - 2] = 0
    out[4 * i - 1] = tat - now
    out[4 * i] = tat + interval - now - interval * burst
  else
    local next = tat + interval * granted
    redis.call('SET', KEYS[i], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000))
    out[4 * i - 3] = granted
    out[4 * i - 2] = math.floor((interval * burst - (next - now)) / interval)
    out[4 * i - 1] = next - now
    out[4 * i] = 0
  end
end
return out
"
);

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
    /// Reads one key's part of a script's reply,
    /// `{granted, remaining, reset, wait}`.
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

#[cfg(test)]
#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

/// The scripts against the in-process algorithms, on a real Redis: the
/// same state and instant give the same decision and the same wait (to the
/// microsecond the scripts count in). The instant is fixed by swapping
/// `TIME` for a literal in a copy of the script, in these tests only.
#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::redis_server::RedisServer;
    use super::*;
    use crate::rate_limit::gcra::Gcra;
    use crate::rate_limit::limiter::Decision;
    use crate::rate_limit::window::WindowCounter;

    const US: u64 = 1_000;

    /// `script` deciding at `now` (µs since 1970) instead of Redis's clock.
    fn at(script: &str, now: u64) -> Script {
        let time = format!("{{'{}', '{}'}}", now / 1_000_000, now % 1_000_000);
        Script::new(&script.replacen("redis.call('TIME')", &time, 1))
    }

    fn decide(con: &mut redis::Connection, script: Script, state: &str, args: [u64; 3]) -> Answer {
        let _: () = redis::cmd("SET").arg("k").arg(state).query(con).unwrap();
        ask(con, &script, args)
    }

    /// One decision for key `k`, from whatever state it holds.
    fn ask(con: &mut redis::Connection, script: &Script, args: [u64; 3]) -> Answer {
        let reply: Vec<i64> = script.key("k").arg(&args[..]).invoke(con).unwrap();
        Answer::from_reply([reply[0], reply[1], reply[2], reply[3]])
    }

    /// A fresh Redis and a connection to it.
    fn redis() -> (RedisServer, redis::Connection) {
        let redis = RedisServer::start();
        let con = redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .unwrap();
        (redis, con)
    }

    const SECOND: u64 = 1_000_000;
    /// A window start far from 1970, in µs: a whole number of minutes.
    const T: u64 = 1_800_000_000 * SECOND;

    /// Scenario RD-1 (variant: one permit per request, so the costs of 0,
    /// 2, 5 and 6 do not apply; the instants are fixed by swapping `TIME`
    /// for a literal): GCRA at 1 per second with a burst of 5 tells each
    /// caller its remaining permits, its reset and, refused, its wait;
    /// every key written expires no sooner than its reset.
    #[test]
    fn gcra_in_redis_tells_the_remaining_the_reset_and_the_wait() {
        let (_redis, mut con) = redis();
        let args = [SECOND, 5, 1];
        let secs = |d: Duration| d.as_secs_f64();
        for (remaining, reset) in [(4, 1.0), (3, 2.0), (2, 3.0), (1, 4.0), (0, 5.0)] {
            let answer = ask(&mut con, &at(GCRA, T), args);
            assert_eq!((answer.granted, answer.remaining), (1, remaining));
            assert_eq!(secs(answer.reset), reset);
        }
        let refused = ask(&mut con, &at(GCRA, T), args);
        assert_eq!(refused.granted, 0);
        assert_eq!((secs(refused.wait), secs(refused.reset)), (1.0, 5.0));
        let ttl: i64 = redis::cmd("PTTL").arg("k").query(&mut con).unwrap();
        // Read a moment after the write, on Redis's real clock.
        assert!(
            (4_900..=5_000).contains(&ttl),
            "lives until its reset: {ttl} ms"
        );
        for (at_s, remaining, reset) in [
            (3.0, 2, 3.0),
            (3.1, 1, 3.9),
            (4.0, 1, 4.0),
            (8.0, 4, 1.0),
            (9.5, 4, 1.0),
        ] {
            let now = T + (at_s * 1e6) as u64;
            let answer = ask(&mut con, &at(GCRA, now), args);
            assert_eq!(
                (answer.granted, answer.remaining),
                (1, remaining),
                "at {at_s} s"
            );
            assert!((secs(answer.reset) - reset).abs() < 1e-6, "at {at_s} s");
        }
    }

    /// Scenario RD-2 (variant: one permit per request; instants fixed as
    /// above): a sliding window of 100 per minute. Refusals spend nothing:
    /// after 100 admitted at 50 s and 1 000 refused, at 75 s the estimate
    /// is 100 × 0.75, so exactly 25 more are admitted and the next waits
    /// 0.6 s. A window two back never weighs in.
    #[test]
    fn a_refusal_spends_nothing_and_old_windows_stop_counting() {
        let (_redis, mut con) = redis();
        let args = [100, 60 * SECOND, 1];
        let admitted = |con: &mut redis::Connection, now: u64, calls: u32| {
            (0..calls)
                .filter(|_| ask(con, &at(SLIDING_WINDOW, now), args).granted == 1)
                .count()
        };
        assert_eq!(admitted(&mut con, T + 50 * SECOND, 1_100), 100);
        assert_eq!(admitted(&mut con, T + 75 * SECOND, 25), 25);
        let refused = ask(&mut con, &at(SLIDING_WINDOW, T + 75 * SECOND), args);
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.wait, Duration::from_millis(600));

        let _: () = redis::cmd("DEL").arg("k").query(&mut con).unwrap();
        assert_eq!(admitted(&mut con, T + 10 * SECOND, 100), 100);
        assert_eq!(admitted(&mut con, T + 130 * SECOND, 100), 100);
        let ttl: i64 = redis::cmd("PTTL").arg("k").query(&mut con).unwrap();
        assert!(
            (109_900..=110_000).contains(&ttl),
            "lives two windows from its window's start: {ttl} ms"
        );
    }

    /// The in-process decision's wait in µs, rounded up as the script's
    /// microseconds count it.
    fn refused_wait(decision: Decision) -> Option<u64> {
        match decision {
            Decision::Admitted => None,
            Decision::Refused { wait } => Some(u64::try_from(wait.as_nanos()).unwrap()),
            Decision::TooLarge => panic!("one permit is never too large"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_sliding_window_script_decides_as_the_counter(
            limit in 1u64..1_000,
            window_ms in 1u64..100_000,
            previous in 0u64..1_000,
            current in 0u64..1_000,
            into_part in 0.0f64..1.0,
        ) {
            let redis = RedisServer::start();
            let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
            let (previous, current) = (previous.min(limit), current.min(limit));
            let window = window_ms * 1_000;
            let epoch = 1_800_000_000_000_000 / window;
            let into = ((window as f64) * into_part) as u64 % window;
            let now = epoch * window + into;
            let state = format!("{epoch}:{current}:{previous}");
            let answer = decide(&mut con, at(SLIDING_WINDOW, now), &state, [limit, window, 1]);

            let counter = WindowCounter::with_counts(
                limit, Duration::from_micros(window), epoch, previous, current,
            );
            let decision = counter.acquire(now * US, 1);
            prop_assert_eq!(answer.granted == 1, decision == Decision::Admitted);
            if let Some(wait) = refused_wait(decision) {
                // The counter's exact wait in ns; the script's in µs.
                let script = answer.wait.as_micros() as u64 * US;
                prop_assert!(script.abs_diff(wait) < US, "{} µs against {} ns", script / US, wait);
            }
        }

        #[test]
        fn the_gcra_script_decides_as_the_bucket(
            rate in 1u64..1_000,
            interval_us in 1u64..1_000_000,
            burst in 1u64..100,
            owed_part in 0.0f64..1.2,
        ) {
            let redis = RedisServer::start();
            let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
            let period = Duration::from_micros(interval_us * rate);
            let now = 1_800_000_000_000_000u64;
            let owed = ((interval_us * burst) as f64 * owed_part) as u64;
            let tat = now + owed;
            let answer = decide(
                &mut con, at(GCRA, now), &tat.to_string(), [interval_us, burst, 1],
            );

            let bucket = Gcra::with_tat(rate, period, burst, tat * US);
            let decision = bucket.acquire(now * US, 1);
            prop_assert_eq!(answer.granted == 1, decision == Decision::Admitted);
            if let Some(wait) = refused_wait(decision) {
                prop_assert_eq!(answer.wait.as_micros() as u64 * US, wait);
            }
        }
    }
}
