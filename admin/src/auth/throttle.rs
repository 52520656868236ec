//! Throttling of everything that checks a secret a human typed (ADMIN_API.md: failures are
//! throttled, `429`): sign-in, accepting an invitation, password change, 2FA setup and disable,
//! recovery-code regeneration, and the step-up code of an approval. Per account and per client
//! address, in fixed windows held in a bounded in-memory map: a restart forgets them, which only
//! ever lets an attacker try a few more passwords against bcrypt cost 10.
//!
//! An attempt is counted **before** the secret is checked, atomically with the check of the
//! budget ([`Throttle::begin`]): concurrent guesses cannot all pass the check and be counted
//! afterwards. A success then gives the attempt back ([`Throttle::succeeded`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Failures allowed per account (email) in one window.
pub const ACCOUNT_FAILURES_MAX: u32 = 5;
/// Failures allowed per client address in one window.
pub const ADDRESS_FAILURES_MAX: u32 = 20;
/// Window length.
pub const WINDOW_SECS: u64 = 15 * 60;
/// Entries kept per map; beyond it, expired entries go first, then the oldest window.
pub const ENTRIES_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
struct Maps {
    accounts: HashMap<String, Window>,
    addresses: HashMap<IpAddr, Window>,
}

/// Login throttling per account and per client address.
#[derive(Debug)]
pub struct Throttle {
    /// Failures allowed per account per window.
    pub account_failures_max: u32,
    /// Failures allowed per client address per window.
    pub address_failures_max: u32,
    /// Window length.
    pub window: Duration,
    /// Bound on each map.
    pub entries_max: usize,
    maps: Mutex<Maps>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(
            ACCOUNT_FAILURES_MAX,
            ADDRESS_FAILURES_MAX,
            Duration::from_secs(WINDOW_SECS),
            ENTRIES_MAX,
        )
    }
}

/// The bucket of a client address: an IPv6 client is counted per /64 (one subscriber's
/// prefix, all of which one attacker may hold), an IPv4 one per address.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The map key of an account: a digest of the normalized email, so the map holds no addresses
/// and its keys have a fixed size whatever was typed.
fn account_key(email: &str) -> String {
    let norm = email.trim().to_ascii_lowercase();
    hex::encode(&Sha256::digest(norm.as_bytes())[..16])
}

impl Throttle {
    /// A throttle with explicit limits.
    pub fn new(account_max: u32, address_max: u32, window: Duration, entries_max: usize) -> Self {
        assert!(
            entries_max > 0,
            "the throttle needs room for at least one entry"
        );
        Self {
            account_failures_max: account_max,
            address_failures_max: address_max,
            window,
            entries_max,
            maps: Mutex::new(Maps::default()),
        }
    }

    /// Count one attempt for `subject` (an email, or a user id for signed-in actions) from
    /// `addr`, if both budgets allow it; `false` (and nothing counted) when either is spent.
    /// The check and the count are one step under one lock.
    pub fn begin(&self, subject: &str, addr: IpAddr, now: Instant) -> bool {
        let addr = address_key(addr);
        let mut maps = self.lock();
        let live = |w: Option<&Window>| {
            w.filter(|w| now.duration_since(w.started) < self.window)
                .map_or(0, |w| w.failures)
        };
        let key = account_key(subject);
        if live(maps.accounts.get(&key)) >= self.account_failures_max
            || live(maps.addresses.get(&addr)) >= self.address_failures_max
        {
            return false;
        }
        let (window, max) = (self.window, self.entries_max);
        bump(&mut maps.accounts, key, now, window, max);
        bump(&mut maps.addresses, addr, now, window, max);
        true
    }

    /// The attempt begun for `subject` from `addr` succeeded: the account's failures are
    /// cleared and the address gets its attempt back.
    pub fn succeeded(&self, subject: &str, addr: IpAddr) {
        let addr = address_key(addr);
        let mut maps = self.lock();
        maps.accounts.remove(&account_key(subject));
        if let Some(w) = maps.addresses.get_mut(&addr) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    /// Give back one attempt begun for `subject` from `addr` that turned out not to be a guess
    /// (e.g. a right password sent without its second factor yet): one count each, nothing
    /// cleared, so it cannot be used to reset a budget.
    pub fn give_back(&self, subject: &str, addr: IpAddr) {
        let addr = address_key(addr);
        let mut maps = self.lock();
        if let Some(w) = maps.accounts.get_mut(&account_key(subject)) {
            w.failures = w.failures.saturating_sub(1);
        }
        if let Some(w) = maps.addresses.get_mut(&addr) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bump<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Window>,
    key: K,
    now: Instant,
    window: Duration,
    entries_max: usize,
) {
    if !map.contains_key(&key) && map.len() >= entries_max {
        map.retain(|_, w| now.duration_since(w.started) < window);
        if map.len() >= entries_max
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    let w = map.entry(key).or_insert(Window {
        started: now,
        failures: 0,
    });
    if now.duration_since(w.started) >= window {
        *w = Window {
            started: now,
            failures: 0,
        };
    }
    w.failures = w.failures.saturating_add(1);
    assert!(map.len() <= entries_max, "throttle map exceeded its bound");
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn account_is_throttled_after_its_limit_whatever_the_case_of_the_email() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..ACCOUNT_FAILURES_MAX {
            assert!(t.begin("X@Example.com ", A, now));
        }
        assert!(!t.begin("x@example.com", A, now));
        assert!(
            !t.begin("x@example.com", B, now),
            "per account, any address"
        );
        assert!(t.begin("y@example.com", A, now), "other accounts go on");
        let later = now + Duration::from_secs(WINDOW_SECS);
        assert!(t.begin("x@example.com", A, later), "window over");
    }

    #[test]
    fn concurrent_attempts_never_exceed_the_budget() {
        let t = std::sync::Arc::new(Throttle::default());
        let now = Instant::now();
        let passed: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..32)
                .map(|_| {
                    let t = t.clone();
                    s.spawn(move || u32::from(t.begin("race@example.com", A, now)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(passed, ACCOUNT_FAILURES_MAX);
    }

    #[test]
    fn an_ipv6_client_is_one_bucket_per_64() {
        let t = Throttle::default();
        let now = Instant::now();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..ADDRESS_FAILURES_MAX {
            assert!(t.begin(
                &format!("u{i}@example.com"),
                ip(&format!("2001:db8:1:2::{i:x}")),
                now
            ));
        }
        assert!(
            !t.begin("v@example.com", ip("2001:db8:1:2:ffff::1"), now),
            "same /64"
        );
        assert!(
            t.begin("v@example.com", ip("2001:db8:1:3::1"), now),
            "another /64"
        );
        assert_eq!(address_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn address_is_throttled_across_accounts() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..ADDRESS_FAILURES_MAX {
            assert!(t.begin(&format!("u{i}@example.com"), A, now));
        }
        assert!(!t.begin("fresh@example.com", A, now));
        assert!(t.begin("fresh@example.com", B, now));
    }

    #[test]
    fn success_clears_the_account_and_maps_stay_bounded() {
        let t = Throttle::new(2, 1000, Duration::from_secs(60), 3);
        let now = Instant::now();
        assert!(t.begin("a@x", A, now));
        assert!(t.begin("a@x", A, now));
        assert!(!t.begin("a@x", A, now));
        t.succeeded("a@x", A);
        assert!(t.begin("a@x", A, now));
        for i in 0..10 {
            t.begin(&format!("{i}@x"), A, now + Duration::from_millis(i));
        }
        assert!(t.lock().accounts.len() <= 3);
    }
}
