//! The clustered-latent generator.
//!
//! Every record (and query) draws a cluster from a skewed mixture and a latent point
//! `z = center + spread · N(0, I)` in `LATENT_DIM` dimensions. Each embedder sees `z` through
//! its own fixed random map:
//! - dense: `normalize(A·z + 0.3·B·u + 0.1·ε)`, `u` a small private latent per record and
//!   embedder, `ε` per-dimension noise;
//! - sparse: 30–300 terms, about 40% from the record's cluster topics (weights driven by `z`,
//!   terms outside the 1,000 most frequent), the rest Zipf-distributed over the vocabulary
//!   with small weights;
//! - token-level: 8–64 tokens (8–32 for queries), each `normalize(0.6·codebook[term] + 0.4·P·z
//!   + noise)`, terms from the cluster topics or Zipf;
//! - binary: bit j = sign(h_j · z + 0.5·noise).
//!
//! Records are generated independently from `(seed, stream, index)`, so any record can be
//! regenerated alone and generation parallelizes.

use context_graph_core::teleology::{
    ArrayMetadata, Embedder, EmbedderDims, EmbedderOutput, SparseVector, StoreSchema, TeleologicalArray,
    TokenEmbeddings,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};

const LATENT_DIM: usize = 16;
const PRIVATE_DIM: usize = 4;
const CLUSTER_SPREAD: f32 = 0.35;
const TOPIC_TERMS: usize = 48;
/// Most frequent terms of a sparse vocabulary (Zipf ranks), never topic terms.
const FREQUENT_TERMS: usize = 1000;
const CODEBOOK: usize = 4096;
const NAMESPACES: usize = 20;

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub schema: StoreSchema,
    pub seed: u64,
    /// Number of mixture components (default: n/50 clamped to 20..300).
    pub clusters: usize,
}

impl GenConfig {
    /// Defaults for a dataset of `n` records.
    pub fn for_size(schema: StoreSchema, seed: u64, n: usize) -> Self {
        Self { schema, seed, clusters: (n / 50).clamp(20, 300) }
    }
}

fn normal(rng: &mut StdRng) -> f32 {
    StandardNormal.sample(rng)
}

fn gaussian_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|_| normal(rng)).collect()
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// `m` (rows × LATENT or PRIVATE) times `z`.
fn project<'a>(m: &'a [f32], z: &'a [f32]) -> impl Iterator<Item = f32> + 'a {
    m.chunks_exact(z.len()).map(move |row| row.iter().zip(z).map(|(a, b)| a * b).sum::<f32>())
}

/// The fixed random maps of one slot.
enum SlotModel {
    Dense { dim: usize, a: Vec<f32>, b: Vec<f32> },
    Sparse { vocab: usize, topics: Vec<Vec<u32>>, term_dirs: Vec<f32>, zipf_perm: Vec<u32>, zipf: Zipf<f64> },
    Tokens { dim: usize, codebook: Vec<f32>, p: Vec<f32>, topics: Vec<Vec<u32>>, zipf: Zipf<f64> },
    Binary { bits: usize, h: Vec<f32> },
}

/// A deterministic generator of records and queries for one schema.
pub struct Generator {
    config: GenConfig,
    centers: Vec<f32>,
    /// Cumulative cluster weights (skewed sizes).
    cluster_cdf: Vec<f64>,
    namespace_cdf: Vec<f64>,
    slots: Vec<SlotModel>,
}

fn cdf(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let w: Vec<f64> = weights.collect();
    let total: f64 = w.iter().sum();
    w.iter()
        .scan(0.0, |acc, x| {
            *acc += x / total;
            Some(*acc)
        })
        .collect()
}

fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

/// Records, queries and the models use separate random streams.
const STREAM_RECORD: u64 = 1;
const STREAM_QUERY: u64 = 2;

