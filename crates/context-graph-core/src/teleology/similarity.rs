//! The similarity of each embedder kind, defined once: the indices score with these, and
//! brute-force references (tests, ground truth) compare against them.

use super::array::EmbedderOutput;

/// Dot product. On x86-64 with AVX2 and FMA (checked once at run time) the loop is compiled
/// for those instructions; elsewhere for the baseline. Eight independent accumulators let the
/// compiler vectorize it (a single running sum cannot be: float addition is not associative).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = kernels::dot(a, b) {
        return d;
    }
    dot_portable(a, b)
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
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

/// The dot product of every `dims`-wide row of `a` with every `dims`-wide row of `b` (rows
/// back to back, a trailing partial row ignored): `out[i * rows_b + j] = dot(a_i, b_j)`, equal
/// bit for bit to [`dot`]. `out` is cleared and filled. On AVX2 the rows are taken in tiles
/// (four of `a` by two of `b`), so that each loaded chunk serves several products: a table of
/// centroid or token scores costs about half the one-pair-at-a-time calls.
pub fn dot_table(a: &[f32], b: &[f32], dims: usize, out: &mut Vec<f32>) {
    out.clear();
    if dims == 0 {
        return;
    }
    let (rows_a, rows_b) = (a.len() / dims, b.len() / dims);
    out.resize(rows_a * rows_b, 0.0);
    #[cfg(target_arch = "x86_64")]
    if kernels::dot_table(&a[..rows_a * dims], &b[..rows_b * dims], dims, out) {
        return;
    }
    for (i, x) in a.chunks_exact(dims).enumerate() {
        for (j, y) in b.chunks_exact(dims).enumerate() {
            out[i * rows_b + j] = dot_portable(x, y);
        }
    }
}

/// Ask the CPU to start loading `data` into its caches (a hint: no effect on results, nothing
/// where there is no such instruction). A loop over scattered entries calls it for the next
/// entry while it works on this one, so that the next one's memory latency overlaps the work.
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    kernels::prefetch(data.as_ptr() as *const u8, std::mem::size_of_val(data));
}

/// Dot product of two byte vectors, exact in integers (what `i8` index storage compares).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = kernels::dot_i8(a, b) {
        return d;
    }
    dot_i8_portable(a, b)
}

