//! Where fused search loses recall against the exhaustive fusion, and what deeper candidate
//! lists buy. For the dataset's first queries, every record's exact score in every embedder
//! (kept in a cache file: at 100,000 records it takes minutes), then
//!
//! - offline, from those exact scores alone: the recall@10 of RRF and of the weighted mean
//!   when the candidates are the union of each embedder's exact top `L`, with the ranks below
//!   an embedder's list known exactly, estimated as the store estimates them (after the list,
//!   in the order of the union's other members), estimated from a fixed sample of rows, or
//!   not estimated at all (every unlisted candidate at `L + 1`, or no term, as most hybrid
//!   searches fuse); and the same with a depth per kind of index;
//! - online: the store's own fused searches with each `fusion_depth` given, their recall and
//!   mean time.
//!
//! `cargo build --release --workspace --examples`, then
//! `$CARGO_TARGET_DIR/release/examples/fused_recall --store DIR --data DATASET [--queries 50]
//! [--cache FILE] [--depths 30,100] [--offline-only]`. The store is one made by `teleo import`
//! of the dataset.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Instant;

use context_graph_core::teleology::{ComparisonType, Embedder, EmbedderDims, EmbedderWeights, DEFAULT_RRF_K};
use context_graph_datagen::Dataset;
use context_graph_storage::{IndexedTeleologicalStore, RocksDbTeleologicalStore, StoreConfig};
use uuid::Uuid;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Every record's exact score in every embedder, per query: `[query][embedder][row]`.
type Exact = Vec<Vec<Vec<f32>>>;

fn exact_scores(
    ds: &Dataset,
    embedders: &[Embedder],
    queries: usize,
) -> Result<Exact, Box<dyn std::error::Error>> {
    let qs = ds.queries()?;
    let qs = &qs[..queries.min(qs.len())];
    let mut out: Exact = vec![Vec::new(); qs.len()];
    for &e in embedders {
        let started = Instant::now();
        let column = ds.column(e)?;
        let half = qs.len().div_ceil(2).max(1);
        let scored: Vec<Vec<f32>> = std::thread::scope(|s| {
            let parts: Vec<_> = qs
                .chunks(half)
                .map(|part| {
                    let column = &column;
                    s.spawn(move || part.iter().map(|q| column.all_scores(q.get(e))).collect::<Vec<_>>())
                })
                .collect();
            parts.into_iter().flat_map(|p| p.join().expect("scoring thread")).collect()
        });
        for (q, scores) in scored.into_iter().enumerate() {
            out[q].push(scores);
        }
        eprintln!("{e}: exact scores in {:.1?}", started.elapsed());
    }
    Ok(out)
}

fn save(path: &str, exact: &Exact) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (q, e, n) = (exact.len(), exact[0].len(), exact[0][0].len());
    for v in [q, e, n] {
        f.write_all(&(v as u64).to_le_bytes())?;
    }
    for per in exact {
        for scores in per {
            for s in scores {
                f.write_all(&s.to_le_bytes())?;
            }
        }
    }
    f.flush()
}

fn load(path: &str) -> std::io::Result<Exact> {
    let mut raw = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut raw)?;
    let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
    let (q, e, n) = (word(0), word(1), word(2));
    let floats: Vec<f32> =
        raw[24..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Ok((0..q)
        .map(|qi| (0..e).map(|ei| floats[(qi * e + ei) * n..(qi * e + ei + 1) * n].to_vec()).collect())
        .collect())
}

/// One query's exact scores in each embedder, with each embedder's rows best first (ties by
/// row) and each row's 1-based rank.
struct Query<'a> {
    scores: &'a [Vec<f32>],
    order: Vec<Vec<u32>>,
    rank: Vec<Vec<u32>>,
    /// Each embedder's weight (equal).
    w: f32,
}

impl<'a> Query<'a> {
    fn new(scores: &'a [Vec<f32>]) -> Self {
        let (mut order, mut rank) = (Vec::new(), Vec::new());
        for s in scores {
            let mut o: Vec<u32> = (0..s.len() as u32).collect();
            o.sort_unstable_by(|&a, &b| s[b as usize].total_cmp(&s[a as usize]).then(a.cmp(&b)));
            let mut r = vec![0u32; s.len()];
            for (i, &row) in o.iter().enumerate() {
                r[row as usize] = i as u32 + 1;
            }
            order.push(o);
            rank.push(r);
        }
        Self { scores, order, rank, w: 1.0 / scores.len() as f32 }
    }

