//! The benchmark's output: a table for people, one JSON object per metric per line for
//! scripts.

use serde_json::{json, Value};

use super::search::SearchResult;
use super::{BenchResults, DurabilityArg, PrecisionResult};
use crate::output::{bytes, duration, json_line, Table};

fn micros(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn ingest_rate(r: &BenchResults) -> f64 {
    r.n as f64 / r.ingest.as_secs_f64().max(1e-9)
}

fn per_array(total: u64, n: usize) -> u64 {
    total / n.max(1) as u64
}

fn durability_note(r: &BenchResults) -> &'static str {
    match r.durability {
        DurabilityArg::Buffered => "Buffered: WAL fsynced once at the end",
        DurabilityArg::Sync => "Sync: fsync per batch",
    }
}

fn index_memory_total(r: &BenchResults) -> u64 {
    r.index_memory.iter().map(|m| m.2 as u64).sum()
}

/// Lowest recall and p50 range of a precision's searches, for the comparison table.
fn precision_summary(p: &PrecisionResult) -> (f64, String, String) {
    let min_recall = p.searches.iter().map(|s| s.recall).fold(f64::INFINITY, f64::min);
    let dense: Vec<&SearchResult> =
        p.searches.iter().filter(|s| s.index_type == context_graph_storage::IndexType::Hnsw).collect();
    let lo = dense.iter().map(|s| s.latency.p50).min();
    let hi = dense.iter().map(|s| s.latency.p50).max();
    let hnsw = match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{} – {}", duration(lo), duration(hi)),
        _ => "-".into(),
    };
    let token = p
        .searches
        .iter()
        .find(|s| s.index_type == context_graph_storage::IndexType::TokenLevel)
        .map_or("-".into(), |s| duration(s.latency.p50));
    (min_recall, hnsw, token)
}

