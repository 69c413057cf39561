//! Sparse vectors in in-memory posting lists, scored by the exact dot product.
//!
//! Each entry gets a slot number; each term a list of (slot, weight) postings in slot order,
//! with its largest weight; each slot also keeps its own terms ([`forward`]). A search adds
//! `query weight × posting weight` into one accumulator per slot, term at a time, heaviest
//! bound first, until the terms left cannot lift an unseen entry into the top `limit`; the
//! entries still in the running are then scored whole from their own terms ([`pruned`]).
//! Scores and the top `limit` are exact.
//! Removing or replacing an entry marks its slot dead; its postings stay in the lists until
//! dead slots outnumber live ones (or pass 20% when `optimize` runs), when the lists are
//! compacted and the slots renumbered.
//!
//! Like the other in-memory indices it is persisted as a snapshot and caught up from the
//! change log at open. Postings used to live in RocksDB, written in the same commit as the
//! data: reading them back through iterators cost 10–12 ms per query at 20,000 arrays (and
//! grew with the store), and writing ~330 posting and term-bound keys per array was a fifth of
//! the ingest time; see docs/PERFORMANCE.md.

use std::collections::HashMap;
use std::sync::Arc;

use context_graph_core::teleology::{
    Embedder, EmbedderDims, EmbedderOutput, SparseVector, DEFAULT_MAX_TOKENS,
};
use parking_lot::RwLock;
use uuid::Uuid;

use super::key_map::Reader;
use super::memory::{MemoryIndex, MemoryKind};
use super::query::check_query;
use super::usearch_graph::REBUILD_REMOVED_SHARE;
use super::{
    finish_results, Candidates, IndexChange, IndexSearchResult, IndexType, InvertedIndexConfig,
    VectorPrecision,
};
use crate::teleological::error::{StorageError, StorageResult};

mod forward;
mod pruned;

#[derive(Debug, Clone, Copy)]
struct Posting {
    slot: u32,
    weight: f32,
}

/// One term's postings, in slot order (slots only grow between compactions), and their
/// largest weight (a bound: removals leave it as it was).
#[derive(Default)]
struct TermList {
    postings: Vec<Posting>,
    max_weight: f32,
}

impl TermList {
    fn push(&mut self, posting: Posting) {
        self.max_weight = self.max_weight.max(posting.weight);
        self.postings.push(posting);
    }
}

struct Postings {
    /// Each term's postings.
    lists: HashMap<u32, TermList>,
    /// Slot → id; `None` for a dead slot.
    ids: Vec<Option<Uuid>>,
    /// Each slot's terms and weights (dead slots included, until compaction).
    forward: forward::Forward,
    slot_of: HashMap<Uuid, u32>,
    dead: usize,
}

impl Postings {
    fn new(vocab_size: usize) -> Self {
        Self {
            lists: HashMap::new(),
            ids: Vec::new(),
            forward: forward::Forward::new(vocab_size),
            slot_of: HashMap::new(),
            dead: 0,
        }
    }

    fn live(&self) -> usize {
        self.ids.len() - self.dead
    }

    fn kill(&mut self, id: Uuid) {
        if let Some(slot) = self.slot_of.remove(&id) {
            self.ids[slot as usize] = None;
            self.dead += 1;
        }
    }

    /// Drop dead slots' postings and renumber the live slots densely, in their old order.
    fn compact(&mut self) {
        let mut renumbered = vec![u32::MAX; self.ids.len()];
        let mut ids = Vec::with_capacity(self.live());
        for (slot, id) in self.ids.iter().enumerate() {
            if let Some(id) = id {
                renumbered[slot] = ids.len() as u32;
                ids.push(Some(*id));
            }
        }
        self.forward.retain(|slot| renumbered[slot] != u32::MAX);
        self.lists.retain(|_, list| {
            list.postings.retain_mut(|p| {
                p.slot = renumbered[p.slot as usize];
                p.slot != u32::MAX
            });
            list.postings.shrink_to_fit();
            list.max_weight = list.postings.iter().map(|p| p.weight).fold(0.0, f32::max);
            !list.postings.is_empty()
        });
        self.slot_of =
            ids.iter().enumerate().filter_map(|(slot, id)| id.map(|id| (id, slot as u32))).collect();
        self.ids = ids;
        self.dead = 0;
    }
}