    fn rows(&self) -> usize {
        self.scores[0].len()
    }

    fn term(&self, rank: f32) -> f32 {
        self.w / (DEFAULT_RRF_K as f32 + rank)
    }

    fn rrf_reference(&self) -> Vec<u32> {
        top10((0..self.rows() as u32).map(|row| (row, self.rrf_exact(row))))
    }

    fn mean_reference(&self) -> Vec<u32> {
        top10((0..self.rows() as u32).map(|row| (row, self.mean(row))))
    }

    fn rrf_exact(&self, row: u32) -> f32 {
        self.rank.iter().map(|r| self.term(r[row as usize] as f32)).sum()
    }

    fn mean(&self, row: u32) -> f32 {
        self.scores.iter().map(|s| self.w * s[row as usize]).sum()
    }

    /// The union of each embedder's top `depth[e]`, ascending.
    fn union(&self, depth: &[usize]) -> Vec<u32> {
        let mut u: Vec<u32> =
            self.order.iter().zip(depth).flat_map(|(o, &d)| o[..d.min(o.len())].iter().copied()).collect();
        u.sort_unstable();
        u.dedup();
        u
    }

    /// The store's rule in embedder `e`: a listed candidate keeps its rank, the others follow
    /// the list in the order of their scores (a lower bound of their true rank).
    fn after_list(&self, e: usize, union: &[u32], depth: usize) -> Vec<f32> {
        let (rank, s) = (&self.rank[e], &self.scores[e]);
        let mut rest: Vec<usize> =
            (0..union.len()).filter(|&i| rank[union[i] as usize] as usize > depth).collect();
        rest.sort_by(|&a, &b| s[union[b] as usize].total_cmp(&s[union[a] as usize]));
        let mut est: Vec<f32> = union.iter().map(|&row| rank[row as usize] as f32).collect();
        for (r, &i) in rest.iter().enumerate() {
            est[i] = (depth + r + 1) as f32;
        }
        est
    }

    /// RRF's top 10 over the union of the lists of `depth`, unlisted candidates ranked by `rule`.
    fn fused(&self, depth: &[usize], rule: Rule) -> Vec<u32> {
        let union = self.union(depth);
        let mut total = vec![0.0f32; union.len()];
        for (e, &d) in depth.iter().enumerate() {
            let listed = |row: u32| self.rank[e][row as usize] as usize <= d;
            let ranks: Vec<Option<f32>> = match rule {
                Rule::Exact => union.iter().map(|&row| Some(self.rank[e][row as usize] as f32)).collect(),
                Rule::AfterList => self.after_list(e, &union, d).into_iter().map(Some).collect(),
                Rule::AtDepth => union
                    .iter()
                    .map(|&row| {
                        Some(if listed(row) { self.rank[e][row as usize] as f32 } else { (d + 1) as f32 })
                    })
                    .collect(),
                Rule::NoTerm => {
                    union.iter().map(|&row| listed(row).then(|| self.rank[e][row as usize] as f32)).collect()
                }
            };
            for (t, r) in total.iter_mut().zip(ranks) {
                *t += r.map_or(0.0, |r| self.term(r));
            }
        }
        top10(union.iter().zip(&total).map(|(&row, &s)| (row, s)))
    }

    /// RRF's top 10 over the union of the top `depth` lists, a rank below a list estimated
    /// from the sample `rows` (its quantile's rank, interpolated in score between sample
    /// points and the list's tail), never below the store's lower bound.
    fn fused_sampled(&self, depth: usize, rows: &[u32]) -> Vec<u32> {
        let n = self.rows();
        let union = self.union(&vec![depth; self.scores.len()]);
        let mut total = vec![0.0f32; union.len()];
        for e in 0..self.scores.len() {
            let s = &self.scores[e];
            let tail = s[self.order[e][depth.min(n) - 1] as usize];
            let mut sample: Vec<f32> = rows.iter().map(|&r| s[r as usize]).collect();
            sample.sort_by(|a, b| b.total_cmp(a));
            let above = sample.iter().filter(|&&x| x >= tail).count();
            let mut anchors = vec![(tail, depth as f32)];
            for (j, &x) in sample.iter().enumerate().skip(above) {
                let r = (n as f32 * (j + 1) as f32 / rows.len() as f32)
                    .max(anchors.last().map_or(0.0, |a| a.1) + 1.0);
                anchors.push((x, r));
            }
            anchors.push((f32::NEG_INFINITY, n as f32));
            let bound = self.after_list(e, &union, depth);
            for (i, &row) in union.iter().enumerate() {
                let exact = self.rank[e][row as usize] as usize;
                let est = if exact <= depth {
                    exact as f32
                } else {
                    let x = s[row as usize];
                    let k = anchors.iter().position(|a| a.0 < x).unwrap_or(anchors.len() - 1).max(1);
                    let (hi, lo) = (anchors[k - 1], anchors[k]);
                    if lo.0.is_finite() && hi.0 > lo.0 {
                        hi.1 + (lo.1 - hi.1) * (hi.0 - x) / (hi.0 - lo.0)
                    } else {
                        lo.1
                    }
                };
                total[i] += self.term(est.max(bound[i]));
            }
        }
        top10(union.iter().zip(&total).map(|(&row, &s)| (row, s)))
    }

