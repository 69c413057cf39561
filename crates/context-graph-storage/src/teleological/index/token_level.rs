//! Token-level multi-vectors (ColBERT style), scored by MaxSim.
//!
//! Candidates come from the tokens themselves, in the manner of ColBERTv2's PLAID:
//! - Once the index holds [`TRAIN_AT`] entries, it trains up to 2,048 token centroids
//!   ([`Centroids`]: spherical k-means on the tokens of its first entries) and tags every
//!   token with its nearest centroid, aside (`train_aside`, run by the store's background
//!   upkeep: commits and searches go on meanwhile, and searches score every entry until the
//!   centroids are in place). Each entry keeps its distinct tags; each centroid keeps a
//!   posting list of the entries tagged with it. Later entries are tagged as they arrive; the
//!   centroids are not retrained.
//! - A search scores the query's tokens against every centroid, then
//!   1. walks the posting lists of the [`PROBES`] best centroids of each query token, crediting
//!      each entry found with its best probed centroid score, per query token;
//!   2. rescores the [`SHORTLIST`] best of those by the centroid interaction: for each query
//!      token, its best score against the entry's tags;
//!   3. scores the best `RERANK_PER_RESULT × max(limit, breadth)` by MaxSim over the stored
//!      token vectors (`breadth` is what `set_ef_search` sets; default 10).
//! - Below [`TRAIN_AT`] entries, or with `approximate: false`, every entry is scored by MaxSim.
//!
//! Why not a graph: a graph of every token cost ten times the ingest time of all dense
//! indices together; a graph of each entry's mean token vector lost recall as the store grew
//! (0.998 at 20,000 entries, 0.941 at 100,000 with 600 candidates reranked), because the mean
//! blurs which tokens an entry holds.
//!
//! The token vectors are kept in memory for the rerank, at the configured
//! [`VectorPrecision`]: below f32 the rerank is approximate, and a store-owned index rescores
//! its best candidates exactly from the stored arrays.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use context_graph_core::teleology::similarity::{max_dots_i8, max_sim, prefetch};
use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput, TokenEmbeddings};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use super::centroids::Centroids;
use super::memory::{MemoryIndex, MemoryKind};
use super::query::check_query;
use super::snapshot::PayloadRead;
use super::{
    finish_results, Candidates, IndexChange, IndexSearchResult, IndexType, TokenLevelConfig, VectorPrecision,
};
use crate::teleological::error::{StorageError, StorageResult};

/// Entries stored before the centroids are trained (below it, every search is exhaustive).
pub(crate) const TRAIN_AT: usize = 1024;
/// Tokens sampled for training at most.
const TRAIN_SAMPLE_TOKENS: usize = 65_536;
/// Centroids whose posting lists are walked, per query token (doubled, up to `MAX_PROBES`,
/// while fewer than `SHORTLIST` entries are found).
const PROBES: usize = 2;
const MAX_PROBES: usize = 64;
/// Entries kept from the posting-list pass for the centroid-interaction score.
const SHORTLIST: usize = 1000;
/// Entries scored by MaxSim, per result asked for (or per unit of breadth, if larger).
const RERANK_PER_RESULT: usize = 20;
/// How many entries ahead step 2 asks for an entry's tags to be loaded (its entry twice as far).
const STEP2_AHEAD: usize = 4;
/// The default search breadth: the limit most searches ask for.
const DEFAULT_BREADTH: usize = 10;

/// One entry's token vectors, back to back, at the index's precision.
enum StoredTokens {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    /// Each value is `code * scale`; one scale per entry (its largest magnitude / 127).
    I8 {
        codes: Vec<i8>,
        scale: f32,
    },
}

impl StoredTokens {
    fn new(flat: Vec<f32>, precision: VectorPrecision) -> Self {
        match precision {
            VectorPrecision::F32 => StoredTokens::F32(flat),
            VectorPrecision::F16 => StoredTokens::F16(flat.iter().map(|&x| half::f16::from_f32(x)).collect()),
            VectorPrecision::I8 => {
                let (codes, scale) = quantize_to_max(&flat);
                StoredTokens::I8 { codes, scale }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            StoredTokens::F32(v) => v.len(),
            StoredTokens::F16(v) => v.len(),
            StoredTokens::I8 { codes, .. } => codes.len(),
        }
    }

    /// The values as f32 (dequantized below f32).
    fn to_f32(&self) -> Vec<f32> {
        match self {
            StoredTokens::F32(v) => v.clone(),
            StoredTokens::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            StoredTokens::I8 { codes, scale } => codes.iter().map(|&c| c as f32 * scale).collect(),
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            StoredTokens::F32(v) => v.capacity() * 4,
            StoredTokens::F16(v) => v.capacity() * 2,
            StoredTokens::I8 { codes, .. } => codes.capacity() + 4,
        }
    }

    /// MaxSim of `query` against these tokens: in integers against i8 tokens (the query
    /// quantized the same way), in f32 otherwise (f16 tokens converted first).
    fn max_sim(&self, query: &QueryTokens, dims: usize) -> f32 {
        let query_f32 = &query.tokens.embeddings;
        match self {
            StoredTokens::F32(v) => max_sim(query_f32, v, dims),
            StoredTokens::F16(v) => {
                let mut flat = vec![0.0f32; v.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(v.as_slice(), &mut flat);
                max_sim(query_f32, &flat, dims)
            }
            StoredTokens::I8 { codes, scale } => {
                if dims == 0 || codes.len() < dims {
                    return 0.0;
                }
                let mut best = vec![0i32; query.scales.len()];
                max_dots_i8(&query.quantized, codes, dims, &mut best);
                best.iter().zip(&query.scales).map(|(&d, q_scale)| d as f32 * q_scale).sum::<f32>() * scale
            }
        }
    }

    /// Snapshot form: the value count, then the precision-specific payload.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        match self {
            StoredTokens::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            StoredTokens::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            StoredTokens::I8 { codes, scale } => {
                out.extend_from_slice(&scale.to_le_bytes());
                out.extend(codes.iter().map(|&c| c as u8));
            }
        }
    }