pub(crate) struct InvertedKind {
    embedder: Embedder,
    vocab_size: usize,
    config: InvertedIndexConfig,
    postings: RwLock<Postings>,
}

impl InvertedKind {
    pub(crate) fn new(
        embedder: Embedder,
        vocab_size: usize,
        config: &InvertedIndexConfig,
    ) -> StorageResult<Self> {
        if config.use_bm25 {
            return Err(StorageError::Index(format!(
                "{}: BM25 scoring (use_bm25) is not implemented; the index scores by exact dot product",
                embedder.short_name()
            )));
        }
        Ok(Self {
            embedder,
            vocab_size,
            config: config.clone(),
            postings: RwLock::new(Postings::new(vocab_size)),
        })
    }

    /// Payload: vocabulary size u64, slot count u64, per slot (id 16 bytes, nil when dead; live
    /// u8; posting count u32), list count u64, per list (term u32, length u64, per posting:
    /// slot u32, weight f32). All little-endian.
    pub(crate) fn from_snapshot(
        embedder: Embedder,
        vocab_size: usize,
        config: &InvertedIndexConfig,
        payload: &[u8],
    ) -> Result<Self, String> {
        let kind = Self::new(embedder, vocab_size, config).map_err(|e| e.to_string())?;
        let mut r = Reader(payload);
        let stored_vocab = r.u64()? as usize;
        if stored_vocab != vocab_size {
            return Err(format!(
                "snapshot has a vocabulary of {stored_vocab} terms, the schema {vocab_size}"
            ));
        }
        let slots = r.u64()? as usize;
        if slots > u32::MAX as usize || slots > payload.len() / 21 {
            return Err(format!("snapshot claims {slots} slots in {} bytes", payload.len()));
        }
        let mut p = Postings { ids: Vec::with_capacity(slots), ..Postings::new(vocab_size) };
        let mut counts = Vec::with_capacity(slots);
        for slot in 0..slots {
            let id = Uuid::from_bytes(r.take::<16>()?);
            let [live] = r.take::<1>()?;
            counts.push(u32::from_le_bytes(r.take::<4>()?));
            if live == 1 {
                if p.slot_of.insert(id, slot as u32).is_some() {
                    return Err(format!("id {id} is live in two slots"));
                }
                p.ids.push(Some(id));
            } else {
                p.ids.push(None);
                p.dead += 1;
            }
        }
        let lists = r.u64()? as usize;
        for _ in 0..lists {
            let term = u32::from_le_bytes(r.take::<4>()?);
            if term as usize >= vocab_size {
                return Err(format!("term {term} is outside the vocabulary of {vocab_size}"));
            }
            let len = r.u64()? as usize;
            let bytes = r.bytes(len.checked_mul(8).ok_or("posting count overflows")?)?;
            let mut list = TermList { postings: Vec::with_capacity(len), max_weight: 0.0 };
            for c in bytes.chunks_exact(8) {
                let slot = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let weight = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                // Pruned search needs positive weights (its bounds) and slot order (it
                // gallops through lists).
                if slot as usize >= slots || !weight.is_finite() || weight <= 0.0 {
                    return Err(format!("term {term} has a posting of slot {slot} with weight {weight}"));
                }
                if list.postings.last().is_some_and(|last| last.slot >= slot) {
                    return Err(format!("term {term}'s postings are not in slot order at slot {slot}"));
                }
                list.push(Posting { slot, weight });
            }
            if p.lists.insert(term, list).is_some() {
                return Err(format!("term {term} has two posting lists"));
            }
        }
        if !r.0.is_empty() {
            return Err("snapshot payload has trailing bytes".into());
        }
        p.forward = forward::Forward::from_lists(vocab_size, &counts, &p.lists)?;
        *kind.postings.write() = p;
        Ok(kind)
    }

