//! Sparse vectors in inverted postings stored in RocksDB, written in the same commit as the
//! data, scored by the exact dot product.
//!
//! Keys in the `sparse_postings` column family (see `docs/FORMAT.md`):
//! - posting: `0x00, embedder, term (u32 BE), id (16)` → weight (f32 LE)
//! - forward: `0x01, embedder, id (16)` → the indexed (term u32 LE, weight f32 LE) pairs
//! - term bound: `0x02, embedder, term (u32 BE)` → the largest weight ever indexed for the term
//!   (f32 LE), kept by a `max` merge operator so that writes never read it
//!
//! The forward entry lets an overwrite or delete remove exactly the postings it wrote, without
//! reading the old array, and gives any entry's exact score in one read.
//!
//! Search is exact top-k with MaxScore pruning: query terms are visited in decreasing order of
//! their largest possible contribution (query weight × term bound). Once the contributions
//! still possible from the unvisited terms cannot lift an unseen entry above the k-th best
//! partial score, the remaining posting lists are skipped, and the entries that can still
//! make the top k are scored exactly from their forward entries. Frequent terms, which carry
//! small weights, are the ones skipped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use context_graph_core::teleology::{
    Embedder, EmbedderDims, EmbedderOutput, SparseVector, DEFAULT_MAX_TOKENS,
};
use parking_lot::Mutex;
use rocksdb::{ReadOptions, WriteBatch, DB};
use uuid::Uuid;

use super::query::check_query;
use super::{
    finish_results, owned_write_error, Candidates, EmbedderIndex, IndexChange, IndexSearchResult, IndexType,
    InvertedIndexConfig,
};
use crate::teleological::blocking::run_blocking;
use crate::teleological::column_families::ColumnFamily;
use crate::teleological::store::{StorageError, StorageResult};

const TAG_POSTING: u8 = 0x00;
const TAG_FORWARD: u8 = 0x01;
const TAG_BOUND: u8 = 0x02;
const MAX_MERGE: &str = "teleo_max_f32";

fn posting_prefix(e: Embedder, term: u32) -> [u8; 6] {
    let t = term.to_be_bytes();
    [TAG_POSTING, e as u8, t[0], t[1], t[2], t[3]]
}

fn posting_key(e: Embedder, term: u32, id: Uuid) -> [u8; 22] {
    let mut k = [0u8; 22];
    k[..6].copy_from_slice(&posting_prefix(e, term));
    k[6..].copy_from_slice(id.as_bytes());
    k
}

fn bound_key(e: Embedder, term: u32) -> [u8; 6] {
    let t = term.to_be_bytes();
    [TAG_BOUND, e as u8, t[0], t[1], t[2], t[3]]
}

/// The `max` merge of term bounds: the largest valid f32 among the value and the operands.
fn merge_max(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let max = existing
        .into_iter()
        .chain(operands.iter())
        .filter_map(|b| <[u8; 4]>::try_from(b).ok().map(f32::from_le_bytes))
        .fold(0.0f32, f32::max);
    Some(max.to_le_bytes().to_vec())
}

/// Options the `sparse_postings` column family must be opened with (the term-bound merge
/// operator). A store does this itself; a standalone index's database must too.
pub fn postings_cf_options(mut opts: rocksdb::Options) -> rocksdb::Options {
    opts.set_merge_operator_associative(MAX_MERGE, merge_max);
    opts
}

fn decode_pairs(bytes: &[u8]) -> Option<impl Iterator<Item = (u32, f32)> + '_> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(bytes.chunks_exact(8).map(|c| {
        (u32::from_le_bytes([c[0], c[1], c[2], c[3]]), f32::from_le_bytes([c[4], c[5], c[6], c[7]]))
    }))
}

fn forward_key(e: Embedder, id: Uuid) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[0] = TAG_FORWARD;
    k[1] = e as u8;
    k[2..].copy_from_slice(id.as_bytes());
    k
}

/// A cheap hasher for random 16-byte ids (SipHash costs more than the whole posting visit).
#[derive(Default)]
struct IdHasher(u64);

