//! Retry budgets: a bound on retries relative to ordinary traffic, shared by
//! every service a layer builds, so that retries cannot multiply the load on
//! a service that is already failing (a retry storm).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::sync::{AtomicI64, Ordering};
use crate::tagged::TaggedCount;

/// Fixed point: one token (or one deposit) is this many units.
const UNIT: i64 = 1_000;
/// The windowed budget keeps its time-to-live in this many slots.
const SLOTS: u64 = 10;

/// How many retries a layer may make, shared by every service it builds.
///
/// - [`RetryBudget::tokens`] (the default, `tokens(100, 0.5)`): the gRPC
///   retry-throttling scheme. Every failed attempt spends a token, every
///   successful one earns back `token_ratio`, and retries go only while
///   more than half the tokens are left. It needs no clock: a success costs one
///   atomic load while the bucket is full, which is why it is the default.
///   Over any run, retries are at most `token_ratio` per success plus half
///   the tokens, so the default never sends an upstream much more than 1.5
///   times its requests (and no more than 50 retries in a row to one that
///   is down); it keeps retrying while fewer than a third of attempts fail
///   (each failure's token is earned back by two successes), which is where
///   retries help. A bucket of 100 rides out runs of bad luck at that rate
///   that would empty a bucket of 10. gRPC's example, `tokens(10, 0.1)`,
///   stops retrying once one attempt in eleven fails: at 30 % random errors
///   it served callers no better than no retries at all (70 %, where the
///   default serves 97 %; see `tests/defaults.rs`).
/// - [`RetryBudget::windowed`]: Finagle's scheme. Retries may add at most
///   `ratio` of the requests of the last `ttl`, plus `min_per_sec` per second
///   to let a quiet service retry at all. Every request reads the clock to
///   deposit. It keeps retrying however many attempts fail, which is what a
///   brown-out needs (errors that do not come from load: on a ramp from 0
///   to 90 % errors, `windowed(10 s, 10, 0.5)` served 76.5 % of requests
///   where the default served 62.1 %) and what an overload does not (there
///   every retry is a call the upstream must refuse). Pair it with a
///   [throttle](crate::throttle) below the retry layer, which refuses
///   locally what the upstream would refuse and whose refusals are never
///   retried: that is the crate's recommended stack.
/// - [`RetryBudget::unlimited`]: no budget; only `max_attempts` bounds
///   retries.
///
/// With the `serde` feature it implements `Deserialize`, as a table with a
/// `kind` and that kind's settings, each with the default shown:
///
/// ```text
/// [budget]
/// kind = "tokens"        # max_tokens = 100, token_ratio = 0.5
/// # kind = "windowed"    # ttl = "10s", min_per_sec = 10, ratio = 0.2
/// # kind = "unlimited"
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "spec::BudgetSpec"))]
pub struct RetryBudget {
    pub(crate) kind: BudgetKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum BudgetKind {
    Tokens {
        max_tokens: u32,
        token_ratio: f64,
    },
    Windowed {
        ttl: Duration,
        min_per_sec: u32,
        ratio: f64,
    },
    Unlimited,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::tokens(100, 0.5)
    }
}

impl RetryBudget {
    /// The gRPC scheme: `max_tokens` tokens, full at the start; a failed
    /// attempt spends one, a successful one earns `token_ratio` back (in
    /// thousandths); a retry goes only while more than half are left.
    /// `max_tokens` ≥ 1, `token_ratio` in (0, 1].
    pub fn tokens(max_tokens: u32, token_ratio: f64) -> Self {
        RetryBudget {
            kind: BudgetKind::Tokens {
                max_tokens,
                token_ratio,
            },
        }
    }

    /// Finagle's scheme: over the last `ttl` (1 s to 60 s, kept in ten
    /// slots), retries may be `ratio` (in [0, 1]) of the requests, plus
    /// `min_per_sec` per second.
    pub fn windowed(ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        RetryBudget {
            kind: BudgetKind::Windowed {
                ttl,
                min_per_sec,
                ratio,
            },
        }
    }

    /// No budget.
    pub fn unlimited() -> Self {
        RetryBudget {
            kind: BudgetKind::Unlimited,
        }
    }

