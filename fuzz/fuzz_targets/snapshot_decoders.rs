//! Every snapshot decoder of the store (graph at f32 and i8, inverted, token-level, binary,
//! key map) and the change-log decoder, fed the fuzzer's bytes: each must return an error or a
//! value, never panic, abort or allocate by a length it read. The first byte picks the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&which, bytes)) = data.split_first() {
        let _ = context_graph_storage::fuzzing::decode(which, bytes);
    }
});