/// The `k`-th largest partial score (a lower bound of the k-th best final score).
fn kth_best(acc: &HashMap<Uuid, f32, BuildHasherDefault<IdHasher>>, k: usize) -> f32 {
    let mut scores: Vec<f32> = acc.values().copied().collect();
    if scores.len() < k || k == 0 {
        return f32::NEG_INFINITY;
    }
    let (_, kth, _) = scores.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, _: usize) {}

    fn finish(&self) -> u64 {
        self.0
    }
}

struct InvertedState {
    db: Arc<DB>,
    embedder: Embedder,
    vocab_size: usize,
    config: InvertedIndexConfig,
    live: AtomicUsize,
    /// Serializes standalone writes (a store serializes its own commits).
    standalone_writes: Mutex<()>,
}

/// The inverted index of one sparse embedder.
#[derive(Clone)]
pub struct InvertedIndex {
    state: Arc<InvertedState>,
    owned: bool,
}

/// One key an upsert writes to `sparse_postings` (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PostingsEntry {
    /// Posting key → the term's weight in the array (a put of the f32, LE).
    Posting([u8; 22], f32),
    /// Term-bound key → the weight, to be combined by `max` with the bound already stored
    /// (a merge of the f32, LE).
    Bound([u8; 6], f32),
    /// Forward key → the indexed (term, weight) pairs (a put).
    Forward([u8; 18], Vec<u8>),
}

/// What staging a change did to the number of live entries, applied once the commit succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LiveDelta(pub(crate) isize);

impl InvertedIndex {
    /// An inverted index over `db`, which must have the `sparse_postings` column family,
    /// opened with [`postings_cf_options`] (the term-bound merge operator). Counts the live
    /// entries already there.
    pub fn open(
        db: Arc<DB>,
        embedder: Embedder,
        vocab_size: usize,
        config: InvertedIndexConfig,
    ) -> StorageResult<Self> {
        Self::open_inner(db, embedder, vocab_size, config, false)
    }

    pub(crate) fn open_owned(
        db: Arc<DB>,
        embedder: Embedder,
        vocab_size: usize,
        config: InvertedIndexConfig,
    ) -> StorageResult<Self> {
        Self::open_inner(db, embedder, vocab_size, config, true)
    }

    fn open_inner(
        db: Arc<DB>,
        embedder: Embedder,
        vocab_size: usize,
        config: InvertedIndexConfig,
        owned: bool,
    ) -> StorageResult<Self> {
        if config.use_bm25 {
            return Err(StorageError::Index(format!(
                "{}: BM25 scoring (use_bm25) is not implemented; the index scores by exact dot product",
                embedder.short_name()
            )));
        }
        let live = {
            let cf = ColumnFamily::SparsePostings.handle(&db)?;
            let prefix = [TAG_FORWARD, embedder as u8];
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(vec![TAG_FORWARD, embedder as u8 + 1]);
            let mut it = db.raw_iterator_cf_opt(&cf, opts);
            it.seek(prefix);
            let mut n = 0;
            while it.valid() {
                n += 1;
                it.next();
            }
            it.status()?;
            n
        };
        let state = InvertedState {
            db,
            embedder,
            vocab_size,
            config,
            live: AtomicUsize::new(live),
            standalone_writes: Mutex::new(()),
        };
        Ok(Self { state: Arc::new(state), owned })
    }

    fn dims(&self) -> EmbedderDims {
        EmbedderDims::Sparse { vocab_size: self.state.vocab_size }
    }

