use context_graph_core::encoding::decode_slot;
use context_graph_core::teleology::Embedder;
use context_graph_storage::{RocksDbTeleologicalStore, StoreConfig};
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let t = Instant::now();
    let store = RocksDbTeleologicalStore::open(&path, StoreConfig::default()).unwrap();
    println!("open {:?}", t.elapsed());
    let db = store.db();
    let cf = db.cf_handle("teleological_arrays").unwrap();
    let ids: Vec<Vec<u8>> = db
        .iterator_cf(&cf, rocksdb::IteratorMode::Start)
        .step_by(97)
        .take(2000)
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    for round in 0..3 {
        let t = Instant::now();
        let mut bytes_total = 0;
        for chunk in ids.chunks(20) {
            let keys: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
            for v in db.batched_multi_get_cf(&cf, &keys, false) {
                bytes_total += v.unwrap().unwrap().len();
            }
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64;
        let t = Instant::now();
        for chunk in ids.chunks(20) {
            let keys: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
            for v in db.batched_multi_get_cf(&cf, &keys, false) {
                let b = v.unwrap().unwrap();
                std::hint::black_box(decode_slot(&b, Embedder::Semantic).unwrap());
            }
        }
        let per2 = t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64;
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_verify_checksums(false);
        let t = Instant::now();
        for k in &ids {
            let b = db.get_pinned_cf_opt(&cf, k, &ro).unwrap().unwrap();
            std::hint::black_box(b.len());
        }
        let per3 = t.elapsed().as_secs_f64() * 1e6 / ids.len() as f64;
        println!("round {round}: multi_get {per:.1} µs/value, +decode {per2:.1} µs, get_pinned no-crc {per3:.1} µs ({} bytes avg)", bytes_total / ids.len());
    }
}