    /// The checks the retry builder runs; `Err` names the field and the rule.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        match self.kind {
            BudgetKind::Tokens {
                max_tokens,
                token_ratio,
            } => {
                if max_tokens == 0 {
                    return Err(("budget.max_tokens", "must be at least 1".into()));
                }
                if !(token_ratio > 0.0 && token_ratio <= 1.0) {
                    return Err((
                        "budget.token_ratio",
                        format!("must be in (0, 1], got {token_ratio}"),
                    ));
                }
            }
            BudgetKind::Windowed { ttl, ratio, .. } => {
                if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
                    return Err(("budget.ttl", format!("must be 1 s to 60 s, got {ttl:?}")));
                }
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(("budget.ratio", format!("must be in [0, 1], got {ratio}")));
                }
            }
            BudgetKind::Unlimited => {}
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
mod spec {
    //! The file form of a [`RetryBudget`].

    use std::time::Duration;

    use super::RetryBudget;

    #[derive(serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    pub(super) enum BudgetSpec {
        Tokens {
            #[serde(default = "max_tokens")]
            max_tokens: u32,
            #[serde(default = "token_ratio")]
            token_ratio: f64,
        },
        Windowed {
            #[serde(default = "ttl", with = "crate::serde_duration")]
            ttl: Duration,
            #[serde(default = "min_per_sec")]
            min_per_sec: u32,
            #[serde(default = "ratio")]
            ratio: f64,
        },
        Unlimited,
    }

    // The default budget's (`RetryBudget::default`).
    fn max_tokens() -> u32 {
        100
    }
    fn token_ratio() -> f64 {
        0.5
    }
    fn ttl() -> Duration {
        Duration::from_secs(10)
    }
    fn min_per_sec() -> u32 {
        10
    }
    fn ratio() -> f64 {
        0.2
    }

    impl From<BudgetSpec> for RetryBudget {
        fn from(spec: BudgetSpec) -> Self {
            match spec {
                BudgetSpec::Tokens {
                    max_tokens,
                    token_ratio,
                } => RetryBudget::tokens(max_tokens, token_ratio),
                BudgetSpec::Windowed {
                    ttl,
                    min_per_sec,
                    ratio,
                } => RetryBudget::windowed(ttl, min_per_sec, ratio),
                BudgetSpec::Unlimited => RetryBudget::unlimited(),
            }
        }
    }
}

/// A [`RetryBudget`] in use on its own, for retries a layer does not make:
/// a background task retrying a compensating step, a batch job, a client
/// library's own loop. Clones share one budget.
///
/// Tell it about each request's first attempt ([`on_request`]), each
/// attempt's outcome ([`on_success`], [`on_failure`]), and ask before each
/// retry ([`try_retry`], which pays for the retry when it answers `true`).
///
/// ```
/// use palisade::retry::{RetryBudget, SharedBudget};
///
/// let budget = SharedBudget::new(RetryBudget::tokens(4, 0.5))?;
/// budget.on_request();
/// budget.on_failure(); // 3 tokens left of 4
/// assert!(budget.try_retry());
/// budget.on_failure(); // 2 left: not more than half
/// assert!(!budget.try_retry());
/// budget.on_success(); // 2.5
/// assert!(budget.try_retry());
/// # Ok::<(), palisade::ConfigError>(())
/// ```
///
/// A token budget refills only from successes: a loop that stops trying
/// while the budget refuses earns nothing back, and after a long outage
/// would stay refused. For such loops use [`RetryBudget::windowed`], which
/// allows `min_per_sec` retries every second whatever came before.
///
/// [`on_request`]: SharedBudget::on_request
/// [`on_success`]: SharedBudget::on_success
/// [`on_failure`]: SharedBudget::on_failure
/// [`try_retry`]: SharedBudget::try_retry
#[derive(Clone, Debug)]
pub struct SharedBudget {
    state: Arc<Budget>,
}

