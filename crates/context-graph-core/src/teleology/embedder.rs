//! The 13 embedder slots of a teleological array and the shape of each slot's output.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the 13 embedding models whose outputs make up a teleological array.
///
/// The discriminant is the slot's stable index (0..13): it is used in keys on disk and must
/// never change.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Embedder {
    Semantic = 0,
    TemporalRecent = 1,
    TemporalPeriodic = 2,
    Entity = 3,
    Causal = 4,
    SpladeExpansion = 5,
    Code = 6,
    Graph = 7,
    Hdc = 8,
    Multimodal = 9,
    EntityTransE = 10,
    LateInteraction = 11,
    SpladeKeyword = 12,
}

impl Embedder {
    /// Number of embedder slots in every array.
    pub const COUNT: usize = 13;

    /// Every embedder, in slot order.
    pub const ALL: [Embedder; Embedder::COUNT] = [
        Embedder::Semantic,
        Embedder::TemporalRecent,
        Embedder::TemporalPeriodic,
        Embedder::Entity,
        Embedder::Causal,
        Embedder::SpladeExpansion,
        Embedder::Code,
        Embedder::Graph,
        Embedder::Hdc,
        Embedder::Multimodal,
        Embedder::EntityTransE,
        Embedder::LateInteraction,
        Embedder::SpladeKeyword,
    ];

    /// The slot index, 0..13.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The embedder at slot `i`, if `i < 13`.
    pub fn from_index(i: usize) -> Option<Embedder> {
        Self::ALL.get(i).copied()
    }

    /// Every embedder, in slot order.
    pub fn all() -> impl ExactSizeIterator<Item = Embedder> {
        Self::ALL.into_iter()
    }

    /// The output shape of this slot in the default roster.
    pub fn expected_dims(self) -> EmbedderDims {
        use EmbedderDims::*;
        match self {
            Embedder::Semantic => Dense(1024),
            Embedder::TemporalRecent => Dense(512),
            Embedder::TemporalPeriodic => Dense(512),
            Embedder::Entity => Dense(384),
            Embedder::Causal => Dense(768),
            Embedder::SpladeExpansion => Sparse { vocab_size: 30522 },
            Embedder::Code => Dense(1536),
            Embedder::Graph => Dense(384),
            Embedder::Hdc => Binary { bits: 10000 },
            Embedder::Multimodal => Dense(768),
            Embedder::EntityTransE => Dense(384),
            Embedder::LateInteraction => TokenLevel { per_token: 128 },
            Embedder::SpladeKeyword => Sparse { vocab_size: 30522 },
        }
    }

    /// The full name, e.g. `"E1_Semantic"`.
    pub fn name(self) -> &'static str {
        match self {
            Embedder::Semantic => "E1_Semantic",
            Embedder::TemporalRecent => "E2_TemporalRecent",
            Embedder::TemporalPeriodic => "E3_TemporalPeriodic",
            Embedder::Entity => "E4_Entity",
            Embedder::Causal => "E5_Causal",
            Embedder::SpladeExpansion => "E6_SpladeExpansion",
            Embedder::Code => "E7_Code",
            Embedder::Graph => "E8_Graph",
            Embedder::Hdc => "E9_Hdc",
            Embedder::Multimodal => "E10_Multimodal",
            Embedder::EntityTransE => "E11_EntityTransE",
            Embedder::LateInteraction => "E12_LateInteraction",
            Embedder::SpladeKeyword => "E13_SpladeKeyword",
        }
    }

    /// The short name, `"E1"` .. `"E13"`.
    pub fn short_name(self) -> &'static str {
        const SHORT: [&str; Embedder::COUNT] =
            ["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9", "E10", "E11", "E12", "E13"];
        SHORT[self.index()]
    }
}

impl fmt::Display for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no embedder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown embedder {0:?}: expected a short name E1..E13 or a full name such as E1_Semantic")]
pub struct ParseEmbedderError(pub String);

impl FromStr for Embedder {
    type Err = ParseEmbedderError;

