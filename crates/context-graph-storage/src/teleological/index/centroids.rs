//! Token centroids: the coarse quantizer of the token-level index.
//!
//! A few thousand unit vectors trained by spherical k-means on a sample of stored tokens.
//! Each stored token is tagged with its nearest centroid; a query token's similarity to a
//! centroid stands in for its similarity to every token tagged with it. That turns candidate
//! generation for MaxSim into posting-list work (as in ColBERTv2's PLAID), with no graph of
//! tokens to maintain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use context_graph_core::teleology::similarity::{dot, dot_table, normalized};

use crate::teleological::parallel::map_parallel;

/// Centroids trained at most. Measured with a prototype at 100,000 entries of the benchmark
/// data (3.6 million tokens): recall@10 after reranking 200 candidates was 0.91 with 1,024
/// centroids, 0.95–0.99 with 2,048 (depending on training) and 0.999 with 4,096; tagging cost
/// grows with the count.
pub(crate) const MAX_CENTROIDS: usize = 2048;
/// Sample tokens per centroid wanted in training; fewer centroids are trained on a small sample.
const TOKENS_PER_CENTROID: usize = 16;
/// Lloyd iterations after the initial pick (each one tags every sample token).
const ITERATIONS: usize = 2;

/// Unit vectors, `dims` floats each, back to back, and their grouping for fast tagging.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Centroids {
    dims: usize,
    vectors: Vec<f32>,
    /// `None` for few centroids (tagging compares with all of them).
    groups: Option<Groups>,
}

/// The centroids clustered once more: tagging a token compares it with the group centres,
/// then with the members of its [`GROUPS_SEARCHED`] best groups only. Derived from the
/// centroids deterministically, so not persisted.
#[derive(Debug, Clone, PartialEq)]
struct Groups {
    centers: Vec<f32>,
    members: Vec<Vec<u16>>,
}

/// Centroids per group, on average.
const CENTROIDS_PER_GROUP: usize = 32;
/// Groups whose members a token is compared with. With 2,048 centroids in 64 groups, tagging
/// takes 64 + ~192 dot products instead of 2,048.
const GROUPS_SEARCHED: usize = 6;

/// Spherical k-means: `k` unit vectors fitted to `points` (`dims` floats each), starting from
/// points picked by a fixed hash of their position (deterministic, and not fooled by periodic
/// input as an even stride would be).
/// `None` if `stop` was set before the last iteration.
fn spherical_k_means(
    points: &[f32],
    dims: usize,
    k: usize,
    iterations: usize,
    stop: &AtomicBool,
) -> Result<Option<Vec<f32>>, String> {
    let n = points.len() / dims.max(1);
    if n == 0 {
        return Ok(Some(unit_or_axis(&vec![0.0; dims])));
    }
    let mut centers = Vec::with_capacity(k * dims);
    for c in 0..k.clamp(1, n) {
        let pick = (splitmix64(c as u64) % n as u64) as usize;
        centers.extend_from_slice(&unit_or_axis(&points[pick * dims..(pick + 1) * dims]));
    }
    for _ in 0..iterations {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let tags = map_split(points, dims, |p| nearest_of(&centers, dims, p))?;
        let mut sums = vec![0.0f32; centers.len()];
        for (p, &c) in points.chunks_exact(dims).zip(&tags) {
            let sum = &mut sums[c as usize * dims..(c as usize + 1) * dims];
            sum.iter_mut().zip(p).for_each(|(s, x)| *s += x);
        }
        for (c, sum) in sums.chunks_exact(dims).enumerate() {
            // A centre no point chose keeps its place.
            if sum.iter().any(|&x| x != 0.0) {
                centers[c * dims..(c + 1) * dims].copy_from_slice(&normalized(sum));
            }
        }
    }
    Ok(Some(centers))
}

/// The vector of `vectors` (`dims` floats each) with the largest dot product with `token`.
fn nearest_of(vectors: &[f32], dims: usize, token: &[f32]) -> u16 {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (c, v) in vectors.chunks_exact(dims).enumerate() {
        let s = dot(token, v);
        if s > best.1 {
            best = (c, s);
        }
    }
    best.0 as u16
}

/// `f` of every `dims`-float item of `flat`, in order, split over the cores when there are
/// enough items to be worth a thread. A worker that panics is an error: its part would be
/// missing, and every caller relies on one result per item.
fn map_split(flat: &[f32], dims: usize, f: impl Fn(&[f32]) -> u16 + Sync) -> Result<Vec<u16>, String> {
    let dims = dims.max(1);
    let items = flat.len() / dims;
    let workers = thread::available_parallelism().map_or(1, |n| n.get()).min(items / 1024).max(1);
    let per = (items.div_ceil(workers) * dims).max(1);
    let parts: Vec<&[f32]> = flat.chunks(per).collect();
    let tagged = map_parallel(&parts, |part| Ok(part.chunks_exact(dims).map(&f).collect::<Vec<u16>>()))
        .map_err(|e| format!("tagging tokens failed: {e}"))?;
    Ok(tagged.concat())
}