    fn sparse<'a>(&self, out: &'a EmbedderOutput) -> StorageResult<&'a SparseVector> {
        match out {
            EmbedderOutput::Sparse(v) => Ok(v),
            _ => Err(StorageError::Index(format!("{}: not a sparse vector", self.embedder))),
        }
    }

    /// The terms this index keeps of `v`: at least `min_weight`, the `max_terms` heaviest.
    fn indexed_terms(&self, v: &SparseVector) -> Vec<(u32, f32)> {
        let cfg = &self.config;
        let mut terms: Vec<(u32, f32)> = v
            .indices
            .iter()
            .copied()
            .zip(v.values.iter().copied())
            .filter(|&(_, w)| w >= cfg.min_weight)
            .collect();
        if terms.len() > cfg.max_terms {
            terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            terms.truncate(cfg.max_terms);
        }
        terms
    }
}

impl MemoryIndex {
    /// A standalone inverted index of sparse vectors over a vocabulary of `vocab_size` terms.
    pub fn inverted(
        embedder: Embedder,
        vocab_size: usize,
        config: &InvertedIndexConfig,
    ) -> StorageResult<Self> {
        Ok(Self::standalone(Arc::new(InvertedKind::new(embedder, vocab_size, config)?)))
    }
}

impl MemoryKind for InvertedKind {
    fn embedder(&self) -> Embedder {
        self.embedder
    }

    fn index_type(&self) -> IndexType {
        IndexType::Inverted
    }

    fn check(&self, out: &EmbedderOutput) -> StorageResult<()> {
        check_query(
            self.embedder,
            out,
            EmbedderDims::Sparse { vocab_size: self.vocab_size },
            DEFAULT_MAX_TOKENS,
        )
    }

    fn precision(&self) -> Option<VectorPrecision> {
        None
    }