    /// Accepts the short name (`"E7"`, `"e7"`) or the full name (`"E7_Code"`), ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Embedder::all()
            .find(|e| e.short_name().eq_ignore_ascii_case(s) || e.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseEmbedderError(s.to_owned()))
    }
}

/// The shape of one slot's output: its kind and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EmbedderDims {
    /// A dense vector of this many floats, compared by cosine.
    Dense(usize),
    /// A sparse vector whose term ids are `< vocab_size`, compared by dot product.
    Sparse { vocab_size: usize },
    /// One vector of `per_token` floats per token, compared by MaxSim.
    TokenLevel { per_token: usize },
    /// A packed bit vector of `bits` bits (`ceil(bits / 8)` bytes, bit i = byte i/8, bit i%8,
    /// least significant first), compared by Hamming distance.
    Binary { bits: usize },
}

/// The kind of a slot, without its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EmbedderKind {
    Dense,
    Sparse,
    TokenLevel,
    Binary,
}

impl EmbedderKind {
    /// A lower-case name for messages: `dense`, `sparse`, `token-level`, `binary`.
    pub fn as_str(self) -> &'static str {
        match self {
            EmbedderKind::Dense => "dense",
            EmbedderKind::Sparse => "sparse",
            EmbedderKind::TokenLevel => "token-level",
            EmbedderKind::Binary => "binary",
        }
    }
}

impl fmt::Display for EmbedderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EmbedderDims {
    /// The kind of output this shape describes.
    pub fn kind(self) -> EmbedderKind {
        match self {
            EmbedderDims::Dense(_) => EmbedderKind::Dense,
            EmbedderDims::Sparse { .. } => EmbedderKind::Sparse,
            EmbedderDims::TokenLevel { .. } => EmbedderKind::TokenLevel,
            EmbedderDims::Binary { .. } => EmbedderKind::Binary,
        }
    }

    /// Whether the size is usable (non-zero).
    pub fn is_valid(self) -> bool {
        match self {
            EmbedderDims::Dense(d) => d > 0,
            EmbedderDims::Sparse { vocab_size } => vocab_size > 0 && vocab_size <= u32::MAX as usize,
            EmbedderDims::TokenLevel { per_token } => per_token > 0,
            EmbedderDims::Binary { bits } => bits > 0,
        }
    }
}

impl fmt::Display for EmbedderDims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbedderDims::Dense(d) => write!(f, "dense({d})"),
            EmbedderDims::Sparse { vocab_size } => write!(f, "sparse(vocab {vocab_size})"),
            EmbedderDims::TokenLevel { per_token } => {
                write!(f, "token-level({per_token} per token)")
            }
            EmbedderDims::Binary { bits } => write!(f, "binary({bits} bits)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_stable_and_round_trip() {
        for (i, e) in Embedder::all().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(Embedder::from_index(i), Some(e));
        }
        assert_eq!(Embedder::from_index(13), None);
        assert_eq!(Embedder::all().len(), Embedder::COUNT);
    }

    #[test]
    fn parses_short_and_full_names_ignoring_case() {
        assert_eq!("E7".parse::<Embedder>().unwrap(), Embedder::Code);
        assert_eq!("e13".parse::<Embedder>().unwrap(), Embedder::SpladeKeyword);
        assert_eq!("E1_semantic".parse::<Embedder>().unwrap(), Embedder::Semantic);
        assert!("E14".parse::<Embedder>().is_err());
        assert!("".parse::<Embedder>().is_err());
    }

    #[test]
    fn default_roster_matches_the_decisions() {
        assert_eq!(Embedder::Semantic.expected_dims(), EmbedderDims::Dense(1024));
        assert_eq!(Embedder::Hdc.expected_dims(), EmbedderDims::Binary { bits: 10000 });
        assert_eq!(Embedder::LateInteraction.expected_dims(), EmbedderDims::TokenLevel { per_token: 128 });
        let sparse = Embedder::all().filter(|e| e.expected_dims().kind() == EmbedderKind::Sparse);
        assert_eq!(sparse.collect::<Vec<_>>(), vec![Embedder::SpladeExpansion, Embedder::SpladeKeyword]);
    }
}
