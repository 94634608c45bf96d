//! Send times carried in values, so a watcher can compute an event's latency (put sent to
//! event received) with no shared state: the first 8 bytes of the value are the nanoseconds
//! since the run's clock origin, little-endian.

use std::time::Instant;

/// Bytes a value needs to carry a stamp.
pub const STAMP_LEN: usize = 8;

/// The run's clock origin.
#[derive(Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// A copy of `value` (at least [`STAMP_LEN`] bytes) stamped with the current time.
    pub fn stamped(&self, value: &[u8]) -> Vec<u8> {
        let mut v = value.to_vec();
        v[..STAMP_LEN].copy_from_slice(&self.now_ns().to_le_bytes());
        v
    }

    /// Microseconds since `value` was stamped; `None` if it carries no stamp of this run.
    pub fn age_us(&self, value: &[u8]) -> Option<u64> {
        let stamp = u64::from_le_bytes(value.get(..STAMP_LEN)?.try_into().ok()?);
        self.now_ns().checked_sub(stamp).map(|ns| ns / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        let c = Clock::new();
        let v = c.stamped(&[b'x'; 16]);
        assert_eq!(v.len(), 16);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let age = c.age_us(&v).expect("stamped");
        assert!((2000..1_000_000).contains(&age), "{age}");
        assert_eq!(c.age_us(b"short"), None);
    }
}
