//! Opening and creating stores, and turning storage errors into messages that say what to do.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use context_graph_core::teleology::StoreSchema;
use context_graph_storage::{Durability, RocksDbTeleologicalStore, StorageError, StoreConfig};

/// The path as the store API takes it.
pub fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().ok_or_else(|| anyhow!("store path {} is not valid UTF-8", path.display()))
}

/// The schema of the store at `path`, or an error telling the user to create one.
pub fn existing_schema(path: &Path) -> anyhow::Result<StoreSchema> {
    let p = path_str(path)?;
    match RocksDbTeleologicalStore::persisted_schema(p) {
        Ok(Some(schema)) => Ok(schema),
        Ok(None) => Err(missing_store(path)),
        Err(e) => Err(explain(e, path)),
    }
}

/// Open an existing store with the schema it was created with. Never creates one.
///
/// Synchronous and possibly long (index catch-up); commands call it before starting
/// concurrent work, on the runtime's entry thread, which no async task depends on.
pub fn open_existing(path: &Path, durability: Durability) -> anyhow::Result<RocksDbTeleologicalStore> {
    let schema = existing_schema(path)?;
    open_with(path, schema, durability, false)
}

/// Open the store at `path` with `schema`, creating it if `create` is set.
pub fn open_with(
    path: &Path,
    schema: StoreSchema,
    durability: Durability,
    create: bool,
) -> anyhow::Result<RocksDbTeleologicalStore> {
    let config = StoreConfig { create_if_missing: create, durability, schema, ..StoreConfig::default() };
    RocksDbTeleologicalStore::open(path_str(path)?, config).map_err(|e| explain(e, path))
}

/// Open (or create, with `config.create_if_missing`) the store at `path` with `config`.
pub fn open_config(path: &Path, config: StoreConfig) -> anyhow::Result<RocksDbTeleologicalStore> {
    RocksDbTeleologicalStore::open(path_str(path)?, config).map_err(|e| explain(e, path))
}

/// Create a new store; refuses if the path already holds one.
pub fn create(path: &Path, schema: StoreSchema) -> anyhow::Result<RocksDbTeleologicalStore> {
    if let Some(existing) =
        RocksDbTeleologicalStore::persisted_schema(path_str(path)?).map_err(|e| explain(e, path))?
    {
        let same = if existing == schema { "the same schema" } else { "a different schema" };
        bail!(
            "a store already exists at {} (with {same}); refusing to overwrite it\n\
             hint: use another --db path, or delete the directory first if you mean to start over",
            path.display()
        );
    }
    if let Some(e) = schema.invalid_slot() {
        bail!("the schema gives slot {} a size of zero; every slot needs a positive size", e.short_name());
    }
    open_with(path, schema, Durability::Sync, true)
}

/// Close a store, persisting its index snapshots so the next open needs no rebuild.
pub fn close(store: RocksDbTeleologicalStore, path: &Path) -> anyhow::Result<()> {
    store.close().with_context(|| format!("closing the store at {}", path.display()))
}

/// Close a store that tasks shared: wait up to `wait` for the last other copy to go (a
/// request or a session finishing), then close it. `holder` names who kept a copy, for the
/// error when the wait runs out.
pub async fn close_shared(
    store: std::sync::Arc<RocksDbTeleologicalStore>,
    path: &Path,
    wait: std::time::Duration,
    holder: &str,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + wait;
    let mut store = store;
    let store = loop {
        match std::sync::Arc::try_unwrap(store) {
            Ok(s) => break s,
            Err(shared) if std::time::Instant::now() < deadline => {
                store = shared;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(_) => bail!(
                "{holder} still held the store after {:.0} s; it was not closed cleanly (a restart recovers it)",
                wait.as_secs_f64()
            ),
        }
    };
    close(store, path)
}

fn missing_store(path: &Path) -> anyhow::Error {
    anyhow!(
        "no store at {}\n\
         hint: create one with `teleo --db {} init` (or `teleo import DIR` to load a dataset), \
         or point --db / TELEO_DATA at an existing store",
        path.display(),
        path.display()
    )
}

/// A storage error as a message with the store path and, where there is one, a remedy.
pub fn explain(e: StorageError, path: &Path) -> anyhow::Error {
    let hint = match &e {
        StorageError::InUse { .. } => {
            "hint: another teleo (or program) has this store open; wait for it to finish"
        }
        StorageError::SchemaMismatch { .. } => {
            "hint: a store keeps the schema it was created with; use a new --db path for data \
             of another shape"
        }
        StorageError::UnsupportedFormat { .. } => {
            "hint: this store was written by another version of teleo; use that version, or \
             export with it and put into a new store"
        }
        StorageError::Corruption { .. } => {
            "hint: run `teleo check` to see what is damaged; restore from a copy if you have one"
        }
        StorageError::ReadOnlyAfterFailure(_) => {
            "hint: run the command again: reopening recovers from the last durable commit"
        }
        StorageError::CommittedNotIndexed { .. } => {
            "hint: the data is safe; the next command that opens the store replays the change \
             into every index"
        }
        StorageError::OutcomeUnknown { .. } => {
            "hint: the disk reported an error while making the write durable; check the disk, \
             then read the ids back (`teleo get`) after the store is reopened to see whether the \
             write is there"
        }
        _ => "",
    };
    let msg = format!("store at {}: {e}", path.display());
    if hint.is_empty() {
        anyhow!(msg)
    } else {
        anyhow!("{msg}\n{hint}")
    }
}
