//! A usearch HNSW graph keyed by array id: the engine under the dense and token-level indices.
//!
//! Vectors handed to a graph are unit length (its callers normalize them), so the inner
//! product is the cosine. A graph stores them at its [`VectorPrecision`]: `f32`, `f16` (usearch
//! converts), or `i8`, quantized here with one fixed scale per graph (see [`I8Scale`]) rather
//! than usearch's per-vector scaling to the full byte range, which keeps dot products
//! comparable across vectors. Distances returned by [`Graph::search`] are always `1 - cosine`
//! in float units, whatever the precision.
//!
//! f32 and i8 graphs compare with our own kernels (`similarity::dot` / `dot_i8`, compiled for
//! AVX2 when the CPU has it) installed as usearch's metric: usearch built without its SIMD
//! add-on compares with baseline x86-64 loops, and distance is most of an insert's cost.

use parking_lot::{Condvar, Mutex};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};
use uuid::Uuid;

use context_graph_core::teleology::similarity;

use super::key_map::{KeyMap, Reader};
use super::{Candidates, HnswConfig, VectorPrecision};
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
    pub(crate) precision: VectorPrecision,
}

impl GraphShape {
    fn scalar_kind(&self) -> ScalarKind {
        match self.precision {
            VectorPrecision::F32 => ScalarKind::F32,
            VectorPrecision::F16 => ScalarKind::F16,
            VectorPrecision::I8 => ScalarKind::I8,
        }
    }
}

/// The fixed scale of an `i8` graph: a unit vector's component `x` is stored as
/// `round(x * scale)`, clamped to ±127. Components of a unit vector in `d` dimensions have a
/// standard deviation near `1/sqrt(d)`, so `scale = 127 * sqrt(d) / 5` maps five standard
/// deviations to the end of the byte range: clamping is rare, and the step is 4% of a typical
/// component. usearch's inner product of two such vectors is `scale²` times the float one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct I8Scale(f32);

impl I8Scale {
    pub(crate) fn for_dims(dims: usize) -> Self {
        Self(127.0 * (dims.max(1) as f32).sqrt() / 5.0)
    }

    pub(crate) fn quantize(self, v: &[f32]) -> Vec<i8> {
        v.iter().map(|&x| (x * self.0).round().clamp(-127.0, 127.0) as i8).collect()
    }

    pub(crate) fn dequantize(self, v: &[i8]) -> Vec<f32> {
        v.iter().map(|&q| f32::from(q) / self.0).collect()
    }
}

/// Install our distance kernel as the graph's metric (f32 and i8 graphs; f16 keeps usearch's).
/// Needed after every `Index::new` and `load`, which install the built-in one.
fn install_metric(index: &mut Index, shape: GraphShape) {
    let dims = shape.dims;
    match shape.precision {
        VectorPrecision::F32 => index.change_metric::<f32>(Box::new(move |a, b| {
            // SAFETY: usearch passes two vectors of the graph's `dims` f32 values (stored
            // vectors and queries alike have the graph's dimensions and scalar type).
            let (a, b) =
                unsafe { (std::slice::from_raw_parts(a, dims), std::slice::from_raw_parts(b, dims)) };
            1.0 - similarity::dot(a, b)
        })),
        VectorPrecision::I8 => {
            let inv_scale2 = 1.0 / (I8Scale::for_dims(dims).0 * I8Scale::for_dims(dims).0);
            index.change_metric::<i8>(Box::new(move |a, b| {
                // SAFETY: as above, with `dims` i8 values.
                let (a, b) =
                    unsafe { (std::slice::from_raw_parts(a, dims), std::slice::from_raw_parts(b, dims)) };
                1.0 - similarity::dot_i8(a, b) as f32 * inv_scale2
            }))
        }
        VectorPrecision::F16 => {}
    }
}

fn options(shape: GraphShape, config: &HnswConfig) -> IndexOptions {
    IndexOptions {
        dimensions: shape.dims,
        metric: shape.metric,
        quantization: shape.scalar_kind(),
        connectivity: config.m,
        expansion_add: config.ef_construction,
        expansion_search: config.ef_search,
        multi: shape.multi,
    }
}

impl Graph {
    pub(crate) fn new(shape: GraphShape, config: &HnswConfig) -> StorageResult<Self> {
        let mut index = Index::new(&options(shape, config)).map_err(usearch_err("create"))?;
        install_metric(&mut index, shape);
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
            match self.shape.precision {
                // usearch converts f32 input to the graph's f16.
                VectorPrecision::F32 | VectorPrecision::F16 => self.index.add(key, v),
                VectorPrecision::I8 => self.index.add(key, &self.i8_scale().quantize(v)),
            }
            .map_err(usearch_err("add"))?;
            self.slots_used += 1;
        }
        Ok(())
    }

    fn i8_scale(&self) -> I8Scale {
        I8Scale::for_dims(self.shape.dims)
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
                match self.shape.precision {
                    VectorPrecision::I8 => {
                        self.index.filtered_search(&self.i8_scale().quantize(query), count, admit)
                    }
                    _ => self.index.filtered_search(query, count, admit),
                }
                .map_err(usearch_err("filtered search"))?
            }
            Candidates::All => {
                let quantized = match self.shape.precision {
                    VectorPrecision::I8 => Some(self.i8_scale().quantize(query)),
                    _ => None,
                };
                let walk = |exact: bool| match (&quantized, exact) {
                    (Some(q), false) => self.index.search(q, count),
                    (Some(q), true) => self.index.exact_search(q, count),
                    (None, false) => self.index.search(query, count),
                    (None, true) => self.index.exact_search(query, count),
                };
                let m = walk(false).map_err(usearch_err("search"))?;
                if m.keys.len() < count.min(live) {
                    // The graph walk reached fewer vectors than exist: churn has cut some
                    // off. An exact scan answers correctly until the next rebuild.
                    walk(true).map_err(usearch_err("exact search"))?
                } else {
                    m
                }
            }
        };
        Ok(m.keys.iter().zip(&m.distances).filter_map(|(&k, &d)| self.keys.id(k).map(|id| (id, d))).collect())
    }

    /// The stored vectors of `id`, back to back, as f32 (exact copies of what the graph holds:
    /// storing them again at the same precision gives the same bits).
    pub(crate) fn vectors(&self, id: Uuid, dims: usize) -> StorageResult<Vec<f32>> {
        let Some(key) = self.keys.key(id) else {
            return Ok(Vec::new());
        };
        let n = self.index.count(key);
        if self.shape.precision == VectorPrecision::I8 {
            let mut buf = vec![0i8; n * dims];
            let got = self.index.get(key, &mut buf).map_err(usearch_err("get"))?;
            buf.truncate(got * dims);
            return Ok(self.i8_scale().dequantize(&buf));
        }
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
        if meta.dimensions as usize != shape.dims
            || meta.metric != shape.metric
            || meta.multi != shape.multi
            || meta.quantization != shape.scalar_kind()
        {
            return Err(format!(
                "snapshot graph has {} dimensions ({:?}, {:?}, multi {}), the configuration {} ({:?}, {}, multi {})",
                meta.dimensions,
                meta.metric,
                meta.quantization,
                meta.multi,
                shape.dims,
                shape.metric,
                shape.precision,
                shape.multi
            ));
        }
        let mut index = Index::new(&options(shape, config)).map_err(|e| format!("usearch create: {e}"))?;
        index.load_from_buffer(bytes).map_err(|e| format!("usearch load: {e}"))?;
        install_metric(&mut index, shape);
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
