//! Keys, values and a small random generator, built without per-request formatting.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64* seeded through splitmix64: fast, and good enough to spread keys.
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of this process.
    pub fn new(stream: u64) -> Rng {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::seeded(time ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A generator with a fixed seed.
    pub fn seeded(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `len` random alphanumeric bytes.
pub fn random_value(len: usize, rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

/// The keys `prefix` + index `0..size` in zero-padded decimal, padded so each key is
/// `key_size` bytes when prefix and digits fit (longer otherwise). Keys sort by index and all
/// lie in [`KeySpace::range`].
pub struct KeySpace {
    prefix: Vec<u8>,
    digits: usize,
    size: u64,
}

impl KeySpace {
    /// The key space; `size` is at least 1.
    pub fn new(prefix: &str, key_size: usize, size: u64) -> KeySpace {
        let size = size.max(1);
        let needed = (size - 1).checked_ilog10().map_or(1, |d| d as usize + 1);
        KeySpace {
            prefix: prefix.as_bytes().to_vec(),
            digits: needed.max(key_size.saturating_sub(prefix.len())),
            size,
        }
    }

    /// How many keys.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Key `i % size`, in a buffer of exactly its length.
    pub fn key(&self, i: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + self.digits);
        self.write_key(i, &mut key);
        key
    }

    /// Appends key `i % size` to `out`.
    pub fn write_key(&self, i: u64, out: &mut Vec<u8>) {
        let mut i = i % self.size;
        out.extend_from_slice(&self.prefix);
        let start = out.len();
        out.resize(start + self.digits, b'0');
        for d in out[start..].iter_mut().rev() {
            *d = b'0' + (i % 10) as u8;
            i /= 10;
            if i == 0 {
                break;
            }
        }
    }

    /// The index of `key` if it is one of these keys.
    pub fn index_of(&self, key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(self.prefix.as_slice())?;
        if digits.len() != self.digits || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i = digits.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        (i < self.size).then_some(i)
    }

    /// `[key(0), key(size - 1) + "\0")`: a range holding exactly these keys of this width.
    pub fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let mut end = self.key(self.size - 1);
        end.push(0);
        (self.key(0), end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_and_ordered() {
        let ks = KeySpace::new("k/", 8, 1000);
        assert_eq!(ks.key(7), b"k/000007");
        assert_eq!(ks.key(1007), b"k/000007");
        let (start, end) = ks.range();
        assert_eq!(
            (start.as_slice(), end.as_slice()),
            (&b"k/000000"[..], &b"k/000999\0"[..])
        );
        // Wider than key_size when the index needs it.
        assert_eq!(KeySpace::new("", 2, 100_000).key(99_999), b"99999");
        assert_eq!(KeySpace::new("", 8, 1).key(0), b"00000000");
        assert_eq!(ks.index_of(b"k/000123"), Some(123));
        assert_eq!(ks.index_of(b"k/00123"), None);
        assert_eq!(ks.index_of(b"k/001000"), None);
        assert_eq!(ks.index_of(b"x/000123"), None);
    }

    #[test]
    fn rng_ranges() {
        let mut r = Rng::seeded(1);
        assert!((0..1000).all(|_| r.below(7) < 7));
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
        assert_eq!(random_value(16, &mut r).len(), 16);
    }
}
