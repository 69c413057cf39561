//! The data side of `check`: array bodies, metadata records, counters and the namespace index.

use std::collections::{BTreeMap, HashMap, HashSet};

use context_graph_core::encoding::decode_metadata;
use context_graph_core::teleology::{validate_array, StoreSchema, TeleologicalArray, DEFAULT_MAX_TOKENS};
use context_graph_storage::{RocksDbTeleologicalStore, StorageStats, CF_METADATA, CF_NAMESPACE_INDEX};
use uuid::Uuid;

use super::Report;
use crate::scan::{namespace_entry, Pager, Scanned};

/// Pairs read per page of a column family.
const PAGE: usize = 4096;

/// What the array bodies say the rest of the store must hold.
#[derive(Default)]
pub struct Expected {
    /// Entries in the arrays column family, decodable or not.
    pub entries: usize,
    /// Arrays that decode and fit the schema.
    pub good: usize,
    /// Every id with an entry whose key is a UUID.
    pub ids: HashSet<Uuid>,
    /// The namespace of each decodable array.
    pub namespace_of: HashMap<Uuid, Option<String>>,
    pub by_namespace: BTreeMap<String, HashSet<Uuid>>,
}

impl Expected {
    /// Record one scanned entry, reporting what is wrong with it; the array if it is sound.
    pub fn add(
        &mut self,
        item: Scanned,
        schema: &StoreSchema,
        report: &mut Report,
    ) -> Option<TeleologicalArray> {
        self.entries += 1;
        let Some(key) = item.key_id else {
            report.bad("arrays", "an entry's key is not a 16-byte id");
            return None;
        };
        self.ids.insert(key);
        let array = match item.array {
            Ok(a) => a,
            Err(reason) => {
                report.bad("arrays", format!("{key} cannot be decoded: {reason}"));
                return None;
            }
        };
        if array.id != key {
            report.bad("arrays", format!("{key} holds an array whose id is {}", array.id));
            return None;
        }
        if let Err(e) = validate_array(&array, schema, DEFAULT_MAX_TOKENS) {
            report.bad("arrays", format!("{key} does not fit the schema: {e}"));
        }
        let ns = array.namespace().map(str::to_owned);
        if let Some(ns) = &ns {
            self.by_namespace.entry(ns.clone()).or_default().insert(key);
        }
        self.namespace_of.insert(key, ns);
        self.good += 1;
        Some(array)
    }
}

/// `1 array is`, `2 arrays are`, for "... stored".
pub fn stored(n: usize) -> String {
    if n == 1 {
        "1 array is".to_owned()
    } else {
        format!("{n} arrays are")
    }
}

/// The O(1) counter and the metadata-based statistics against the scan.
pub fn check_counts(counter: usize, stats: &StorageStats, exp: &Expected, report: &mut Report) {
    report.expect(
        exp.good == exp.entries,
        "arrays",
        format!("{} of {} stored arrays decode with their own id", exp.good, exp.entries),
    );
    report.expect(
        counter == exp.entries,
        "count",
        format!("counter says {counter}, {} stored", stored(exp.entries)),
    );
    report.expect(
        stats.total_arrays == exp.entries,
        "stats",
        format!("stats count {} metadata records, {} stored", stats.total_arrays, stored(exp.entries)),
    );
    let d = &stats.damaged;
    report.expect(
        d.is_empty(),
        "damage",
        if d.is_empty() {
            "the store found no damaged record".to_owned()
        } else {
            let ids: Vec<String> = d.metadata.iter().chain(&d.arrays).take(5).map(Uuid::to_string).collect();
            format!(
                "the store serves around {} damaged metadata records, {} damaged arrays and {} malformed \
                 keys (e.g. {}); storing or deleting an id repairs it",
                d.metadata.len(),
                d.arrays.len(),
                d.malformed_keys,
                ids.join(", ")
            )
        },
    );
    let namespaces: Vec<&String> = exp.by_namespace.keys().collect();
    report.expect(
        stats.namespaces.iter().collect::<Vec<_>>() == namespaces,
        "stats",
        format!("stats list {} namespaces, the arrays use {}", stats.namespaces.len(), namespaces.len()),
    );
}