    /// The terms this index keeps of `v`: at least `min_weight`, the `max_terms` heaviest.
    fn indexed_terms(&self, v: &SparseVector) -> Vec<(u32, f32)> {
        let cfg = &self.state.config;
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
            terms.sort_by_key(|&(t, _)| t);
        }
        terms
    }

    /// The entries an upsert of `out` under `id` writes, in this order: for each indexed
    /// term its posting and its term bound, then the forward entry. The one definition of
    /// what an indexed array looks like in `sparse_postings`, used by the commit
    /// ([`InvertedIndex::stage`]) and by the bulk load. It writes nothing and reads nothing.
    pub(crate) fn upsert_entries(
        &self,
        id: Uuid,
        out: &EmbedderOutput,
        mut emit: impl FnMut(PostingsEntry),
    ) -> StorageResult<()> {
        let e = self.state.embedder;
        let EmbedderOutput::Sparse(v) = out else {
            return Err(StorageError::Index(format!("{e}: not a sparse vector")));
        };
        let terms = self.indexed_terms(v);
        let mut forward = Vec::with_capacity(terms.len() * 8);
        for (term, w) in terms {
            emit(PostingsEntry::Posting(posting_key(e, term, id), w));
            emit(PostingsEntry::Bound(bound_key(e, term), w));
            forward.extend_from_slice(&term.to_le_bytes());
            forward.extend_from_slice(&w.to_le_bytes());
        }
        emit(PostingsEntry::Forward(forward_key(e, id), forward));
        Ok(())
    }

    /// Add the writes of one change to `batch`. Reads the current forward entry, so the caller
    /// must keep other writers of this index out until the batch is committed.
    pub(crate) fn stage(&self, batch: &mut WriteBatch, change: IndexChange<'_>) -> StorageResult<LiveDelta> {
        let s = &self.state;
        let cf = ColumnFamily::SparsePostings.handle(&s.db)?;
        let id = match change {
            IndexChange::Upsert(id, _) | IndexChange::Remove(id) => id,
        };
        let fkey = forward_key(s.embedder, id);
        let old = s.db.get_pinned_cf(&cf, fkey)?;
        let existed = old.is_some();
        if let Some(old) = old {
            let pairs = decode_pairs(&old).ok_or_else(|| StorageError::Corruption {
                what: format!(
                    "forward entry of {id} in {} has {} bytes, not whole (term, weight) pairs",
                    s.embedder.short_name(),
                    old.len()
                ),
            })?;
            for (term, _) in pairs {
                batch.delete_cf(&cf, posting_key(s.embedder, term, id));
            }
        }
        match change {
            IndexChange::Upsert(_, out) => {
                self.upsert_entries(id, out, |entry| match entry {
                    PostingsEntry::Posting(key, weight) => batch.put_cf(&cf, key, weight.to_le_bytes()),
                    PostingsEntry::Bound(key, weight) => batch.merge_cf(&cf, key, weight.to_le_bytes()),
                    PostingsEntry::Forward(key, pairs) => batch.put_cf(&cf, key, pairs),
                })?;
                Ok(LiveDelta(if existed { 0 } else { 1 }))
            }
            IndexChange::Remove(_) => {
                if existed {
                    batch.delete_cf(&cf, fkey);
                }
                Ok(LiveDelta(if existed { -1 } else { 0 }))
            }
        }
    }

    /// Apply a committed change's delta to the live count.
    pub(crate) fn committed(&self, delta: LiveDelta) {
        if delta.0 >= 0 {
            self.state.live.fetch_add(delta.0 as usize, Ordering::SeqCst);
        } else {
            self.state.live.fetch_sub(delta.0.unsigned_abs(), Ordering::SeqCst);
        }
    }

    /// Number of live entries.
    pub fn live(&self) -> usize {
        self.state.live.load(Ordering::SeqCst)
    }

    /// Exact top-k by dot product over one consistent RocksDB snapshot, with MaxScore
    /// pruning (see the module documentation).
    pub(crate) fn search_sync(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
        candidates: Candidates<'_>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let s = &self.state;
        check_query(s.embedder, query, self.dims(), DEFAULT_MAX_TOKENS)?;
        let EmbedderOutput::Sparse(q) = query else { unreachable!("checked above") };
        if limit == 0 || q.is_empty() {
            return Ok(Vec::new());
        }
        let cf = ColumnFamily::SparsePostings.handle(&s.db)?;
        let snapshot = s.db.snapshot();
        let read_opts = || {
            let mut o = ReadOptions::default();
            o.set_snapshot(&snapshot);
            o
        };
        if let Candidates::Only(ids) = candidates {
            let mut hits = self.exact_scores(&cf, &read_opts(), q, ids)?;
            hits.retain(|h| h.score > 0.0);
            return Ok(finish_results(hits, limit, threshold));
        }

        // Each query term's largest possible contribution; terms nobody has are dropped.
        let bound_keys: Vec<[u8; 6]> = q.indices.iter().map(|&t| bound_key(s.embedder, t)).collect();
        let bounds = s.db.batched_multi_get_cf_opt(&cf, &bound_keys, false, &read_opts());
        let mut terms: Vec<(u32, f32, f32)> = Vec::with_capacity(q.len());
        for ((&term, &qw), bound) in q.indices.iter().zip(&q.values).zip(bounds) {
            if let Some(b) = bound? {
                let max_w = <[u8; 4]>::try_from(&b[..]).map(f32::from_le_bytes).unwrap_or(f32::INFINITY);
                terms.push((term, qw, qw * max_w));
            }
        }
        terms.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        // remaining[i]: the most the terms from i on can add to any entry's score.
        let mut remaining = vec![0.0f32; terms.len() + 1];
        for i in (0..terms.len()).rev() {
            remaining[i] = remaining[i + 1] + terms[i].2;
        }

        let mut acc: HashMap<Uuid, f32, BuildHasherDefault<IdHasher>> = HashMap::default();
        let mut visited = terms.len();
        let mut best = 0.0f32;
        for (i, &(term, qw, _)) in terms.iter().enumerate() {
            // `best` bounds the k-th best, so the costlier k-th best is computed only when
            // pruning is possible at all.
            if acc.len() >= limit && remaining[i] < best && remaining[i] < kth_best(&acc, limit) {
                visited = i;
                break;
            }
            best = best.max(self.accumulate(&cf, read_opts(), term, qw, candidates, &mut acc)?);
        }

        let mut hits: Vec<IndexSearchResult> = if visited == terms.len() {
            // Every posting list was read: the partial scores are the exact scores.
            acc.into_iter().map(|(id, score)| IndexSearchResult { id, score }).collect()
        } else {
            // Entries that may still reach the top k get their exact score from the forward
            // entry; the others (and entries never seen) cannot.
            let floor = kth_best(&acc, limit) - remaining[visited];
            let ids: Vec<Uuid> = acc.iter().filter(|&(_, &p)| p >= floor).map(|(&id, _)| id).collect();
            self.exact_scores(&cf, &read_opts(), q, &ids)?
        };
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit - 1, |a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            hits.truncate(limit);
        }
        Ok(finish_results(hits, limit, threshold))
    }

    /// Add `qw` × weight of every posting of `term` to `acc`; returns the largest score it
    /// produced.
    fn accumulate(
        &self,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        mut opts: ReadOptions,
        term: u32,
        qw: f32,
        candidates: Candidates<'_>,
        acc: &mut HashMap<Uuid, f32, BuildHasherDefault<IdHasher>>,
    ) -> StorageResult<f32> {
        let s = &self.state;
        let prefix = posting_prefix(s.embedder, term);
        // The next term's prefix bounds this term's postings.
        let upper = match term.checked_add(1) {
            Some(next) => posting_prefix(s.embedder, next).to_vec(),
            None => vec![TAG_POSTING, s.embedder as u8 + 1],
        };
        opts.set_iterate_upper_bound(upper);
        let mut it = s.db.raw_iterator_cf_opt(cf, opts);
        it.seek(prefix);
        let mut best = 0.0f32;
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let (Ok(id), Ok(w)) = (<[u8; 16]>::try_from(&key[6..]), <[u8; 4]>::try_from(value)) else {
                return Err(StorageError::Corruption {
                    what: format!(
                        "posting of term {term} in {} has a malformed key or value",
                        s.embedder.short_name()
                    ),
                });
            };
            let id = Uuid::from_bytes(id);
            if !candidates.admits(id) {
                it.next();
                continue;
            }
            let score = acc.entry(id).or_insert(0.0);
            *score += qw * f32::from_le_bytes(w);
            best = best.max(*score);
            it.next();
        }
        it.status()?;
        Ok(best)
    }

    /// The exact dot products of `ids`' indexed terms with the query.
    fn exact_scores(
        &self,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        opts: &ReadOptions,
        q: &SparseVector,
        ids: &[Uuid],
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let s = &self.state;
        let keys: Vec<[u8; 18]> = ids.iter().map(|&id| forward_key(s.embedder, id)).collect();
        let values = s.db.batched_multi_get_cf_opt(cf, &keys, false, opts);
        let mut hits = Vec::with_capacity(ids.len());
        for (&id, value) in ids.iter().zip(values) {
            let Some(bytes) = value? else { continue };
            let pairs = decode_pairs(&bytes).ok_or_else(|| StorageError::Corruption {
                what: format!("forward entry of {id} in {} is malformed", s.embedder.short_name()),
            })?;
            let (indices, values): (Vec<u32>, Vec<f32>) = pairs.unzip();
            hits.push(IndexSearchResult { id, score: SparseVector::new(indices, values).dot(q) });
        }
        Ok(hits)
    }

    fn write_standalone(&self, changes: &[IndexChange<'_>]) -> StorageResult<()> {
        if self.owned {
            return Err(owned_write_error(self.state.embedder));
        }
        let _guard = self.state.standalone_writes.lock();
        let mut batch = WriteBatch::default();
        let mut total = 0isize;
        for &change in changes {
            total += self.stage(&mut batch, change)?.0;
        }
        self.state.db.write(batch)?;
        self.committed(LiveDelta(total));
        Ok(())
    }
}

