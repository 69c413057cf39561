//! Records found damaged (undecodable) while the store serves: skipped and counted, so that
//! one bad value does not take the rest of the store down with it.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::store::DamageReport;

/// The damaged array values found since the store was opened (at open by the index catch-up
/// and rebuild, later by reads). Metadata records are counted afresh by each `stats` scan.
#[derive(Debug, Default)]
pub(crate) struct DamageLog {
    arrays: BTreeSet<Uuid>,
    malformed_array_keys: usize,
}

impl DamageLog {
    /// A value of `id` (its head in `teleological_arrays` or a slot in `array_slots`) does not
    /// decode, or a slot is missing beside its head.
    pub(crate) fn array(&mut self, id: Uuid) {
        if self.arrays.insert(id) {
            tracing::warn!("array {id} is damaged: it is skipped by the indices and its reads fail");
        }
    }

    /// A key of `array_slots` that is not a slot index and a 16-byte id.
    pub(crate) fn malformed_array_key(&mut self) {
        self.malformed_array_keys += 1;
    }

    /// Take in what a full scan of `teleological_arrays` (an index rebuild) found: its damaged
    /// ids join the known ones, and its count of malformed keys, being complete, replaces
    /// the old one.
    pub(crate) fn absorb_full_scan(&mut self, scan: DamageLog) {
        self.arrays.extend(scan.arrays);
        self.malformed_array_keys = scan.malformed_array_keys;
    }

    /// These ids were just replaced or deleted: whatever was damaged under them is gone.
    pub(crate) fn repaired(&mut self, ids: &[Uuid]) {
        if !self.arrays.is_empty() {
            for id in ids {
                self.arrays.remove(id);
            }
        }
    }

    /// The arrays part of a report.
    pub(crate) fn report(&self, metadata: Vec<Uuid>, malformed_metadata_keys: usize) -> DamageReport {
        DamageReport {
            metadata,
            arrays: self.arrays.iter().copied().collect(),
            malformed_keys: malformed_metadata_keys + self.malformed_array_keys,
        }
    }
}