    fn decode(r: &mut impl PayloadRead, precision: VectorPrecision, dims: usize) -> Result<Self, String> {
        let values = u64::from_le_bytes(r.array::<8>()?) as usize;
        if dims == 0 || !values.is_multiple_of(dims) {
            return Err(format!("{values} values, not whole tokens of {dims}"));
        }
        let width = precision.bytes_per_dim();
        Ok(match precision {
            VectorPrecision::F32 => {
                let bytes = r.vec(values.checked_mul(width).ok_or("value count overflows")?)?;
                StoredTokens::F32(
                    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                )
            }
            VectorPrecision::F16 => {
                let bytes = r.vec(values.checked_mul(width).ok_or("value count overflows")?)?;
                StoredTokens::F16(
                    bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect(),
                )
            }
            VectorPrecision::I8 => {
                let scale = f32::from_le_bytes(r.array::<4>()?);
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(format!("scale {scale} is not a positive number"));
                }
                let bytes = r.vec(values)?;
                StoredTokens::I8 { codes: bytes.into_iter().map(|b| b as i8).collect(), scale }
            }
        })
    }
}

/// A query's tokens, plus (for an i8 index) each token quantized with its own scale, so that
/// the rerank compares bytes with bytes.
struct QueryTokens<'a> {
    tokens: &'a TokenEmbeddings,
    /// The quantized tokens back to back, and each one's scale (empty above i8).
    quantized: Vec<i8>,
    scales: Vec<f32>,
}

impl<'a> QueryTokens<'a> {
    fn new(tokens: &'a TokenEmbeddings, precision: VectorPrecision) -> Self {
        let (mut quantized, mut scales) = (Vec::new(), Vec::new());
        if precision == VectorPrecision::I8 {
            for t in &tokens.embeddings {
                let (codes, scale) = quantize_to_max(t);
                quantized.extend_from_slice(&codes);
                scales.push(scale);
            }
        }
        Self { tokens, quantized, scales }
    }
}

