//! Search measurements of one embedder: recall@k against the exact ground truth, the ef sweep
//! of graph indices, then latency percentiles and throughput at the chosen setting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use context_graph_core::teleology::Embedder;
use context_graph_storage::{IndexType, RocksDbTeleologicalStore};
use tokio::task::JoinSet;

use super::latency::Latencies;
use super::workload::Workload;

/// ef values tried in turn, smallest first; the sweep stops at the first that reaches the
/// recall target.
const EF_LADDER: [usize; 12] = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024];

/// Stop adding timed searches after this long (very slow indices still get one pass).
pub const TIME_BUDGET: Duration = Duration::from_secs(5);

/// What the benchmark measured for one embedder.
#[derive(Clone)]
pub struct SearchResult {
    pub embedder: Embedder,
    pub index_type: IndexType,
    /// The search breadth the chosen setting really walks with (`search_breadth`: the ef
    /// set, or the candidates the rescoring of a reduced-precision index asks for, if more);
    /// `None` for exact indices, which have no search breadth.
    pub ef: Option<usize>,
    pub recall: f64,
    pub target_met: bool,
    /// (breadth walked, recall) of every distinct setting tried.
    pub sweep: Vec<(usize, f64)>,
    pub latency: Latencies,
    /// Searches per second with one client, and with `clients` concurrent clients.
    pub qps_one: f64,
    pub qps: f64,
    pub clients: usize,
}

/// Measure one embedder: sweep (graph indices), then latency and throughput.
pub async fn measure(
    store: &Arc<RocksDbTeleologicalStore>,
    work: Arc<Workload>,
    target: f64,
    timed: usize,
) -> anyhow::Result<SearchResult> {
    let e = work.embedder;
    let index_type = store.index(e).index_type();
    let graph = matches!(index_type, IndexType::Hnsw | IndexType::TokenLevel);
    let mut sweep = Vec::new();
    let (ef, recall) = if graph {
        // (ef set, breadth walked, recall)
        let mut best = (EF_LADDER[0], 0, f64::MIN);
        let mut last_walked = None;
        for ef in EF_LADDER {
            store.set_ef_search(e, ef)?;
            // Settings below the candidate count the search asks for walk the same breadth:
            // measured once, reported as the breadth really walked.
            let walked = store.search_breadth(e, work.k).unwrap_or(ef);
            if last_walked == Some(walked) {
                continue;
            }
            last_walked = Some(walked);
            let r = work.recall(store).await?;
            sweep.push((walked, r));
            if r > best.2 {
                best = (ef, walked, r);
            }
            if r >= target {
                best = (ef, walked, r);
                break;
            }
        }
        // Below target everywhere: report the best setting found.
        store.set_ef_search(e, best.0)?;
        (Some(best.1), best.2)
    } else {
        (None, work.recall(store).await?)
    };
    let latency = sequential(store, &work, timed).await?;
    let clients = std::thread::available_parallelism().map_or(1, |n| n.get()).max(2);
    let qps_one = throughput(store, &work, 1, timed).await?;
    let qps = throughput(store, &work, clients, timed).await?;
    Ok(SearchResult {
        embedder: e,
        index_type,
        ef,
        recall,
        target_met: recall >= target,
        sweep,
        latency,
        qps_one,
        qps,
        clients,
    })
}

/// The latency of one client's searches while a writer commits continuously: batches of
/// `batch` stored arrays written again (replaced by themselves, so every index does the work
/// of a real update and the data stays the same). Returns the latencies and the commits made.
pub async fn under_writes(
    store: &Arc<RocksDbTeleologicalStore>,
    work: &Workload,
    ids: &[uuid::Uuid],
    batch: usize,
    timed: usize,
) -> anyhow::Result<(Latencies, usize)> {
    use context_graph_storage::TeleologicalArrayStore;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let commits = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, stop, commits, ids) = (store.clone(), stop.clone(), commits.clone(), ids.to_vec());
        tokio::spawn(async move {
            for chunk in ids.chunks(batch.max(1)).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let arrays = store.retrieve_batch(chunk).await?;
                store.store_batch(&arrays).await?;
                commits.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    // The clock starts once the writer has committed (or stopped: its error is reported).
    while commits.load(Ordering::Relaxed) == 0 && !writer.is_finished() {
        tokio::task::yield_now().await;
    }
    let latency = sequential(store, work, timed).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.map_err(|e| anyhow!("the writer failed: {e}"))??;
    Ok((latency?, commits.load(Ordering::Relaxed)))
}

/// One client: the latency of `timed` searches cycling through the queries (fewer if they
/// take longer than the time budget, but at least one pass over the queries).
async fn sequential(
    store: &RocksDbTeleologicalStore,
    work: &Workload,
    timed: usize,
) -> anyhow::Result<Latencies> {
    let mut times = Vec::with_capacity(timed);
    let started = Instant::now();
    for i in 0.. {
        let done = times.len();
        if done >= timed || (done >= work.queries.len() && started.elapsed() > TIME_BUDGET) {
            break;
        }
        let q = &work.queries[i % work.queries.len()];
        let t = Instant::now();
        store.index(work.embedder).search(q, work.k, None).await?;
        times.push(t.elapsed());
    }
    Ok(Latencies::new(times))
}

/// `clients` concurrent clients sharing the queries: searches per second of wall time.
async fn throughput(
    store: &Arc<RocksDbTeleologicalStore>,
    work: &Arc<Workload>,
    clients: usize,
    timed: usize,
) -> anyhow::Result<f64> {
    let total = timed.max(clients);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + TIME_BUDGET;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (store, work, next) = (store.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    return Ok::<usize, anyhow::Error>(done);
                }
                let q = &work.queries[i % work.queries.len()];
                store.index(work.embedder).search(q, work.k, None).await?;
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        done += joined.map_err(|e| anyhow!("a search client failed: {e}"))??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64().max(1e-9))
}
