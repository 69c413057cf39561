//! A usearch HNSW graph keyed by array id: the engine under the dense and token-level indices.

use parking_lot::{Condvar, Mutex};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
use uuid::Uuid;

use super::key_map::{KeyMap, Reader};
use super::{Candidates, HnswConfig};
use crate::teleological::store::{StorageError, StorageResult};

/// usearch keeps one scratch context per concurrent caller and fails a call when all are
/// taken. Callers wait for a context here instead (see [`ContextSlots`]).
const CONTEXTS: usize = 16;

fn usearch_err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> StorageError + '_ {
    move |e| StorageError::Index(format!("usearch {what} failed: {e}"))
}

/// Bounds concurrent graph calls to the number of contexts reserved in usearch.
#[derive(Default)]
struct ContextSlots {
    busy: Mutex<usize>,
    freed: Condvar,
}

impl ContextSlots {
    fn acquire(&self) -> ContextGuard<'_> {
        let mut busy = self.busy.lock();
        while *busy >= CONTEXTS {
            self.freed.wait(&mut busy);
        }
        *busy += 1;
        ContextGuard(self)
    }
}

struct ContextGuard<'a>(&'a ContextSlots);

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// A usearch index plus the id↔key map and the count of removed entries inside the graph.
pub(crate) struct Graph {
    index: Index,
    pub(crate) keys: KeyMap,
    /// Vectors removed from the graph but still occupying it (usearch removes softly).
    pub(crate) removed_vectors: usize,
    /// Vectors added, live or removed: what the reserved capacity must hold.
    slots_used: usize,
    contexts: ContextSlots,
    shape: GraphShape,
    config: HnswConfig,
}

/// Share of removed vectors in a graph above which `optimize` rebuilds it.
pub const REBUILD_REMOVED_SHARE: f64 = 0.2;

/// The shape of a graph: what must match between a snapshot and the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GraphShape {
    pub(crate) dims: usize,
    pub(crate) metric: MetricKind,
    pub(crate) multi: bool,
}

fn options(shape: GraphShape, config: &HnswConfig) -> IndexOptions {
    IndexOptions {
        dimensions: shape.dims,
        metric: shape.metric,
        quantization: ScalarKind::F32,
        connectivity: config.m,
        expansion_add: config.ef_construction,
        expansion_search: config.ef_search,
        multi: shape.multi,
    }
}

impl Graph {
    pub(crate) fn new(shape: GraphShape, config: &HnswConfig) -> StorageResult<Self> {
        let index = Index::new(&options(shape, config)).map_err(usearch_err("create"))?;
        let graph = Self {
            index,
            keys: KeyMap::default(),
            removed_vectors: 0,
            slots_used: 0,
            contexts: ContextSlots::default(),
            shape,
            config: config.clone(),
        };
        graph.reserve(1024)?;
        Ok(graph)
    }

    fn reserve(&self, capacity: usize) -> StorageResult<()> {
        self.index.reserve_capacity_and_threads(capacity, CONTEXTS).map_err(usearch_err("reserve"))
    }

    /// Make room for `more` vectors, growing geometrically.
    pub(crate) fn ensure_capacity(&mut self, more: usize) -> StorageResult<()> {
        let need = self.slots_used + more;
        if need > self.index.capacity() {
            self.reserve(need.max(self.index.capacity() * 2))?;
        }
        Ok(())
    }

    /// Remove `id`'s vectors; whether it was present.
    pub(crate) fn remove(&mut self, id: Uuid) -> StorageResult<bool> {
        let Some(key) = self.keys.remove(id) else {
            return Ok(false);
        };
        let n = self.index.remove(key).map_err(usearch_err("remove"))?;
        self.removed_vectors += n;
        Ok(true)
    }

    /// Add `vectors` (one, or several for a multi-vector graph) under a fresh key for `id`,
    /// replacing what `id` had. Vectors must have the graph's dimensions.
    pub(crate) fn upsert(&mut self, id: Uuid, vectors: &[&[f32]]) -> StorageResult<()> {
        self.remove(id)?;
        self.ensure_capacity(vectors.len())?;
        let key = self.keys.assign(id);
        for v in vectors {
            self.index.add(key, v).map_err(usearch_err("add"))?;
            self.slots_used += 1;
        }
        Ok(())
    }

    /// The `count` nearest vectors' (id, distance) among `candidates`, nearest first; may
    /// repeat an id in a multi-vector graph. `exact` scores the query against stored vectors
    /// (for `Candidates::Only`).
    pub(crate) fn search(
        &self,
        query: &[f32],
        count: usize,
        candidates: Candidates<'_>,
        exact: impl Fn(&[f32]) -> f32,
    ) -> StorageResult<Vec<(Uuid, f32)>> {
        if count == 0 || self.keys.len() == 0 {
            return Ok(Vec::new());
        }
        let live = self.slots_used - self.removed_vectors;
        let _ctx = self.contexts.acquire();
        let m = match candidates {
            Candidates::Only(ids) => {
                let dims = self.shape.dims;
                let mut scored = Vec::with_capacity(ids.len());
                for &id in ids {
                    let v = self.vectors(id, dims)?;
                    let best = v.chunks_exact(dims).map(&exact).fold(f32::INFINITY, f32::min);
                    if best.is_finite() {
                        scored.push((id, best));
                    }
                }
                scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                scored.truncate(count);
                return Ok(scored);
            }
            Candidates::Matching(pass) => {
                let admit = |key: u64| self.keys.id(key).is_some_and(pass);
                self.index.filtered_search(query, count, admit).map_err(usearch_err("filtered search"))?
            }
            Candidates::All => {
                let m = self.index.search(query, count).map_err(usearch_err("search"))?;
                if m.keys.len() < count.min(live) {
                    // The graph walk reached fewer vectors than exist: churn has cut some
                    // off. An exact scan answers correctly until the next rebuild.
                    self.index.exact_search(query, count).map_err(usearch_err("exact search"))?
                } else {
                    m
                }
            }
        };
        Ok(m.keys.iter().zip(&m.distances).filter_map(|(&k, &d)| self.keys.id(k).map(|id| (id, d))).collect())
    }