impl SharedBudget {
    /// A budget with `config`'s settings, full.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, by the rules of
    /// [`RetryBuilder::build`](super::RetryBuilder::build).
    pub fn new(config: RetryBudget) -> Result<Self, ConfigError> {
        config
            .check()
            .map_err(|(field, rule)| ConfigError::new("retry", field, rule))?;
        Ok(SharedBudget {
            state: Arc::new(Budget::new(config)),
        })
    }

    /// A request's first attempt is about to go (the windowed budget
    /// counts it toward what retries may add).
    pub fn on_request(&self) {
        self.state.on_request();
    }

    /// An attempt succeeded (the token budget earns a little back).
    pub fn on_success(&self) {
        self.state.on_success();
    }

    /// An attempt failed (the token budget spends a token).
    pub fn on_failure(&self) {
        self.state.on_failure();
    }

    /// Whether a retry may go now; when `true`, the retry is paid for.
    pub fn try_retry(&self) -> bool {
        self.state.try_retry()
    }

    /// Pays for a retry as [`try_retry`](Self::try_retry) does, and gives
    /// the [`Payment`] to [`refund`](Self::refund) if the retry never goes.
    #[cfg_attr(not(feature = "hedge"), allow(dead_code))]
    pub(crate) fn try_pay(&self) -> Option<Payment> {
        self.state.try_pay()
    }

    /// Gives back a payment whose retry never went.
    #[cfg_attr(not(feature = "hedge"), allow(dead_code))]
    pub(crate) fn refund(&self, payment: Payment) {
        self.state.refund(payment);
    }
}

/// What paying for one retry took from a budget: a windowed budget's
/// withdrawal counts in the epoch it was made in, and is given back there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Payment {
    /// The epoch of a windowed budget's withdrawal; `None` for the other
    /// kinds, which take nothing for a retry.
    epoch: Option<u64>,
}

/// A budget's shared state.
#[derive(Debug)]
pub(crate) enum Budget {
    Tokens(Tokens),
    Windowed(Windowed),
    Unlimited,
}

impl Budget {
    pub(crate) fn new(config: RetryBudget) -> Self {
        match config.kind {
            BudgetKind::Tokens {
                max_tokens,
                token_ratio,
            } => Budget::Tokens(Tokens::new(max_tokens, token_ratio)),
            BudgetKind::Windowed {
                ttl,
                min_per_sec,
                ratio,
            } => Budget::Windowed(Windowed::new(ttl, min_per_sec, ratio)),
            BudgetKind::Unlimited => Budget::Unlimited,
        }
    }

    /// A request's first attempt is about to go.
    #[inline]
    pub(crate) fn on_request(&self) {
        if let Budget::Windowed(w) = self {
            w.deposit(w.clock.now());
        }
    }

    /// An attempt succeeded.
    #[inline]
    pub(crate) fn on_success(&self) {
        if let Budget::Tokens(t) = self {
            t.earn();
        }
    }

    /// An attempt failed.
    pub(crate) fn on_failure(&self) {
        if let Budget::Tokens(t) = self {
            t.spend();
        }
    }

    /// Whether a retry may go; if so, it is paid for.
    pub(crate) fn try_retry(&self) -> bool {
        self.try_pay().is_some()
    }

    /// Pays for a retry if one may go.
    pub(crate) fn try_pay(&self) -> Option<Payment> {
        match self {
            Budget::Tokens(t) => t.allows_retry().then_some(Payment { epoch: None }),
            Budget::Windowed(w) => w
                .withdraw(w.clock.now())
                .map(|epoch| Payment { epoch: Some(epoch) }),
            Budget::Unlimited => Some(Payment { epoch: None }),
        }
    }

    /// Gives back `payment`: a token budget's retry cost nothing (its
    /// failures spend), a windowed one's withdrawal is taken back.
    pub(crate) fn refund(&self, payment: Payment) {
        if let (Budget::Windowed(w), Some(epoch)) = (self, payment.epoch) {
            w.refund(epoch);
        }
    }
}

/// The gRPC token bucket, in thousandths of a token.
#[derive(Debug)]
pub(crate) struct Tokens {
    left: AtomicI64,
    max: i64,
    earned: i64,
}

