//! Writing a generated dataset in the documented layout, with its ground truth.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use context_graph_core::teleology::{Embedder, EmbedderOutput, TeleologicalArray};

use crate::generator::Generator;
use crate::meta::{DatasetMeta, DATASET_FORMAT_VERSION};
use crate::reader::{slot_file, Dataset};
use crate::DatasetError;

/// Records generated in parallel per step.
const CHUNK: usize = 512;

struct SlotWriters {
    main: BufWriter<File>,
    /// indptr / offsets (sparse, token).
    offsets: Option<(BufWriter<File>, u64)>,
    values: Option<BufWriter<File>>,
}

/// Writers for the per-record files of one directory (records or queries).
struct PartWriter {
    ids: Option<BufWriter<File>>,
    namespaces: BufWriter<File>,
    content: BufWriter<File>,
    slots: Vec<(Embedder, SlotWriters)>,
}

fn create(path: &Path) -> Result<BufWriter<File>, DatasetError> {
    File::create(path).map(|f| BufWriter::with_capacity(1 << 20, f)).map_err(|e| DatasetError::io(path, e))
}

impl PartWriter {
    fn new(dir: &Path, with_ids: bool, generator: &Generator) -> Result<Self, DatasetError> {
        fs::create_dir_all(dir).map_err(|e| DatasetError::io(dir, e))?;
        let mut slots = Vec::new();
        for e in Embedder::all() {
            let dims = generator.schema().get(e);
            let ext = slot_file(dims);
            let mut w = SlotWriters {
                main: create(&dir.join(format!("{}.{}", e.short_name(), ext.main)))?,
                offsets: None,
                values: None,
            };
            if let Some(off) = ext.offsets {
                let mut f = create(&dir.join(format!("{}.{off}", e.short_name())))?;
                write_all(&mut f, &0u64.to_le_bytes(), dir)?;
                w.offsets = Some((f, 0));
            }
            if let Some(val) = ext.values {
                w.values = Some(create(&dir.join(format!("{}.{val}", e.short_name())))?);
            }
            slots.push((e, w));
        }
        Ok(Self {
            ids: if with_ids { Some(create(&dir.join("ids.bin"))?) } else { None },
            namespaces: create(&dir.join("namespaces.txt"))?,
            content: create(&dir.join("content.txt"))?,
            slots,
        })
    }

