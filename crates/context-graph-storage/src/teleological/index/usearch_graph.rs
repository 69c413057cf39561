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
use crate::teleological::error::{StorageError, StorageResult};

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
///
/// usearch removes softly: a removed vector's node stays in the graph (still routing
/// searches, never returned) on a free list, and the next add reuses it. `free_nodes` and
/// `nodes` follow that exactly, so that the reserved capacity fits and `optimize` knows how
/// much of the graph is dead.
pub(crate) struct Graph {
    index: Index,
    pub(crate) keys: KeyMap,
    /// Nodes of removed vectors not reused yet.
    pub(crate) free_nodes: usize,
    /// Nodes in the graph, live or free: what the reserved capacity must hold.
    nodes: usize,
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

    /// `1 / scale²`: an i8 inner product times this is the float one.
    fn inv_square(self) -> f32 {
        1.0 / (self.0 * self.0)
    }

    fn dequantize_one(self, q: i8) -> f32 {
        f32::from(q) / self.0
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
            let inv_scale2 = I8Scale::for_dims(dims).inv_square();
            index.change_metric::<i8>(Box::new(move |a, b| {
                // SAFETY: as above, with `dims` i8 values.
                let (a, b) =
                    unsafe { (std::slice::from_raw_parts(a, dims), std::slice::from_raw_parts(b, dims)) };
                i8_distance(a, b, inv_scale2)
            }))
        }
        VectorPrecision::F16 => {}
    }
}