/// `v` as bytes scaled so that its largest magnitude is 127, and the scale (value = code ×
/// scale). Tokens are not unit vectors in general, so each gets its own scale.
fn quantize_to_max(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    (v.iter().map(|&x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale)
}

fn precision_byte(p: VectorPrecision) -> u8 {
    match p {
        VectorPrecision::F32 => 0,
        VectorPrecision::F16 => 1,
        VectorPrecision::I8 => 2,
    }
}

/// One stored entry.
struct Entry {
    id: Uuid,
    tokens: StoredTokens,
    /// The distinct centroids its tokens are nearest to, ascending (empty before training).
    tags: Box<[u16]>,
}

/// The trained centroids and, for each, the slots of the entries tagged with it (unordered).
struct Quantizer {
    centroids: Centroids,
    postings: Vec<Vec<u32>>,
}

/// The entries, in slots that posting lists refer to; a freed slot is reused.
struct Entries {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    slot_of: HashMap<Uuid, u32>,
    quantizer: Option<Quantizer>,
}

impl Entries {
    fn new() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), slot_of: HashMap::new(), quantizer: None }
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// Store an entry whose tags are already known (consistent with the quantizer).
    fn insert(&mut self, entry: Entry) {
        self.remove(entry.id);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        if let Some(q) = &mut self.quantizer {
            entry.tags.iter().for_each(|&t| q.postings[t as usize].push(slot));
        }
        self.slot_of.insert(entry.id, slot);
        self.slots[slot as usize] = Some(entry);
    }

    fn remove(&mut self, id: Uuid) {
        let Some(slot) = self.slot_of.remove(&id) else { return };
        let Some(entry) = self.slots[slot as usize].take() else { return };
        if let Some(q) = &mut self.quantizer {
            for &t in entry.tags.iter() {
                let list = &mut q.postings[t as usize];
                if let Some(at) = list.iter().position(|&s| s == slot) {
                    list.swap_remove(at);
                }
            }
        }
        self.free.push(slot);
    }

    fn live(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.slots.iter().enumerate().filter_map(|(s, e)| e.as_ref().map(|e| (s as u32, e)))
    }

    /// The tokens centroids are trained on, in f32 (dequantized once): those of the first
    /// [`TRAIN_AT`] entries in slot order, whole entries, up to [`TRAIN_SAMPLE_TOKENS`]
    /// tokens. The same entries give the same sample whenever training starts.
    fn training_sample(&self, dims: usize) -> Vec<f32> {
        let mut sample = Vec::new();
        for (_, e) in self.live().take(TRAIN_AT) {
            if sample.len() >= TRAIN_SAMPLE_TOKENS * dims {
                break;
            }
            sample.extend_from_slice(&e.tokens.to_f32());
        }
        sample
    }

    /// Put trained centroids in place: every live entry gets the tags `tags_of` gives it, and
    /// the posting lists are built from them.
    fn install(&mut self, centroids: Centroids, mut tags_of: impl FnMut(u32, &Entry) -> Box<[u16]>) {
        let mut postings = vec![Vec::new(); centroids.len()];
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if let Some(entry) = entry {
                let tags = tags_of(slot as u32, entry);
                tags.iter().for_each(|&t| postings[t as usize].push(slot as u32));
                entry.tags = tags;
            }
        }
        self.quantizer = Some(Quantizer { centroids, postings });
    }

    /// Step 1 of a search with `probes` centroids per query token (`order[i]`: token i's
    /// centroids, best first): each entry in their posting lists is credited, per query token,
    /// with the score of the best probed centroid it is tagged with. Returns the credit of
    /// every slot (with the last token that credited it) and the slots found.
    fn credit(
        &self,
        order: &[Vec<usize>],
        probes: usize,
        score: &dyn Fn(usize, usize) -> f32,
    ) -> (Vec<(f32, u32)>, Vec<u32>) {
        let Some(q) = &self.quantizer else { return (Vec::new(), Vec::new()) };
        // Per slot: its credit, and the last query token that credited it (the first list,
        // best centroid, that holds an entry gives its credit for a token; later lists skip
        // it). Side by side, so that crediting a slot touches one cache line, not two.
        let mut credit = vec![(0.0f32, u32::MAX); self.slots.len()];
        let mut found = Vec::new();
        for (i, centroids) in order.iter().enumerate() {
            for &c in centroids.iter().take(probes) {
                let s_ci = score(c, i);
                for &slot in &q.postings[c] {
                    let (total, credited_for) = &mut credit[slot as usize];
                    if *credited_for == i as u32 {
                        continue;
                    }
                    if *credited_for == u32::MAX {
                        found.push(slot);
                    }
                    *credited_for = i as u32;
                    *total += s_ci;
                }
            }
        }
        (credit, found)
    }

    /// Slots of the entries worth scoring by MaxSim for `query` (the module doc's steps 1 and
    /// 2), at most `rerank`; `None` if the centroids are not trained yet.
    fn shortlist(&self, query: &[Vec<f32>], rerank: usize, candidates: Candidates<'_>) -> Option<Vec<u32>> {
        let q = self.quantizer.as_ref()?;
        let nq = query.len();
        let scores = q.centroids.scores(query);
        let score = |c: usize, i: usize| scores[c * nq + i];
        // Each query token's best centroids, best first.
        let order: Vec<Vec<usize>> = (0..nq)
            .map(|i| {
                let mut cs: Vec<usize> = (0..q.centroids.len()).collect();
                let top = MAX_PROBES.min(cs.len());
                cs.select_nth_unstable_by(top - 1, |&a, &b| score(b, i).total_cmp(&score(a, i)));
                cs.truncate(top);
                cs.sort_by(|&a, &b| score(b, i).total_cmp(&score(a, i)));
                cs
            })
            .collect();
        let admitted = |slot: &u32| self.entry(*slot).is_some_and(|e| candidates.admits(e.id));
        // Step 1, probing more centroids until the shortlist can be filled (few centroids
        // around a query token's neighbourhood hold few entries when the tokens of the store
        // spread over many centroids).
        let mut probes = PROBES;
        let (total, mut found) = loop {
            let (total, mut found) = self.credit(&order, probes, &score);
            if !matches!(candidates, Candidates::All) {
                // (Posting lists hold live slots only: with no restriction all are admitted.)
                found.retain(admitted);
            }
            if found.len() >= SHORTLIST || probes >= MAX_PROBES.min(q.centroids.len()) {
                break (total, found);
            }
            probes *= 2;
        };
        if found.len() < rerank && !matches!(candidates, Candidates::All) {
            // A filter left too few of the entries found: every admitted entry goes to step 2
            // (a filter this selective admits few, so step 2 stays cheap).
            found = self.live().map(|(s, _)| s).filter(admitted).collect();
        } else if found.len() > SHORTLIST {
            // Selected on (credit, slot) pairs side by side: selecting slots by a key read
            // from `total` jumps through memory at every comparison.
            let mut credited: Vec<(f32, u32)> = found.iter().map(|&s| (total[s as usize].0, s)).collect();
            credited.select_nth_unstable_by(SHORTLIST - 1, |a, b| b.0.total_cmp(&a.0));
            found = credited[..SHORTLIST].iter().map(|&(_, s)| s).collect();
        }
        // Step 2: the centroid interaction.
        let mut best = vec![f32::NEG_INFINITY; nq];
        // The entries are scattered in memory and their tags apart from them: each entry is
        // asked into the caches `2 × STEP2_AHEAD` entries before it is scored, and its tags
        // `STEP2_AHEAD` before (the two misses per entry were most of this step's time).
        let mut scored: Vec<(u32, f32)> = (0..found.len())
            .map(|i| {
                if let Some(&ahead) = found.get(i + 2 * STEP2_AHEAD) {
                    if let Some(e) = self.slots.get(ahead as usize) {
                        prefetch(std::slice::from_ref(e));
                    }
                }
                if let Some(e) = found.get(i + STEP2_AHEAD).and_then(|&s| self.entry(s)) {
                    prefetch(&e.tags);
                }
                let slot = found[i];
                best.fill(f32::NEG_INFINITY);
                for &t in self.entry(slot).map_or(&[][..], |e| &e.tags[..]) {
                    let row = &scores[t as usize * nq..(t as usize + 1) * nq];
                    best.iter_mut().zip(row).for_each(|(b, &s)| *b = b.max(s));
                }
                (slot, best.iter().filter(|b| b.is_finite()).sum())
            })
            .collect();
        if scored.len() > rerank && rerank > 0 {
            scored.select_nth_unstable_by(rerank - 1, |a, b| b.1.total_cmp(&a.1));
        }
        scored.truncate(rerank);
        Some(scored.into_iter().map(|(slot, _)| slot).collect())
    }
}

