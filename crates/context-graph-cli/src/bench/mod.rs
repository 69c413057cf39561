//! `teleo bench`: measure a store on a dataset in the benchmark layout.
//!
//! The steps, in order: obtain the dataset (given, or generated in a child process); create a
//! store with the dataset's schema; ingest every record; time `get`; for each embedder with
//! ground truth, sweep ef (graph indices) to the target recall and time searches there; close,
//! measure the directory, reopen and time the first search answer; optionally reopen with other
//! index precisions (indices rebuilt) and measure the graph indices again; read the peak RSS.
//! Nothing assumes the default roster: the embedders come from the dataset's `meta.json`.

mod baseline;
pub mod cluster;
mod dataset;
mod fused;
pub mod http;
mod latency;
mod report;
mod search;
mod system;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use context_graph_core::teleology::{Embedder, EmbedderOutput};
use context_graph_datagen::Dataset;
use context_graph_storage::{
    Durability, IndexOpenMode, IndexType, RocksDbTeleologicalStore, StoreConfig, TeleologicalArrayStore,
    VectorPrecision,
};
use uuid::Uuid;

use crate::commands::import::open_dataset;
use crate::commands::Ctx;
use crate::load::{load, DEFAULT_BATCH};
use crate::{disk, open, progress};
use latency::Latencies;
use search::SearchResult;

/// Default number of generated arrays: about a minute of ingest on 2 cores with the default
/// roster, so that the whole run takes a few minutes.
pub const DEFAULT_N: usize = 5_000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Run on this dataset directory (the layout of `teleo gen`, any roster) instead of
    /// generating one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["n", "schema", "queries"])]
    pub data: Option<PathBuf>,

    /// Arrays to generate when no --data is given.
    #[arg(long, default_value_t = DEFAULT_N)]
    pub n: usize,

    /// Queries to generate when no --data is given.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,

    /// Seed of the generated dataset (and of the ids `get` is timed on).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Schema of the generated dataset (JSON or TOML); the default roster when omitted.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,

    /// Recall is measured at this k (recall@k), capped by the dataset's ground-truth depth.
    #[arg(long, default_value_t = 10)]
    pub k: usize,

    /// The recall@k the ef sweep of graph indices aims for.
    #[arg(long, default_value_t = 0.95)]
    pub target: f64,

    /// Arrays per commit while ingesting (1..=1000).
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = crate::load::parse_batch)]
    pub batch: usize,

    /// Number of `get` calls timed.
    #[arg(long, default_value_t = 1000)]
    pub gets: usize,

    /// Searches timed per embedder for latency, and again for throughput (cycling through the
    /// queries; cut short after 5 s).
    #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub searches: usize,

    /// Directory for the temporary dataset and store (deleted afterwards); the system's
    /// temporary directory by default. Put it on the disk you want to measure.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Durability while ingesting: `buffered` (WAL without fsync per commit; one fsync of the
    /// WAL at the end, inside the timed ingest) or `sync` (fsync per commit).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Buffered)]
    pub durability: DurabilityArg,

    /// Precision the dense and token-level indices hold their vectors at (f32, f16, i8);
    /// the store's default (i8) when omitted. Results are rescored exactly below f32.
    #[arg(long, value_name = "P", value_parser = parse_precision)]
    pub precision: Option<VectorPrecision>,

    /// Also measure these precisions (comma-separated): after the main run the store is
    /// reopened with each, its dense and token-level indices are rebuilt from the stored
    /// arrays (timed), and those embedders' recall, latency and index memory are measured.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_precision)]
    pub compare_precisions: Vec<VectorPrecision>,

    /// Candidates each embedder proposes to a fused search, per result asked for
    /// (`StoreConfig::search_overfetch`); the store's default (3) when omitted. Deeper lists
    /// rank more of the exhaustive fusion's results, at the cost of scoring them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    pub overfetch: Option<u64>,

    /// The shortest list a fusion over several embedders asks of each index but the
    /// token-level one (`StoreConfig::fusion_depth`); the store's default (100) when omitted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=30000))]
    pub fusion_depth: Option<u64>,

    /// Queries whose fused results are compared with the exhaustive fusion (every record
    /// scored in every embedder, then fused by the same rule: the cost of 13 brute-force
    /// scans per query); 0 skips the comparison.
    #[arg(long, default_value_t = 50)]
    pub fused_reference_queries: usize,

    /// Skip the bare-index baseline (a usearch index of the first dense embedder's vectors,
    /// same graph settings, precision and search breadth as the store's, built and searched
    /// in the same run; the store's p50 is reported as a ratio to it).
    #[arg(long)]
    pub skip_baseline: bool,

    /// Arrays per commit of the writer that runs while search latency under writes is
    /// measured (it stores existing arrays again, continuously).
    #[arg(long, default_value_t = 64)]
    pub writer_batch: usize,
}

