//! Property tests: every output kind round-trips bit-exactly, and decoders given arbitrary or
//! damaged bytes return errors instead of panicking.

use context_graph_core::encoding::{
    decode_array, decode_metadata, decode_slot, encode_array, encode_metadata, MetadataRecord,
};
use context_graph_core::teleology::{
    ArrayMetadata, Embedder, EmbedderOutput, SparseVector, TeleologicalArray, TokenEmbeddings,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Any f32 bit pattern: NaN payloads, -0.0, subnormals, infinities.
fn any_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

fn output() -> impl Strategy<Value = EmbedderOutput> {
    prop_oneof![
        prop::collection::vec(any_f32(), 0..64).prop_map(EmbedderOutput::Dense),
        prop::collection::vec((any::<u32>(), any_f32()), 0..32).prop_map(|t| {
            let (i, v) = t.into_iter().unzip();
            EmbedderOutput::Sparse(SparseVector::new(i, v))
        }),
        (1usize..6, 0usize..8).prop_flat_map(|(dims, n)| {
            prop::collection::vec(prop::collection::vec(any_f32(), dims), n)
                .prop_map(move |toks| EmbedderOutput::TokenLevel(TokenEmbeddings::new(toks, dims)))
        }),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(EmbedderOutput::Binary),
    ]
}

fn array() -> impl Strategy<Value = TeleologicalArray> {
    (
        any::<u128>(),
        prop::collection::vec(output(), 13),
        any::<u64>(),
        -8_000_000_000i64..8_000_000_000,
        0u32..1_000_000_000,
        prop::option::of((
            "[a-z]{1,12}",
            prop::option::of("[a-z]{0,5}"),
            prop::collection::vec("[a-z ]{0,6}", 0..3),
        )),
        prop::option::of(".{0,40}"),
    )
        .prop_map(|(id, outs, hash, secs, nanos, meta, content)| {
            let mut a = TeleologicalArray::new(Uuid::from_u128(id));
            for (e, o) in Embedder::all().zip(outs) {
                a.set(e, o);
            }
            a.source_hash = hash;
            a.created_at = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            a.metadata = meta.map(|(ns, mt, tags)| ArrayMetadata {
                namespace: Some(ns),
                memory_type: mt,
                tags,
                custom: [("k".to_string(), "v".to_string())].into(),
            });
            a.content = content;
            a
        })
}

/// Equality that compares floats by their bits (NaN == NaN with the same payload).
fn bits_of(a: &TeleologicalArray) -> String {
    let mut s = format!("{:?}|{}|{}|{:?}|{:?}", a.id, a.source_hash, a.created_at, a.metadata, a.content);
    for o in &a.embeddings {
        let fl = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        s += &match o {
            EmbedderOutput::Dense(v) => format!("D{:?}", fl(v)),
            EmbedderOutput::Sparse(sv) => format!("S{:?}{:?}", sv.indices, fl(&sv.values)),
            EmbedderOutput::TokenLevel(t) => format!(
                "T{}{}{:?}",
                t.token_count,
                t.dims_per_token,
                t.embeddings.iter().map(|v| fl(v)).collect::<Vec<_>>()
            ),
            EmbedderOutput::Binary(b) => format!("B{b:?}"),
            other => format!("{other:?}"),
        };
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arrays_round_trip_bit_exactly(a in array()) {
        let bytes = encode_array(&a).unwrap();
        let back = decode_array(&bytes).unwrap();
        // Token outputs with no tokens decode with the encoded width, like any other.
        prop_assert_eq!(bits_of(&back), bits_of(&a));
        for e in Embedder::all() {
            let slot = decode_slot(&bytes, e).unwrap();
            prop_assert_eq!(format!("{:?}", slot.kind()), format!("{:?}", a.get(e).kind()));
        }
    }

    #[test]
    fn truncated_or_flipped_values_never_panic(a in array(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let bytes = encode_array(&a).unwrap();
        let _ = decode_array(&bytes[..cut.index(bytes.len())]);
        let mut damaged = bytes.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= 1 << bit;
        let _ = decode_array(&damaged);
        let _ = decode_slot(&damaged, Embedder::LateInteraction);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_array(&bytes);
        let _ = decode_slot(&bytes, Embedder::Hdc);
        let _ = decode_metadata(&bytes);
        let mut versioned = vec![1u8];
        versioned.extend_from_slice(&bytes);
        let _ = decode_array(&versioned);
        let _ = decode_metadata(&versioned);
    }
}

#[test]
fn metadata_record_round_trips() {
    let r = MetadataRecord {
        namespace: None,
        memory_type: Some("x".into()),
        tags: vec![],
        created_secs: -5,
        created_nanos: 999_999_999,
        source_hash: u64::MAX,
        encoded_size: 0,
    };
    assert_eq!(decode_metadata(&encode_metadata(&r)).unwrap(), r);
}