impl Groups {
    fn of(vectors: &[f32], dims: usize) -> Result<Option<Self>, String> {
        let k = vectors.len() / dims;
        let g = k / CENTROIDS_PER_GROUP;
        if g < 2 * GROUPS_SEARCHED {
            return Ok(None);
        }
        // Grouping 2,048 centroids is quick: not worth stopping.
        let never = AtomicBool::new(false);
        let centers = spherical_k_means(vectors, dims, g, 4, &never)?
            .ok_or_else(|| "grouping was stopped".to_string())?;
        let mut members = vec![Vec::new(); centers.len() / dims];
        for (c, v) in vectors.chunks_exact(dims).enumerate() {
            members[nearest_of(&centers, dims, v) as usize].push(c as u16);
        }
        Ok(Some(Self { centers, members }))
    }
}

impl Centroids {
    /// [`Centroids::train_unless_stopped`], never stopped.
    #[cfg(test)]
    pub(crate) fn train(sample: &[f32], dims: usize) -> Result<Self, String> {
        Self::train_unless_stopped(sample, dims, &AtomicBool::new(false))
            .and_then(|trained| trained.ok_or_else(|| "training was stopped".to_string()))
    }

    /// Train on `sample` (tokens of `dims` floats, back to back): spherical k-means with
    /// `sample / TOKENS_PER_CENTROID` centroids, at most [`MAX_CENTROIDS`]. `stop` is checked
    /// between iterations: `None` if it was set (the store is closing).
    pub(crate) fn train_unless_stopped(
        sample: &[f32],
        dims: usize,
        stop: &AtomicBool,
    ) -> Result<Option<Self>, String> {
        let n = sample.len() / dims.max(1);
        let k = (n / TOKENS_PER_CENTROID).clamp(1, MAX_CENTROIDS);
        let Some(vectors) = spherical_k_means(sample, dims, k, ITERATIONS, stop)? else {
            return Ok(None);
        };
        Ok(Some(Self { groups: Groups::of(&vectors, dims)?, dims, vectors }))
    }

    pub(crate) fn len(&self) -> usize {
        self.vectors.len() / self.dims.max(1)
    }

    pub(crate) fn as_flat(&self) -> &[f32] {
        &self.vectors
    }

    /// Centroids from their flat form; the error says what is wrong.
    pub(crate) fn from_flat(dims: usize, vectors: Vec<f32>) -> Result<Self, String> {
        if dims == 0 || vectors.is_empty() || !vectors.len().is_multiple_of(dims) {
            return Err(format!("{} centroid values are not whole vectors of {dims}", vectors.len()));
        }
        if vectors.len() / dims > u16::MAX as usize + 1 {
            return Err(format!("{} centroids, more than a u16 tag can name", vectors.len() / dims));
        }
        if vectors.iter().any(|x| !x.is_finite()) {
            return Err("a centroid holds a non-finite value".into());
        }
        Ok(Self { groups: Groups::of(&vectors, dims)?, dims, vectors })
    }

    /// The tag of `token`: the centroid with the largest dot product among the members of
    /// the token's best groups (the best of all centroids when there are no groups; the two
    /// differ for a small fraction of tokens, see the tests).
    pub(crate) fn nearest(&self, token: &[f32]) -> u16 {
        let Some(groups) = &self.groups else {
            return nearest_of(&self.vectors, self.dims, token);
        };
        let mut ranked: Vec<(f32, usize)> =
            groups.centers.chunks_exact(self.dims).map(|c| dot(token, c)).zip(0..).collect();
        let searched = GROUPS_SEARCHED.min(ranked.len());
        ranked.select_nth_unstable_by(searched - 1, |a, b| b.0.total_cmp(&a.0));
        let mut best = (0u16, f32::NEG_INFINITY);
        for &(_, g) in &ranked[..searched] {
            for &c in &groups.members[g] {
                let s = dot(token, &self.vectors[c as usize * self.dims..(c as usize + 1) * self.dims]);
                if s > best.1 {
                    best = (c, s);
                }
            }
        }
        best.0
    }

    /// The tags of an entry whose tokens are `flat`: the distinct nearest centroids,
    /// ascending.
    pub(crate) fn tags_of(&self, flat: &[f32]) -> Box<[u16]> {
        let mut tags: Vec<u16> = flat.chunks_exact(self.dims.max(1)).map(|t| self.nearest(t)).collect();
        tags.sort_unstable();
        tags.dedup();
        tags.into_boxed_slice()
    }

    /// [`Centroids::nearest`] of every token of `flat`, split over the cores.
    pub(crate) fn nearest_all(&self, flat: &[f32]) -> Result<Vec<u16>, String> {
        map_split(flat, self.dims, |t| self.nearest(t))
    }