impl Tokens {
    fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = i64::from(max_tokens) * UNIT;
        Tokens {
            left: AtomicI64::new(max),
            max,
            // Thousandths, as gRPC specifies; at least one.
            earned: ((token_ratio * UNIT as f64).round() as i64).max(1),
        }
    }

    /// A full bucket is the healthy case: one load, no write.
    #[inline]
    fn earn(&self) {
        if self.left.load(Ordering::Relaxed) < self.max {
            let _ = self
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    (left < self.max).then(|| (left + self.earned).min(self.max))
                });
        }
    }

    fn spend(&self) {
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some((left - UNIT).max(0))
            });
    }

    fn allows_retry(&self) -> bool {
        self.left.load(Ordering::Relaxed) > self.max / 2
    }

    #[cfg(test)]
    pub(crate) fn left(&self) -> i64 {
        self.left.load(Ordering::Relaxed)
    }
}

/// A windowed budget's slot: deposits and withdrawals of one epoch (one
/// tenth of the ttl), each counter tagged with the epoch it belongs to.
#[derive(Debug)]
struct Slot {
    deposits: TaggedCount,
    withdrawals: TaggedCount,
}

/// Finagle's budget: deposits and withdrawals over the last `ttl`, in ten
/// slots, plus a fixed reserve.
///
/// Its times are nanoseconds on its own [`Clock`] (the CPU's counter with
/// the `fast-clock` feature, tokio's clock while that is paused), which
/// costs about 8 ns a reading against 20 ns for tokio's: most of what a
/// request's deposit cost. The budget compares them with nothing else.
#[derive(Debug)]
pub(crate) struct Windowed {
    clock: Clock,
    slot_nanos: u64,
    slots: Box<[Slot]>,
    reserve: i64,
    deposit: u64,
}