/// The distinct values of `tags`, ascending.
fn distinct(tags: &[u16]) -> Box<[u16]> {
    let mut v = tags.to_vec();
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

pub(crate) struct TokenLevelKind {
    embedder: Embedder,
    config: TokenLevelConfig,
    precision: VectorPrecision,
    /// Results per which `RERANK_PER_RESULT` entries are scored by MaxSim, at least.
    breadth: AtomicUsize,
    entries: RwLock<Entries>,
    /// While the centroids are trained and the entries tagged aside: the ids changed since
    /// training began (tagged again when the centroids are put in place).
    changed_during_training: Mutex<Option<HashSet<Uuid>>>,
    /// One training at a time.
    training: Mutex<()>,
    /// Bumped by `clear`: a training that started before it is discarded.
    generation: AtomicU64,
}

/// Entries whose tokens are copied for tagging per hold of the read lock.
const TAG_CHUNK: usize = 256;

/// Ends the change tracking of a training however the training ends.
struct StopTracking<'a>(&'a Mutex<Option<HashSet<Uuid>>>);

impl Drop for StopTracking<'_> {
    fn drop(&mut self) {
        *self.0.lock() = None;
    }
}

impl TokenLevelKind {
    pub(crate) fn new(embedder: Embedder, config: &TokenLevelConfig, precision: VectorPrecision) -> Self {
        Self::with_entries(embedder, config, precision, Entries::new())
    }

    fn with_entries(
        embedder: Embedder,
        config: &TokenLevelConfig,
        precision: VectorPrecision,
        entries: Entries,
    ) -> Self {
        Self {
            embedder,
            config: config.clone(),
            precision,
            breadth: AtomicUsize::new(DEFAULT_BREADTH),
            entries: RwLock::new(entries),
            changed_during_training: Mutex::new(None),
            training: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// Train the centroids and tag every entry, aside (see the module doc): the sample is
    /// copied under the read lock, the centroids trained with no lock held, the entries' tokens
    /// copied and tagged a chunk at a time, and the centroids put in place under one short
    /// write lock, which also tags the entries changed meanwhile. Until then searches score
    /// every entry exactly.
    fn train_aside(&self, stop: &AtomicBool) -> StorageResult<()> {
        let _one = self.training.lock();
        let started = std::time::Instant::now();
        let dims = self.config.dims_per_token;
        let generation = self.generation.load(Ordering::SeqCst);
        let (sample, slots) = {
            let entries = self.entries.read();
            if entries.quantizer.is_some() || entries.slot_of.len() < TRAIN_AT {
                return Ok(());
            }
            *self.changed_during_training.lock() = Some(HashSet::new());
            let slots: Vec<(u32, Uuid)> = entries.live().map(|(s, e)| (s, e.id)).collect();
            (entries.training_sample(dims), slots)
        };
        let _tracking = StopTracking(&self.changed_during_training);
        let failed =
            |e: String| StorageError::Index(format!("{}: training token centroids: {e}", self.embedder));
        // Stopped (the store is closing): nothing changed; a later open trains again.
        let Some(centroids) = Centroids::train_unless_stopped(&sample, dims, stop).map_err(failed)? else {
            return Ok(());
        };
        let sample_tokens = sample.len() / dims.max(1);
        drop(sample);
        let mut tagged: HashMap<u32, (Uuid, Box<[u16]>)> = HashMap::with_capacity(slots.len());
        for chunk in slots.chunks(TAG_CHUNK) {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let (flat, owners) = {
                let entries = self.entries.read();
                let (mut flat, mut owners) = (Vec::new(), Vec::with_capacity(chunk.len()));
                for &(slot, id) in chunk {
                    if let Some(e) = entries.entry(slot).filter(|e| e.id == id) {
                        flat.extend_from_slice(&e.tokens.to_f32());
                        owners.push((slot, id, flat.len() / dims.max(1)));
                    }
                }
                (flat, owners)
            };
            let tags = centroids.nearest_all(&flat).map_err(failed)?;
            let mut start = 0;
            for (slot, id, end) in owners {
                if let Some(t) = tags.get(start..end) {
                    tagged.insert(slot, (id, distinct(t)));
                }
                start = end;
            }
        }
        let mut entries = self.entries.write();
        let changed = self.changed_during_training.lock().take().unwrap_or_default();
        if self.generation.load(Ordering::SeqCst) != generation || entries.quantizer.is_some() {
            return Ok(());
        }
        let count = centroids.len();
        let tag_now = |e: &Entry| centroids.tags_of(&e.tokens.to_f32());
        let mut late = 0usize;
        let tagged_entries = entries.slot_of.len();
        entries.install(centroids.clone(), |slot, e| match tagged.remove(&slot) {
            Some((id, tags)) if id == e.id && !changed.contains(&id) => tags,
            _ => {
                late += 1;
                tag_now(e)
            }
        });
        tracing::info!(
            "index {}: trained {count} token centroids on {sample_tokens} tokens and tagged {tagged_entries} \
             entries ({late} while commits waited) in {:.2?}",
            self.embedder.short_name(),
            started.elapsed()
        );
        Ok(())
    }

    /// Payload: precision byte (0 f32, 1 f16, 2 i8); centroid count u32 (0: not trained) and
    /// the centroids (f32 LE, `dims_per_token` each); entry count u64; then per entry: id, value
    /// count u64, the values (f32 LE, f16 LE, or an f32 scale and one byte per value), tag
    /// count u16 and the tags (u16 LE, ascending). Posting lists are rebuilt from the tags.
    pub(crate) fn from_snapshot(
        embedder: Embedder,
        config: &TokenLevelConfig,
        precision: VectorPrecision,
        r: &mut impl PayloadRead,
    ) -> Result<Self, String> {
        let dims = config.dims_per_token;
        let [stored_precision] = r.array::<1>()?;
        if stored_precision != precision_byte(precision) {
            return Err(format!(
                "snapshot holds tokens at precision byte {stored_precision}, the configuration is {precision}"
            ));
        }
        let k = u32::from_le_bytes(r.array::<4>()?) as usize;
        let mut entries = Entries::new();
        if k > 0 {
            let bytes = r.vec(k.checked_mul(dims * 4).ok_or("centroid count overflows")?)?;
            let flat = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let centroids = Centroids::from_flat(dims, flat)?;
            entries.quantizer = Some(Quantizer { postings: vec![Vec::new(); centroids.len()], centroids });
        }
        let n = u64::from_le_bytes(r.array::<8>()?) as usize;
        // Each entry takes at least 28 bytes: a damaged count cannot reserve more than that.
        let room = n.min(r.remaining() / 28);
        entries.slots.reserve(room);
        entries.slot_of.reserve(room);
        for _ in 0..n {
            let id = Uuid::from_bytes(r.array::<16>()?);
            let tokens = StoredTokens::decode(r, precision, dims).map_err(|e| format!("entry {id}: {e}"))?;
            let tag_count = u16::from_le_bytes(r.array::<2>()?) as usize;
            let tags: Box<[u16]> =
                r.vec(tag_count * 2)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            let consistent = if k == 0 {
                tags.is_empty()
            } else {
                !tags.is_empty()
                    && tags.windows(2).all(|w| w[0] < w[1])
                    && tags.iter().all(|&t| (t as usize) < k)
            };
            if !consistent {
                return Err(format!("entry {id}: its {tag_count} centroid tags do not fit {k} centroids"));
            }
            if entries.slot_of.contains_key(&id) {
                return Err(format!("entry {id} appears twice"));
            }
            entries.insert(Entry { id, tokens, tags });
        }
        if r.remaining() != 0 {
            return Err("snapshot payload has trailing bytes".into());
        }
        Ok(Self::with_entries(embedder, config, precision, entries))
    }

    fn tokens<'a>(&self, out: &'a EmbedderOutput) -> StorageResult<&'a TokenEmbeddings> {
        match out {
            EmbedderOutput::TokenLevel(t) if t.dims_per_token == self.config.dims_per_token => Ok(t),
            _ => Err(StorageError::Index(format!("{}: not token-level output", self.embedder))),
        }
    }
}