    fn apply(&self, changes: &[IndexChange<'_>]) -> StorageResult<()> {
        let mut p = self.postings.write();
        for change in changes {
            match *change {
                IndexChange::Upsert(id, out) => {
                    let terms = self.indexed_terms(self.sparse(out)?);
                    p.kill(id);
                    let slot = u32::try_from(p.ids.len()).map_err(|_| {
                        StorageError::Index(format!("{}: more than 2^32 slots", self.embedder))
                    })?;
                    p.ids.push(Some(id));
                    p.forward.push(&terms);
                    p.slot_of.insert(id, slot);
                    for (term, weight) in terms {
                        p.lists.entry(term).or_default().push(Posting { slot, weight });
                    }
                }
                IndexChange::Remove(id) => p.kill(id),
            }
        }
        if p.dead > p.live() {
            p.compact();
        }
        Ok(())
    }

    /// Entries with a nonzero dot product with the query, best first.
    fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let q = self.sparse(query)?;
        if limit == 0 || q.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.postings.read();
        let terms: Vec<pruned::QueryTerm<'_>> = q
            .indices
            .iter()
            .zip(&q.values)
            .filter_map(|(term, &weight)| {
                let list = p.lists.get(term)?;
                Some(pruned::QueryTerm { weight, bound: weight * list.max_weight, postings: &list.postings })
            })
            .collect();
        let mut hits = match candidates {
            Candidates::Only(ids) => {
                let mut listed: Vec<(u32, Uuid)> =
                    ids.iter().filter_map(|&id| p.slot_of.get(&id).map(|&slot| (slot, id))).collect();
                listed.sort_unstable_by_key(|&(slot, _)| slot);
                listed.dedup_by_key(|&mut (slot, _)| slot);
                pruned::score_listed(&p.forward, self.vocab_size, q, &listed)
            }
            _ => pruned::top_k(&p.forward, self.vocab_size, q, terms, limit, threshold, &|slot| {
                p.ids[slot as usize].filter(|&id| candidates.admits(id))
            }),
        };
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit - 1, |a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            hits.truncate(limit);
        }
        Ok(finish_results(hits, limit, threshold))
    }

    fn contains(&self, id: Uuid) -> bool {
        self.postings.read().slot_of.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.postings.read().live()
    }

    fn removed_in_graph(&self) -> usize {
        self.postings.read().dead
    }

    fn memory_bytes(&self) -> usize {
        let p = self.postings.read();
        p.lists.values().map(|l| l.postings.capacity() * 8 + 44).sum::<usize>()
            + p.ids.capacity() * 17
            + p.forward.memory_bytes()
            + p.slot_of.capacity() * 24
    }

    fn optimize(&self) -> StorageResult<()> {
        let mut p = self.postings.write();
        if p.dead > 0 && p.dead as f64 > REBUILD_REMOVED_SHARE * p.ids.len() as f64 {
            p.compact();
        }
        Ok(())
    }

    fn clear(&self) -> StorageResult<()> {
        *self.postings.write() = Postings::new(self.vocab_size);
        Ok(())
    }

    // An exact index: no search breadth and no long work (the trait's defaults).

    fn snapshot_payload(&self) -> StorageResult<Vec<u8>> {
        let p = self.postings.read();
        let postings: usize = p.lists.values().map(|l| l.postings.len()).sum();
        let mut out = Vec::with_capacity(24 + p.ids.len() * 21 + p.lists.len() * 12 + postings * 8);
        out.extend_from_slice(&(self.vocab_size as u64).to_le_bytes());
        out.extend_from_slice(&(p.ids.len() as u64).to_le_bytes());
        for (slot, id) in p.ids.iter().enumerate() {
            out.extend_from_slice(id.unwrap_or_default().as_bytes());
            out.push(u8::from(id.is_some()));
            out.extend_from_slice(&p.forward.count(slot).to_le_bytes());
        }
        out.extend_from_slice(&(p.lists.len() as u64).to_le_bytes());
        for (term, list) in &p.lists {
            out.extend_from_slice(&term.to_le_bytes());
            out.extend_from_slice(&(list.postings.len() as u64).to_le_bytes());
            for posting in &list.postings {
                out.extend_from_slice(&posting.slot.to_le_bytes());
                out.extend_from_slice(&posting.weight.to_le_bytes());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::teleological::index::EmbedderIndex;

    fn sv(terms: &[(u32, f32)]) -> EmbedderOutput {
        EmbedderOutput::Sparse(SparseVector::new(
            terms.iter().map(|t| t.0).collect(),
            terms.iter().map(|t| t.1).collect(),
        ))
    }

    #[tokio::test]
    async fn exact_dot_product_overwrite_remove_and_pruning() {
        let idx =
            MemoryIndex::inverted(Embedder::SpladeKeyword, 100, &InvertedIndexConfig::default()).unwrap();
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        idx.add(a, &sv(&[(1, 1.0), (5, 2.0)])).await.unwrap();
        idx.add(b, &sv(&[(5, 1.0), (9, 3.0)])).await.unwrap();
        idx.add(c, &sv(&[])).await.unwrap();
        assert_eq!(idx.size().await.unwrap(), 3);
        let hits = idx.search(&sv(&[(5, 1.0), (9, 1.0)]), 10, None).await.unwrap();
        assert_eq!(
            hits,
            vec![IndexSearchResult { id: b, score: 4.0 }, IndexSearchResult { id: a, score: 2.0 }]
        );
        // Overwrite: a's old term 5 must no longer match.
        idx.add(a, &sv(&[(1, 1.0)])).await.unwrap();
        let hits = idx.search(&sv(&[(5, 1.0)]), 10, None).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![b]);
        idx.remove(b).await.unwrap();
        assert!(idx.search(&sv(&[(5, 1.0), (9, 1.0)]), 10, None).await.unwrap().is_empty());
        assert_eq!(idx.size().await.unwrap(), 2);
        assert_eq!(idx.search(&sv(&[(1, 2.0)]), 10, Some(2.5)).await.unwrap().len(), 0);

        // The snapshot round-trips, dead slots included; a damaged one is refused.
        let payload = idx.kind.snapshot_payload().unwrap();
        let back = InvertedKind::from_snapshot(
            Embedder::SpladeKeyword,
            100,
            &InvertedIndexConfig::default(),
            &payload,
        )
        .unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.removed_in_graph(), 2, "a's first slot and b's");
        assert_eq!(back.search(&sv(&[(1, 1.0)]), 10, None, Candidates::All).unwrap()[0].id, a);
        assert!(InvertedKind::from_snapshot(
            Embedder::SpladeKeyword,
            100,
            &InvertedIndexConfig::default(),
            &payload[..payload.len() - 3]
        )
        .is_err());
        assert!(InvertedKind::from_snapshot(
            Embedder::SpladeKeyword,
            50,
            &InvertedIndexConfig::default(),
            &payload
        )
        .is_err());

        let pruned = MemoryIndex::inverted(
            Embedder::SpladeExpansion,
            100,
            &InvertedIndexConfig { max_terms: 1, min_weight: 0.5, use_bm25: false },
        )
        .unwrap();
        pruned.add(a, &sv(&[(1, 0.1), (2, 0.9), (3, 0.7)])).await.unwrap();
        assert!(pruned.search(&sv(&[(1, 1.0)]), 10, None).await.unwrap().is_empty(), "below min_weight");
        assert!(pruned.search(&sv(&[(3, 1.0)]), 10, None).await.unwrap().is_empty(), "beyond max_terms");
        assert_eq!(pruned.search(&sv(&[(2, 1.0)]), 10, None).await.unwrap().len(), 1);
        assert!(matches!(
            pruned.search(&sv(&[(200, 1.0)]), 10, None).await,
            Err(StorageError::Validation { .. })
        ));
    }

    #[tokio::test]
    async fn compaction_keeps_every_live_entry_and_its_scores() {
        let idx =
            MemoryIndex::inverted(Embedder::SpladeKeyword, 1000, &InvertedIndexConfig::default()).unwrap();
        let items: Vec<_> = (0..300u32)
            .map(|i| (Uuid::from_u128(i as u128 + 1), sv(&[(i % 50, 1.0 + i as f32), (999, 0.5)])))
            .collect();
        idx.add_batch(&items).await.unwrap();
        for (id, _) in &items[..200] {
            idx.remove(*id).await.unwrap();
        }
        // The 151st removal left more dead slots than live ones and compacted the lists; 49
        // removals followed, which `optimize` compacts (more than 20% of the slots).
        assert_eq!(idx.removed_in_graph(), 49);
        assert_eq!(idx.size().await.unwrap(), 100);
        idx.optimize().await.unwrap();
        assert_eq!(idx.removed_in_graph(), 0);
        let hits = idx.search(&sv(&[(999, 2.0)]), 1000, None).await.unwrap();
        assert_eq!(hits.len(), 100);
        assert!(hits.iter().all(|h| h.score == 1.0));
        let hits = idx.search(&sv(&[(7, 1.0)]), 10, None).await.unwrap();
        let want: Vec<Uuid> = [257u32, 207].iter().map(|&i| Uuid::from_u128(i as u128 + 1)).collect();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), want);
        assert_eq!(hits[0].score, 258.0);
    }

    /// Skewed data where pruning works hard: a few heavy "topic" terms with short lists and
    /// many light, common terms with long ones. The pruned search must return exactly what
    /// scoring every entry returns, for every limit, threshold, filter and candidate list,
    /// also after removals have left the lists' largest weights stale.
    #[test]
    fn pruned_search_returns_the_exhaustive_top_k_and_exact_scores() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        const VOCAB: u32 = 2000;
        let mut rng = StdRng::seed_from_u64(7);
        let draw = |rng: &mut StdRng| {
            let mut terms = std::collections::BTreeMap::new();
            let topic = rng.random_range(0..20u32) * 10;
            for _ in 0..rng.random_range(1..12) {
                terms.insert(1000 + topic + rng.random_range(0..10), rng.random_range(0.5..5.0f32));
            }
            for _ in 0..rng.random_range(5..60) {
                // Common terms: small ids are drawn far more often.
                let t = (rng.random_range(0.0..1.0f64).powi(3) * 1000.0) as u32;
                terms.insert(t, rng.random_range(0.02..0.4f32));
            }
            let (i, v): (Vec<u32>, Vec<f32>) = terms.into_iter().unzip();
            SparseVector::new(i, v)
        };
        let kind =
            InvertedKind::new(Embedder::SpladeKeyword, VOCAB as usize, &InvertedIndexConfig::default())
                .unwrap();
        let mut live: HashMap<Uuid, SparseVector> = HashMap::new();
        let vectors: Vec<(Uuid, EmbedderOutput)> =
            (0..3000u128).map(|i| (Uuid::from_u128(i + 1), EmbedderOutput::Sparse(draw(&mut rng)))).collect();
        let changes: Vec<IndexChange<'_>> =
            vectors.iter().map(|(id, v)| IndexChange::Upsert(*id, v)).collect();
        kind.apply(&changes).unwrap();
        for (id, v) in &vectors {
            let EmbedderOutput::Sparse(v) = v else { unreachable!() };
            live.insert(*id, v.clone());
        }
        // Remove a tenth, among them entries holding the heaviest weights, so bounds go stale.
        let removed: Vec<Uuid> = vectors.iter().step_by(10).map(|(id, _)| *id).collect();
        kind.apply(&removed.iter().map(|&id| IndexChange::Remove(id)).collect::<Vec<_>>()).unwrap();
        for id in &removed {
            live.remove(id);
        }
        let dot = |a: &SparseVector, b: &SparseVector| -> f32 {
            let weights: HashMap<u32, f32> =
                b.indices.iter().copied().zip(b.values.iter().copied()).collect();
            a.indices.iter().zip(&a.values).filter_map(|(t, w)| weights.get(t).map(|x| w * x)).sum()
        };
        let even = |id: Uuid| id.as_u128().is_multiple_of(2);
        let listed: Vec<Uuid> = {
            let mut l: Vec<Uuid> = (1..=3000u128).step_by(7).map(Uuid::from_u128).collect();
            l.sort_unstable();
            l
        };
        for q in 0..60 {
            let query = draw(&mut rng);
            let mut truth: Vec<(Uuid, f32)> =
                live.iter().map(|(id, v)| (*id, dot(&query, v))).filter(|&(_, s)| s > 0.0).collect();
            truth.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let out = EmbedderOutput::Sparse(query.clone());
            let close = |got: &[IndexSearchResult], want: &[(Uuid, f32)], what: &str| {
                assert_eq!(got.len(), want.len(), "query {q} {what}: lengths");
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (g.score - w.1).abs() <= 1e-4 * w.1.abs().max(1.0),
                        "query {q} {what}: {g:?} vs {w:?}"
                    );
                }
                // The same set, unless a tie at the cut is ordered by a score rounded otherwise.
                let got_ids: HashSet<Uuid> = got.iter().map(|h| h.id).collect();
                let missing: Vec<_> = want.iter().filter(|w| !got_ids.contains(&w.0)).collect();
                if let Some(m) = missing.first() {
                    let last = want.last().map_or(0.0, |w| w.1);
                    assert!((m.1 - last).abs() <= 1e-4, "query {q} {what}: {m:?} missing");
                }
            };
            for limit in [1, 10, 100] {
                let got = kind.search(&out, limit, None, Candidates::All).unwrap();
                close(&got, &truth[..limit.min(truth.len())], &format!("limit {limit}"));
                let filtered: Vec<(Uuid, f32)> =
                    truth.iter().copied().filter(|h| even(h.0)).take(limit).collect();
                let got = kind.search(&out, limit, None, Candidates::Matching(&even)).unwrap();
                close(&got, &filtered, &format!("limit {limit}, even ids"));
            }
            // Just below a score: one exactly at the floor could round to either side.
            let floor = truth.get(25).map_or(0.5, |h| h.1) - 1e-3;
            let above: Vec<(Uuid, f32)> = truth.iter().copied().filter(|h| h.1 >= floor).take(50).collect();
            close(&kind.search(&out, 50, Some(floor), Candidates::All).unwrap(), &above, "threshold");
            let only: Vec<(Uuid, f32)> =
                truth.iter().copied().filter(|h| listed.binary_search(&h.0).is_ok()).collect();
            close(
                &kind.search(&out, listed.len(), None, Candidates::Only(&listed)).unwrap(),
                &only,
                "listed",
            );
        }
    }
}