/// The largest dot product of `q` with any `dims`-wide row of `rows` (rows back to back; a
/// trailing partial row is ignored); `i32::MIN` when there is no row. One call for a whole
/// MaxSim row: the per-pair call and feature check of [`dot_i8`] cost more than the 128-byte
/// dot itself.
pub fn max_dot_i8(q: &[i8], rows: &[i8], dims: usize) -> i32 {
    if dims == 0 {
        return i32::MIN;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = kernels::max_dot_i8(q, rows, dims) {
        return d;
    }
    max_dot_i8_portable(q, rows, dims)
}

fn max_dot_i8_portable(q: &[i8], rows: &[i8], dims: usize) -> i32 {
    rows.chunks_exact(dims).map(|r| dot_i8_portable(q, r)).max().unwrap_or(i32::MIN)
}

/// [`max_dot_i8`] of each query in `queries` (`dims` bytes each, back to back) with the same
/// `rows`, into `out` (one per whole query; `out` shorter than that takes the first ones):
/// the rows are checked once for what the fast path cannot take. A token-level MaxSim is this
/// with the query's tokens.
pub fn max_dots_i8(queries: &[i8], rows: &[i8], dims: usize, out: &mut [i32]) {
    if dims == 0 {
        out.iter_mut().for_each(|b| *b = i32::MIN);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernels::max_dots_i8(queries, rows, dims, out) {
        return;
    }
    for (q, best) in queries.chunks_exact(dims).zip(out.iter_mut()) {
        *best = max_dot_i8_portable(q, rows, dims);
    }
}

#[inline(always)]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    // Integer addition is associative, so the compiler vectorizes this plain loop.
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

/// The same loops compiled for AVX2 + FMA (and `popcnt`), used when the CPU has them (checked
/// once). Each returns `None` when it does not, and the caller runs the portable loop.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod kernels {
    use std::sync::OnceLock;

    fn has_avx2_fma() -> bool {
        static DETECTED: OnceLock<bool> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        })
    }

    fn has_popcnt() -> bool {
        static DETECTED: OnceLock<bool> = OnceLock::new();
        *DETECTED.get_or_init(|| std::arch::is_x86_feature_detected!("popcnt"))
    }

    pub(super) fn dot(a: &[f32], b: &[f32]) -> Option<f32> {
        // SAFETY: called only when the CPU supports the instructions `dot_avx2` is compiled for.
        has_avx2_fma().then(|| unsafe { dot_avx2(a, b) })
    }

    pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> Option<i32> {
        // SAFETY: as in `dot`.
        has_avx2_fma().then(|| unsafe { dot_i8_avx2(a, b) })
    }

    pub(super) fn max_dot_i8(q: &[i8], rows: &[i8], dims: usize) -> Option<i32> {
        // SAFETY: as in `dot`.
        has_avx2_fma().then(|| unsafe { max_dot_i8_avx2(q, rows, dims) })
    }

    pub(super) fn dot_table(a: &[f32], b: &[f32], dims: usize, out: &mut [f32]) -> bool {
        // SAFETY: as in `dot`.
        has_avx2_fma() && {
            unsafe { dot_table_avx2(a, b, dims, out) };
            true
        }
    }

    pub(super) fn prefetch(start: *const u8, len: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for offset in (0..len).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults and reads nothing into the
            // program; the address stays inside (or one line past) the slice it came from.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset) as *const i8) };
        }
    }

    pub(super) fn max_dots_i8(queries: &[i8], rows: &[i8], dims: usize, out: &mut [i32]) -> bool {
        // SAFETY: as in `dot`.
        has_avx2_fma() && {
            unsafe { max_dots_i8_avx2(queries, rows, dims, out) };
            true
        }
    }

    pub(super) fn hamming(a: &[u64], b: &[u64]) -> Option<u32> {
        // SAFETY: called only when the CPU has `popcnt`.
        has_popcnt().then(|| unsafe { hamming_popcnt(a, b) })
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_portable(a, b)
    }

    /// 32 bytes at a time: `vpmaddubsw` multiplies |a| (unsigned) by b with a's sign and adds
    /// pairs into 16 bits, `vpmaddwd` adds those into eight 32-bit lanes; then 16 bytes at a
    /// time by sign-extension. Exact for components in -127..=127 (no pair sum can saturate
    /// 16 bits); a slice holding -128 is counted by the 16-byte path instead (checked as it
    /// goes, a compare per load), so the result is exact for every input.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_si256();
        let ones = _mm256_set1_epi16(1);
        let min = _mm256_set1_epi8(i8::MIN);
        let mut seen_min = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: `i + 32 <= n` keeps both 32-byte loads inside the slices (unaligned
            // loads need no alignment).
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(i) as *const __m256i),
                    _mm256_loadu_si256(b.as_ptr().add(i) as *const __m256i),
                )
            };
            seen_min = _mm256_or_si256(
                seen_min,
                _mm256_or_si256(_mm256_cmpeq_epi8(va, min), _mm256_cmpeq_epi8(vb, min)),
            );
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            i += 32;
        }
        if _mm256_testz_si256(seen_min, seen_min) == 0 {
            // A -128 somewhere: recount the whole of it by sign-extension.
            acc = _mm256_setzero_si256();
            i = 0;
        }
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n` keeps both 16-byte loads inside the slices.
            let (va, vb) = unsafe {
                (
                    _mm_loadu_si128(a.as_ptr().add(i) as *const __m128i),
                    _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i),
                )
            };
            acc =
                _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepi8_epi16(va), _mm256_cvtepi8_epi16(vb)));
            i += 16;
        }
        // Horizontal sum of the eight lanes in registers.
        let halves = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
        let sum = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
        let tail = if i < n { super::dot_i8_portable(&a[i..n], &b[i..n]) } else { 0 };
        _mm_cvtsi128_si32(sum) + tail
    }

    /// `dot_table` in tiles of four rows of `a` by two of `b`: eight accumulators, each
    /// chunk of eight floats loaded once per tile. Each product is summed exactly as
    /// `dot_portable` sums it (eight lanes multiplied then added, no fused multiply-add, the
    /// lanes added in order, then the tail), so the results equal `dot`'s bit for bit.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_table_avx2(a: &[f32], b: &[f32], dims: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (rows_a, rows_b) = (a.len() / dims, b.len() / dims);
        let body = dims / 8 * 8;
        // The sum of one accumulator's lanes in order, then the tail of the pair.
        let finish = |acc: __m256, x: &[f32], y: &[f32]| {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` is eight floats; an unaligned store needs no alignment.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            let mut sum: f32 = lanes.iter().sum();
            for (p, q) in x[body..].iter().zip(&y[body..]) {
                sum += p * q;
            }
            sum
        };
        let row_a = |i: usize| &a[i * dims..(i + 1) * dims];
        let row_b = |j: usize| &b[j * dims..(j + 1) * dims];
        let mut i = 0;
        while i + 4 <= rows_a {
            let mut j = 0;
            while j + 2 <= rows_b {
                let mut acc = [_mm256_setzero_ps(); 8];
                let mut k = 0;
                while k < body {
                    // SAFETY: `k + 8 <= body <= dims` floats of rows `i..i + 4` of `a` and
                    // `j..j + 2` of `b`, all inside the slices.
                    unsafe {
                        let y0 = _mm256_loadu_ps(b.as_ptr().add(j * dims + k));
                        let y1 = _mm256_loadu_ps(b.as_ptr().add((j + 1) * dims + k));
                        for r in 0..4 {
                            let x = _mm256_loadu_ps(a.as_ptr().add((i + r) * dims + k));
                            acc[2 * r] = _mm256_add_ps(acc[2 * r], _mm256_mul_ps(x, y0));
                            acc[2 * r + 1] = _mm256_add_ps(acc[2 * r + 1], _mm256_mul_ps(x, y1));
                        }
                    }
                    k += 8;
                }
                for r in 0..4 {
                    out[(i + r) * rows_b + j] = finish(acc[2 * r], row_a(i + r), row_b(j));
                    out[(i + r) * rows_b + j + 1] = finish(acc[2 * r + 1], row_a(i + r), row_b(j + 1));
                }
                j += 2;
            }
            for j in j..rows_b {
                for r in 0..4 {
                    out[(i + r) * rows_b + j] = super::dot_portable(row_a(i + r), row_b(j));
                }
            }
            i += 4;
        }
        for i in i..rows_a {
            for j in 0..rows_b {
                out[i * rows_b + j] = super::dot_portable(row_a(i), row_b(j));
            }
        }
    }

    /// Whether any byte of `v` is -128 (the one value the `vpmaddubsw` paths cannot take).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn holds_min(v: &[i8]) -> bool {
        use std::arch::x86_64::*;
        let min = _mm256_set1_epi8(i8::MIN);
        let mut seen = _mm256_setzero_si256();
        let mut i = 0;
        while i + 32 <= v.len() {
            // SAFETY: `i + 32 <= v.len()` keeps the load inside the slice.
            let x = unsafe { _mm256_loadu_si256(v.as_ptr().add(i) as *const __m256i) };
            seen = _mm256_or_si256(seen, _mm256_cmpeq_epi8(x, min));
            i += 32;
        }
        _mm256_testz_si256(seen, seen) == 0 || v[i..].contains(&i8::MIN)
    }

    /// Query chunks this fast path keeps in registers at most (256 dimensions).
    const MAX_CHUNKS: usize = 8;

    /// The fast path's precondition: whole 32-byte chunks, at most `MAX_CHUNKS`.
    fn fast_width(dims: usize) -> bool {
        dims > 0 && dims.is_multiple_of(32) && dims / 32 <= MAX_CHUNKS
    }

    /// The largest dot product of `q` (`dims` bytes, no -128) with the rows of `rows` (no
    /// -128 anywhere; `fast_width(dims)`). The query's chunks are prepared once (|q|, and q for
    /// the signs) and kept in registers; each row then costs a load, a sign, a `vpmaddubsw`
    /// and a `vpmaddwd` per chunk, and four rows' lanes are summed together by `vphaddd`
    /// (summing each row's eight lanes apart cost as much as its dot product).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_dot_rows_avx2(q: &[i8], rows: &[i8], dims: usize) -> i32 {
        use std::arch::x86_64::*;
        let chunks = dims / 32;
        let zero = _mm256_setzero_si256();
        let (mut signs, mut magnitudes) = ([zero; MAX_CHUNKS], [zero; MAX_CHUNKS]);
        for c in 0..chunks {
            // SAFETY: `(c + 1) * 32 <= dims <= q.len()`.
            let v = unsafe { _mm256_loadu_si256(q.as_ptr().add(c * 32) as *const __m256i) };
            signs[c] = v;
            magnitudes[c] = _mm256_sign_epi8(v, v);
        }
        let ones = _mm256_set1_epi16(1);
        // Eight 32-bit partial sums of the dot product of the query with the row at `at`.
        let lanes = |at: usize| {
            let mut acc = zero;
            for c in 0..chunks {
                // SAFETY: callers pass `at + dims <= rows.len()`, and `(c + 1) * 32 <= dims`.
                let v = unsafe { _mm256_loadu_si256(rows.as_ptr().add(at + c * 32) as *const __m256i) };
                let pairs = _mm256_maddubs_epi16(magnitudes[c], _mm256_sign_epi8(v, signs[c]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            }
            acc
        };
        let n = rows.len() / dims;
        let mut best = _mm_set1_epi32(i32::MIN);
        let mut r = 0;
        while r + 4 <= n {
            let (a0, a1, a2, a3) =
                (lanes(r * dims), lanes((r + 1) * dims), lanes((r + 2) * dims), lanes((r + 3) * dims));
            // Per 128-bit half: [row 0, row 1, row 2, row 3] sums of that half's four lanes.
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
            let sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            best = _mm_max_epi32(best, sums);
            r += 4;
        }
        while r < n {
            let acc = lanes(r * dims);
            let halves = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            let pairs = _mm_add_epi32(halves, _mm_shuffle_epi32(halves, 0b01_00_11_10));
            let sum = _mm_add_epi32(pairs, _mm_shuffle_epi32(pairs, 0b10_11_00_01));
            best = _mm_max_epi32(best, sum);
            r += 1;
        }
        let best = _mm_max_epi32(best, _mm_shuffle_epi32(best, 0b01_00_11_10));
        _mm_cvtsi128_si32(_mm_max_epi32(best, _mm_shuffle_epi32(best, 0b10_11_00_01)))
    }

    /// The largest dot product of `q` with the whole rows of `rows` (`i32::MIN` for none);
    /// `fast_rows`: the rows are of a `fast_width` and hold no -128. A query holding -128, or
    /// rows that are not fast, go through `dot_i8_avx2`, which is exact for every input.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_dot_checked(q: &[i8], rows: &[i8], dims: usize, fast_rows: bool) -> i32 {
        // SAFETY (all calls below): this function has the features they need.
        if fast_rows && q.len() >= dims && unsafe { !holds_min(&q[..dims]) } {
            return unsafe { max_dot_rows_avx2(q, rows, dims) };
        }
        rows.chunks_exact(dims).map(|row| unsafe { dot_i8_avx2(q, row) }).max().unwrap_or(i32::MIN)
    }

    /// Whether `rows` (whole rows only) can take the fast path; empty rows need none.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fast_rows(rows: &[i8], dims: usize) -> bool {
        // SAFETY: this function has the features `holds_min` needs.
        !rows.is_empty() && fast_width(dims) && unsafe { !holds_min(rows) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_dot_i8_avx2(q: &[i8], rows: &[i8], dims: usize) -> i32 {
        let rows = &rows[..rows.len() / dims * dims];
        // SAFETY: this function has the features both need.
        unsafe { max_dot_checked(q, rows, dims, fast_rows(rows, dims)) }
    }

    /// `max_dot_i8_avx2` for each query of `queries` (`dims` bytes each), the rows checked
    /// for -128 once.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max_dots_i8_avx2(queries: &[i8], rows: &[i8], dims: usize, out: &mut [i32]) {
        let rows = &rows[..rows.len() / dims * dims];
        // SAFETY (both calls): this function has the features they need.
        let fast = unsafe { fast_rows(rows, dims) };
        for (q, best) in queries.chunks_exact(dims).zip(out.iter_mut()) {
            *best = unsafe { max_dot_checked(q, rows, dims, fast) };
        }
    }

    #[target_feature(enable = "popcnt")]
    unsafe fn hamming_popcnt(a: &[u64], b: &[u64]) -> u32 {
        super::hamming_portable(a, b)
    }
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
    // One table of every query token against every document token (the same products as
    // `dot`, computed in tiles); a query token of another width is scored by `dot` as before.
    let rows = doc.len() / dims;
    let flat: Vec<f32> = query.iter().filter(|q| q.len() == dims).flatten().copied().collect();
    let mut table = Vec::new();
    dot_table(&flat, doc, dims, &mut table);
    let mut scored = table.chunks_exact(rows);
    query
        .iter()
        .map(|q| {
            if q.len() == dims {
                scored
                    .next()
                    .map_or(f32::NEG_INFINITY, |row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            } else {
                doc.chunks_exact(dims).map(|d| dot(q, d)).fold(f32::NEG_INFINITY, f32::max)
            }
        })
        .sum()
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

/// Hamming distance between two packed codes of equal length (with the `popcnt` instruction
/// when the CPU has it: the baseline x86-64 target counts bits with a dozen shifts and masks).
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = kernels::hamming(a, b) {
        return d;
    }
    hamming_portable(a, b)
}