impl MemoryIndex {
    /// A standalone token-level index (f32 tokens, so its MaxSim scores are exact).
    pub fn token_level(embedder: Embedder, config: &TokenLevelConfig) -> StorageResult<Self> {
        Ok(Self::standalone(Arc::new(TokenLevelKind::new(embedder, config, VectorPrecision::F32))))
    }
}

impl MemoryKind for TokenLevelKind {
    fn embedder(&self) -> Embedder {
        self.embedder
    }

    fn index_type(&self) -> IndexType {
        IndexType::TokenLevel
    }

    fn check(&self, out: &EmbedderOutput) -> StorageResult<()> {
        let dims = EmbedderDims::TokenLevel { per_token: self.config.dims_per_token };
        check_query(self.embedder, out, dims, self.config.max_tokens)
    }

    fn precision(&self) -> Option<VectorPrecision> {
        Some(self.precision)
    }

    fn apply(&self, changes: &[IndexChange<'_>]) -> StorageResult<()> {
        let mut entries = self.entries.write();
        let mut training = self.changed_during_training.lock();
        for change in changes {
            match *change {
                IndexChange::Upsert(id, out) => {
                    let t = self.tokens(out)?;
                    let tokens = StoredTokens::new(t.embeddings.concat(), self.precision);
                    // Tagged from the tokens as stored, as the training tags them: an entry's
                    // tags never depend on when it arrived.
                    let tags = match &entries.quantizer {
                        Some(q) => q.centroids.tags_of(&tokens.to_f32()),
                        None => Box::default(),
                    };
                    entries.insert(Entry { id, tokens, tags });
                    if let Some(changed) = training.as_mut() {
                        changed.insert(id);
                    }
                }
                IndexChange::Remove(id) => {
                    entries.remove(id);
                    if let Some(changed) = training.as_mut() {
                        changed.insert(id);
                    }
                }
            }
        }
        Ok(())
    }

    fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let q = self.tokens(query)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let entries = self.entries.read();
        let dims = self.config.dims_per_token;
        let prepared = QueryTokens::new(q, self.precision);
        let score = |e: &Entry| IndexSearchResult { id: e.id, score: e.tokens.max_sim(&prepared, dims) };
        let rerank = limit.max(self.breadth.load(Ordering::Relaxed)).saturating_mul(RERANK_PER_RESULT);
        let hits: Vec<IndexSearchResult> = if let Candidates::Only(ids) = candidates {
            ids.iter()
                .filter_map(|id| entries.slot_of.get(id))
                .filter_map(|&s| entries.entry(s))
                .map(score)
                .collect()
        } else if let Some(slots) =
            self.config.approximate.then(|| entries.shortlist(&q.embeddings, rerank, candidates)).flatten()
        {
            slots.into_iter().filter_map(|s| entries.entry(s)).map(score).collect()
        } else {
            entries.live().filter(|(_, e)| candidates.admits(e.id)).map(|(_, e)| score(e)).collect()
        };
        Ok(finish_results(hits, limit, threshold))
    }

