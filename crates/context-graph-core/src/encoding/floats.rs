//! Float vectors as little-endian bytes (the payload of MessagePack `bin` values).

/// The little-endian bytes of `values`, 4 per float. Bit-exact, including NaN payloads,
/// -0.0 and subnormals.
pub fn f32s_to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    append_f32s(&mut out, values);
    out
}

pub(crate) fn append_f32s(out: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// The floats in little-endian `bytes`; `None` if the length is not a multiple of 4.
pub fn f32s_from_le_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

pub(crate) fn u32s_from_le_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bit_exact() {
        let v = [0.0, -0.0, 1.5, f32::MIN_POSITIVE / 2.0, f32::MAX, f32::from_bits(0x7fc0_1234)];
        let back = f32s_from_le_bytes(&f32s_to_le_bytes(&v)).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&v));
        assert_eq!(f32s_from_le_bytes(&[1, 2, 3]), None);
    }
}
