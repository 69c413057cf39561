//! Exact top-k over posting lists without reading every posting (MaxScore-style pruning).
//!
//! Every weight is positive (the schema's validation refuses others), so a term's
//! contribution to any entry is at most `query weight × the list's largest weight`: its
//! *bound*. Terms are taken in descending bound order and their lists accumulated whole while
//! an entry seen in none of them could still make the top `limit`. Once the remaining terms'
//! bounds add up to less than the `limit`-th best partial score, no unseen entry can; the
//! entries seen are then taken in descending partial score, each scored whole from its own
//! terms ([`Forward`]), until one's partial score plus the remaining bounds falls below the
//! `limit`-th best exact score found (every later one's does too). Scores returned are exact
//! dot products, and an entry left out had an upper bound below `limit` exact scores, so the
//! top `limit` is exact.
//!
//! On the default roster's synthetic data (30–300 query terms, most with long lists of light
//! weights) this takes about half the time of accumulating every posting (the entries of a
//! query's topic share its heavy terms, so hundreds to thousands of them stay in the running);
//! `examples/sparse_search.rs` measures both on a dataset.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use context_graph_core::teleology::SparseVector;
use uuid::Uuid;

use super::forward::{Forward, NARROW_TERMS};
use super::Posting;
use crate::teleological::index::IndexSearchResult;

/// One query term with its posting list.
pub(super) struct QueryTerm<'a> {
    pub(super) weight: f32,
    /// `weight ×` the largest weight in `postings`: no entry gets more from this term.
    pub(super) bound: f32,
    pub(super) postings: &'a [Posting],
}

/// Per-thread work space, reused across searches (allocating and zeroing it per query cost
/// as much as a short search); a search resets what it touched.
#[derive(Default)]
struct Scratch {
    /// One accumulator per slot.
    acc: Vec<f32>,
    /// Per slot: `UNSEEN`, or touched by this search with its admission not asked yet, or
    /// known admitted or not (the predicate may be a filter over metadata: asked once).
    state: Vec<u8>,
    touched: Vec<u32>,
    /// The query's weight of each term of the vocabulary (zero for terms it lacks).
    query: Vec<f32>,
}

const UNSEEN: u8 = 0;
const TOUCHED: u8 = 1;
const ADMITTED: u8 = 2;
const REFUSED: u8 = 3;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Resets what a search touched when it ends, however it ends: a stale accumulator or query
/// weight would change the next search's scores.
struct Reset<'a> {
    scratch: &'a mut Scratch,
    query: &'a SparseVector,
}

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        let s = &mut *self.scratch;
        for &slot in &s.touched {
            s.acc[slot as usize] = 0.0;
            s.state[slot as usize] = UNSEEN;
        }
        s.touched.clear();
        for &term in &self.query.indices {
            if let Some(w) = s.query.get_mut(term as usize) {
                *w = 0.0;
            }
        }
    }
}

/// Run `f` with this thread's scratch, sized for `slots` slots and a vocabulary of `vocab`
/// terms, holding `query`'s weights.
fn with_scratch<R>(slots: usize, vocab: usize, query: &SparseVector, f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        if guard.acc.len() < slots {
            guard.acc.resize(slots, 0.0);
            guard.state.resize(slots, UNSEEN);
        }
        // Narrow term ids read a full u16 range (see `Forward::dot`).
        let query_len = if vocab <= NARROW_TERMS { NARROW_TERMS } else { vocab };
        if guard.query.len() < query_len {
            guard.query.resize(query_len, 0.0);
        }
        let reset = Reset { scratch: &mut guard, query };
        // A term outside the vocabulary (refused before a search reaches here) has no list.
        for (&term, &weight) in query.indices.iter().zip(&query.values) {
            if let Some(w) = reset.scratch.query.get_mut(term as usize) {
                *w = weight;
            }
        }
        f(&mut *reset.scratch)
    })
}