    fn contains(&self, id: Uuid) -> bool {
        self.entries.read().slot_of.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.entries.read().slot_of.len()
    }

    fn removed_in_graph(&self) -> usize {
        0
    }

    fn memory_bytes(&self) -> usize {
        let e = self.entries.read();
        let entries: usize = e.live().map(|(_, en)| en.tokens.memory_bytes() + en.tags.len() * 2).sum();
        let quantizer = e.quantizer.as_ref().map_or(0, |q| {
            q.centroids.as_flat().len() * 4 + q.postings.iter().map(|p| p.capacity() * 4 + 24).sum::<usize>()
        });
        entries
            + quantizer
            + e.slots.capacity() * std::mem::size_of::<Option<Entry>>()
            + e.free.capacity() * 4
            + e.slot_of.capacity() * 24
    }

    /// Give back the spare capacity of the posting lists and slot table (there is no graph to
    /// repair: removals leave nothing behind).
    fn optimize(&self) -> StorageResult<()> {
        let mut entries = self.entries.write();
        if let Some(q) = &mut entries.quantizer {
            q.postings.iter_mut().for_each(Vec::shrink_to_fit);
        }
        entries.slots.shrink_to_fit();
        Ok(())
    }

    /// The centroids are trained (aside) once the index holds [`TRAIN_AT`] entries.
    fn needs_upkeep(&self) -> bool {
        self.config.approximate && {
            let e = self.entries.read();
            e.quantizer.is_none() && e.slot_of.len() >= TRAIN_AT
        }
    }

    fn upkeep(&self, stop: &AtomicBool) -> StorageResult<()> {
        self.train_aside(stop)
    }

    fn clear(&self) -> StorageResult<()> {
        let mut entries = self.entries.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        *entries = Entries::new();
        Ok(())
    }

    fn set_ef_search(&self, ef: usize) {
        self.breadth.store(ef.max(1), Ordering::Relaxed);
    }

    fn ef_search(&self) -> Option<usize> {
        Some(self.breadth.load(Ordering::Relaxed))
    }

    fn snapshot_payload(&self) -> StorageResult<Vec<u8>> {
        let mut out = Vec::new();
        self.write_payload(&mut out)?;
        Ok(out)
    }

