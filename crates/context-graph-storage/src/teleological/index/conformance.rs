//! One conformance suite for every index kind: the same generic checks (add, replace,
//! remove, search order, threshold, limits, filters, snapshot round trip, clear, upkeep) run
//! against HNSW at three precisions, the inverted index, the token-level index (exact, and
//! approximate past its training threshold) and the binary index. The random seed is printed
//! on failure.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use context_graph_core::teleology::similarity::score;
use context_graph_core::teleology::{Embedder, EmbedderOutput, SparseVector, TokenEmbeddings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::binary::BinaryKind;
use super::hnsw::HnswKind;
use super::inverted::InvertedKind;
use super::key_map::Reader;
use super::memory::MemoryKind;
use super::token_level::{TokenLevelKind, TRAIN_AT};
use super::{Candidates, HnswConfig, IndexChange, InvertedIndexConfig, TokenLevelConfig, VectorPrecision};

const DIMS: usize = 16;
const VOCAB: usize = 400;
const BITS: usize = 130;
const PER_TOKEN: usize = 8;

/// Decodes a snapshot payload into an index of the subject's kind.
type Reload = Box<dyn Fn(&[u8]) -> Result<Arc<dyn MemoryKind>, String>>;

/// One index configuration under test.
struct Subject {
    name: &'static str,
    make: Box<dyn Fn() -> Arc<dyn MemoryKind>>,
    reload: Reload,
    output: fn(&mut StdRng) -> EmbedderOutput,
    /// Whether the index's own scores are the exact similarity (no reduced precision).
    exact_scores: bool,
    /// Whether the index is exact: every search returns the true top results.
    exact_search: bool,
    /// Bits of a binary code (for the exact score), 0 otherwise.
    bits: usize,
    /// Entries the suite stores (past the training threshold for the approximate token level).
    entries: usize,
}

fn dense(rng: &mut StdRng) -> EmbedderOutput {
    EmbedderOutput::Dense((0..DIMS).map(|_| rng.random_range(-1.0..1.0f32) + 0.05).collect())
}

fn sparse(rng: &mut StdRng) -> EmbedderOutput {
    let mut terms: Vec<u32> =
        (0..rng.random_range(3..20)).map(|_| rng.random_range(0..VOCAB as u32)).collect();
    terms.sort_unstable();
    terms.dedup();
    let values = terms.iter().map(|_| rng.random_range(0.1..2.0f32)).collect();
    EmbedderOutput::Sparse(SparseVector::new(terms, values))
}

fn tokens(rng: &mut StdRng) -> EmbedderOutput {
    let n = rng.random_range(1..7);
    let toks = (0..n).map(|_| (0..PER_TOKEN).map(|_| rng.random_range(-1.0..1.0f32)).collect()).collect();
    EmbedderOutput::TokenLevel(TokenEmbeddings::new(toks, PER_TOKEN))
}

fn code(rng: &mut StdRng) -> EmbedderOutput {
    let mut b: Vec<u8> = (0..BITS.div_ceil(8)).map(|_| rng.random()).collect();
    if let Some(last) = b.last_mut() {
        *last &= (1u8 << (BITS % 8)) - 1;
    }
    EmbedderOutput::Binary(b)
}

fn subjects() -> Vec<Subject> {
    let mut all = Vec::new();
    for (name, precision) in [
        ("hnsw f32", VectorPrecision::F32),
        ("hnsw f16", VectorPrecision::F16),
        ("hnsw i8", VectorPrecision::I8),
    ] {
        let config = HnswConfig::balanced();
        let reload_config = config.clone();
        all.push(Subject {
            name,
            make: Box::new(move || {
                Arc::new(HnswKind::new(Embedder::Semantic, DIMS, &config, precision).expect("graph"))
            }),
            reload: Box::new(move |p| {
                HnswKind::from_snapshot(Embedder::Semantic, DIMS, &reload_config, precision, p)
                    .map(|k| Arc::new(k) as Arc<dyn MemoryKind>)
            }),
            output: dense,
            exact_scores: precision == VectorPrecision::F32,
            exact_search: false,
            bits: 0,
            entries: 300,
        });
    }
    let inverted = InvertedIndexConfig::default();
    all.push(Subject {
        name: "inverted",
        make: Box::new(move || {
            Arc::new(InvertedKind::new(Embedder::SpladeKeyword, VOCAB, &inverted).expect("inverted"))
        }),
        reload: Box::new(|p| {
            InvertedKind::from_snapshot(Embedder::SpladeKeyword, VOCAB, &InvertedIndexConfig::default(), p)
                .map(|k| Arc::new(k) as Arc<dyn MemoryKind>)
        }),
        output: sparse,
        exact_scores: true,
        exact_search: true,
        bits: 0,
        entries: 300,
    });
    for (name, approximate, entries) in
        [("token-level exact", false, 300), ("token-level trained", true, TRAIN_AT + 200)]
    {
        let config = TokenLevelConfig { max_tokens: 16, dims_per_token: PER_TOKEN, approximate };
        let reload_config = config.clone();
        all.push(Subject {
            name,
            make: Box::new(move || {
                Arc::new(TokenLevelKind::new(Embedder::LateInteraction, &config, VectorPrecision::F32))
            }),
            reload: Box::new(move |p| {
                TokenLevelKind::from_snapshot(
                    Embedder::LateInteraction,
                    &reload_config,
                    VectorPrecision::F32,
                    &mut Reader(p),
                )
                .map(|k| Arc::new(k) as Arc<dyn MemoryKind>)
            }),
            output: tokens,
            exact_scores: true,
            exact_search: !approximate,
            bits: 0,
            entries,
        });
    }
    all.push(Subject {
        name: "binary",
        make: Box::new(|| Arc::new(BinaryKind::new(Embedder::Hdc, BITS))),
        reload: Box::new(|p| {
            BinaryKind::from_snapshot(Embedder::Hdc, BITS, p).map(|k| Arc::new(k) as Arc<dyn MemoryKind>)
        }),
        output: code,
        exact_scores: true,
        exact_search: true,
        bits: BITS,
        entries: 300,
    });
    all
}

/// Apply upserts of `items` to `index`, in batches of 50, doing any upkeep due at once.
fn upsert(index: &dyn MemoryKind, items: &[(Uuid, EmbedderOutput)]) {
    for batch in items.chunks(50) {
        let changes: Vec<_> = batch.iter().map(|(id, o)| IndexChange::Upsert(*id, o)).collect();
        index.apply(&changes).expect("apply");
    }
    if index.needs_upkeep() {
        index.upkeep(&AtomicBool::new(false)).expect("upkeep");
    }
}

/// The index holds exactly `model`: its count, `contains`, and a search for each entry's own
/// output, asked for everything, returns it; no search returns an id outside the model.
fn assert_holds(s: &Subject, index: &dyn MemoryKind, model: &BTreeMap<Uuid, EmbedderOutput>, ctx: &str) {
    assert_eq!(index.len(), model.len(), "{}: {ctx}: len", s.name);
    for (i, (id, out)) in model.iter().enumerate() {
        assert!(index.contains(*id), "{}: {ctx}: contains {id}", s.name);
        // Every entry is looked up in the small indices, a sample in the large ones.
        if model.len() > 400 && i % 7 != 0 {
            continue;
        }
        let hits = index.search(out, model.len(), None, Candidates::All).expect("search");
        assert!(
            hits.iter().any(|h| h.id == *id),
            "{}: {ctx}: a search for {id}'s own output misses it",
            s.name
        );
        for h in &hits {
            assert!(
                model.contains_key(&h.id),
                "{}: {ctx}: search returned {} which the index must not hold",
                s.name,
                h.id
            );
        }
    }
}

fn run(s: &Subject, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let index = (s.make)();
    let ids: Vec<Uuid> = (0..s.entries as u128).map(|i| Uuid::from_u128(i + 1)).collect();
    let items: Vec<(Uuid, EmbedderOutput)> = ids.iter().map(|&id| (id, (s.output)(&mut rng))).collect();
    let mut model: BTreeMap<Uuid, EmbedderOutput> = items.iter().cloned().collect();

    // Add.
    upsert(index.as_ref(), &items);
    assert_holds(s, index.as_ref(), &model, "after adding");

    // Search: sorted best first, at most the limit, above the threshold, exact where promised.
    let query = (s.output)(&mut rng);
    let hits = index.search(&query, 10, None, Candidates::All).expect("search");
    assert!(
        hits.len() <= 10 && !hits.is_empty(),
        "{}: a search of a full index returns up to its limit",
        s.name
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "{}: results are sorted best first", s.name);
    if s.exact_scores {
        for h in &hits {
            let exact = score(&query, &model[&h.id], s.bits).expect("comparable");
            assert!(
                (h.score - exact).abs() < 1e-4,
                "{}: score {} of {} is not the exact {exact}",
                s.name,
                h.score,
                h.id
            );
        }
    }
    if s.exact_search {
        let mut truth: Vec<(f32, Uuid)> =
            model.iter().filter_map(|(id, o)| Some((score(&query, o, s.bits)?, *id))).collect();
        truth.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let best = truth.first().map(|t| t.0).expect("truth");
        assert!(
            (hits[0].score - best).abs() < 1e-4,
            "{}: an exact index returns the best entry first",
            s.name
        );
    }
    let cut = hits[hits.len() / 2].score;
    let above = index.search(&query, 10, Some(cut), Candidates::All).expect("threshold search");
    assert!(above.iter().all(|h| h.score >= cut) && !above.is_empty(), "{}: threshold", s.name);
    assert!(
        index.search(&query, 0, None, Candidates::All).expect("limit 0").is_empty(),
        "{}: limit 0",
        s.name
    );
    let all = index.search(&query, usize::MAX, None, Candidates::All).expect("a limit past the index");
    assert!(all.len() <= model.len(), "{}: never more results than entries", s.name);

    // Filters: a predicate and an explicit list; nothing outside them is returned.
    let admit = |id: Uuid| id.as_u128().is_multiple_of(3);
    let filtered = index.search(&query, 10, None, Candidates::Matching(&admit)).expect("filtered");
    assert!(
        filtered.iter().all(|h| admit(h.id)),
        "{}: a filtered search returned an entry it does not admit",
        s.name
    );
    assert!(!filtered.is_empty(), "{}: a filter admitting a third of the entries finds some", s.name);
    let only: Vec<Uuid> = ids.iter().copied().filter(|id| id.as_u128() % 50 == 1).collect();
    let listed = index.search(&query, 10, None, Candidates::Only(&only)).expect("listed");
    assert!(listed.iter().all(|h| only.binary_search(&h.id).is_ok()), "{}: a listed search strayed", s.name);

    // Replace a third and remove a third.
    let mut changes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i % 3 == 0 {
            let out = (s.output)(&mut rng);
            model.insert(*id, out.clone());
            changes.push((*id, Some(out)));
        } else if i % 3 == 1 {
            model.remove(id);
            changes.push((*id, None));
        }
    }
    for batch in changes.chunks(40) {
        let c: Vec<IndexChange<'_>> = batch
            .iter()
            .map(|(id, o)| o.as_ref().map_or(IndexChange::Remove(*id), |o| IndexChange::Upsert(*id, o)))
            .collect();
        index.apply(&c).expect("apply changes");
    }
    index
        .apply(&[IndexChange::Remove(Uuid::from_u128(u128::MAX))])
        .expect("removing an absent id is no error");
    assert_holds(s, index.as_ref(), &model, "after replacing and removing");
    if s.exact_scores {
        // A replaced entry is scored by its new output.
        let (id, out) = model.iter().next().expect("an entry");
        let hits = index.search(out, model.len(), None, Candidates::All).expect("search");
        let hit = hits.iter().find(|h| h.id == *id).expect("found");
        let exact = score(out, out, s.bits).expect("comparable");
        assert!((hit.score - exact).abs() < 1e-4, "{}: a replaced entry keeps an old score", s.name);
    }

    // Upkeep and optimize leave the contents as they are.
    index.optimize().expect("optimize");
    if index.needs_upkeep() {
        index.upkeep(&AtomicBool::new(false)).expect("upkeep");
    }
    assert_holds(s, index.as_ref(), &model, "after optimize");

    // Snapshot round trip: the same contents, the same answers.
    let payload = index.snapshot_payload().expect("payload");
    let mut streamed = Vec::new();
    index.write_payload(&mut streamed).expect("streamed payload");
    assert_eq!(streamed, payload, "{}: the streamed payload is the in-memory one", s.name);
    let back = (s.reload)(&payload).unwrap_or_else(|e| panic!("{}: reload: {e}", s.name));
    assert_holds(s, back.as_ref(), &model, "after a snapshot round trip");
    for _ in 0..5 {
        let q = (s.output)(&mut rng);
        assert_eq!(
            back.search(&q, 10, None, Candidates::All).expect("search"),
            index.search(&q, 10, None, Candidates::All).expect("search"),
            "{}: the reloaded index answers differently",
            s.name
        );
    }
    assert!((s.reload)(&payload[..payload.len() / 2]).is_err(), "{}: half a payload is refused", s.name);

    // Clear.
    index.clear().expect("clear");
    assert_eq!(index.len(), 0, "{}: clear", s.name);
    assert!(
        index.search(&query, 10, None, Candidates::All).expect("search").is_empty(),
        "{}: cleared",
        s.name
    );
}

#[test]
fn every_index_kind_conforms() {
    let seed = std::env::var("TELEO_CONFORMANCE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(11);
    for subject in subjects() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&subject, seed)));
        if let Err(panic) = outcome {
            eprintln!("conformance of {} failed with seed {seed} (TELEO_CONFORMANCE_SEED)", subject.name);
            std::panic::resume_unwind(panic);
        }
    }
}