/// Whether an entry whose score is at most `bound` certainly scores below `theta`. The margin
/// covers the rounding of sums taken in different orders: pruning too little is safe,
/// pruning too much is not.
fn below(bound: f64, theta: f32) -> bool {
    bound * (1.0 + 1e-5) + 1e-6 < theta as f64
}

/// A score ordered totally, for the heap of the best exact scores.
struct Score(f32);
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The best `limit` entries by exact dot product with `query` (whose terms with a list are
/// `terms`) among those `admitted` maps to an id (dead slots and filtered-out entries map to
/// `None`), with a score of at least `floor` when given; unsorted, possibly more than `limit`,
/// never missing one of the top `limit`.
pub(super) fn top_k(
    forward: &Forward,
    vocab: usize,
    query: &SparseVector,
    mut terms: Vec<QueryTerm<'_>>,
    limit: usize,
    floor: Option<f32>,
    admitted: &dyn Fn(u32) -> Option<Uuid>,
) -> Vec<IndexSearchResult> {
    terms.sort_by(|a, b| b.bound.total_cmp(&a.bound));
    // rest[i]: the most terms i.. can add to any entry.
    let mut rest = vec![0.0f64; terms.len() + 1];
    for i in (0..terms.len()).rev() {
        rest[i] = rest[i + 1] + terms[i].bound as f64;
    }
    let floor = floor.unwrap_or(f32::NEG_INFINITY);
    with_scratch(forward.slots(), vocab, query, |s| {
        let (next, theta) = accumulate(s, forward, &terms, &rest, limit, floor, admitted);
        complete(s, forward, rest[next], theta, limit, floor, admitted)
    })
}

/// Accumulate whole lists, heaviest bound first, while an entry in none of them so far could
/// still make the top `limit`; after that, while the lists left hold more than twice the
/// terms that scoring whole the entries still in the running reads (each list accumulated
/// lowers their bound, and so their number; a term scored costs about two postings
/// accumulated). Returns the number of lists accumulated and a lower bound of the
/// `limit`-th best exact score (at least `floor`).
fn accumulate(
    s: &mut Scratch,
    forward: &Forward,
    terms: &[QueryTerm<'_>],
    rest: &[f64],
    limit: usize,
    floor: f32,
    admitted: &dyn Fn(u32) -> Option<Uuid>,
) -> (usize, f32) {
    let per_entry = forward.mean_terms().max(1.0);
    let mut left: usize = terms.iter().map(|t| t.postings.len()).sum();
    let mut theta = floor;
    // Entries able to reach theta, as counted at the last check (an overestimate since).
    let mut alive: Option<usize> = None;
    let mut since_check = 0usize;
    let mut next = 0;
    while next < terms.len() {
        if below(rest[next], theta) {
            let alive = match alive {
                Some(a) => a,
                None => {
                    let (bar, a) = check(s, forward, rest[next], theta, limit, admitted);
                    theta = bar;
                    *alive.insert(a)
                }
            };
            if 2.0 * alive as f64 * per_entry <= left as f64 {
                break;
            }
        }
        add_list(s, &terms[next]);
        since_check += terms[next].postings.len();
        left -= terms[next].postings.len();
        next += 1;
        // A check costs a pass over the touched entries: done once the postings read since
        // the last one are half as many (linear overall).
        if s.touched.len() >= limit && 2 * since_check >= s.touched.len() {
            let (bar, a) = check(s, forward, rest[next], theta, limit, admitted);
            theta = bar;
            alive = Some(a);
            since_check = 0;
        }
    }
    (next, theta)
}

/// Raise `theta` to the worst exact score of the `limit` admitted entries with the best
/// partial scores (a lower bound of the `limit`-th best exact score), and count the entries
/// whose partial score plus `rest` reaches it.
fn check(
    s: &mut Scratch,
    forward: &Forward,
    rest: f64,
    theta: f32,
    limit: usize,
    admitted: &dyn Fn(u32) -> Option<Uuid>,
) -> (f32, usize) {
    let mut seen = admitted_partials(s, admitted, |_| true);
    let mut theta = theta;
    if seen.len() >= limit && limit > 0 {
        seen.select_nth_unstable_by(limit - 1, |a, b| b.1.total_cmp(&a.1));
        let worst =
            seen[..limit].iter().map(|&(slot, _)| forward.dot(slot, &s.query)).fold(f32::INFINITY, f32::min);
        theta = theta.max(worst);
    }
    let alive = seen.iter().filter(|&&(_, partial)| !below(partial as f64 + rest, theta)).count();
    (theta, alive)
}

/// Add one term's whole list to the accumulators.
fn add_list(s: &mut Scratch, t: &QueryTerm<'_>) {
    for p in t.postings {
        let seen = &mut s.state[p.slot as usize];
        if *seen == UNSEEN {
            *seen = TOUCHED;
            s.touched.push(p.slot);
        }
        s.acc[p.slot as usize] += t.weight * p.weight;
    }
}

/// Score the touched entries exactly, best partial score first, until the rest cannot make
/// the top `limit`: one whose partial score plus `rest` (the bounds of the lists not
/// accumulated) is below `theta` (a lower bound of the `limit`-th best exact score) or the
/// `limit`-th best exact score found.
fn complete(
    s: &mut Scratch,
    forward: &Forward,
    rest: f64,
    mut theta: f32,
    limit: usize,
    floor: f32,
    admitted: &dyn Fn(u32) -> Option<Uuid>,
) -> Vec<IndexSearchResult> {
    // Only those able to reach theta now are sorted.
    let mut seen = admitted_partials(s, admitted, |partial| !below(partial as f64 + rest, theta));
    seen.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let mut best: BinaryHeap<Reverse<Score>> = BinaryHeap::with_capacity(limit + 1);
    let mut hits = Vec::new();
    for (slot, partial) in seen {
        if below(partial as f64 + rest, theta) {
            break;
        }
        let score = forward.dot(slot, &s.query);
        if score <= 0.0 || score < floor {
            continue;
        }
        if let Some(id) = admitted(slot) {
            hits.push(IndexSearchResult { id, score });
        }
        best.push(Reverse(Score(score)));
        if best.len() > limit {
            best.pop();
        }
        if best.len() == limit {
            theta = theta.max(best.peek().map_or(theta, |w| w.0 .0));
        }
    }
    hits
}

/// The touched entries that are admitted and whose partial score `keep` accepts, with it.
fn admitted_partials(
    s: &mut Scratch,
    admitted: &dyn Fn(u32) -> Option<Uuid>,
    keep: impl Fn(f32) -> bool,
) -> Vec<(u32, f32)> {
    let mut out = Vec::new();
    for i in 0..s.touched.len() {
        let slot = s.touched[i];
        let partial = s.acc[slot as usize];
        if keep(partial) && admit(&mut s.state, slot, admitted) {
            out.push((slot, partial));
        }
    }
    out
}

/// Whether the touched `slot` is admitted, asking `admitted` the first time only.
fn admit(state: &mut [u8], slot: u32, admitted: &dyn Fn(u32) -> Option<Uuid>) -> bool {
    let state = &mut state[slot as usize];
    if *state == TOUCHED {
        *state = if admitted(slot).is_some() { ADMITTED } else { REFUSED };
    }
    *state == ADMITTED
}

/// The exact dot product with `query` of each of `listed` (slot and id) that shares a term
/// with it.
pub(super) fn score_listed(
    forward: &Forward,
    vocab: usize,
    query: &SparseVector,
    listed: &[(u32, Uuid)],
) -> Vec<IndexSearchResult> {
    with_scratch(forward.slots(), vocab, query, |s| {
        listed
            .iter()
            .map(|&(slot, id)| IndexSearchResult { id, score: forward.dot(slot, &s.query) })
            .filter(|h| h.score != 0.0)
            .collect()
    })
}
