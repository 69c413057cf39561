//! The similarity of each embedder kind, defined once: the indices score with these, and
//! brute-force references (tests, ground truth) compare against them.

use super::array::EmbedderOutput;

/// Dot product. Eight independent accumulators let the compiler vectorize the loop (a single
/// running sum cannot be, because float addition is not associative).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in rest_a.iter().zip(rest_b) {
        sum += x * y;
    }
    sum
}

/// `v` scaled to unit length (unchanged if its norm is zero). The dot product of two
/// normalized vectors is their cosine, and costs a third of computing the cosine directly.
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// Cosine similarity; 0 when either vector has zero norm.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let denom = (dot(a, a) * dot(b, b)).sqrt();
    if denom > 0.0 {
        dot(a, b) / denom
    } else {
        0.0
    }
}

/// MaxSim: for each query token, the best dot product with any document token, summed.
/// `doc` holds the document's tokens back to back, `dims` floats each.
pub fn max_sim(query: &[Vec<f32>], doc: &[f32], dims: usize) -> f32 {
    if dims == 0 || doc.len() < dims {
        return 0.0;
    }
    query.iter().map(|q| doc.chunks_exact(dims).map(|d| dot(q, d)).fold(f32::NEG_INFINITY, f32::max)).sum()
}

/// The similarity of a stored output to a query of the same kind, as each embedder defines
/// it: cosine (dense), dot product (sparse), MaxSim (token-level), 1 - Hamming/bits (binary,
/// `bits` from the schema). `None` when the two are not of the same kind.
pub fn score(query: &EmbedderOutput, stored: &EmbedderOutput, bits: usize) -> Option<f32> {
    Some(match (query, stored) {
        (EmbedderOutput::Dense(q), EmbedderOutput::Dense(d)) => cosine(q, d),
        (EmbedderOutput::Sparse(q), EmbedderOutput::Sparse(d)) => q.dot(d),
        (EmbedderOutput::TokenLevel(q), EmbedderOutput::TokenLevel(d)) => {
            let flat: Vec<f32> = d.embeddings.concat();
            max_sim(&q.embeddings, &flat, d.dims_per_token)
        }
        (EmbedderOutput::Binary(q), EmbedderOutput::Binary(d)) => {
            let words = bits.div_ceil(64);
            hamming_score(&pack_words(q, words), &pack_words(d, words), bits.max(1))
        }
        _ => return None,
    })
}

/// Hamming distance between two packed codes of equal length.
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Score of two packed binary codes of `bits` bits: `1 - hamming / bits`.
pub fn hamming_score(a: &[u64], b: &[u64], bits: usize) -> f32 {
    1.0 - hamming(a, b) as f32 / bits as f32
}

/// Pack bytes (LSB-first bits) into u64 words, zero-padded.
pub fn pack_words(bytes: &[u8], words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    for (i, chunk) in bytes.chunks(8).enumerate().take(words) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_le_bytes(buf);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_on_odd_lengths() {
        for n in [0, 1, 7, 8, 9, 31, 100] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() <= 1e-3 * naive.abs().max(1.0), "n={n}");
        }
    }

    #[test]
    fn max_sim_and_hamming() {
        let q = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let doc = [0.5, 0.0, 0.0, 2.0, 1.0, 1.0];
        assert_eq!(max_sim(&q, &doc, 2), 1.0 + 2.0);
        // Longer inputs agree with the plain definition.
        let q9: Vec<Vec<f32>> =
            (0..3).map(|i| (0..9).map(|j| ((i * 9 + j) % 7) as f32 - 3.0).collect()).collect();
        let doc9: Vec<f32> = (0..9 * 11).map(|k| ((k * 5) % 13) as f32 - 6.0).collect();
        let naive: f32 = q9
            .iter()
            .map(|q| {
                doc9.chunks_exact(9)
                    .map(|d| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum();
        assert_eq!(max_sim(&q9, &doc9, 9), naive);
        assert_eq!(hamming(&[0b1011], &[0b0001]), 2);
        assert_eq!(pack_words(&[1, 0, 0, 0, 0, 0, 0, 0, 3], 2), vec![1, 3]);
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
    }
}