    /// Streamed entry by entry: the tokens are most of the store's index memory, and a
    /// second copy of them would raise the peak memory of every close.
    fn write_payload(&self, out: &mut dyn Write) -> StorageResult<()> {
        let io = |e: std::io::Error| StorageError::Backend(format!("writing the token-level snapshot: {e}"));
        let entries = self.entries.read();
        let mut buf = Vec::with_capacity(1 << 16);
        buf.push(precision_byte(self.precision));
        let centroids = entries.quantizer.as_ref().map_or(&[][..], |q| q.centroids.as_flat());
        buf.extend_from_slice(&((centroids.len() / self.config.dims_per_token.max(1)) as u32).to_le_bytes());
        centroids.iter().for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        buf.extend_from_slice(&(entries.slot_of.len() as u64).to_le_bytes());
        for (_, e) in entries.live() {
            buf.extend_from_slice(e.id.as_bytes());
            e.tokens.encode(&mut buf);
            buf.extend_from_slice(&(e.tags.len() as u16).to_le_bytes());
            e.tags.iter().for_each(|t| buf.extend_from_slice(&t.to_le_bytes()));
            if buf.len() >= 1 << 16 {
                out.write_all(&buf).map_err(io)?;
                buf.clear();
            }
        }
        out.write_all(&buf).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teleological::index::key_map::Reader;
    use crate::teleological::index::EmbedderIndex;

    fn doc(seed: usize, n: usize) -> EmbedderOutput {
        let tokens = (0..n)
            .map(|t| (0..8).map(|j| (((seed * 7 + t * 3 + j) % 11) as f32 - 5.0) / 5.0).collect())
            .collect();
        EmbedderOutput::TokenLevel(TokenEmbeddings::new(tokens, 8))
    }

    #[tokio::test]
    async fn exact_and_approximate_agree_on_small_data_and_snapshot_round_trips() {
        let config = TokenLevelConfig { max_tokens: 16, dims_per_token: 8, approximate: true };
        let approx = MemoryIndex::token_level(Embedder::LateInteraction, &config).unwrap();
        let exact = MemoryIndex::token_level(
            Embedder::LateInteraction,
            &TokenLevelConfig { approximate: false, ..config.clone() },
        )
        .unwrap();
        let items: Vec<_> = (0..50).map(|i| (Uuid::from_u128(i as u128), doc(i, 3 + i % 5))).collect();
        approx.add_batch(&items).await.unwrap();
        exact.add_batch(&items).await.unwrap();
        let q = doc(1000, 4);
        let a = approx.search(&q, 5, None).await.unwrap();
        let e = exact.search(&q, 5, None).await.unwrap();
        assert_eq!(a, e, "with fewer entries than the candidate count, both score everything exactly");
        let EmbedderOutput::TokenLevel(qt) = &q else { unreachable!() };
        let EmbedderOutput::TokenLevel(best) = &items.iter().find(|(id, _)| *id == e[0].id).unwrap().1 else {
            unreachable!()
        };
        assert!((e[0].score - max_sim(&qt.embeddings, &best.embeddings.concat(), 8)).abs() < 1e-5);

        let payload = approx.kind.snapshot_payload().unwrap();
        let back = TokenLevelKind::from_snapshot(
            Embedder::LateInteraction,
            &config,
            VectorPrecision::F32,
            &mut Reader(&payload),
        )
        .unwrap();
        assert_eq!(back.search(&q, 5, None, Candidates::All).unwrap(), a);
        assert!(TokenLevelKind::from_snapshot(
            Embedder::LateInteraction,
            &config,
            VectorPrecision::F32,
            &mut Reader(&payload[..payload.len() / 2])
        )
        .is_err());

        approx.remove(e[0].id).await.unwrap();
        assert!(approx.search(&q, 50, None).await.unwrap().iter().all(|h| h.id != e[0].id));
        assert_eq!(approx.size().await.unwrap(), 49);
    }

    /// Tokens near one of 64 "terms" (random unit directions) plus a per-entry shared
    /// direction, as the benchmark generator makes them: centroids can separate the terms.
    /// `n` random unit vectors of 16 values: the "terms" the test tokens cluster around.
    fn random_terms(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<Vec<f32>> {
        use rand::Rng;
        (0..n)
            .map(|_| {
                context_graph_core::teleology::similarity::normalized(
                    &(0..16).map(|_| rng.random_range(-1.0..1.0f32)).collect::<Vec<_>>(),
                )
            })
            .collect()
    }

    fn clustered(rng: &mut rand::rngs::StdRng, terms: &[Vec<f32>], n: usize) -> EmbedderOutput {
        use rand::Rng;
        let shared: Vec<f32> = (0..16).map(|_| rng.random_range(-0.3..0.3f32)).collect();
        let tokens = (0..n)
            .map(|_| {
                let term = &terms[rng.random_range(0..terms.len())];
                let t: Vec<f32> =
                    term.iter().zip(&shared).map(|(a, b)| a + b + rng.random_range(-0.05..0.05f32)).collect();
                context_graph_core::teleology::similarity::normalized(&t)
            })
            .collect();
        EmbedderOutput::TokenLevel(TokenEmbeddings::new(tokens, 16))
    }

    /// Every posting names a live entry tagged with that centroid, and every tag of every
    /// entry has its posting (exactly once).
    fn assert_postings_consistent(kind: &TokenLevelKind) {
        let e = kind.entries.read();
        let q = e.quantizer.as_ref().expect("trained");
        let mut seen = 0;
        for (c, list) in q.postings.iter().enumerate() {
            for &slot in list {
                let entry = e.entry(slot).expect("a posting names a free slot");
                assert!(entry.tags.contains(&(c as u16)), "posting of {c} names an entry not tagged with it");
                seen += 1;
            }
        }
        assert_eq!(seen, e.live().map(|(_, en)| en.tags.len()).sum::<usize>(), "a tag without its posting");
    }

    #[test]
    fn training_aside_while_changes_arrive_tags_every_entry_consistently() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let terms = random_terms(&mut rng, 32);
        let config = TokenLevelConfig { max_tokens: 32, dims_per_token: 16, approximate: true };
        let index = Arc::new(TokenLevelKind::new(Embedder::LateInteraction, &config, VectorPrecision::I8));
        let first: Vec<_> = (0..TRAIN_AT as u128 + 500)
            .map(|i| (Uuid::from_u128(i), clustered(&mut rng, &terms, 8)))
            .collect();
        index.apply(&first.iter().map(|(id, o)| IndexChange::Upsert(*id, o)).collect::<Vec<_>>()).unwrap();
        assert!(index.needs_upkeep());
        let later: Vec<_> =
            (0..600u128).map(|i| (Uuid::from_u128(i * 3), clustered(&mut rng, &terms, 5))).collect();
        let trainer = {
            let index = index.clone();
            std::thread::spawn(move || index.upkeep(&AtomicBool::new(false)))
        };
        // Replacements, removals and new entries while the centroids are trained and the
        // entries tagged: each lands before or after the copy the training tags.
        for (i, (id, out)) in later.iter().enumerate() {
            let change = if i % 4 == 0 { IndexChange::Remove(*id) } else { IndexChange::Upsert(*id, out) };
            index.apply(&[change]).unwrap();
            let fresh = clustered(&mut rng, &terms, 4);
            index.apply(&[IndexChange::Upsert(Uuid::from_u128(100_000 + i as u128), &fresh)]).unwrap();
        }
        trainer.join().unwrap().unwrap();
        assert!(index.entries.read().quantizer.is_some());
        assert_postings_consistent(&index);
        let e = index.entries.read();
        assert!(e.live().all(|(_, en)| !en.tags.is_empty()), "an entry was left untagged");
        // Every entry's tags are those of its current tokens.
        let q = e.quantizer.as_ref().unwrap();
        for (_, en) in e.live() {
            assert_eq!(
                en.tags,
                q.centroids.tags_of(&en.tokens.to_f32()),
                "entry {} has the tags of other tokens",
                en.id
            );
        }
    }

    #[test]
    fn centroid_postings_find_what_exact_maxsim_finds_through_updates_removals_and_snapshots() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let terms = random_terms(&mut rng, 64);
        let config = TokenLevelConfig { max_tokens: 32, dims_per_token: 16, approximate: true };
        let exact = TokenLevelKind::new(
            Embedder::LateInteraction,
            &TokenLevelConfig { approximate: false, ..config.clone() },
            VectorPrecision::F32,
        );
        let items: Vec<_> = (0..3000u128)
            .map(|i| {
                let n = rng.random_range(4..24);
                (Uuid::from_u128(i), clustered(&mut rng, &terms, n))
            })
            .collect();
        let standalone = TokenLevelKind::new(Embedder::LateInteraction, &config, VectorPrecision::F32);
        let changes = |from: usize, to: usize| -> Vec<(Uuid, EmbedderOutput)> { items[from..to].to_vec() };
        // Training happens at the change that reaches TRAIN_AT entries, not before.
        let first: Vec<_> = changes(0, TRAIN_AT - 1);
        standalone
            .apply(&first.iter().map(|(id, o)| IndexChange::Upsert(*id, o)).collect::<Vec<_>>())
            .unwrap();
        assert!(standalone.entries.read().quantizer.is_none());
        let rest: Vec<_> = changes(TRAIN_AT - 1, items.len());
        standalone
            .apply(&rest.iter().map(|(id, o)| IndexChange::Upsert(*id, o)).collect::<Vec<_>>())
            .unwrap();
        // Due, not done inside the commit: the store runs it in the background.
        assert!(standalone.entries.read().quantizer.is_none() && standalone.needs_upkeep());
        standalone.upkeep(&AtomicBool::new(false)).unwrap();
        assert!(standalone.entries.read().quantizer.is_some() && !standalone.needs_upkeep());
        assert_postings_consistent(&standalone);
        exact.apply(&items.iter().map(|(id, o)| IndexChange::Upsert(*id, o)).collect::<Vec<_>>()).unwrap();
        assert!(exact.entries.read().quantizer.is_none(), "an exact index never trains");

        let queries: Vec<EmbedderOutput> = (0..30).map(|_| clustered(&mut rng, &terms, 8)).collect();
        let recall = |index: &dyn Fn(&EmbedderOutput) -> Vec<IndexSearchResult>| -> f64 {
            let mut found = 0;
            for q in &queries {
                let truth: Vec<Uuid> =
                    exact.search(q, 10, None, Candidates::All).unwrap().iter().map(|h| h.id).collect();
                found += index(q).iter().filter(|h| truth.contains(&h.id)).count();
            }
            found as f64 / (queries.len() * 10) as f64
        };
        let r = recall(&|q| standalone.search(q, 10, None, Candidates::All).unwrap());
        assert!(r >= 0.9, "recall@10 {r} against exact MaxSim");

        // Replace a third of the entries and remove another third: postings follow.
        let mut changed = Vec::new();
        for (i, (id, _)) in items.iter().enumerate() {
            if i % 3 == 0 {
                changed.push((*id, Some(clustered(&mut rng, &terms, 6))));
            } else if i % 3 == 1 {
                changed.push((*id, None));
            }
        }
        let index_changes: Vec<IndexChange<'_>> = changed
            .iter()
            .map(|(id, o)| o.as_ref().map_or(IndexChange::Remove(*id), |o| IndexChange::Upsert(*id, o)))
            .collect();
        standalone.apply(&index_changes).unwrap();
        assert_eq!(standalone.len(), 2000);
        assert_postings_consistent(&standalone);
        for q in &queries {
            for hit in standalone.search(q, 10, None, Candidates::All).unwrap() {
                assert!(hit.id.as_u128() % 3 != 1, "removed entry {} returned", hit.id);
            }
        }

        // A filter admitting one entry in ten still gets a full page, all admitted.
        let admit = |id: Uuid| id.as_u128().is_multiple_of(10);
        for q in &queries[..5] {
            let hits = standalone.search(q, 10, None, Candidates::Matching(&admit)).unwrap();
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| admit(h.id)));
        }

        // The snapshot keeps the centroids and tags: the loaded index answers identically.
        let payload = standalone.snapshot_payload().unwrap();
        let back = TokenLevelKind::from_snapshot(
            Embedder::LateInteraction,
            &config,
            VectorPrecision::F32,
            &mut Reader(&payload),
        )
        .unwrap();
        assert_postings_consistent(&back);
        for q in &queries {
            assert_eq!(
                back.search(q, 10, None, Candidates::All).unwrap(),
                standalone.search(q, 10, None, Candidates::All).unwrap()
            );
        }
        // A tag naming a centroid that does not exist is refused.
        let mut bad = payload.clone();
        let tags_at = bad.len() - 2;
        bad[tags_at..].copy_from_slice(&u16::MAX.to_le_bytes());
        let err = TokenLevelKind::from_snapshot(
            Embedder::LateInteraction,
            &config,
            VectorPrecision::F32,
            &mut Reader(&bad),
        )
        .err()
        .unwrap();
        assert!(err.contains("tags"), "{err}");
    }
}
