//! How a multi-embedder search combines the embedders it asks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::embedder::Embedder;

/// Named groups of embedders that answer the same kind of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EmbedderGroup {
    /// Meaning: E1 Semantic, E5 Causal, E7 Code, E10 Multimodal.
    Semantic,
    /// Time: E2 TemporalRecent, E3 TemporalPeriodic.
    Temporal,
    /// Entities and their relations: E4 Entity, E8 Graph, E11 EntityTransE.
    Relational,
    /// Words: E6 SpladeExpansion, E12 LateInteraction, E13 SpladeKeyword.
    Lexical,
    /// All 13.
    All,
}

impl EmbedderGroup {
    pub const ALL: [EmbedderGroup; 5] = [
        EmbedderGroup::Semantic,
        EmbedderGroup::Temporal,
        EmbedderGroup::Relational,
        EmbedderGroup::Lexical,
        EmbedderGroup::All,
    ];

    /// The members, in slot order.
    pub fn embedders(self) -> &'static [Embedder] {
        use Embedder::*;
        match self {
            EmbedderGroup::Semantic => &[Semantic, Causal, Code, Multimodal],
            EmbedderGroup::Temporal => &[TemporalRecent, TemporalPeriodic],
            EmbedderGroup::Relational => &[Entity, Graph, EntityTransE],
            EmbedderGroup::Lexical => &[SpladeExpansion, LateInteraction, SpladeKeyword],
            EmbedderGroup::All => &Embedder::ALL,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EmbedderGroup::Semantic => "semantic",
            EmbedderGroup::Temporal => "temporal",
            EmbedderGroup::Relational => "relational",
            EmbedderGroup::Lexical => "lexical",
            EmbedderGroup::All => "all",
        }
    }
}

impl FromStr for EmbedderGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|g| g.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!("unknown embedder group {s:?}: expected semantic, temporal, relational, lexical or all")
        })
    }
}

impl fmt::Display for EmbedderGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One non-negative weight per embedder, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmbedderWeights([f32; Embedder::COUNT]);

impl EmbedderWeights {
    /// Weights that must be finite, non-negative and sum to 1 (within 1e-4).
    pub fn new(weights: [f32; Embedder::COUNT]) -> Result<Self, String> {
        if let Some(e) = Embedder::all().find(|e| !weights[e.index()].is_finite() || weights[e.index()] < 0.0)
        {
            return Err(format!(
                "weight of {} is {}: weights must be finite and >= 0",
                e.short_name(),
                weights[e.index()]
            ));
        }
        let sum: f32 = weights.iter().sum();
        if (sum - 1.0).abs() > 1e-4 {
            return Err(format!("weights sum to {sum}, not 1"));
        }
        Ok(Self(weights))
    }

    /// Equal weights over `embedders` (and 0 elsewhere).
    pub fn uniform(embedders: &[Embedder]) -> Result<Self, String> {
        if embedders.is_empty() {
            return Err("no embedder to weight".into());
        }
        let mut w = [0.0; Embedder::COUNT];
        for e in embedders {
            w[e.index()] = 1.0 / embedders.len() as f32;
        }
        Self::new(w)
    }

    pub fn get(&self, e: Embedder) -> f32 {
        self.0[e.index()]
    }

    pub fn as_array(&self) -> &[f32; Embedder::COUNT] {
        &self.0
    }

    /// The embedders with a weight above 0.
    pub fn embedders(&self) -> Vec<Embedder> {
        Embedder::all().filter(|e| self.get(*e) > 0.0).collect()
    }
}

/// Default `k` of reciprocal-rank fusion.
pub const DEFAULT_RRF_K: u32 = 60;

/// How the answers of several embedders become one ranking.
///
/// - `SingleEmbedder(e)`: the score is embedder `e`'s similarity.
/// - `EmbedderGroup(g)`: reciprocal-rank fusion (k = 60) over the group's embedders.
/// - `WeightedFull(w)`: the score is `Σ w_e · score_e` over the embedders with `w_e > 0`, with
///   each embedder's own similarity (cosine, dot product, MaxSim, 1 - Hamming/bits).
/// - `Rrf { k, weights }`: the score is `Σ w_e / (k + rank_e)`, `rank_e` the 1-based rank in
///   embedder `e`'s candidate list (absent: no term); `w_e = 1` when unweighted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ComparisonType {
    SingleEmbedder(Embedder),
    EmbedderGroup(EmbedderGroup),
    WeightedFull(EmbedderWeights),
    Rrf { k: u32, weights: Option<EmbedderWeights> },
}

impl ComparisonType {
    /// Unweighted reciprocal-rank fusion with k = 60.
    pub fn rrf() -> Self {
        ComparisonType::Rrf { k: DEFAULT_RRF_K, weights: None }
    }

    /// The embedders this comparison may ask (a search asks those the query has).
    pub fn embedders(&self) -> Vec<Embedder> {
        match self {
            ComparisonType::SingleEmbedder(e) => vec![*e],
            ComparisonType::EmbedderGroup(g) => g.embedders().to_vec(),
            ComparisonType::WeightedFull(w) | ComparisonType::Rrf { weights: Some(w), .. } => w.embedders(),
            ComparisonType::Rrf { weights: None, .. } => Embedder::all().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_weights_and_comparisons() {
        assert_eq!(
            EmbedderGroup::Lexical.embedders(),
            &[Embedder::SpladeExpansion, Embedder::LateInteraction, Embedder::SpladeKeyword]
        );
        assert_eq!("LEXICAL".parse::<EmbedderGroup>().unwrap(), EmbedderGroup::Lexical);
        assert!("words".parse::<EmbedderGroup>().is_err());
        let w = EmbedderWeights::uniform(&[Embedder::Semantic, Embedder::Code]).unwrap();
        assert_eq!(w.get(Embedder::Code), 0.5);
        assert_eq!(w.embedders(), vec![Embedder::Semantic, Embedder::Code]);
        assert!(EmbedderWeights::new([0.1; 13]).unwrap_err().contains("sum"));
        let mut neg = [0.0; 13];
        neg[0] = 1.5;
        neg[1] = -0.5;
        assert!(EmbedderWeights::new(neg).unwrap_err().contains(">= 0"));
        assert_eq!(ComparisonType::rrf(), ComparisonType::Rrf { k: 60, weights: None });
        assert_eq!(ComparisonType::rrf().embedders().len(), 13);
        assert_eq!(ComparisonType::WeightedFull(w).embedders().len(), 2);
    }
}