impl Generator {
    pub fn new(config: GenConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed ^ 0x7e1e_0000);
        let clusters = config.clusters.max(1);
        let centers = gaussian_matrix(&mut rng, clusters, LATENT_DIM);
        let cluster_cdf = cdf((0..clusters).map(|i| 1.0 / (i as f64 + 1.0).powf(0.8)));
        let namespace_cdf = cdf((0..NAMESPACES).map(|i| 1.0 / (i as f64 + 1.0)));
        let slots = Embedder::all()
            .map(|e| match config.schema.get(e) {
                EmbedderDims::Dense(dim) => SlotModel::Dense {
                    dim,
                    a: gaussian_matrix(&mut rng, dim, LATENT_DIM),
                    b: gaussian_matrix(&mut rng, dim, PRIVATE_DIM),
                },
                EmbedderDims::Sparse { vocab_size } => {
                    let vocab = vocab_size.max(1);
                    let mut zipf_perm: Vec<u32> = (0..vocab as u32).collect();
                    for i in (1..zipf_perm.len()).rev() {
                        zipf_perm.swap(i, rng.random_range(0..=i));
                    }
                    // Topic terms come from outside the frequent head of the vocabulary, as
                    // in learned sparse models, where frequent terms get low weights.
                    let head = if vocab > 2 * FREQUENT_TERMS { FREQUENT_TERMS } else { 0 };
                    let topics = (0..clusters)
                        .map(|_| (0..TOPIC_TERMS).map(|_| zipf_perm[rng.random_range(head..vocab)]).collect())
                        .collect();
                    SlotModel::Sparse {
                        vocab,
                        topics,
                        term_dirs: gaussian_matrix(&mut rng, 64, LATENT_DIM),
                        zipf_perm,
                        zipf: Zipf::new(vocab as f64, 1.1).expect("vocab >= 1 and exponent > 0"),
                    }
                }
                EmbedderDims::TokenLevel { per_token } => {
                    let mut codebook = gaussian_matrix(&mut rng, CODEBOOK, per_token);
                    codebook.chunks_exact_mut(per_token).for_each(normalize);
                    SlotModel::Tokens {
                        dim: per_token,
                        codebook,
                        p: gaussian_matrix(&mut rng, per_token, LATENT_DIM),
                        topics: (0..clusters)
                            .map(|_| (0..TOPIC_TERMS).map(|_| rng.random_range(0..CODEBOOK as u32)).collect())
                            .collect(),
                        zipf: Zipf::new(CODEBOOK as f64, 1.1).expect("codebook >= 1 and exponent > 0"),
                    }
                }
                EmbedderDims::Binary { bits } => {
                    SlotModel::Binary { bits, h: gaussian_matrix(&mut rng, bits, LATENT_DIM) }
                }
            })
            .collect();
        Self { config, centers, cluster_cdf, namespace_cdf, slots }
    }

    pub fn schema(&self) -> &StoreSchema {
        &self.config.schema
    }

    /// Record `i` of the dataset (always the same for the same seed and schema).
    pub fn record(&self, i: u64) -> TeleologicalArray {
        self.draw(STREAM_RECORD, i, false)
    }

    /// Query `i`: a fresh draw from the same mixture, never a copy of a record.
    pub fn query(&self, i: u64) -> TeleologicalArray {
        self.draw(STREAM_QUERY, i, true)
    }

    fn draw(&self, stream: u64, i: u64, is_query: bool) -> TeleologicalArray {
        let mut rng =
            StdRng::seed_from_u64(self.config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (stream << 56) ^ i);
        let cluster = pick(&self.cluster_cdf, rng.random());
        let center = &self.centers[cluster * LATENT_DIM..(cluster + 1) * LATENT_DIM];
        let z: Vec<f32> = center.iter().map(|c| c + CLUSTER_SPREAD * normal(&mut rng)).collect();
        let mut id_bytes = [0u8; 16];
        rng.fill(&mut id_bytes);
        let mut array = TeleologicalArray::new(uuid::Builder::from_random_bytes(id_bytes).into_uuid());
        for (e, model) in Embedder::all().zip(&self.slots) {
            array.set(e, Self::output(model, &z, cluster, is_query, &mut rng));
        }
        let ns = pick(&self.namespace_cdf, rng.random());
        array.metadata = Some(ArrayMetadata {
            namespace: Some(format!("ns-{ns:02}")),
            memory_type: Some(["episodic", "semantic", "procedural"][(i % 3) as usize].into()),
            tags: vec![format!("topic-{cluster}")],
            ..Default::default()
        });
        array.content =
            Some(format!("{} {i} about topic {cluster}", if is_query { "query" } else { "memory" }));
        array.source_hash = rng.random();
        array.created_at =
            chrono::DateTime::from_timestamp(1_700_000_000 + (i as i64 % 31_536_000), 0).unwrap_or_default();
        array
    }

    fn output(
        model: &SlotModel,
        z: &[f32],
        cluster: usize,
        is_query: bool,
        rng: &mut StdRng,
    ) -> EmbedderOutput {
        match model {
            SlotModel::Dense { dim, a, b } => {
                let u: Vec<f32> = (0..PRIVATE_DIM).map(|_| normal(rng)).collect();
                let mut v: Vec<f32> = project(a, z)
                    .zip(project(b, &u))
                    .map(|(s, p)| {
                        s / (LATENT_DIM as f32).sqrt()
                            + 0.3 * p / (PRIVATE_DIM as f32).sqrt()
                            + 0.1 * normal(rng)
                    })
                    .collect();
                debug_assert_eq!(v.len(), *dim);
                normalize(&mut v);
                EmbedderOutput::Dense(v)
            }
            SlotModel::Sparse { vocab, topics, term_dirs, zipf_perm, zipf } => {
                let nnz = rng.random_range(30..=300usize).min(*vocab);
                let mut terms: std::collections::BTreeMap<u32, f32> = std::collections::BTreeMap::new();
                let topic = &topics[cluster];
                let mut attempts = 0;
                while terms.len() < nnz && attempts < nnz * 4 {
                    attempts += 1;
                    if rng.random_bool(0.4) {
                        let t = topic[rng.random_range(0..topic.len())];
                        let dir =
                            &term_dirs[(t as usize % 64) * LATENT_DIM..(t as usize % 64 + 1) * LATENT_DIM];
                        let affinity: f32 =
                            dir.iter().zip(z).map(|(a, b)| a * b).sum::<f32>() / (LATENT_DIM as f32).sqrt();
                        let w = (0.5 * affinity).exp() * rng.random_range(0.6..1.4f32);
                        terms.insert(t, w.clamp(0.05, 5.0));
                    } else {
                        let rank = zipf.sample(rng) as usize - 1;
                        terms
                            .insert(zipf_perm[rank.min(zipf_perm.len() - 1)], rng.random_range(0.02..0.4f32));
                    }
                }
                let (indices, values) = terms.into_iter().unzip();
                EmbedderOutput::Sparse(SparseVector::new(indices, values))
            }
            SlotModel::Tokens { dim, codebook, p, topics, zipf } => {
                let n = if is_query { rng.random_range(8..=32) } else { rng.random_range(8..=64) };
                let shared: Vec<f32> = project(p, z).map(|x| x / (LATENT_DIM as f32).sqrt()).collect();
                let topic = &topics[cluster];
                let tokens = (0..n)
                    .map(|_| {
                        let term = if rng.random_bool(0.6) {
                            topic[rng.random_range(0..topic.len())] as usize
                        } else {
                            (zipf.sample(rng) as usize - 1).min(CODEBOOK - 1)
                        };
                        let code = &codebook[term * dim..(term + 1) * dim];
                        let mut t: Vec<f32> = code
                            .iter()
                            .zip(&shared)
                            .map(|(c, s)| {
                                0.6 * c
                                    + 0.4 * s / (*dim as f32).sqrt()
                                    + 0.05 * normal(rng) / (*dim as f32).sqrt()
                            })
                            .collect();
                        normalize(&mut t);
                        t
                    })
                    .collect();
                EmbedderOutput::TokenLevel(TokenEmbeddings::new(tokens, *dim))
            }
            SlotModel::Binary { bits, h } => {
                let mut out = vec![0u8; bits.div_ceil(8)];
                for (j, s) in project(h, z).enumerate() {
                    if s + 0.5 * normal(rng) > 0.0 {
                        out[j / 8] |= 1 << (j % 8);
                    }
                }
                EmbedderOutput::Binary(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use context_graph_core::teleology::validate_array;

    #[test]
    fn records_are_valid_deterministic_and_distinct_from_queries() {
        let g = Generator::new(GenConfig::for_size(StoreSchema::default(), 7, 1000));
        let r = g.record(3);
        validate_array(&r, g.schema(), 512).unwrap();
        assert_eq!(g.record(3), r);
        assert_ne!(g.record(4).id, r.id);
        let q = g.query(3);
        validate_array(&q, g.schema(), 512).unwrap();
        assert_ne!(q.id, r.id);
        let EmbedderOutput::Sparse(s) = r.get(Embedder::SpladeExpansion) else { panic!() };
        assert!((25..=300).contains(&s.len()), "{}", s.len());
        let EmbedderOutput::TokenLevel(t) = q.get(Embedder::LateInteraction) else { panic!() };
        assert!((8..=32).contains(&t.token_count));
    }

    #[test]
    fn neighbours_share_clusters_more_than_strangers() {
        // Same-cluster records must be more similar than random pairs: the data has structure.
        let g = Generator::new(GenConfig::for_size(StoreSchema::default(), 1, 1000));
        let recs: Vec<_> = (0..200).map(|i| g.record(i)).collect();
        let dense = |a: &TeleologicalArray| match a.get(Embedder::Semantic) {
            EmbedderOutput::Dense(v) => v.clone(),
            _ => unreachable!(),
        };
        let topic = |a: &TeleologicalArray| a.metadata.as_ref().unwrap().tags[0].clone();
        let (mut same, mut ns, mut diff, mut nd) = (0.0, 0, 0.0, 0);
        for i in 0..recs.len() {
            for j in i + 1..recs.len() {
                let c = context_graph_core::teleology::similarity::dot(&dense(&recs[i]), &dense(&recs[j]));
                if topic(&recs[i]) == topic(&recs[j]) {
                    same += c;
                    ns += 1;
                } else {
                    diff += c;
                    nd += 1;
                }
            }
        }
        assert!(
            ns > 0 && same / ns as f32 > diff / nd as f32 + 0.3,
            "same {} diff {}",
            same / ns as f32,
            diff / nd as f32
        );
    }
}
