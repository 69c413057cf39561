//! Each entry's own terms and weights, by slot: the posting lists transposed. Pruned search
//! scores a candidate from here, whole and exactly, instead of probing every posting list
//! for it (a probe into a long list is a chain of cache misses; this is one sequential read).
//!
//! Term ids take two bytes when the vocabulary fits (every SPLADE-style roster: 30,522
//! terms), so this costs three quarters of the posting lists' memory.

use std::collections::HashMap;

use super::TermList;

/// Query weights a dot product with narrow term ids reads from (every u16).
pub(super) const NARROW_TERMS: usize = 1 << 16;

/// `Σ query(term_i) × w_i` in eight interleaved sums (independent additions pipeline; one
/// running sum waits on each addition), added up in a fixed order, so an entry's score is
/// the same whichever search computes it.
fn lanes<T: Copy>(terms: &[T], weights: &[f32], query: impl Fn(T) -> f32) -> f32 {
    let mut sums = [0.0f32; 8];
    let (term_chunks, weight_chunks) = (terms.chunks_exact(8), weights.chunks_exact(8));
    let (term_tail, weight_tail) = (term_chunks.remainder(), weight_chunks.remainder());
    for (t, w) in term_chunks.zip(weight_chunks) {
        for j in 0..8 {
            sums[j] += query(t[j]) * w[j];
        }
    }
    for (j, (&t, &w)) in term_tail.iter().zip(weight_tail).enumerate() {
        sums[j] += query(t) * w;
    }
    ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))
}

enum TermIds {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

pub(super) struct Forward {
    /// Slot `s`'s terms are at `[starts[s], starts[s + 1])`, in ascending term order.
    starts: Vec<u64>,
    terms: TermIds,
    weights: Vec<f32>,
}

impl Forward {
    pub(super) fn new(vocab_size: usize) -> Self {
        let terms = if vocab_size <= usize::from(u16::MAX) + 1 {
            TermIds::Narrow(Vec::new())
        } else {
            TermIds::Wide(Vec::new())
        };
        Self { starts: vec![0], terms, weights: Vec::new() }
    }

    /// Slots held (dead ones included, until compaction).
    pub(super) fn slots(&self) -> usize {
        self.starts.len() - 1
    }

    /// Terms per slot, on average.
    pub(super) fn mean_terms(&self) -> f64 {
        self.weights.len() as f64 / self.slots().max(1) as f64
    }

    /// Terms slot `slot` has.
    pub(super) fn count(&self, slot: usize) -> u32 {
        (self.starts[slot + 1] - self.starts[slot]) as u32
    }

    /// Append the next slot's terms (any order; they are stored in term order).
    pub(super) fn push(&mut self, terms: &[(u32, f32)]) {
        let mut sorted = terms.to_vec();
        sorted.sort_unstable_by_key(|&(term, _)| term);
        for &(term, weight) in &sorted {
            match &mut self.terms {
                // The constructor chose Narrow only for a vocabulary that fits.
                TermIds::Narrow(t) => t.push(term as u16),
                TermIds::Wide(t) => t.push(term),
            }
            self.weights.push(weight);
        }
        self.starts.push(self.weights.len() as u64);
    }

    /// The dot product of slot `slot` with a query given as one weight per term (zero for
    /// terms it lacks; at least [`NARROW_TERMS`] of them when term ids are narrow).
    pub(super) fn dot(&self, slot: u32, query: &[f32]) -> f32 {
        let (from, to) = (self.starts[slot as usize] as usize, self.starts[slot as usize + 1] as usize);
        let weights = &self.weights[from..to];
        match &self.terms {
            TermIds::Narrow(t) => {
                match <&[f32; NARROW_TERMS]>::try_from(&query[..NARROW_TERMS.min(query.len())]) {
                    // A u16 always indexes a 65,536-long array: no bounds check per term.
                    Ok(q) => lanes(&t[from..to], weights, |term| q[usize::from(term)]),
                    Err(_) => lanes(&t[from..to], weights, |term| query[usize::from(term)]),
                }
            }
            TermIds::Wide(t) => lanes(&t[from..to], weights, |term| query[term as usize]),
        }
    }

    /// Keep only the slots `keep` admits, renumbered densely in their old order.
    pub(super) fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let terms = match &self.terms {
            TermIds::Narrow(_) => TermIds::Narrow(Vec::new()),
            TermIds::Wide(_) => TermIds::Wide(Vec::new()),
        };
        let mut out = Self { starts: vec![0], terms, weights: Vec::new() };
        for slot in (0..self.slots()).filter(|&s| keep(s)) {
            let (from, to) = (self.starts[slot] as usize, self.starts[slot + 1] as usize);
            match (&mut out.terms, &self.terms) {
                (TermIds::Narrow(o), TermIds::Narrow(t)) => o.extend_from_slice(&t[from..to]),
                (TermIds::Wide(o), TermIds::Wide(t)) => o.extend_from_slice(&t[from..to]),
                _ => unreachable!("out takes self's width"),
            }
            out.weights.extend_from_slice(&self.weights[from..to]);
            out.starts.push(out.weights.len() as u64);
        }
        *self = out;
    }

    /// The transpose of `lists`, for slots with the given term counts; an error when the
    /// lists hold a different number of postings for some slot.
    pub(super) fn from_lists(
        vocab_size: usize,
        counts: &[u32],
        lists: &HashMap<u32, TermList>,
    ) -> Result<Self, String> {
        let mut f = Self::new(vocab_size);
        f.starts = Vec::with_capacity(counts.len() + 1);
        f.starts.push(0);
        for &c in counts {
            let last = *f.starts.last().unwrap_or(&0);
            f.starts.push(last + u64::from(c));
        }
        let total = *f.starts.last().unwrap_or(&0) as usize;
        let listed: usize = lists.values().map(|l| l.postings.len()).sum();
        if listed != total {
            return Err(format!("the lists hold {listed} postings, the slots' counts {total}"));
        }
        f.weights = vec![0.0; total];
        match &mut f.terms {
            TermIds::Narrow(t) => t.resize(total, 0),
            TermIds::Wide(t) => t.resize(total, 0),
        }
        let mut filled = vec![0u32; counts.len()];
        let mut terms: Vec<u32> = lists.keys().copied().collect();
        terms.sort_unstable();
        for term in terms {
            for p in &lists[&term].postings {
                let slot = p.slot as usize;
                if filled[slot] >= counts[slot] {
                    return Err(format!("slot {slot} has more postings than its count {}", counts[slot]));
                }
                let at = f.starts[slot] as usize + filled[slot] as usize;
                filled[slot] += 1;
                f.weights[at] = p.weight;
                match &mut f.terms {
                    TermIds::Narrow(t) => t[at] = term as u16,
                    TermIds::Wide(t) => t[at] = term,
                }
            }
        }
        // Equal totals and no slot over its count: every slot is full.
        Ok(f)
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let term_bytes = match &self.terms {
            TermIds::Narrow(t) => t.capacity() * 2,
            TermIds::Wide(t) => t.capacity() * 4,
        };
        self.starts.capacity() * 8 + term_bytes + self.weights.capacity() * 4
    }
}