    /// The weighted mean's top 10 over the union of the top `depth` lists, scored exactly.
    fn mean_over(&self, depth: usize) -> Vec<u32> {
        top10(self.union(&vec![depth; self.scores.len()]).into_iter().map(|row| (row, self.mean(row))))
    }
}

/// How the rank of a candidate below an embedder's list is taken.
#[derive(Clone, Copy)]
enum Rule {
    Exact,
    AfterList,
    AtDepth,
    NoTerm,
}

fn top10(total: impl Iterator<Item = (u32, f32)>) -> Vec<u32> {
    let mut all: Vec<(u32, f32)> = total.collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.into_iter().take(10).map(|(r, _)| r).collect()
}

fn overlap(a: &[u32], b: &[u32]) -> f64 {
    a.iter().filter(|x| b.contains(x)).count() as f64 / b.len().max(1) as f64
}

/// `size` distinct pseudo-random rows of `n` (all of them when `size >= n`).
fn sample_rows(size: usize, n: usize) -> Vec<u32> {
    if size >= n {
        return (0..n as u32).collect();
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rows: Vec<u32> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as u32
        })
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

fn print_table(title: &str, columns: &[String], rows: &[(String, Vec<f64>)], queries: usize) {
    println!("\n{title}\n| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
    for (name, sums) in rows {
        let cells: Vec<String> = sums.iter().map(|s| format!("{:.3}", s / queries as f64)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store_dir = arg("--store").ok_or("--store DIR is required")?;
    let data = arg("--data").ok_or("--data DATASET is required")?;
    let queries: usize = arg("--queries").map_or(Ok(50), |s| s.parse())?;
    let online_depths: Vec<usize> = arg("--depths")
        .unwrap_or_else(|| "30,100".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let ds = Dataset::open(std::path::Path::new(&data))?;
    let embedders: Vec<Embedder> = ds.embedders().collect();
    let exact = match arg("--cache") {
        Some(path) if std::path::Path::new(&path).exists() => load(&path)?,
        cache => {
            let exact = exact_scores(&ds, &embedders, queries)?;
            if let Some(path) = cache {
                save(&path, &exact)?;
            }
            exact
        }
    };
    let n = exact[0][0].len();

    // Offline tables: recall sums per row and column.
    let depths = [10usize, 20, 30, 50, 100, 200];
    let mut uniform: Vec<(String, Vec<f64>)> = depths.iter().map(|d| (d.to_string(), vec![0.0; 5])).collect();
    let samples = [256usize, 1024, 4096, usize::MAX];
    let sample_sets: Vec<Vec<u32>> = samples.iter().map(|&s| sample_rows(s, n)).collect();
    let mut sampled: Vec<(String, Vec<f64>)> =
        depths.iter().map(|d| (d.to_string(), vec![0.0; samples.len()])).collect();
    // (dense, sparse, binary, token-level) depths.
    let kinds = [
        (30, 30, 30, 30),
        (100, 100, 100, 30),
        (100, 100, 100, 10),
        (100, 50, 100, 10),
        (100, 30, 300, 20),
        (50, 100, 100, 30),
        (200, 200, 200, 30),
    ];
    let depth_of = |(dense, sparse, binary, token): (usize, usize, usize, usize)| -> Vec<usize> {
        embedders
            .iter()
            // By the dataset's own slot kinds, so that another roster runs unchanged.
            .map(|&e| match ds.schema().get(e) {
                EmbedderDims::TokenLevel { .. } => token,
                EmbedderDims::Sparse { .. } => sparse,
                EmbedderDims::Binary { .. } => binary,
                EmbedderDims::Dense(_) => dense,
            })
            .collect()
    };
    let mut by_kind: Vec<(String, Vec<f64>)> =
        kinds.iter().map(|k| (format!("{} / {} / {} / {}", k.0, k.1, k.2, k.3), vec![0.0; 3])).collect();
    let (mut reference_rrf, mut reference_mean) = (Vec::new(), Vec::new());
    for per in &exact {
        let q = Query::new(per);
        let (rrf_ref, mean_ref) = (q.rrf_reference(), q.mean_reference());
        for (d, &depth) in depths.iter().enumerate() {
            let all = vec![depth; embedders.len()];
            let row = &mut uniform[d].1;
            for (c, rule) in
                [Rule::Exact, Rule::AfterList, Rule::AtDepth, Rule::NoTerm].into_iter().enumerate()
            {
                row[c] += overlap(&q.fused(&all, rule), &rrf_ref);
            }
            row[4] += overlap(&q.mean_over(depth), &mean_ref);
            for (s, rows) in sample_sets.iter().enumerate() {
                sampled[d].1[s] += overlap(&q.fused_sampled(depth, rows), &rrf_ref);
            }
        }
        for (k, &kind) in kinds.iter().enumerate() {
            for (c, rule) in [Rule::AfterList, Rule::AtDepth, Rule::NoTerm].into_iter().enumerate() {
                by_kind[k].1[c] += overlap(&q.fused(&depth_of(kind), rule), &rrf_ref);
            }
        }
        reference_rrf.push(rrf_ref);
        reference_mean.push(mean_ref);
    }
    let nq = exact.len();
    println!("{nq} queries, {n} records; recall@10 against the exhaustive fusion by the same rule");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    print_table(
        "Candidates: the union of each embedder's exact top L. Ranks below a list:",
        &s(&[
            "L",
            "RRF, exact",
            "RRF, after the list (the store's)",
            "RRF, all at L + 1",
            "RRF, no term",
            "weighted mean, exact scores",
        ]),
        &uniform,
        nq,
    );
    let mut cols = s(&["L"]);
    cols.extend(samples.iter().map(|&x| if x >= n { "every row".into() } else { format!("sample of {x}") }));
    print_table(
        "RRF, ranks below a list estimated from a sample of rows (never below the store's bound):",
        &cols,
        &sampled,
        nq,
    );
    print_table(
        "RRF, a depth per kind of index:",
        &s(&["dense / sparse / binary / token-level", "after the list", "all at depth + 1", "no term"]),
        &by_kind,
        nq,
    );
    if arg("--offline-only").is_some() {
        return Ok(());
    }

    // Online: the store's own fused searches, one store open per depth.
    let raw = std::fs::read(std::path::Path::new(&data).join("ids.bin"))?;
    let ids: Vec<Uuid> = raw.chunks_exact(16).map(Uuid::from_slice).collect::<Result<_, _>>()?;
    let row_of: HashMap<Uuid, u32> = ids.iter().enumerate().map(|(r, &id)| (id, r as u32)).collect();
    let qs = ds.queries()?;
    let mut weights = [0.0f32; Embedder::COUNT];
    for e in &embedders {
        weights[e.index()] = 1.0 / embedders.len() as f32;
    }
    let weighted = ComparisonType::WeightedFull(EmbedderWeights::new(weights)?);
    println!("\nThe store's fused search, {nq} queries one at a time after one warm-up pass");
    println!(
        "| fusion_depth | RRF recall | RRF mean | weighted recall | weighted mean |\n|---|---|---|---|---|"
    );
    for &fusion_depth in &online_depths {
        let schema = RocksDbTeleologicalStore::persisted_schema(&store_dir)?.ok_or("no store there")?;
        let store = RocksDbTeleologicalStore::open(
            &store_dir,
            StoreConfig { schema, fusion_depth, ..StoreConfig::default() },
        )?;
        let mut row = format!("| {fusion_depth} |");
        for (comparison, reference) in
            [(ComparisonType::rrf(), &reference_rrf), (weighted.clone(), &reference_mean)]
        {
            for q in &qs[..nq] {
                store.search(q, &comparison, None, 10).await?;
            }
            let started = Instant::now();
            let mut recall = 0.0;
            for (q, want) in qs.iter().zip(reference) {
                let hits = store.search(q, &comparison, None, 10).await?;
                let got: Vec<u32> = hits.iter().filter_map(|h| row_of.get(&h.id).copied()).collect();
                recall += overlap(&got, want);
            }
            row += &format!(" {:.3} | {:.2?} |", recall / nq as f64, started.elapsed() / nq as u32);
        }
        println!("{row}");
        store.close()?;
    }
    Ok(())
}