    fn push(&mut self, a: &TeleologicalArray, dir: &Path) -> Result<(), DatasetError> {
        if let Some(ids) = &mut self.ids {
            write_all(ids, a.id.as_bytes(), dir)?;
        }
        let line = |s: Option<&str>| s.unwrap_or("").replace(['\t', '\n', '\r'], " ");
        writeln!(self.namespaces, "{}", line(a.namespace())).map_err(|e| DatasetError::io(dir, e))?;
        writeln!(self.content, "{}", line(a.content.as_deref())).map_err(|e| DatasetError::io(dir, e))?;
        for (e, w) in &mut self.slots {
            match a.get(*e) {
                EmbedderOutput::Dense(v) => write_f32s(&mut w.main, v, dir)?,
                EmbedderOutput::Sparse(s) => {
                    for i in &s.indices {
                        write_all(&mut w.main, &i.to_le_bytes(), dir)?;
                    }
                    if let Some(values) = &mut w.values {
                        write_f32s(values, &s.values, dir)?;
                    }
                    if let Some((f, total)) = &mut w.offsets {
                        *total += s.len() as u64;
                        write_all(f, &total.to_le_bytes(), dir)?;
                    }
                }
                EmbedderOutput::TokenLevel(t) => {
                    for tok in &t.embeddings {
                        write_f32s(&mut w.main, tok, dir)?;
                    }
                    if let Some((f, total)) = &mut w.offsets {
                        *total += t.embeddings.len() as u64;
                        write_all(f, &total.to_le_bytes(), dir)?;
                    }
                }
                EmbedderOutput::Binary(b) => write_all(&mut w.main, b, dir)?,
                EmbedderOutput::Pending | EmbedderOutput::Failed(_) => {
                    return Err(DatasetError::invalid(
                        dir,
                        format!("record {} has no output in {}", a.id, e.short_name()),
                    ))
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, dir: &Path) -> Result<(), DatasetError> {
        let mut all: Vec<&mut BufWriter<File>> = vec![&mut self.namespaces, &mut self.content];
        if let Some(ids) = &mut self.ids {
            all.push(ids);
        }
        for (_, w) in &mut self.slots {
            all.push(&mut w.main);
            if let Some((f, _)) = &mut w.offsets {
                all.push(f);
            }
            if let Some(v) = &mut w.values {
                all.push(v);
            }
        }
        for f in all {
            f.flush().map_err(|e| DatasetError::io(dir, e))?;
        }
        Ok(())
    }
}

fn write_all(w: &mut impl Write, bytes: &[u8], dir: &Path) -> Result<(), DatasetError> {
    w.write_all(bytes).map_err(|e| DatasetError::io(dir, e))
}

fn write_f32s(w: &mut impl Write, v: &[f32], dir: &Path) -> Result<(), DatasetError> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_all(w, &bytes, dir)
}

/// Generate `count` arrays with `draw` in parallel chunks and hand them to `sink` in order.
fn generate(
    count: usize,
    draw: impl Fn(u64) -> TeleologicalArray + Sync,
    mut sink: impl FnMut(&TeleologicalArray) -> Result<(), DatasetError>,
) -> Result<(), DatasetError> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut start = 0;
    while start < count {
        let end = (start + CHUNK).min(count);
        let per = (end - start).div_ceil(workers);
        let chunk: Vec<TeleologicalArray> = std::thread::scope(|s| {
            let handles: Vec<_> = (start..end)
                .step_by(per)
                .map(|a| {
                    let draw = &draw;
                    s.spawn(move || (a..(a + per).min(end)).map(|i| draw(i as u64)).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        for a in &chunk {
            sink(a)?;
        }
        start = end;
    }
    Ok(())
}

/// Write a dataset of `n` records and `queries` queries from `generator` into `dir`, with
/// exact top-`gt_k` ground truth for every embedder. `progress(stage, done, total)` is called
/// as the work advances.
pub fn write_dataset(
    dir: &Path,
    generator: &Generator,
    seed: u64,
    n: usize,
    queries: usize,
    gt_k: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<DatasetMeta, DatasetError> {
    fs::create_dir_all(dir.join("gt")).map_err(|e| DatasetError::io(dir, e))?;
    let mut records = PartWriter::new(dir, true, generator)?;
    let mut done = 0;
    generate(
        n,
        |i| generator.record(i),
        |a| {
            done += 1;
            if done % 1000 == 0 || done == n {
                progress("records", done, n);
            }
            records.push(a, dir)
        },
    )?;
    records.finish(dir)?;
    let qdir = dir.join("q");
    let mut qs = PartWriter::new(&qdir, false, generator)?;
    generate(queries, |i| generator.query(i), |a| qs.push(a, &qdir))?;
    qs.finish(&qdir)?;
    let meta = DatasetMeta {
        format_version: DATASET_FORMAT_VERSION,
        n,
        queries,
        seed,
        gt_k,
        embedders: DatasetMeta::roster(generator.schema()),
    };
    let meta_path = dir.join("meta.json");
    let json =
        serde_json::to_vec_pretty(&meta).map_err(|e| DatasetError::invalid(&meta_path, e.to_string()))?;
    fs::write(&meta_path, json).map_err(|e| DatasetError::io(&meta_path, e))?;

    // Ground truth, one embedder at a time so that only one column is in memory.
    let dataset = Dataset::open(dir)?;
    let query_arrays = dataset.queries()?;
    for (i, e) in Embedder::all().enumerate() {
        progress("ground truth", i, Embedder::COUNT);
        let column = dataset.column(e)?;
        let qs: Vec<EmbedderOutput> = query_arrays.iter().map(|q| q.get(e).clone()).collect();
        let truth = column.ground_truth(&qs, gt_k.min(n));
        let mut rows = create(&dir.join("gt").join(format!("{}.top100", e.short_name())))?;
        let mut scores = create(&dir.join("gt").join(format!("{}.top100.scores", e.short_name())))?;
        for top in truth {
            for j in 0..gt_k {
                // Fewer records than gt_k: pad with u32::MAX rows (never a real row).
                let s =
                    top.get(j).copied().unwrap_or(crate::Scored { row: u32::MAX, score: f32::NEG_INFINITY });
                write_all(&mut rows, &s.row.to_le_bytes(), dir)?;
                write_all(&mut scores, &s.score.to_le_bytes(), dir)?;
            }
        }
        rows.flush().map_err(|e| DatasetError::io(dir, e))?;
        scores.flush().map_err(|e| DatasetError::io(dir, e))?;
    }
    progress("ground truth", Embedder::COUNT, Embedder::COUNT);
    Ok(meta)
}