    /// The stored vectors of `id`, back to back (exact f32 copies).
    pub(crate) fn vectors(&self, id: Uuid, dims: usize) -> StorageResult<Vec<f32>> {
        let Some(key) = self.keys.key(id) else {
            return Ok(Vec::new());
        };
        let n = self.index.count(key);
        let mut buf = vec![0.0f32; n * dims];
        let got = self.index.get(key, &mut buf).map_err(usearch_err("get"))?;
        buf.truncate(got * dims);
        Ok(buf)
    }

    /// Rebuild now if removed vectors outnumber live ones: past that point searches degrade
    /// quickly, and the rebuild's cost (one insert per live vector) is paid for by at least
    /// as many removals.
    pub(crate) fn rebuild_if_mostly_removed(&mut self) -> StorageResult<()> {
        if self.removed_vectors > self.slots_used - self.removed_vectors {
            *self = self.rebuilt()?;
        }
        Ok(())
    }

    /// Whether removed vectors take more than [`REBUILD_REMOVED_SHARE`] of the graph.
    pub(crate) fn needs_rebuild(&self) -> bool {
        self.removed_vectors > 0
            && self.removed_vectors as f64 > REBUILD_REMOVED_SHARE * self.slots_used as f64
    }

    /// An empty graph of the same shape and configuration.
    pub(crate) fn emptied(&self) -> StorageResult<Graph> {
        Graph::new(self.shape, &self.config)
    }

    /// A new graph holding only the live entries (exact copies of their vectors).
    pub(crate) fn rebuilt(&self) -> StorageResult<Graph> {
        let dims = self.shape.dims;
        let mut fresh = Graph::new(self.shape, &self.config)?;
        fresh.ensure_capacity(self.slots_used - self.removed_vectors)?;
        for (id, _) in self.keys.iter() {
            let flat = self.vectors(id, dims)?;
            let vectors: Vec<&[f32]> = flat.chunks_exact(dims).collect();
            fresh.upsert(id, &vectors)?;
        }
        Ok(fresh)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.memory_usage() + self.keys.memory_bytes()
    }

    pub(crate) fn set_ef_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// Payload: removed count, slots used, key map, then usearch's own serialization.
    pub(crate) fn encode(&self) -> StorageResult<Vec<u8>> {
        let mut out = Vec::with_capacity(self.index.serialized_length() + self.keys.len() * 24 + 64);
        out.extend_from_slice(&(self.removed_vectors as u64).to_le_bytes());
        out.extend_from_slice(&(self.slots_used as u64).to_le_bytes());
        self.keys.encode(&mut out);
        let len = self.index.serialized_length();
        out.extend_from_slice(&(len as u64).to_le_bytes());
        let start = out.len();
        out.resize(start + len, 0);
        self.index.save_to_buffer(&mut out[start..]).map_err(usearch_err("save"))?;
        Ok(out)
    }

    /// Rebuild a graph from [`Graph::encode`]'s payload; the error says what is wrong.
    pub(crate) fn decode(payload: &[u8], shape: GraphShape, config: &HnswConfig) -> Result<Self, String> {
        let mut r = Reader(payload);
        let removed_vectors = r.u64()? as usize;
        let slots_used = r.u64()? as usize;
        let (keys, rest) = KeyMap::decode(r.0)?;
        let mut r = Reader(rest);
        let len = r.u64()? as usize;
        let bytes = r.bytes(len)?;
        if !r.0.is_empty() {
            return Err("snapshot payload has trailing bytes".into());
        }
        let meta = Index::metadata_from_buffer(bytes).map_err(|e| format!("usearch header: {e}"))?;
        if meta.dimensions as usize != shape.dims || meta.metric != shape.metric || meta.multi != shape.multi
        {
            return Err(format!(
                "snapshot graph has {} dimensions ({:?}, multi {}), the configuration {} ({:?}, multi {})",
                meta.dimensions, meta.metric, meta.multi, shape.dims, shape.metric, shape.multi
            ));
        }
        let index = Index::new(&options(shape, config)).map_err(|e| format!("usearch create: {e}"))?;
        index.load_from_buffer(bytes).map_err(|e| format!("usearch load: {e}"))?;
        index.change_expansion_add(config.ef_construction);
        index.change_expansion_search(config.ef_search);
        let live_keys = keys.iter().filter(|&(_, k)| index.contains(k)).count();
        if live_keys != keys.len() {
            return Err(format!("{} ids of the key map are missing from the graph", keys.len() - live_keys));
        }
        let graph = Self {
            index,
            keys,
            removed_vectors,
            slots_used,
            contexts: ContextSlots::default(),
            shape,
            config: config.clone(),
        };
        graph.reserve(graph.index.capacity().max(slots_used + 1024)).map_err(|e| e.to_string())?;
        Ok(graph)
    }
}
