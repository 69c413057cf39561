//! Damaged bytes on disk end in a clear error, never a panic and never a wrong array.

#[path = "support/workload.rs"]
mod workload;

use context_graph_storage::{
    RocksDbTeleologicalStore, StorageError, StoreConfig, TeleologicalArrayStore, CF_ARRAYS, CF_SLOTS,
};
use workload::{array, id_of};

fn config() -> StoreConfig {
    StoreConfig { schema: workload::schema(), ..StoreConfig::default() }
}

fn open(path: &str) -> Result<RocksDbTeleologicalStore, StorageError> {
    RocksDbTeleologicalStore::open(path, config())
}

#[tokio::test]
async fn a_damaged_array_value_is_corruption_naming_the_array() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let store = open(path).unwrap();
    let arrays: Vec<_> = (0..5).map(|s| array(s, 1)).collect();
    store.store_batch(&arrays).await.unwrap();
    let cf = store.db().cf_handle(CF_ARRAYS).unwrap();
    store.db().put_cf(&cf, id_of(2).as_bytes(), [1u8, 0x93, 0xff, 0x00]).unwrap();
    drop(cf);
    let err = store.retrieve(id_of(2)).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corruption { what } if what.contains(&id_of(2).to_string())),
        "{err:?}"
    );
    let err = store.retrieve_batch(&[id_of(1), id_of(2)]).await.unwrap_err();
    assert!(matches!(err, StorageError::Corruption { .. }), "{err:?}");
    assert_eq!(store.retrieve(id_of(3)).await.unwrap(), arrays[3]);
    // An unknown value format is corruption too, not a misread: of a head, and of a slot.
    let cf = store.db().cf_handle(CF_ARRAYS).unwrap();
    let mut future = context_graph_core::encoding::encode_array_head(&arrays[4]).unwrap();
    future[0] = 9;
    store.db().put_cf(&cf, id_of(4).as_bytes(), future).unwrap();
    drop(cf);
    let err = store.retrieve(id_of(4)).await.unwrap_err();
    assert!(matches!(&err, StorageError::Corruption { what } if what.contains("version 9")), "{err:?}");
    let cf = store.db().cf_handle(CF_SLOTS).unwrap();
    let e = context_graph_core::teleology::Embedder::Hdc;
    let mut future = context_graph_core::encoding::encode_slot_value(id_of(0), arrays[0].get(e)).unwrap();
    future[0] = 2;
    let mut key = vec![e.index() as u8];
    key.extend_from_slice(id_of(0).as_bytes());
    store.db().put_cf(&cf, key, future).unwrap();
    drop(cf);
    let err = store.retrieve(id_of(0)).await.unwrap_err();
    assert!(matches!(&err, StorageError::Corruption { what } if what.contains("version 2")), "{err:?}");
}

#[tokio::test]
async fn bit_flips_in_sst_files_give_errors_never_wrong_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let arrays: Vec<_> = (0..80).map(|s| array(s, 7)).collect();
    let store = open(&path).unwrap();
    store.store_batch(&arrays).await.unwrap();
    store.close().unwrap();
    // Flip one byte in the middle of the largest table file (the array bodies).
    let data = dir.path().join("data");
    let largest = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|f| f.path().extension().is_some_and(|x| x == "sst" || x == "blob"))
        .max_by_key(|f| f.metadata().unwrap().len())
        .expect("a table file")
        .path();
    let mut bytes = std::fs::read(&largest).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x10;
    std::fs::write(&largest, &bytes).unwrap();

    let store = match open(&path) {
        Ok(store) => store,
        Err(e) => {
            // Refusing to open is a clear answer too, as long as it says what is wrong.
            assert!(matches!(e, StorageError::Corruption { .. } | StorageError::Backend(_)), "{e:?}");
            println!("open refused the damaged store: {e}");
            return;
        }
    };
    let (mut good, mut damaged) = (0, 0);
    for a in &arrays {
        match store.retrieve(a.id).await {
            Ok(got) => {
                assert_eq!(&got, a, "a damaged file must never yield a different array");
                good += 1;
            }
            Err(StorageError::Corruption { what }) => {
                assert!(!what.is_empty());
                damaged += 1;
            }
            Err(e) => panic!("expected Corruption, got {e:?}"),
        }
    }
    println!(
        "after one flipped byte in {}: {good} arrays intact, {damaged} reported as corruption",
        largest.display()
    );
    assert!(damaged > 0, "the flipped byte must be detected by a read");
}

#[tokio::test]
async fn an_unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let store = open(path).unwrap();
    let cf = store.db().cf_handle("store_meta").unwrap();
    store.db().put_cf(&cf, b"format_version", 99u32.to_le_bytes()).unwrap();
    drop(cf);
    store.close().unwrap();
    let err = open(path).err().unwrap();
    assert!(matches!(err, StorageError::UnsupportedFormat { found: 99, supported: 3 }), "{err:?}");
    assert!(err.to_string().contains("99"));
}

#[tokio::test]
async fn a_format_1_store_with_rocksdb_postings_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    open(path).unwrap().close().unwrap();
    {
        // Add the column family format 1 kept sparse postings in.
        let data = dir.path().join("data");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &data).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &data, &cfs).unwrap();
        db.create_cf("sparse_postings", &rocksdb::Options::default()).unwrap();
    }
    let err = open(path).err().unwrap();
    assert!(matches!(err, StorageError::UnsupportedFormat { found: 1, supported: 3 }), "{err:?}");
}

#[tokio::test]
async fn a_damaged_schema_record_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let store = open(path).unwrap();
    let cf = store.db().cf_handle("store_meta").unwrap();
    store.db().put_cf(&cf, b"schema", b"{not json").unwrap();
    drop(cf);
    store.close().unwrap();
    let err = open(path).err().unwrap();
    assert!(matches!(&err, StorageError::Corruption { what } if what.contains("schema")), "{err:?}");
}
