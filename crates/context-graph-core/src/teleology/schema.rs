//! The per-store schema: the kind and size of each of the 13 slots.

use serde::{Deserialize, Serialize};

use super::embedder::{Embedder, EmbedderDims};

/// Default upper bound on the tokens of one token-level output.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// The kind and size of each slot of the arrays a store holds.
///
/// Persisted when a store is created and checked on every open: a store never silently
/// reinterprets its data under another schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSchema {
    pub slots: [EmbedderDims; Embedder::COUNT],
}

impl Default for StoreSchema {
    /// The default roster: [`Embedder::expected_dims`] of every slot.
    fn default() -> Self {
        Self { slots: Embedder::ALL.map(Embedder::expected_dims) }
    }
}

impl StoreSchema {
    /// The shape of one slot.
    pub fn get(&self, e: Embedder) -> EmbedderDims {
        self.slots[e.index()]
    }

    /// Change the shape of one slot.
    pub fn set(&mut self, e: Embedder, dims: EmbedderDims) {
        self.slots[e.index()] = dims;
    }

    /// The first slot whose size is unusable (zero), if any.
    pub fn invalid_slot(&self) -> Option<Embedder> {
        Embedder::all().find(|&e| !self.get(e).is_valid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_roster_and_set_changes_one_slot() {
        let mut s = StoreSchema::default();
        assert_eq!(s.get(Embedder::Code), EmbedderDims::Dense(1536));
        s.set(Embedder::Code, EmbedderDims::Dense(8));
        assert_eq!(s.get(Embedder::Code), EmbedderDims::Dense(8));
        assert_ne!(s, StoreSchema::default());
        assert_eq!(s.invalid_slot(), None);
        s.set(Embedder::Hdc, EmbedderDims::Binary { bits: 0 });
        assert_eq!(s.invalid_slot(), Some(Embedder::Hdc));
    }
}