pub fn print_table(r: &BenchResults) {
    say!("teleo bench: {} arrays, {} queries, dataset {}", r.n, r.queries, r.source);
    say!("roster: {}", r.roster.join(", "));
    if let Some(t) = r.generation {
        say!("dataset generated in {} (not part of the measurements)", duration(t));
    }
    say!();
    let mut t = Table::new(&["metric", "value"]);
    t.row(vec![
        "ingest (searchable + durable)".into(),
        format!(
            "{:.0} arrays/s ({} arrays in {}, batches of {}, {})",
            ingest_rate(r),
            r.n,
            duration(r.ingest),
            r.batch,
            durability_note(r)
        ),
    ]);
    t.row(vec![
        "background index work after ingest".into(),
        format!(
            "{} (centroid training, graph rebuilds; commits never wait for it)",
            duration(r.upkeep_after_ingest)
        ),
    ]);
    let per_index: Vec<String> = r
        .index_memory
        .iter()
        .filter(|m| m.2 > 0)
        .map(|(e, _, b)| format!("{} {}", e.short_name(), bytes(*b as u64)))
        .collect();
    t.row(vec![
        "index memory after ingest".into(),
        format!("{} ({})", bytes(index_memory_total(r)), per_index.join(", ")),
    ]);
    t.row(vec![
        "disk per array".into(),
        format!(
            "{} (data {}, index snapshots {}; raw embeddings {})",
            bytes(per_array(r.disk_total, r.n)),
            bytes(per_array(r.disk_data, r.n)),
            bytes(per_array(r.disk_indices, r.n)),
            bytes(per_array(r.raw_bytes, r.n))
        ),
    ]);
    let rss = |b: Option<u64>| {
        b.map_or("unavailable".into(), |b| format!("{} ({:.2} GB)", bytes(b), b as f64 / 1e9))
    };
    t.row(vec!["peak RSS, ingest + search".into(), rss(r.peak_rss_serving)]);
    t.row(vec![
        "peak RSS, whole run".into(),
        format!("{} (with close and the reopen in this process)", rss(r.peak_rss)),
    ]);
    t.row(vec![
        "get p50 / p99".into(),
        format!("{} / {} ({} gets)", duration(r.get.p50), duration(r.get.p99), r.get.samples),
    ]);
    t.row(vec!["close (snapshots + flush)".into(), duration(r.close)]);
    let modes: Vec<String> = r.reopen_modes.iter().map(|(m, c)| format!("{c} {m}")).collect();
    t.row(vec![
        "reopen to first search result".into(),
        format!(
            "{} ({} search; indices: {})",
            duration(r.reopen),
            r.reopen_embedder.short_name(),
            modes.join(", ")
        ),
    ]);
    if let Some(fresh) = r.fresh_process {
        t.row(vec![
            "fresh process: open + first search + exit".into(),
            format!(
                "{} (`teleo search --like` in a new process, {})",
                duration(fresh),
                r.reopen_embedder.short_name()
            ),
        ]);
    }
    t.row(vec!["total run".into(), duration(r.total)]);
    t.print();
    say!();
    let clients = r.searches.first().map_or(1, |s| s.clients);
    let recall = format!(">recall@{}", r.k);
    let qps = format!(">QPS ({clients} clients)");
    let scaling = format!(">{clients} vs 1");
    let mut t =
        Table::new(&["embedder", "index", ">ef", &recall, ">p50", ">p99", &qps, &scaling, "sweep ef:recall"]);
    for s in &r.searches {
        t.row(search_row(s, r.target));
    }
    for (e, why) in &r.skipped {
        t.row(vec![
            e.short_name().into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("skipped: {why}"),
        ]);
    }
    t.print();
    say!(
        "ef: the search breadth really walked: the ef set, or the {}-fold candidates an index \
         holding reduced precision asks for to rescore, if more",
        r.rescore_factor
    );
    if r.searches.iter().any(|s| !s.target_met) {
        say!("* below the recall target of {:.2} at every ef tried; the best is shown", r.target);
    }
    if let Some(b) = &r.baseline {
        say!(
            "bare usearch baseline of {}: {} at {}, same graph settings, ef {}: built in {}, recall@{} {:.3}, \
             p50 {} / p99 {}; the store's p50 {} is {:.2}× the bare index's",
            b.embedder.short_name(),
            b.latency.samples,
            b.precision,
            b.ef,
            duration(b.build),
            r.k,
            b.recall,
            duration(b.latency.p50),
            duration(b.latency.p99),
            duration(b.store_p50),
            b.ratio()
        );
    }
    if let Some((e, latency, commits, batch)) = &r.under_writes {
        let idle = r.searches.iter().find(|s| s.embedder == *e).map(|s| s.latency);
        say!(
            "{} while a writer commits continuously ({commits} commits of {batch} arrays): p50 {} / p99 {}{}",
            e.short_name(),
            duration(latency.p50),
            duration(latency.p99),
            idle.map_or(String::new(), |i| format!(
                "; idle p50 {} / p99 {}: p99 {:.2}× idle",
                duration(i.p50),
                duration(i.p99),
                latency.p99.as_secs_f64() / i.p99.as_secs_f64().max(1e-9)
            ))
        );
    }
    if let Some(f) = &r.fused {
        say!();
        let mut t = Table::new(&["fused search", ">p50", ">p99", "note"]);
        t.row(vec![
            format!(
                "RRF (k 60) over {} embedders, overfetch {}, fusion depth {}",
                f.embedders, f.overfetch, f.fusion_depth
            ),
            duration(f.rrf.p50),
            duration(f.rrf.p99),
            match &f.quality {
                Some(q) => format!(
                    "{} queries, top {}; recall@{} {:.3} against exhaustive RRF ({} queries)",
                    f.rrf.samples, r.k, r.k, q.rrf_recall, q.queries
                ),
                None => format!("{} queries, top {}", f.rrf.samples, r.k),
            },
        ]);
        t.row(vec![
            format!(
                "weighted mean over {} embedders, overfetch {}, fusion depth {}",
                f.embedders, f.overfetch, f.fusion_depth
            ),
            duration(f.weighted.p50),
            duration(f.weighted.p99),
            match &f.quality {
                Some(q) => format!(
                    "recall@{} {:.3} against the exhaustive weighted mean (reference took {:.1} s)",
                    r.k,
                    q.weighted_recall,
                    q.reference.as_secs_f64()
                ),
                None => String::new(),
            },
        ]);
        if let Some(n) = &f.filtered {
            t.row(vec![
                format!("{} in namespace {}", n.embedder.short_name(), n.namespace),
                duration(n.latency.p50),
                duration(n.latency.p99),
                format!(
                    "{} arrays ({:.1}% of the store), recall@{} {:.3} against brute force in the namespace",
                    n.members,
                    100.0 * n.members as f64 / r.n.max(1) as f64,
                    r.k,
                    n.recall
                ),
            ]);
        }
        t.print();
    }
    if r.precisions.len() > 1 {
        say!();
        let recall = format!(">min recall@{}", r.k);
        let mut t = Table::new(&[
            "precision",
            ">open",
            ">graph index memory",
            ">peak RSS",
            &recall,
            ">HNSW p50",
            ">token-level p50",
        ]);
        for p in &r.precisions {
            let (min_recall, hnsw, token) = precision_summary(p);
            t.row(vec![
                p.precision.to_string(),
                format!("{}{}", duration(p.open), if p.rebuilt { " (rebuilt)" } else { "" }),
                bytes(p.memory_bytes as u64),
                p.peak_rss.map_or("unavailable".into(), bytes),
                format!("{min_recall:.3}"),
                hnsw,
                token,
            ]);
        }
        t.print();
        say!("graph index memory: the dense and token-level indices; results below f32 are rescored exactly");
    }
}

