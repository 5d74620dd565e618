//! A token bucket: what the funding cache's cold reads and the relay's simulations and sends
//! are metered with, so a stranger's requests cost the provider a bounded number of chain
//! reads and transactions however fast they come.

use std::time::{Duration, Instant};

/// `rate` tokens a second, at most `burst` held; starts full.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// A full bucket refilling at `rate` a second up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            tokens: burst,
            at: Instant::now(),
            rate,
            burst,
        }
    }

    /// `per_minute` tokens a minute, all of them available at once.
    pub fn per_minute(per_minute: u32) -> Self {
        Bucket::new(f64::from(per_minute) / 60.0, f64::from(per_minute))
    }

    /// Takes a token at `now` if one is there; else says how long until one is.
    pub fn take_at(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// [`Bucket::take_at`] now.
    pub fn take(&mut self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::per_minute(3);
        b.at = t0;
        for _ in 0..3 {
            assert_eq!(b.take_at(t0), Ok(()));
        }
        let wait = b.take_at(t0).unwrap_err();
        assert_eq!(wait.as_secs(), 20, "one token every 20 s at 3 a minute");
        assert!(b.take_at(t0 + Duration::from_secs(19)).is_err());
        assert_eq!(b.take_at(t0 + Duration::from_secs(21)), Ok(()));
        // Idle for an hour refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3_600);
        for _ in 0..3 {
            assert_eq!(b.take_at(later), Ok(()));
        }
        assert!(b.take_at(later).is_err());
    }

    #[test]
    fn a_zero_rate_bucket_never_refills() {
        let mut b = Bucket::per_minute(0);
        assert_eq!(b.take(), Err(Duration::MAX));
    }
}
