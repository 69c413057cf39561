//! `hdc`: a binary hyperdimensional code of the text, for a binary slot.
//!
//! The text is lowercased and split into words (runs of letters and digits). Every word at
//! every position of an n-gram has its own pseudo-random hypervector, drawn from a hash of the
//! word, the position and the seed (binding a word to its position, as a permutation would);
//! an n-gram's hypervector is the XOR of its words'. The text's code is the bitwise majority
//! of all its n-grams of length 1..=`ngram` (ties broken by one fixed random vector), so two
//! texts that share many words and phrases agree on many bits and the store's Hamming score
//! ranks them close. Only the first [`MAX_WORDS`] words count: the code's cost grows with
//! words × bits, and a long text's first few thousand words are what its code can hold.

/// The most words of one text the code bundles.
pub const MAX_WORDS: usize = 2_048;

/// The encoder's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hdc {
    /// Code length, in bits (the slot's size).
    pub bits: usize,
    /// The longest n-gram bundled (1: words only).
    pub ngram: usize,
    /// Changes every hypervector; two stores compare only if they use the same seed.
    pub seed: u64,
}

impl Hdc {
    /// Check the settings.
    pub fn new(bits: usize, ngram: usize, seed: u64) -> Result<Hdc, String> {
        if bits < 64 {
            return Err(format!("a hyperdimensional code needs at least 64 bits, the slot has {bits}"));
        }
        if !(1..=5).contains(&ngram) {
            return Err(format!("ngram must be in 1..=5, got {ngram}"));
        }
        Ok(Hdc { bits, ngram, seed })
    }

    /// The packed code of `text`: `ceil(bits / 8)` bytes, least significant bit first.
    pub fn encode(&self, text: &str) -> Vec<u8> {
        let mut words = words(text);
        words.truncate(MAX_WORDS);
        let n_words = self.bits.div_ceil(64);
        let mut counts = vec![0u32; self.bits];
        let mut grams = 0u32;
        let mut gram = vec![0u64; n_words];
        let mut part = vec![0u64; n_words];
        for n in 1..=self.ngram {
            for window in words.windows(n) {
                gram.iter_mut().for_each(|w| *w = 0);
                for (pos, word) in window.iter().enumerate() {
                    self.hypervector(word.as_bytes(), pos as u64, &mut part);
                    gram.iter_mut().zip(&part).for_each(|(g, p)| *g ^= p);
                }
                add(&mut counts, &gram);
                grams += 1;
            }
        }
        // An even number of votes can tie: one fixed vector votes last.
        let mut tie = vec![0u64; n_words];
        self.hypervector(b"\0tie", u64::MAX, &mut tie);
        let mut out = vec![0u8; self.bits.div_ceil(8)];
        for (bit, &c) in counts.iter().enumerate() {
            let tie_bit = (tie[bit / 64] >> (bit % 64)) & 1 == 1;
            let set = 2 * c > grams || (2 * c == grams && grams > 0 && tie_bit);
            if set {
                out[bit / 8] |= 1 << (bit % 8);
            }
        }
        out
    }

    /// The hypervector of `word` at n-gram position `pos`: a splitmix64 stream seeded by an
    /// FNV-1a hash of the word, the position and the seed; bits past `bits` are zero.
    fn hypervector(&self, word: &[u8], pos: u64, out: &mut [u64]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for &b in word.iter().chain(&pos.to_le_bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut state = h;
        for w in out.iter_mut() {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *w = z ^ (z >> 31);
        }
        let used = self.bits % 64;
        if used != 0 {
            if let Some(last) = out.last_mut() {
                *last &= (1u64 << used) - 1;
            }
        }
    }
}

/// Count the set bits of `v` (visiting only those).
fn add(counts: &mut [u32], v: &[u64]) {
    for (i, &word) in v.iter().enumerate() {
        let mut w = word;
        while w != 0 {
            counts[i * 64 + w.trailing_zeros() as usize] += 1;
            w &= w - 1;
        }
    }
}

/// The lowercased runs of letters and digits of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_WORDS)
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(a: &[u8], b: &[u8], bits: usize) -> f32 {
        let differ: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
        1.0 - differ as f32 / bits as f32
    }

    #[test]
    fn shared_words_agree_more_than_unrelated_text() {
        let hdc = Hdc::new(10_000, 2, 7).unwrap();
        let a = hdc.encode("the cat sat on the warm mat");
        let b = hdc.encode("The cat sat on the mat!");
        let c = hdc.encode("quarterly revenue grew by eleven percent");
        assert_eq!(a.len(), 1250);
        assert_eq!(a, hdc.encode("the cat sat on the warm mat"), "deterministic");
        let near = agreement(&a, &b, 10_000);
        let far = agreement(&a, &c, 10_000);
        assert!(near > 0.7, "near {near}");
        assert!((far - 0.5).abs() < 0.05, "far {far}");
        assert_ne!(hdc.encode("x"), Hdc::new(10_000, 2, 8).unwrap().encode("x"), "the seed matters");
    }

    #[test]
    fn only_the_first_words_count() {
        let hdc = Hdc::new(10_000, 2, 0).unwrap();
        let first: Vec<String> = (0..MAX_WORDS).map(|i| format!("w{i}")).collect();
        let long = format!("{} {}", first.join(" "), "tail ".repeat(200_000));
        assert!(long.len() > 1_000_000);
        assert_eq!(hdc.encode(&long), hdc.encode(&first.join(" ")));
    }

    #[test]
    fn bits_past_the_length_stay_clear_and_odd_sizes_work() {
        let hdc = Hdc::new(70, 3, 0).unwrap();
        let code = hdc.encode("one two three four");
        assert_eq!(code.len(), 9);
        assert_eq!(code[8] >> 6, 0);
        assert!(Hdc::new(63, 2, 0).is_err());
        assert!(Hdc::new(64, 0, 0).is_err());
        assert_eq!(hdc.encode("!!!"), vec![0u8; 9], "no words, no votes");
    }
}