/// `--durability` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    Buffered,
    Sync,
}

impl DurabilityArg {
    fn durability(self) -> Durability {
        match self {
            DurabilityArg::Buffered => Durability::Buffered,
            DurabilityArg::Sync => Durability::Sync,
        }
    }
}

fn parse_precision(s: &str) -> Result<VectorPrecision, String> {
    s.parse()
}

/// The graph indices (dense and token-level) measured at one precision.
pub struct PrecisionResult {
    pub precision: VectorPrecision,
    /// The main run: the reopen; other precisions: the open that rebuilt the indices.
    pub open: Duration,
    pub rebuilt: bool,
    /// Memory of the dense and token-level indices together.
    pub memory_bytes: usize,
    /// Peak RSS of the process while this precision was measured (its rebuild and searches);
    /// for the main run, the peak of the whole run up to the reopen.
    pub peak_rss: Option<u64>,
    pub searches: Vec<SearchResult>,
}

/// Everything one run measured.
pub struct BenchResults {
    pub source: String,
    pub n: usize,
    pub queries: usize,
    pub roster: Vec<String>,
    pub generation: Option<Duration>,
    pub ingest: Duration,
    /// Background index work (centroid training, graph rebuilds) still running when the
    /// ingest ended, waited for before the searches.
    pub upkeep_after_ingest: Duration,
    /// `StoreConfig::rescore_factor`: reduced-precision indices walk at least this many times
    /// the limit.
    pub rescore_factor: usize,
    pub batch: usize,
    pub durability: DurabilityArg,
    /// Memory of every index after ingest, per embedder (from the store's statistics).
    pub index_memory: Vec<(Embedder, IndexType, usize)>,
    pub precisions: Vec<PrecisionResult>,
    pub raw_bytes: u64,
    pub disk_data: u64,
    pub disk_indices: u64,
    pub disk_total: u64,
    /// Peak RSS up to the end of the searches (ingest and search only).
    pub peak_rss_serving: Option<u64>,
    /// Peak RSS of the whole run up to the reopen, including close and the in-process reopen.
    pub peak_rss: Option<u64>,
    pub get: Latencies,
    pub k: usize,
    pub target: f64,
    pub searches: Vec<SearchResult>,
    pub skipped: Vec<(Embedder, String)>,
    /// Fused search (RRF over every embedder) and namespace-filtered recall.
    pub fused: Option<fused::FusedResult>,
    /// The bare usearch index beside the store's first dense embedder.
    pub baseline: Option<baseline::Baseline>,
    /// The first embedder's search latency while a writer commits batches continuously, the
    /// commits it made meanwhile, and the writer's batch size.
    pub under_writes: Option<(Embedder, Latencies, usize, usize)>,
    /// A fresh `teleo` process: open the closed store, answer one search, exit.
    pub fresh_process: Option<Duration>,
    pub close: Duration,
    pub reopen: Duration,
    pub reopen_embedder: Embedder,
    /// Open modes of the indices after the reopen, in a few words each, with their counts.
    pub reopen_modes: Vec<(String, usize)>,
    pub total: Duration,
}

pub async fn run(ctx: &Ctx, args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let source = dataset::obtain(
        args.data.as_deref(),
        dataset::GenRequest {
            n: args.n,
            queries: args.queries,
            seed: args.seed,
            schema: args.schema.as_deref(),
            work_dir: &work_dir,
        },
    )?;
    let ds = open_dataset(&source.dir)?;
    let store_dir = tempfile::Builder::new()
        .prefix("teleo-bench-store-")
        .tempdir_in(&work_dir)
        .with_context(|| format!("cannot create a directory in {}", work_dir.display()))?;
    let mut results = measure(&ds, &source.dir, store_dir.path().to_path_buf(), &args).await?;
    results.source = match &source.generated {
        Some(_) => format!("generated (seed {})", args.seed),
        None => source.dir.display().to_string(),
    };
    results.generation = source.generated.as_ref().map(|(_, t)| *t);
    results.total = started.elapsed();
    if ctx.json {
        report::print_json(&results)
    } else {
        report::print_table(&results);
        Ok(())
    }
}