    /// The dot product of every query token with every centroid, centroid-major:
    /// `out[c * query.len() + i]` is token `i` against centroid `c`.
    pub(crate) fn scores(&self, query: &[Vec<f32>]) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len() * query.len());
        if query.iter().all(|q| q.len() == self.dims) {
            // One table, in tiles (half the time of a `dot` call per pair).
            let flat: Vec<f32> = query.iter().flatten().copied().collect();
            dot_table(&self.vectors, &flat, self.dims, &mut out);
            return out;
        }
        for v in self.vectors.chunks_exact(self.dims) {
            out.extend(query.iter().map(|q| dot(q, v)));
        }
        out
    }
}

/// A fixed 64-bit mix of `x` (SplitMix64's finalizer).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `v` at unit length, or the first axis if it is all zeros (a centroid needs a direction).
fn unit_or_axis(v: &[f32]) -> Vec<f32> {
    let mut u = normalized(v);
    if u.iter().all(|&x| x == 0.0) {
        if let Some(first) = u.first_mut() {
            *first = 1.0;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_finds_separated_directions_and_tags_tokens_by_them() {
        // Four well-separated directions in 8 dimensions, 200 noisy tokens around each.
        let dims = 8;
        let mut sample = Vec::new();
        for i in 0..800usize {
            let axis = i % 4;
            let mut t = vec![0.0f32; dims];
            t[axis * 2] = 1.0;
            t[(axis * 2 + 1) % dims] = 0.1 * ((i * 7 % 11) as f32 / 11.0 - 0.5);
            sample.extend_from_slice(&t);
        }
        let c = Centroids::train(&sample, dims).unwrap();
        assert_eq!(c.len(), 800 / TOKENS_PER_CENTROID);
        let tags = c.nearest_all(&sample).unwrap();
        // Tokens of the same direction may spread over several centroids, but no centroid
        // holds tokens of two directions.
        let mut direction_of = std::collections::HashMap::new();
        for (i, &tag) in tags.iter().enumerate() {
            assert_eq!(*direction_of.entry(tag).or_insert(i % 4), i % 4, "centroid {tag} mixes directions");
        }
        for (i, t) in sample.chunks_exact(dims).enumerate() {
            assert_eq!(c.nearest(t), tags[i]);
        }
        let query = vec![sample[..dims].to_vec()];
        let s = c.scores(&query);
        assert_eq!(s.len(), c.len());
        assert!((s[tags[0] as usize] - s.iter().cloned().fold(f32::MIN, f32::max)).abs() < 1e-6);

        assert_eq!(Centroids::from_flat(dims, c.as_flat().to_vec()).unwrap(), c);
        assert!(Centroids::from_flat(dims, vec![0.0; dims + 1]).is_err());
        assert!(Centroids::from_flat(dims, vec![f32::NAN; dims]).is_err());
    }

    #[test]
    fn a_panicking_tagging_worker_is_an_error_not_a_short_result() {
        // Enough tokens for several parts; the part holding token 5,000 panics.
        let flat: Vec<f32> = (0..8_000 * 4).map(|i| i as f32).collect();
        let err = map_split(&flat, 4, |t| if t[0] == 20_000.0 { panic!("injected") } else { 0 }).unwrap_err();
        assert!(err.contains("panicked"), "{err}");
        assert_eq!(map_split(&flat, 4, |_| 1).unwrap().len(), 8_000, "one tag per token otherwise");
    }

    #[test]
    fn a_tiny_or_empty_sample_still_gives_usable_centroids() {
        let c = Centroids::train(&[], 4).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c.nearest(&[0.0, 1.0, 0.0, 0.0]), 0);
        let c = Centroids::train(&[0.0; 12], 4).unwrap();
        assert_eq!(c.len(), 1);
        assert!(c.as_flat().iter().all(|x| x.is_finite()));
    }

    #[test]
    fn grouped_tagging_mostly_agrees_with_the_exact_nearest_centroid() {
        // 40,000 tokens around 600 directions in 32 dimensions: enough for 2,048 centroids.
        let dims = 32;
        let mut state = 1u64;
        let mut next = || {
            state = splitmix64(state);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let directions: Vec<Vec<f32>> = (0..600).map(|_| (0..dims).map(|_| next()).collect()).collect();
        let mut sample = Vec::new();
        for i in 0..40_000usize {
            let d = &directions[(splitmix64(i as u64) % 600) as usize];
            let t: Vec<f32> = d.iter().map(|x| x + 0.15 * next()).collect();
            sample.extend_from_slice(&normalized(&t));
        }
        let c = Centroids::train(&sample, dims).unwrap();
        assert_eq!(c.len(), MAX_CENTROIDS);
        assert!(c.groups.is_some());
        let tags = c.nearest_all(&sample).unwrap();
        let agree = sample
            .chunks_exact(dims)
            .zip(&tags)
            .filter(|(t, &tag)| nearest_of(c.as_flat(), dims, t) == tag)
            .count();
        assert!(
            agree as f64 >= 0.95 * tags.len() as f64,
            "{agree} of {} tags are the exact nearest",
            tags.len()
        );
        // The groups are derived from the centroids alone: loading them rebuilds the same.
        assert_eq!(Centroids::from_flat(dims, c.as_flat().to_vec()).unwrap(), c);
    }
}