#[async_trait]
impl EmbedderIndex for InvertedIndex {
    fn embedder(&self) -> Embedder {
        self.state.embedder
    }

    fn index_type(&self) -> IndexType {
        IndexType::Inverted
    }

    async fn add(&self, id: Uuid, embedding: &EmbedderOutput) -> StorageResult<()> {
        self.add_batch(&[(id, embedding.clone())]).await
    }

    async fn add_batch(&self, items: &[(Uuid, EmbedderOutput)]) -> StorageResult<()> {
        if self.owned {
            return Err(owned_write_error(self.state.embedder));
        }
        for (_, out) in items {
            check_query(self.state.embedder, out, self.dims(), DEFAULT_MAX_TOKENS)?;
        }
        let (this, items) = (self.clone(), items.to_vec());
        run_blocking(move || {
            let changes: Vec<_> = items.iter().map(|(id, out)| IndexChange::Upsert(*id, out)).collect();
            this.write_standalone(&changes)
        })
        .await
    }

    async fn remove(&self, id: Uuid) -> StorageResult<()> {
        let this = self.clone();
        run_blocking(move || this.write_standalone(&[IndexChange::Remove(id)])).await
    }

    async fn search(
        &self,
        query: &EmbedderOutput,
        limit: usize,
        threshold: Option<f32>,
    ) -> StorageResult<Vec<IndexSearchResult>> {
        let (this, query) = (self.clone(), query.clone());
        run_blocking(move || this.search_sync(&query, limit, threshold, Candidates::All)).await
    }

