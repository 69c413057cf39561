//! The index side of `check`: each enabled index holds one entry per array and finds an array
//! when searched with the array's own embedding.
//!
//! Finding itself is not always the top answer: a dot product (sparse) or an unnormalized
//! MaxSim may rank other arrays higher, and identical codes tie. So a lookup widens its limit
//! while every answer scores at least as high as the array itself, and calls the lookup
//! inconclusive (not a mismatch) if that is still so at the widest limit.

use std::collections::HashSet;

use context_graph_core::teleology::similarity::{dot, max_sim};
use context_graph_core::teleology::{Embedder, EmbedderOutput, TeleologicalArray};
use context_graph_storage::{IndexOpenMode, RocksDbTeleologicalStore, StorageStats};
use uuid::Uuid;

use super::data::Expected;
use super::Report;

/// Limits tried in turn for one lookup. A miss at 100 with room left is a mismatch, not an
/// approximation: a graph index always finds an exact copy of an entry that wide.
const LIMITS: [usize; 3] = [10, 100, 1000];

/// Lookups of one embedder's index.
struct Slot {
    embedder: Embedder,
    found: usize,
    missing: Vec<Uuid>,
    inconclusive: usize,
    /// Arrays with an empty sparse vector here: it matches nothing, so it is not looked up.
    empty: usize,
    /// Every id any lookup returned, to catch ids the index holds but the store does not.
    returned: HashSet<Uuid>,
}

enum Lookup {
    Found,
    Missing,
    Inconclusive,
    Empty,
}

/// Index lookups accumulated over the scan.
pub struct IndexCheck {
    slots: Vec<Slot>,
    disabled: Vec<Embedder>,
    sampled: usize,
}

impl IndexCheck {
    pub fn new(stats: &StorageStats) -> Self {
        let disabled: Vec<Embedder> = stats
            .indices
            .iter()
            .filter(|i| i.open_mode == IndexOpenMode::Disabled)
            .map(|i| i.embedder)
            .collect();
        let slots = Embedder::all()
            .filter(|e| !disabled.contains(e))
            .map(|embedder| Slot {
                embedder,
                found: 0,
                missing: Vec::new(),
                inconclusive: 0,
                empty: 0,
                returned: HashSet::new(),
            })
            .collect();
        Self { slots, disabled, sampled: 0 }
    }

    /// Look up each array in every enabled index by its own embedding.
    pub async fn search_own(
        &mut self,
        store: &RocksDbTeleologicalStore,
        arrays: &[TeleologicalArray],
        report: &mut Report,
    ) -> anyhow::Result<()> {
        for array in arrays {
            for slot in &mut self.slots {
                let e = slot.embedder;
                match lookup(store, array, slot).await {
                    Ok(Lookup::Found) => slot.found += 1,
                    Ok(Lookup::Missing) => slot.missing.push(array.id),
                    Ok(Lookup::Inconclusive) => slot.inconclusive += 1,
                    Ok(Lookup::Empty) => slot.empty += 1,
                    Err(err) => report.bad(
                        format!("index {}", e.short_name()),
                        format!("searching with the embedding of {} failed: {err}", array.id),
                    ),
                }
            }
        }
        self.sampled += arrays.len();
        Ok(())
    }

    /// Sizes against the scan, then the lookups' verdicts.
    pub async fn finish(
        self,
        store: &RocksDbTeleologicalStore,
        exp: &Expected,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        for e in &self.disabled {
            report.ok(
                format!("index {}", e.short_name()),
                "disabled: stored and validated, not indexed; not checked",
            );
        }
        for slot in self.slots {
            let e = slot.embedder;
            let area = format!("index {}", e.short_name());
            let index = store.index(e);
            let size = index.size().await?;
            report.expect(
                size == exp.entries,
                &area,
                format!(
                    "{} index holds {size} entries, {} stored",
                    index.index_type().as_str(),
                    super::data::stored(exp.entries)
                ),
            );
            for id in &slot.missing {
                report.bad(&area, format!("searching with the embedding of {id} does not return it"));
            }
            for id in slot.returned.iter().filter(|id| !exp.ids.contains(id)) {
                report.bad(&area, format!("returned {id}, which is not stored"));
            }
            let scope = if self.sampled < exp.good {
                format!("a sample of {} of the {} arrays", self.sampled, exp.good)
            } else {
                format!("all {} arrays", self.sampled)
            };
            let mut detail = format!("searched with the own embedding of {scope}: {} found", slot.found);
            if slot.inconclusive > 0 {
                detail += &format!(
                    "; {} inconclusive (at least {} entries score as high as the array itself)",
                    slot.inconclusive,
                    LIMITS[LIMITS.len() - 1]
                );
            }
            if slot.empty > 0 {
                detail += &format!("; {} with an empty sparse vector, not searchable", slot.empty);
            }
            report.expect(slot.missing.is_empty(), &area, detail);
        }
        Ok(())
    }
}

/// Search one index with one array's own embedding.
async fn lookup(
    store: &RocksDbTeleologicalStore,
    array: &TeleologicalArray,
    slot: &mut Slot,
) -> anyhow::Result<Lookup> {
    let query = array.get(slot.embedder);
    let Some(own) = self_score(query) else {
        return Ok(Lookup::Empty);
    };
    let tolerance = 1e-3 * own.abs().max(1.0);
    let mut saturated = false;
    for limit in LIMITS {
        let hits = store.index(slot.embedder).search(query, limit, None).await?;
        slot.returned.extend(hits.iter().map(|h| h.id));
        if hits.iter().any(|h| h.id == array.id) {
            return Ok(Lookup::Found);
        }
        saturated = hits.len() == limit && hits.last().is_some_and(|h| h.score >= own - tolerance);
        if !saturated && limit >= LIMITS[1] {
            return Ok(Lookup::Missing);
        }
    }
    Ok(if saturated { Lookup::Inconclusive } else { Lookup::Missing })
}

/// The score an output gets against itself in its index; `None` if it matches nothing.
fn self_score(out: &EmbedderOutput) -> Option<f32> {
    match out {
        EmbedderOutput::Dense(_) | EmbedderOutput::Binary(_) => Some(1.0),
        EmbedderOutput::Sparse(s) if s.is_empty() => None,
        EmbedderOutput::Sparse(s) => Some(dot(&s.values, &s.values)),
        EmbedderOutput::TokenLevel(t) => {
            let flat: Vec<f32> = t.embeddings.concat();
            Some(max_sim(&t.embeddings, &flat, t.dims_per_token))
        }
        EmbedderOutput::Pending | EmbedderOutput::Failed(_) => None,
    }
}