#[inline(always)]
fn hamming_portable(a: &[u64], b: &[u64]) -> u32 {
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
    fn dispatched_kernels_match_the_portable_ones() {
        for n in [0, 1, 7, 8, 9, 31, 100, 1024, 1537] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 5.0).collect();
            let (fast, portable) = (dot(&a, &b), dot_portable(&a, &b));
            assert!((fast - portable).abs() <= 1e-4 * portable.abs().max(1.0), "n={n}: {fast} vs {portable}");
            let qa: Vec<i8> = (0..n).map(|i| (i * 37 % 255 - 127) as i8).collect();
            let qb: Vec<i8> = (0..n).map(|i| (i * 53 % 255 - 127) as i8).collect();
            let naive: i32 = qa.iter().zip(&qb).map(|(&x, &y)| x as i32 * y as i32).sum();
            assert_eq!(dot_i8(&qa, &qb), naive, "n={n}");
            // Extremes, -128 included (which the 32-byte path must hand to the 16-byte one).
            for (x, y) in [(-128i8, -128i8), (-128, 127), (127, 127), (-127, -127), (127, -128)] {
                let (ea, eb) = (vec![x; n], vec![y; n]);
                assert_eq!(dot_i8(&ea, &eb), n as i32 * x as i32 * y as i32, "n={n} {x}x{y}");
                let mut mixed = qa.clone();
                if let Some(v) = mixed.get_mut(n / 2) {
                    *v = x;
                }
                let naive: i32 = mixed.iter().zip(&qb).map(|(&p, &q)| p as i32 * q as i32).sum();
                assert_eq!(dot_i8(&mixed, &qb), naive, "n={n} one {x}");
            }
            let wa: Vec<u64> = (0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
            let wb: Vec<u64> = (0..n as u64).map(|i| !i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)).collect();
            let naive: u32 = wa.iter().zip(&wb).map(|(x, y)| (x ^ y).count_ones()).sum();
            assert_eq!(hamming(&wa, &wb), naive, "n={n}");
        }
    }

    #[test]
    fn max_dot_i8_is_the_best_row() {
        for dims in [1, 15, 16, 17, 32, 64, 128, 130, 256, 288] {
            let q: Vec<i8> = (0..dims).map(|i| (i * 41 % 255) as i8).collect();
            let mut rows: Vec<i8> = (0..dims * 7 + 3).map(|i| (i * 29 % 251) as i8).collect();
            let naive =
                |q: &[i8], rows: &[i8]| rows.chunks_exact(dims).map(|r| dot_i8_portable(q, r)).max().unwrap();
            assert_eq!(max_dot_i8(&q, &rows, dims), naive(&q, &rows), "dims={dims}");
            // -128 in a row, and in the query, take the exact path.
            rows[dims + 1] = i8::MIN;
            rows[dims + 2] = i8::MIN;
            assert_eq!(max_dot_i8(&q, &rows, dims), naive(&q, &rows), "dims={dims}, -128 in a row");
            let mut q_min = q.clone();
            q_min[0] = i8::MIN;
            assert_eq!(
                max_dot_i8(&q_min, &rows, dims),
                naive(&q_min, &rows),
                "dims={dims}, -128 in the query"
            );
            let extreme = vec![i8::MIN; dims * 2];
            assert_eq!(max_dot_i8(&q_min, &extreme, dims), naive(&q_min, &extreme), "dims={dims}, all -128");
        }
        assert_eq!(max_dot_i8(&[1, 2], &[1], 2), i32::MIN, "no whole row");
        assert_eq!(max_dot_i8(&[1], &[1, 2], 0), i32::MIN, "zero width");
    }

    #[test]
    fn max_dots_i8_is_max_dot_i8_of_each_query() {
        for dims in [1, 16, 32, 96, 128, 256, 288] {
            // 0 to 9 rows: blocks of four and the rows after them.
            for n_rows in 0..10 {
                let queries: Vec<i8> = (0..dims * 3).map(|i| (i * 37 % 253) as i8).collect();
                let mut rows: Vec<i8> = (0..dims * n_rows).map(|i| (i * 29 % 251) as i8).collect();
                let naive = |q: &[i8], rows: &[i8]| {
                    rows.chunks_exact(dims).map(|r| dot_i8_portable(q, r)).max().unwrap_or(i32::MIN)
                };
                let check = |queries: &[i8], rows: &[i8], what: &str| {
                    let mut out = vec![0; 3];
                    max_dots_i8(queries, rows, dims, &mut out);
                    for (i, q) in queries.chunks_exact(dims).enumerate() {
                        assert_eq!(out[i], naive(q, rows), "dims={dims} rows={n_rows} query {i}: {what}");
                        assert_eq!(max_dot_i8(q, rows, dims), naive(q, rows), "max_dot_i8 {what}");
                    }
                };
                check(&queries, &rows, "plain");
                // The best row last, so that a block's maximum is not the first row's.
                if n_rows > 0 {
                    let last = rows.len() - dims;
                    rows[last..].copy_from_slice(&queries[..dims]);
                    check(&queries, &rows, "best row last");
                    rows[last] = i8::MIN;
                    check(&queries, &rows, "-128 in a row");
                }
                let mut q_min = queries.clone();
                q_min[dims] = i8::MIN;
                check(&q_min, &rows, "-128 in the second query");
                // Every dot product negative: the maximum is below zero, not zero.
                let negative: Vec<i8> =
                    queries.iter().map(|&x| if x == i8::MIN { 127 } else { -x }).collect();
                let same: Vec<i8> = (0..n_rows).flat_map(|_| queries[..dims].to_vec()).collect();
                check(&negative, &same, "negative");
            }
        }
        let mut out = [7; 2];
        max_dots_i8(&[1, 2], &[1, 2], 0, &mut out);
        assert_eq!(out, [i32::MIN; 2], "zero width");
    }

    #[test]
    fn dot_table_equals_dot_bit_for_bit() {
        for dims in [1, 7, 8, 9, 16, 128, 131] {
            for (rows_a, rows_b) in [(0, 3), (1, 1), (3, 5), (4, 2), (5, 3), (9, 7), (2048 / 64, 20)] {
                // A trailing partial row of each, shorter than a row, is ignored.
                let a: Vec<f32> = (0..rows_a * dims + (dims - 1).min(2))
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
                    .collect();
                let b: Vec<f32> = (0..rows_b * dims + (dims - 1).min(1))
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
                    .collect();
                let mut out = vec![9.0; 3];
                dot_table(&a, &b, dims, &mut out);
                assert_eq!(out.len(), rows_a * rows_b, "dims={dims} {rows_a}x{rows_b}");
                for i in 0..rows_a {
                    for j in 0..rows_b {
                        let want = dot(&a[i * dims..(i + 1) * dims], &b[j * dims..(j + 1) * dims]);
                        assert_eq!(
                            out[i * rows_b + j].to_bits(),
                            want.to_bits(),
                            "dims={dims} {rows_a}x{rows_b} at ({i}, {j})"
                        );
                    }
                }
            }
        }
        let mut out = vec![1.0];
        dot_table(&[1.0], &[1.0], 0, &mut out);
        assert!(out.is_empty(), "zero width");
    }

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