async fn measure(ds: &Dataset, dir: &Path, path: PathBuf, args: &BenchArgs) -> anyhow::Result<BenchResults> {
    let schema = ds.schema().clone();
    let n = ds.meta().n;
    let precision = args.precision.unwrap_or(context_graph_storage::DEFAULT_VECTOR_PRECISION);
    let overfetch = args.overfetch.map_or(StoreConfig::default().search_overfetch, |n| n as usize);
    let fusion_depth = args.fusion_depth.map_or(StoreConfig::default().fusion_depth, |n| n as usize);
    let config = |durability: Durability, precision: VectorPrecision, create: bool| StoreConfig {
        create_if_missing: create,
        durability,
        schema: schema.clone(),
        vector_precision: [precision; Embedder::COUNT],
        search_overfetch: overfetch,
        fusion_depth,
        ..StoreConfig::default()
    };
    if open::existing_schema(&path).is_ok() {
        return Err(anyhow!("{} already holds a store", path.display()));
    }
    let store = Arc::new(open::open_config(&path, config(args.durability.durability(), precision, true))?);

    // Ingest: the clock stops when the last commit has returned (every index answers for it)
    // and the data is durable (each commit fsynced, or one WAL fsync at the end).
    let records = ds.records().map_err(|e| anyhow!("dataset: {e}"))?.map(|r| r.map_err(anyhow::Error::from));
    let pb = progress::bar(Some(n as u64), "ingesting");
    let started = Instant::now();
    let loaded = load(&store, &path, records, args.batch, true, &pb).await?;
    if args.durability == DurabilityArg::Buffered {
        store.sync().map_err(|e| open::explain(e, &path))?;
    }
    let ingest = started.elapsed();
    pb.finish_and_clear();
    // Centroid training and graph rebuilds run beside the commits; searches are measured on
    // the finished indices.
    let t = Instant::now();
    store.wait_for_upkeep();
    let upkeep_after_ingest = t.elapsed();
    let index_memory =
        store.stats().await?.indices.iter().map(|i| (i.embedder, i.index_type, i.memory_bytes)).collect();

    let get = latency::measure_get(&store, &loaded.ids, args.gets, args.seed).await?;

    let workload::Plan { workloads, skipped, k } = workload::plan(ds, dir, &loaded.ids, args.k)?;
    let pb = progress::bar(Some(workloads.len() as u64), "searching");
    let mut searches = Vec::new();
    for w in &workloads {
        pb.set_message(format!("searching {}", w.embedder.short_name()));
        searches.push(search::measure(&store, w.clone(), args.target, args.searches).await?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    // Ingest and search are done: their peak, before the measurements that load dataset
    // columns into this process (the baseline, the exhaustive fusion), and before close and
    // the in-process reopen add theirs (the freed store's memory is kept by the allocator
    // while the reopen allocates).
    let peak_rss_serving = system::peak_rss_bytes();
    let baseline = match searches.iter().zip(&workloads).find(|(s, _)| s.index_type == IndexType::Hnsw) {
        Some((s, w)) if !args.skip_baseline => {
            let pb = progress::bar(None, &format!("bare usearch baseline of {}", w.embedder.short_name()));
            let b = baseline::measure(
                ds,
                w,
                &loaded.ids,
                baseline::StoreSide { precision, ef: s.ef.unwrap_or(1), p50: s.latency.p50 },
                args.searches,
                search::TIME_BUDGET,
            )?;
            pb.finish_and_clear();
            Some(b)
        }
        _ => None,
    };
    let under_writes = match workloads.first() {
        Some(w) => {
            let pb =
                progress::bar(None, &format!("searching {} while a writer commits", w.embedder.short_name()));
            let (latency, commits) =
                search::under_writes(&store, w, &loaded.ids, args.writer_batch, args.searches).await?;
            pb.finish_and_clear();
            Some((w.embedder, latency, commits, args.writer_batch))
        }
        None => None,
    };
    let queries = ds.queries().map_err(|e| anyhow!("dataset: {e}"))?;
    let fused = fused::measure(
        &store,
        ds,
        &loaded.ids,
        &queries,
        k,
        (overfetch, fusion_depth),
        args.fused_reference_queries,
    )
    .await?;

    let t = Instant::now();
    let store = Arc::try_unwrap(store).map_err(|_| anyhow!("the store is still in use"))?;
    open::close(store, &path)?;
    let close = t.elapsed();
    let disk_data = disk::dir_bytes(&path.join("data"))?;
    let disk_total = disk::dir_bytes(&path)?;

    // Reopen to the first answer: what a restarted process waits before it can serve.
    let first = workloads.first();
    let reopen_embedder = first.map_or(Embedder::Semantic, |w| w.embedder);
    let t = Instant::now();
    let store = open::open_config(&path, config(Durability::Sync, precision, false))?;
    let query = match first {
        Some(w) => w.queries[0].clone(),
        None => own_query(&store, &loaded.ids, reopen_embedder).await?,
    };
    store.index(reopen_embedder).search(&query, args.k, None).await?;
    let reopen = t.elapsed();
    let stats = store.stats().await?;
    open::close(store, &path)?;
    let fresh_process = fresh_process_search(&path, reopen_embedder, &loaded.ids, args.k)?;

    let graph_memory = |stats: &context_graph_storage::StorageStats| -> usize {
        stats
            .indices
            .iter()
            .filter(|i| matches!(i.index_type, IndexType::Hnsw | IndexType::TokenLevel))
            .map(|i| i.memory_bytes)
            .sum()
    };
    let is_graph = |w: &&Arc<workload::Workload>| {
        matches!(schema.get(w.embedder).kind(), context_graph_core::teleology::EmbedderKind::Dense)
            || matches!(
                schema.get(w.embedder).kind(),
                context_graph_core::teleology::EmbedderKind::TokenLevel
            )
    };
    // The run's peak, before any comparison (whose rebuilds hold other precisions) counts.
    let peak_rss = system::peak_rss_bytes();
    let mut precisions = vec![PrecisionResult {
        peak_rss,
        precision,
        open: reopen,
        rebuilt: false,
        memory_bytes: graph_memory(&stats),
        searches: searches
            .iter()
            .filter(|s| matches!(s.index_type, IndexType::Hnsw | IndexType::TokenLevel))
            .map(SearchResult::clone)
            .collect(),
    }];
    for &p in args.compare_precisions.iter().filter(|&&p| p != precision) {
        let reset = system::reset_peak_rss();
        let pb = progress::bar(None, &format!("rebuilding indices at {p}"));
        let t = Instant::now();
        let store = Arc::new(open::open_config(&path, config(Durability::Sync, p, false))?);
        let open_time = t.elapsed();
        pb.finish_and_clear();
        let memory_bytes = graph_memory(&store.stats().await?);
        let pb = progress::bar(None, &format!("searching at {p}"));
        let mut measured = Vec::new();
        for w in workloads.iter().filter(is_graph) {
            measured.push(search::measure(&store, w.clone(), args.target, args.searches).await?);
        }
        pb.finish_and_clear();
        let store = Arc::try_unwrap(store).map_err(|_| anyhow!("the store is still in use"))?;
        open::close(store, &path)?;
        let peak_rss = if reset { system::peak_rss_bytes() } else { None };
        precisions.push(PrecisionResult {
            precision: p,
            open: open_time,
            rebuilt: true,
            memory_bytes,
            peak_rss,
            searches: measured,
        });
    }

    let mut reopen_modes: Vec<(String, usize)> = Vec::new();
    for i in &stats.indices {
        let mode = match &i.open_mode {
            IndexOpenMode::Rebuilt { .. } => "rebuilt".to_owned(),
            m => crate::commands::inspect::open_mode(m),
        };
        match reopen_modes.iter_mut().find(|(m, _)| *m == mode) {
            Some((_, c)) => *c += 1,
            None => reopen_modes.push((mode, 1)),
        }
    }
    Ok(BenchResults {
        source: String::new(),
        n,
        queries: ds.meta().queries,
        roster: ds.embedders().map(|e| format!("{} {}", e.short_name(), ds.schema().get(e))).collect(),
        generation: None,
        ingest,
        upkeep_after_ingest,
        rescore_factor: StoreConfig::default().rescore_factor,
        batch: args.batch,
        durability: args.durability,
        index_memory,
        precisions,
        raw_bytes: loaded.raw_bytes,
        disk_data,
        disk_indices: disk_total - disk_data,
        disk_total,
        peak_rss_serving,
        peak_rss,
        get,
        k,
        target: args.target,
        searches,
        skipped,
        fused,
        baseline,
        under_writes,
        fresh_process,
        close,
        reopen,
        reopen_embedder,
        reopen_modes,
        total: Duration::ZERO,
    })
}

/// A stored array's own output, as a query when the dataset has no usable queries.
async fn own_query(
    store: &RocksDbTeleologicalStore,
    ids: &[Uuid],
    e: Embedder,
) -> anyhow::Result<EmbedderOutput> {
    let id = ids.first().ok_or_else(|| anyhow!("the dataset has no records"))?;
    Ok(store.retrieve(*id).await?.get(e).clone())
}

/// Time a fresh `teleo` process that opens the closed store at `path`, answers one search of
/// `e` (like a stored array) and exits: what a restarted server waits before its first answer,
/// process start and exit included. `None` when the current executable cannot be found.
fn fresh_process_search(
    path: &Path,
    e: Embedder,
    ids: &[Uuid],
    k: usize,
) -> anyhow::Result<Option<Duration>> {
    let (Ok(exe), Some(id)) = (std::env::current_exe(), ids.first()) else {
        return Ok(None);
    };
    let t = Instant::now();
    let out = std::process::Command::new(exe)
        .arg("--db")
        .arg(path)
        .args([
            "search",
            "--embedder",
            e.short_name(),
            "--like",
            &id.to_string(),
            "-k",
            &k.to_string(),
            "--json",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .context("starting a fresh teleo process")?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(anyhow!(
            "the fresh teleo process failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Some(elapsed))
}