impl Windowed {
    fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        let ttl_nanos = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        Windowed {
            clock: Clock::new(),
            slot_nanos: (ttl_nanos / SLOTS).max(1),
            slots: (0..SLOTS)
                .map(|_| Slot {
                    deposits: TaggedCount::default(),
                    withdrawals: TaggedCount::default(),
                })
                .collect(),
            reserve: (f64::from(min_per_sec) * ttl.as_secs_f64() * UNIT as f64) as i64,
            // A retry costs a whole unit; a request earns `ratio` of one.
            deposit: (ratio * UNIT as f64).round() as u64,
        }
    }

    /// The epoch of `now`, in nanoseconds on the budget's clock.
    fn epoch(&self, now: u64) -> u64 {
        now / self.slot_nanos
    }

    fn slot(&self, epoch: u64) -> &Slot {
        &self.slots[(epoch % SLOTS) as usize]
    }

    fn deposit(&self, now: u64) {
        let epoch = self.epoch(now);
        let _ = self.slot(epoch).deposits.add(epoch, self.deposit);
    }

    /// The balance over the last ten epochs as of `epoch`: each slot holds
    /// one of them.
    fn balance(&self, epoch: u64) -> i64 {
        (epoch.saturating_sub(SLOTS - 1)..=epoch)
            .map(|e| {
                let slot = self.slot(e);
                slot.deposits.get(e) as i64 - slot.withdrawals.get(e) as i64
            })
            .sum::<i64>()
            + self.reserve
    }

    #[cfg(all(test, not(loom)))]
    fn try_withdraw(&self, now: u64) -> bool {
        self.withdraw(now).is_some()
    }

    /// Withdraws one unit if the balance holds it, and returns the epoch
    /// the withdrawal counts in. Concurrent retries that each see the last
    /// unit may both take it: the budget can be overdrawn by up to one
    /// retry per racing thread.
    fn withdraw(&self, now: u64) -> Option<u64> {
        let epoch = self.epoch(now);
        if self.balance(epoch) < UNIT {
            return None;
        }
        self.slot(epoch)
            .withdrawals
            .add(epoch, UNIT as u64)
            .then_some(epoch)
    }

    /// Takes back a withdrawal made in `epoch`. Once the epoch's slot has
    /// moved on, the withdrawal has left the window and there is nothing
    /// to take back.
    fn refund(&self, epoch: u64) {
        let _ = self
            .slot(epoch)
            .withdrawals
            .update(epoch, |count| count.checked_sub(UNIT as u64));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn windowed(ttl_ms: u64, min_per_sec: u32, ratio: f64) -> Windowed {
        Windowed::new(Duration::from_millis(ttl_ms), min_per_sec, ratio)
    }

    /// `ms` milliseconds after the budget's clock's origin.
    fn at(ms: u64) -> u64 {
        ms * 1_000_000
    }

    #[test]
    fn tokens_spend_on_failure_earn_on_success_and_stop_below_half() {
        let t = Tokens::new(10, 0.1);
        assert!(t.allows_retry());
        for _ in 0..5 {
            t.spend();
        }
        assert_eq!(t.left(), 5_000);
        assert!(!t.allows_retry(), "half is not more than half");
        t.earn();
        assert_eq!(t.left(), 5_100);
        assert!(t.allows_retry());
        for _ in 0..100 {
            t.earn();
        }
        assert_eq!(t.left(), 10_000, "never above the maximum");
        for _ in 0..20 {
            t.spend();
        }
        assert_eq!(t.left(), 0, "never below zero");
    }

    #[test]
    fn windowed_budget_reserve_and_expiry() {
        // scenario BU-1
        let empty = windowed(1_000, 0, 1.0);
        assert!(!empty.try_withdraw(at(0)), "nothing deposited");

        let reserve = windowed(1_000, 5, 1.0);
        for i in 0..5 {
            assert!(reserve.try_withdraw(at(0)), "withdrawal {i}");
        }
        assert!(!reserve.try_withdraw(at(0)), "the sixth");

        let leaky = windowed(1_000, 0, 1.0);
        leaky.deposit(at(0));
        assert!(!leaky.try_withdraw(at(3_000)), "the deposit expired");
    }

    #[test]
    fn windowed_deposits_expire_slot_by_slot() {
        // scenario BU-2: ratio 0.5, so a retry costs two deposits.
        let w = windowed(1_000, 0, 0.5);
        w.deposit(at(0));
        w.deposit(at(0));
        assert!(w.try_withdraw(at(901)), "901 ms old deposits still count");
        w.deposit(at(2_902));
        w.deposit(at(3_203));
        w.deposit(at(4_004));
        assert!(w.try_withdraw(at(4_004)), "the two newest pay for it");
        assert!(!w.try_withdraw(at(4_004)), "and are spent");
    }

    #[test]
    fn a_refund_gives_the_unit_back_while_its_withdrawal_counts() {
        let w = windowed(1_000, 1, 0.0);
        let epoch = w.withdraw(at(0)).expect("the reserve pays");
        assert!(!w.try_withdraw(at(50)), "the reserve is spent");
        w.refund(epoch);
        assert!(w.try_withdraw(at(50)), "given back");
        // A withdrawal whose slot has moved on has left the window: there
        // is nothing to take back, and the newer epoch's count stays.
        let later = w.withdraw(at(1_050)).expect("the window moved on");
        w.refund(epoch);
        assert!(!w.try_withdraw(at(1_050)), "the newer withdrawal stands");
        w.refund(later);
        assert!(w.try_withdraw(at(1_050)));
    }

    #[test]
    fn bad_budgets_name_their_field() {
        let field = |b: RetryBudget| b.check().unwrap_err().0;
        assert_eq!(field(RetryBudget::tokens(0, 0.1)), "budget.max_tokens");
        assert_eq!(field(RetryBudget::tokens(10, 0.0)), "budget.token_ratio");
        assert_eq!(field(RetryBudget::tokens(10, 1.5)), "budget.token_ratio");
        let w = |ttl_ms, ratio| RetryBudget::windowed(Duration::from_millis(ttl_ms), 10, ratio);
        assert_eq!(field(w(999, 0.2)), "budget.ttl");
        assert_eq!(field(w(60_001, 0.2)), "budget.ttl");
        assert_eq!(field(w(10_000, -0.1)), "budget.ratio");
        assert!(w(10_000, 0.0).check().is_ok());
        assert!(RetryBudget::default().check().is_ok());
    }
}