/// An i8 graph's distance between two of its vectors: one minus their float inner product
/// (`inv_scale2` is the graph's [`I8Scale::inv_square`]).
fn i8_distance(a: &[i8], b: &[i8], inv_scale2: f32) -> f32 {
    1.0 - similarity::dot_i8(a, b) as f32 * inv_scale2
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
            free_nodes: 0,
            nodes: 0,
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
        let need = self.nodes.saturating_add(more.saturating_sub(self.free_nodes));
        if need > self.index.capacity() {
            self.reserve(need.max(self.index.capacity().saturating_mul(2)))?;
        }
        Ok(())
    }

    /// Remove `id`'s vectors; whether it was present.
    pub(crate) fn remove(&mut self, id: Uuid) -> StorageResult<bool> {
        let Some(key) = self.keys.remove(id) else {
            return Ok(false);
        };
        let n = self.index.remove(key).map_err(usearch_err("remove"))?;
        self.free_nodes += n;
        Ok(true)
    }

    /// Live vectors.
    pub(crate) fn live(&self) -> usize {
        self.nodes.saturating_sub(self.free_nodes)
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
            // usearch fills a free node before it appends one.
            match self.free_nodes.checked_sub(1) {
                Some(free) => self.free_nodes = free,
                None => self.nodes += 1,
            }
        }
        Ok(())
    }

    fn i8_scale(&self) -> I8Scale {
        I8Scale::for_dims(self.shape.dims)
    }

    /// The `count` nearest vectors' (id, distance) among `candidates`, nearest first; may
    /// repeat an id in a multi-vector graph. `exact` scores the query against stored vectors
    /// for `Candidates::Only` of an f32 or f16 graph; a single-vector i8 graph scores those
    /// with its own metric, as its walk does.
    pub(crate) fn search(
        &self,
        query: &[f32],
        count: usize,
        candidates: Candidates<'_>,
        exact: impl Fn(&[f32]) -> f32,
    ) -> StorageResult<Vec<(Uuid, f32)>> {
        let live = self.live();
        // Never more than the graph holds: usearch sizes its result buffers by the count.
        let count = if self.shape.multi { count } else { count.min(live) };
        if count == 0 || self.keys.len() == 0 {
            return Ok(Vec::new());
        }
        let _ctx = self.contexts.acquire();
        let m = match candidates {
            Candidates::Only(ids) => {
                let dims = self.shape.dims;
                let mut scored = Vec::with_capacity(ids.len());
                // One pair of buffers for all the ids: a fused search scores a thousand here.
                let (mut stored, mut v) = (Vec::new(), Vec::new());
                if self.shape.precision == VectorPrecision::I8 && !self.shape.multi {
                    // The graph's own metric on the bytes it holds: the distances its walk
                    // reports, without turning each vector back into floats.
                    let (quantized, inv_scale2) =
                        (self.i8_scale().quantize(query), self.i8_scale().inv_square());
                    stored.resize(dims, 0);
                    for &id in ids {
                        if let Some(key) = self.keys.key(id) {
                            if self.index.get(key, &mut stored[..]).map_err(usearch_err("get"))? == 1 {
                                scored.push((id, i8_distance(&quantized, &stored, inv_scale2)));
                            }
                        }
                    }
                } else {
                    for &id in ids {
                        self.vectors_into(id, dims, &mut stored, &mut v)?;
                        let best = v.chunks_exact(dims).map(&exact).fold(f32::INFINITY, f32::min);
                        if best.is_finite() {
                            scored.push((id, best));
                        }
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
        let mut out = Vec::new();
        self.vectors_into(id, dims, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// [`Graph::vectors`] into `out` (emptied when `id` has none), with `stored` as the
    /// buffer an i8 graph's bytes are read into: no allocation once both have grown.
    fn vectors_into(
        &self,
        id: Uuid,
        dims: usize,
        stored: &mut Vec<i8>,
        out: &mut Vec<f32>,
    ) -> StorageResult<()> {
        out.clear();
        let Some(key) = self.keys.key(id) else {
            return Ok(());
        };
        // A key of a single-vector graph holds one vector (the key map has it only while it
        // does); only a multi-vector graph's count is asked of usearch.
        let n = if self.shape.multi { self.index.count(key) } else { 1 };
        if self.shape.precision == VectorPrecision::I8 {
            stored.resize(n * dims, 0);
            let got = self.index.get(key, &mut stored[..]).map_err(usearch_err("get"))?;
            let scale = self.i8_scale();
            out.extend(stored[..got * dims].iter().map(|&q| scale.dequantize_one(q)));
            return Ok(());
        }
        out.resize(n * dims, 0.0);
        let got = self.index.get(key, &mut out[..]).map_err(usearch_err("get"))?;
        out.truncate(got * dims);
        Ok(())
    }

    /// Whether removed vectors take more than [`REBUILD_REMOVED_SHARE`] of the graph.
    pub(crate) fn needs_rebuild(&self) -> bool {
        self.free_nodes > 0 && self.free_nodes as f64 > REBUILD_REMOVED_SHARE * self.nodes as f64
    }

    /// Whether removed vectors outnumber live ones: past that point searches degrade quickly
    /// (most of what a walk visits is dead), and a rebuild's cost (one insert per live vector)
    /// is paid for by at least as many removals.
    pub(crate) fn mostly_removed(&self) -> bool {
        self.free_nodes > self.live()
    }

    /// An empty graph of the same shape and configuration (and search breadth).
    pub(crate) fn emptied(&self) -> StorageResult<Graph> {
        let fresh = Graph::new(self.shape, &self.config)?;
        fresh.set_ef_search(self.ef_search());
        Ok(fresh)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.memory_usage() + self.keys.memory_bytes()
    }

    pub(crate) fn set_ef_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    pub(crate) fn ef_search(&self) -> usize {
        self.index.expansion_search()
    }

    /// Payload: free nodes, nodes, key map, then usearch's own serialization.
    pub(crate) fn encode(&self) -> StorageResult<Vec<u8>> {
        let mut out = Vec::with_capacity(self.index.serialized_length() + self.keys.len() * 24 + 64);
        out.extend_from_slice(&(self.free_nodes as u64).to_le_bytes());
        out.extend_from_slice(&(self.nodes as u64).to_le_bytes());
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
        let free_nodes = usize::try_from(r.u64()?).map_err(|_| "free node count overflows")?;
        let nodes = usize::try_from(r.u64()?).map_err(|_| "node count overflows")?;
        let (keys, rest) = KeyMap::decode(r.0)?;
        let mut r = Reader(rest);
        let len = r.u64()? as usize;
        let bytes = r.bytes(len)?;
        if !r.0.is_empty() {
            return Err("snapshot payload has trailing bytes".into());
        }
        let (serialized_nodes, serialized_free) = check_serialized(bytes, shape)?;
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
        // The counts come from the file: they must describe the graph just loaded (its node and
        // removed-node counts as usearch serialized them), or a damaged count could size the
        // reservation below (or underflow).
        let live = index.size();
        if nodes != serialized_nodes
            || free_nodes != serialized_free
            || free_nodes > nodes
            || nodes - free_nodes != live
            || (!shape.multi && keys.len() != live)
        {
            return Err(format!(
                "snapshot counts ({nodes} nodes, {free_nodes} free) do not match the graph ({live} live \
                 vectors, {} ids)",
                keys.len()
            ));
        }
        let graph = Self {
            index,
            keys,
            free_nodes,
            nodes,
            contexts: ContextSlots::default(),
            shape,
            config: config.clone(),
        };
        graph.reserve(graph.index.capacity().max(nodes.saturating_add(1024))).map_err(|e| e.to_string())?;
        Ok(graph)
    }
}

/// The largest connectivity (links per node) a graph snapshot may hold.
const MAX_SERIALIZED_CONNECTIVITY: u64 = 1024;
/// The highest graph level a snapshot may hold (levels are drawn as `-ln(u) / ln(m)`: a
/// level past 64 has a probability below 2^-64 even at m = 2).
const MAX_SERIALIZED_LEVEL: u64 = 64;

/// Check usearch's serialization of a graph, structure and every count, index and slot in
/// it, before usearch reads it: usearch trusts what it finds (a damaged level or neighbour
/// slot makes it read or write out of bounds; the decoder fuzz tests crashed it so), and the
/// payload checksum guards against damage, not against a file crafted or written wrong.
///
/// The layout (usearch 2, `index_dense_gt::save_to_stream`, then `index_gt::save_to_stream`):
/// rows u32 and bytes per vector u32, then the vectors; a 64-byte head (magic "usearch", three
/// u16 versions, four u8 kinds, present u64, deleted u64, dimensions u64, multi u8, padding);
/// the graph header (size, connectivity, base connectivity, max level, entry slot: u64 each);
/// a level (i16) per node; then per node its key u64 and level i16, the base layer's
/// neighbours (count u32, then base-connectivity slots u32) and, per level above it, count
/// u32 and connectivity slots u32.
/// Returns the serialization's node count and how many of its nodes are removed ones.
fn check_serialized(bytes: &[u8], shape: GraphShape) -> Result<(usize, usize), String> {
    let bad = |what: &str| Err(format!("usearch serialization: {what}"));
    let mut r = Reader(bytes);
    let u32_at = |r: &mut Reader<'_>| r.take::<4>().map(u32::from_le_bytes);
    let rows = u32_at(&mut r)? as u64;
    let bytes_per_vector = u32_at(&mut r)? as u64;
    let expected = (shape.dims * shape.precision.bytes_per_dim()) as u64;
    if bytes_per_vector != expected {
        return bad(&format!("vectors of {bytes_per_vector} bytes, the graph's are {expected}"));
    }
    let matrix = rows.checked_mul(bytes_per_vector).ok_or("usearch serialization: the vectors overflow")?;
    if matrix > r.0.len() as u64 {
        return bad("fewer vector bytes than the row count needs");
    }
    r.bytes(matrix as usize)?;
    let head = r.bytes(64)?;
    let u64_in =
        |b: &[u8], at: usize| b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
    if &head[..7] != b"usearch" {
        return bad("no usearch magic");
    }
    let (present, deleted, dims) = (u64_in(head, 17), u64_in(head, 25), u64_in(head, 33));
    if dims != Some(shape.dims as u64)
        || present.zip(deleted).map(|(p, d)| p.checked_add(d)) != Some(Some(rows))
    {
        return bad("the head's counts or dimensions do not match the vectors");
    }
    let too_many = || "usearch serialization: too many nodes".to_string();
    let counts = (
        usize::try_from(rows).map_err(|_| too_many())?,
        deleted.and_then(|d| usize::try_from(d).ok()).ok_or_else(too_many)?,
    );
    if head[41] != u8::from(shape.multi) {
        return bad("the multi-vector flag does not match the graph");
    }
    let mut header = [0u64; 5];
    for h in &mut header {
        *h = r.u64()?;
    }
    let [size, connectivity, base, max_level, entry] = header;
    if size != rows {
        return bad("the graph's node count differs from its vector count");
    }
    if size == 0 {
        return if r.0.is_empty() { Ok(counts) } else { bad("trailing bytes after an empty graph") };
    }
    if !(2..=MAX_SERIALIZED_CONNECTIVITY).contains(&connectivity)
        || !(connectivity..=2 * MAX_SERIALIZED_CONNECTIVITY).contains(&base)
        || max_level > MAX_SERIALIZED_LEVEL
        || entry >= size
    {
        return bad("the graph header is out of range");
    }
    let levels = r.bytes(usize::try_from(size * 2).map_err(|_| "usearch serialization: too many nodes")?)?;
    let level_of = |i: usize| i16::from_le_bytes([levels[2 * i], levels[2 * i + 1]]);
    let node_count = size as usize;
    if u64::try_from(level_of(entry as usize)).map_or(true, |l| l < max_level) {
        return bad("the entry node is below the top level");
    }
    for i in 0..node_count {
        let level = level_of(i);
        if level < 0 || level as u64 > max_level {
            return bad(&format!("node {i} has level {level}"));
        }
        let _key = r.u64()?;
        if i16::from_le_bytes(r.take::<2>()?) != level {
            return bad(&format!("node {i}'s own level differs from the level list"));
        }
        for layer in 0..=level {
            let capacity = if layer == 0 { base } else { connectivity };
            let count = u32_at(&mut r)? as u64;
            if count > capacity {
                return bad(&format!(
                    "node {i} has {count} neighbours on level {layer}, room for {capacity}"
                ));
            }
            let slots = r.bytes((capacity * 4) as usize)?;
            if slots
                .chunks_exact(4)
                .take(count as usize)
                .any(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])) >= size)
            {
                return bad(&format!("node {i} links to a node that does not exist"));
            }
        }
    }
    if !r.0.is_empty() {
        return bad("trailing bytes after the graph");
    }
    Ok(counts)
}