/// Every metadata record belongs to an array and agrees with its namespace; every array has one.
pub fn check_metadata(
    store: &RocksDbTeleologicalStore,
    exp: &Expected,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut pager = Pager::new(CF_METADATA);
    let mut seen = HashSet::with_capacity(exp.ids.len());
    let before = report.findings.len();
    loop {
        let page = pager.next_page(store, PAGE)?;
        if page.is_empty() {
            break;
        }
        for (k, v) in page {
            let Ok(id) = Uuid::from_slice(&k) else {
                report.bad("metadata", "a record's key is not a 16-byte id");
                continue;
            };
            seen.insert(id);
            let rec = match decode_metadata(&v) {
                Ok(r) => r,
                Err(e) => {
                    report.bad("metadata", format!("record of {id} cannot be decoded: {e}"));
                    continue;
                }
            };
            match exp.namespace_of.get(&id) {
                None if !exp.ids.contains(&id) => {
                    report.bad("metadata", format!("record of {id}, which is not stored"))
                }
                Some(ns) if *ns != rec.namespace => report.bad(
                    "metadata",
                    format!("record of {id} says namespace {:?}, the array {:?}", rec.namespace, ns),
                ),
                _ => {}
            }
        }
    }
    for id in exp.ids.iter().filter(|id| !seen.contains(id)) {
        report.bad("metadata", format!("array {id} has no metadata record"));
    }
    if report.findings.len() == before {
        report.ok("metadata", format!("{} records, one per array, namespaces agree", seen.len()));
    }
    Ok(())
}

/// The namespace index holds exactly one entry per array with a namespace, under it; and the
/// listing `ls --namespace` uses returns the same ids.
pub async fn check_namespaces(
    store: &RocksDbTeleologicalStore,
    stats: &StorageStats,
    exp: &Expected,
    report: &mut Report,
) -> anyhow::Result<()> {
    let before = report.findings.len();
    let mut actual: BTreeMap<String, HashSet<Uuid>> = BTreeMap::new();
    let mut pager = Pager::new(CF_NAMESPACE_INDEX);
    loop {
        let page = pager.next_page(store, PAGE)?;
        if page.is_empty() {
            break;
        }
        for (k, _) in page {
            match namespace_entry(&k) {
                Some((ns, id)) => {
                    actual.entry(ns).or_default().insert(id);
                }
                None => report.bad("namespace index", "an entry's key is not namespace, 0, id"),
            }
        }
    }
    for (ns, ids) in &actual {
        for id in ids {
            match exp.namespace_of.get(id) {
                Some(Some(want)) if want == ns => {}
                Some(want) => report.bad(
                    "namespace index",
                    format!("lists {id} under {ns:?}, the array's namespace is {want:?}"),
                ),
                None => report
                    .bad("namespace index", format!("lists {id} under {ns:?}, but no such array is stored")),
            }
        }
    }
    for (ns, ids) in &exp.by_namespace {
        let listed = actual.get(ns);
        for id in ids.iter().filter(|id| listed.is_none_or(|l| !l.contains(id))) {
            report.bad("namespace index", format!("lacks {id}, whose namespace is {ns:?}"));
        }
    }
    // The public listing, for every namespace anyone claims exists.
    let mut names: Vec<&String> = exp.by_namespace.keys().chain(actual.keys()).collect();
    names.extend(&stats.namespaces);
    names.sort();
    names.dedup();
    for ns in names {
        let listed: HashSet<Uuid> = store.list_namespace(ns).await?.into_iter().collect();
        let want = exp.by_namespace.get(ns).cloned().unwrap_or_default();
        if listed != want {
            report.bad(
                "namespace index",
                format!(
                    "`ls --namespace {ns}` lists {} ids, {} arrays have this namespace ({} in \
                     common)",
                    listed.len(),
                    want.len(),
                    listed.intersection(&want).count()
                ),
            );
        }
    }
    if report.findings.len() == before {
        report.ok(
            "namespace index",
            format!(
                "{} namespaces, {} entries, each listing matches the arrays",
                exp.by_namespace.len(),
                exp.by_namespace.values().map(HashSet::len).sum::<usize>()
            ),
        );
    }
    Ok(())
}
