//! `teleo check`: verify that the data, the counters, the namespace index and every index
//! agree, and report each mismatch.
//!
//! The arrays are read once, in pages. Each page is checked against the schema and collected
//! into the expected state (ids, namespaces); the sampled arrays of the page are searched in
//! every index right away, so that `--full` never holds the whole store in memory.

mod data;
mod index;

use anyhow::bail;
use clap::Args;
use context_graph_core::teleology::TeleologicalArray;
use context_graph_storage::{Durability, RocksDbTeleologicalStore, TeleologicalArrayStore};
use serde_json::json;

use super::Ctx;
use crate::output::json_line;
use crate::scan::ArrayScan;
use crate::{open, progress};

/// Arrays read per page of the scan.
const PAGE: usize = 256;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Arrays to look up in every index by their own embedding, spread evenly over the store
    /// (0: none). Counts, listings and the namespace index are always checked in full.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub sample: usize,

    /// Look up every array in every index (slow on big stores).
    #[arg(long, conflicts_with = "sample")]
    pub full: bool,
}

/// One verdict of the check.
pub struct Finding {
    pub area: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything the check found, in the order it was found.
#[derive(Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&mut self, area: impl Into<String>, detail: impl Into<String>) {
        self.push(area.into(), true, detail.into());
    }

    pub fn bad(&mut self, area: impl Into<String>, detail: impl Into<String>) {
        self.push(area.into(), false, detail.into());
    }

    /// `ok` if the condition holds, `bad` otherwise.
    pub fn expect(&mut self, holds: bool, area: impl Into<String>, detail: impl Into<String>) {
        self.push(area.into(), holds, detail.into());
    }

    fn push(&mut self, area: String, ok: bool, detail: String) {
        self.findings.push(Finding { area, ok, detail });
    }

    fn mismatches(&self) -> usize {
        self.findings.iter().filter(|f| !f.ok).count()
    }
}

pub async fn run(ctx: &Ctx, args: CheckArgs) -> anyhow::Result<()> {
    let store = open::open_existing(&ctx.db, Durability::Sync)?;
    let result = check(&store, &args).await;
    open::close(store, &ctx.db)?;
    let report = result?;
    for f in &report.findings {
        if ctx.json {
            json_line(&json!({"area": f.area, "ok": f.ok, "detail": f.detail}))?;
        } else {
            say!("{:<8} {:<16} {}", if f.ok { "ok" } else { "MISMATCH" }, f.area, f.detail);
        }
    }
    let bad = report.mismatches();
    if bad > 0 {
        bail!(
            "check found {bad} mismatch{} in the store at {}\nhint: the lines marked MISMATCH \
             say what disagrees; reopening replays the change log into the indices, and an \
             index whose snapshot is deleted (indices/) is rebuilt from the data on the next open",
            if bad == 1 { "" } else { "es" },
            ctx.db.display()
        );
    }
    if !ctx.json {
        say!("no mismatches ({} checks)", report.findings.len());
    }
    Ok(())
}

/// Whether the array at `position` (of about `total`) is one of `sample` spread evenly over
/// the scan: position i is taken when i·sample/total reaches a new integer.
fn evenly_spread(position: usize, sample: usize, total: usize) -> bool {
    if sample == 0 {
        return false;
    }
    if total <= sample {
        return true;
    }
    let step = |i: usize| (i as u128 * sample as u128) / total as u128;
    step(position + 1) > step(position)
}

async fn check(store: &RocksDbTeleologicalStore, args: &CheckArgs) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let counter = store.count().await?;
    let stats = store.stats().await?;
    let schema = store.schema().clone();
    let mut expected = data::Expected::default();
    let mut indices = index::IndexCheck::new(&stats);
    let pb = progress::bar(Some(counter as u64), "checking");
    let mut scan = ArrayScan::default();
    let mut position = 0usize;
    loop {
        let page = scan.next_page(store, PAGE)?;
        if page.is_empty() {
            break;
        }
        let mut sampled: Vec<TeleologicalArray> = Vec::new();
        for item in page {
            if let Some(array) = expected.add(item, &schema, &mut report) {
                let wanted = args.full || evenly_spread(position, args.sample, counter);
                if wanted {
                    sampled.push(array);
                }
            }
            position += 1;
        }
        indices.search_own(store, &sampled, &mut report).await?;
        pb.set_position(position as u64);
    }
    pb.finish_and_clear();
    data::check_counts(counter, &stats, &expected, &mut report);
    data::check_metadata(store, &expected, &mut report)?;
    data::check_namespaces(store, &stats, &expected, &mut report).await?;
    indices.finish(store, &expected, &mut report).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::evenly_spread;

    #[test]
    fn the_sample_has_the_asked_size() {
        let taken = |sample, total| (0..total).filter(|&i| evenly_spread(i, sample, total)).count();
        assert_eq!(taken(200, 300), 200);
        assert_eq!(taken(200, 100_000), 200);
        assert_eq!(taken(200, 150), 150);
        assert_eq!(taken(0, 50), 0);
    }
}
