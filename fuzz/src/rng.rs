//! The harness's randomness: a seeded SplitMix64 generator and the byte-level mutations applied
//! to corpus entries.
//!
//! Owns: every random choice, so one seed reproduces a whole campaign. Does not own: what an
//! input means (each target's generator does).

/// SplitMix64: tiny, fast, and every seed (0 included) gives a full-period stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// One of a list of byte strings.
    pub fn pick_b(&mut self, items: &[&'static [u8]]) -> &'static [u8] {
        items[self.below(items.len())]
    }

    /// One of a list of strings.
    pub fn pick_s(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }

    /// A byte biased towards the ones parsers care about.
    pub fn byte(&mut self) -> u8 {
        const SPECIAL: &[u8] = b"\r\n\t :;,=\"%/?#*{}[]\\\x00\x7f\x80\xff0aFzZ";
        if self.one_in(2) {
            *self.pick(SPECIAL)
        } else {
            self.next() as u8
        }
    }

    /// A number near a boundary more often than not.
    pub fn number(&mut self) -> u64 {
        match self.below(6) {
            0 => self.below(3) as u64,
            1 => self.below(20) as u64,
            2 => self.below(300) as u64,
            3 => u64::MAX - self.below(3) as u64,
            4 => (i64::MAX as u64)
                .wrapping_add(self.below(3) as u64)
                .wrapping_sub(1),
            _ => self.next() >> self.below(64),
        }
    }
}

/// FNV-1a of the input: picks per-input settings (limits profiles, split points) so that a
/// saved input reproduces on its own, without the campaign's seed.
pub fn input_hash(input: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in input {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Applies 1 to 4 random byte-level edits to `data`, splicing from `other` and inserting
/// `tokens` (the target's dictionary) now and then. Keeps the result under `len_max` bytes.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], tokens: &[&[u8]], len_max: usize) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 => {
                let i = rng.below(len + 1);
                data.insert(i, rng.byte());
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                data.drain(i..i + n);
            }
            4 => {
                let i = rng.below(len + 1);
                let t = rng.pick(tokens);
                data.splice(i..i, t.iter().copied());
            }
            5 if len > 0 => {
                // Overwrite with a token (keeps the length roughly, unlike an insert).
                let i = rng.below(len);
                let t = rng.pick(tokens);
                let end = (i + t.len()).min(len);
                data.splice(i..end, t.iter().copied());
            }
            6 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let copy: Vec<u8> = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            7 if !other.is_empty() => {
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(64));
                let at = rng.below(len + 1);
                let end = (at + rng.below(8)).min(len);
                data.splice(at..end, other[i..i + n].iter().copied());
            }
            8 if len > 0 => data.truncate(rng.below(len)),
            _ => data.push(rng.byte()),
        }
    }
    data.truncate(len_max);
}