    async fn size(&self) -> StorageResult<usize> {
        Ok(self.live())
    }

    async fn optimize(&self) -> StorageResult<()> {
        let this = self.clone();
        run_blocking(move || {
            let cf = ColumnFamily::SparsePostings.handle(&this.state.db)?;
            let e = this.state.embedder as u8;
            this.state.db.compact_range_cf(&cf, Some([TAG_POSTING, e]), Some([TAG_POSTING, e + 1]));
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{ColumnFamilyDescriptor, Options};

    fn open_db(dir: &std::path::Path) -> Arc<DB> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = vec![ColumnFamilyDescriptor::new(
            ColumnFamily::SparsePostings.name(),
            postings_cf_options(Options::default()),
        )];
        Arc::new(DB::open_cf_descriptors(&opts, dir, cfs).unwrap())
    }

    fn sv(terms: &[(u32, f32)]) -> EmbedderOutput {
        EmbedderOutput::Sparse(SparseVector::new(
            terms.iter().map(|t| t.0).collect(),
            terms.iter().map(|t| t.1).collect(),
        ))
    }

    #[tokio::test]
    async fn exact_dot_product_overwrite_remove_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path());
        let idx =
            InvertedIndex::open(db.clone(), Embedder::SpladeKeyword, 100, InvertedIndexConfig::default())
                .unwrap();
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
        // A reopened index counts what is there.
        let again =
            InvertedIndex::open(db.clone(), Embedder::SpladeKeyword, 100, InvertedIndexConfig::default())
                .unwrap();
        assert_eq!(again.live(), 2);

        let pruned = InvertedIndex::open(
            db,
            Embedder::SpladeExpansion,
            100,
            InvertedIndexConfig { max_terms: 1, min_weight: 0.5, use_bm25: false },
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
}