fn search_row(s: &SearchResult, _target: f64) -> Vec<String> {
    let sweep: Vec<String> = s.sweep.iter().map(|(ef, rec)| format!("{ef}:{rec:.3}")).collect();
    vec![
        s.embedder.short_name().into(),
        s.index_type.as_str().into(),
        s.ef.map_or("exact".into(), |ef| ef.to_string()),
        format!("{:.3}{}", s.recall, if s.target_met { "" } else { "*" }),
        duration(s.latency.p50),
        duration(s.latency.p99),
        format!("{:.0}", s.qps),
        format!("{:.2}×", s.qps / s.qps_one.max(1e-9)),
        sweep.join(" "),
    ]
}

pub fn print_json(r: &BenchResults) -> anyhow::Result<()> {
    let mut lines: Vec<Value> = vec![
        json!({"metric": "dataset", "source": r.source, "n": r.n, "queries": r.queries,
               "roster": r.roster, "generation_s": r.generation.map(|t| t.as_secs_f64())}),
        json!({"metric": "ingest_arrays_per_s", "value": ingest_rate(r), "unit": "arrays/s",
               "seconds": r.ingest.as_secs_f64(), "batch": r.batch,
               "durability": format!("{:?}", r.durability).to_lowercase()}),
        json!({"metric": "upkeep_after_ingest_s", "value": r.upkeep_after_ingest.as_secs_f64(), "unit": "s"}),
        json!({"metric": "index_memory_bytes", "value": index_memory_total(r), "unit": "bytes",
               "per_embedder": r.index_memory.iter()
                   .map(|(e, _, b)| json!({"embedder": e.short_name(), "bytes": b})).collect::<Vec<_>>()}),
        json!({"metric": "disk_bytes_per_array", "value": per_array(r.disk_total, r.n),
               "unit": "bytes", "data": per_array(r.disk_data, r.n),
               "index_snapshots": per_array(r.disk_indices, r.n),
               "raw_embeddings": per_array(r.raw_bytes, r.n)}),
        json!({"metric": "peak_rss_ingest_search_bytes", "value": r.peak_rss_serving, "unit": "bytes"}),
        json!({"metric": "peak_rss_bytes", "value": r.peak_rss, "unit": "bytes"}),
        json!({"metric": "get_p50_us", "value": micros(r.get.p50), "unit": "us"}),
        json!({"metric": "get_p99_us", "value": micros(r.get.p99), "unit": "us"}),
    ];
    for s in &r.searches {
        let ef = s.ef.map_or(json!("exact"), |ef| json!(ef));
        let base = |metric: &str, value: Value, unit: &str| {
            json!({"metric": metric, "embedder": s.embedder.short_name(),
                   "index": s.index_type.as_str(), "ef": ef, "value": value, "unit": unit})
        };
        for (sweep_ef, rec) in &s.sweep {
            lines.push(json!({"metric": format!("sweep_recall_at_{}", r.k),
                "embedder": s.embedder.short_name(), "index": s.index_type.as_str(),
                "ef": sweep_ef, "value": rec, "unit": "fraction"}));
        }
        let mut recall = base(&format!("recall_at_{}", r.k), json!(s.recall), "fraction");
        recall["target_met"] = json!(s.target_met);
        lines.push(recall);
        lines.push(base("search_p50_us", json!(micros(s.latency.p50)), "us"));
        lines.push(base("search_p99_us", json!(micros(s.latency.p99)), "us"));
        let mut qps = base("search_qps", json!(s.qps), "queries/s");
        qps["clients"] = json!(s.clients);
        lines.push(qps);
        let mut one = base("search_qps", json!(s.qps_one), "queries/s");
        one["clients"] = json!(1);
        lines.push(one);
    }
    for (e, why) in &r.skipped {
        lines.push(json!({"metric": "search_skipped", "embedder": e.short_name(), "reason": why}));
    }
    if let Some(f) = &r.fused {
        lines.push(json!({"metric": "fused_rrf_p50_us", "value": micros(f.rrf.p50), "unit": "us", "embedders": f.embedders, "overfetch": f.overfetch, "fusion_depth": f.fusion_depth}));
        lines.push(json!({"metric": "fused_rrf_p99_us", "value": micros(f.rrf.p99), "unit": "us", "embedders": f.embedders, "overfetch": f.overfetch, "fusion_depth": f.fusion_depth}));
        lines.push(json!({"metric": "fused_weighted_p50_us", "value": micros(f.weighted.p50), "unit": "us", "embedders": f.embedders, "overfetch": f.overfetch, "fusion_depth": f.fusion_depth}));
        lines.push(json!({"metric": "fused_weighted_p99_us", "value": micros(f.weighted.p99), "unit": "us", "embedders": f.embedders, "overfetch": f.overfetch, "fusion_depth": f.fusion_depth}));
        if let Some(q) = &f.quality {
            lines.push(json!({"metric": format!("fused_rrf_recall_at_{}", r.k), "value": q.rrf_recall,
                "unit": "fraction", "against": "exhaustive RRF", "queries": q.queries}));
            lines.push(
                json!({"metric": format!("fused_weighted_recall_at_{}", r.k), "value": q.weighted_recall,
                "unit": "fraction", "against": "exhaustive weighted mean", "queries": q.queries}),
            );
        }
        if let Some(n) = &f.filtered {
            lines.push(json!({"metric": format!("namespace_filtered_recall_at_{}", r.k), "value": n.recall,
                "unit": "fraction", "embedder": n.embedder.short_name(), "namespace": n.namespace,
                "members": n.members}));
            lines.push(
                json!({"metric": "namespace_filtered_p50_us", "value": micros(n.latency.p50), "unit": "us",
                "embedder": n.embedder.short_name()}),
            );
        }
    }
    if let Some(b) = &r.baseline {
        lines.push(json!({"metric": "bare_usearch_p50_us", "value": micros(b.latency.p50), "unit": "us",
            "embedder": b.embedder.short_name(), "precision": b.precision.as_str(), "ef": b.ef,
            "recall": b.recall, "build_s": b.build.as_secs_f64(), "store_p50_us": micros(b.store_p50),
            "store_over_bare": b.ratio()}));
    }
    if let Some((e, latency, commits, batch)) = &r.under_writes {
        lines
            .push(json!({"metric": "search_p99_under_writes_us", "value": micros(latency.p99), "unit": "us",
            "embedder": e.short_name(), "p50_us": micros(latency.p50), "commits": commits, "batch": batch}));
    }
    if let Some(fresh) = r.fresh_process {
        lines.push(json!({"metric": "fresh_process_first_search_ms", "value": millis(fresh), "unit": "ms",
            "embedder": r.reopen_embedder.short_name()}));
    }
    lines.push(json!({"metric": "close_ms", "value": millis(r.close), "unit": "ms"}));
    lines.push(json!({"metric": "reopen_to_first_result_ms", "value": millis(r.reopen),
        "unit": "ms", "embedder": r.reopen_embedder.short_name(),
        "index_open_modes": r.reopen_modes.iter()
            .map(|(m, c)| json!({"mode": m, "indices": c})).collect::<Vec<_>>()}));
    for p in &r.precisions {
        let (min_recall, _, _) = precision_summary(p);
        lines.push(json!({"metric": "precision", "precision": p.precision.as_str(),
            "open_ms": millis(p.open), "rebuilt": p.rebuilt, "graph_index_memory_bytes": p.memory_bytes,
            "peak_rss_bytes": p.peak_rss,
            "min_recall": min_recall,
            "searches": p.searches.iter().map(|s| json!({"embedder": s.embedder.short_name(),
                "recall": s.recall, "ef": s.ef, "p50_us": micros(s.latency.p50)})).collect::<Vec<_>>()}));
    }
    lines.push(json!({"metric": "total_s", "value": r.total.as_secs_f64(), "unit": "s"}));
    for line in &lines {
        json_line(line)?;
    }
    Ok(())
}
