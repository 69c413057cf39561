//! Reading a dataset directory: records streamed in order, queries and ground truth loaded.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Lines, Read};
use std::path::{Path, PathBuf};

use context_graph_core::teleology::{
    ArrayMetadata, Embedder, EmbedderDims, EmbedderOutput, SparseVector, StoreSchema, TeleologicalArray,
    TokenEmbeddings,
};
use uuid::Uuid;

use crate::meta::{DatasetMeta, DATASET_FORMAT_VERSION};
use crate::truth::BruteForce;
use crate::DatasetError;

/// File extensions of one slot: the main file and, for CSR-like kinds, offsets and values.
pub(crate) struct SlotFiles {
    pub(crate) main: &'static str,
    pub(crate) offsets: Option<&'static str>,
    pub(crate) values: Option<&'static str>,
}

pub(crate) fn slot_file(dims: EmbedderDims) -> SlotFiles {
    match dims {
        EmbedderDims::Dense(_) => SlotFiles { main: "f32", offsets: None, values: None },
        EmbedderDims::Sparse { .. } => {
            SlotFiles { main: "indices", offsets: Some("indptr"), values: Some("values") }
        }
        EmbedderDims::TokenLevel { .. } => SlotFiles { main: "f32", offsets: Some("offsets"), values: None },
        EmbedderDims::Binary { .. } => SlotFiles { main: "bits", offsets: None, values: None },
    }
}

fn file_len(path: &Path) -> Result<u64, DatasetError> {
    fs::metadata(path).map(|m| m.len()).map_err(|e| DatasetError::io(path, e))
}

fn expect_len(path: &Path, want: u64) -> Result<(), DatasetError> {
    let got = file_len(path)?;
    if got != want {
        return Err(DatasetError::invalid(path, format!("is {got} bytes, the layout needs {want}")));
    }
    Ok(())
}

fn read_u64s(path: &Path) -> Result<Vec<u64>, DatasetError> {
    let bytes = fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// A dataset directory, checked on open: `meta.json` parses and every file has the size
/// the layout requires.
pub struct Dataset {
    dir: PathBuf,
    meta: DatasetMeta,
    slots: Vec<(Embedder, EmbedderDims)>,
    schema: StoreSchema,
    absent: Vec<Embedder>,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Self, DatasetError> {
        let meta_path = dir.join("meta.json");
        let bytes = fs::read(&meta_path).map_err(|e| DatasetError::io(&meta_path, e))?;
        let meta: DatasetMeta =
            serde_json::from_slice(&bytes).map_err(|e| DatasetError::invalid(&meta_path, e.to_string()))?;
        if meta.format_version != DATASET_FORMAT_VERSION {
            return Err(DatasetError::invalid(
                &meta_path,
                format!("format_version {} is not {DATASET_FORMAT_VERSION}", meta.format_version),
            ));
        }
        let slots = meta.slots().map_err(|r| DatasetError::invalid(&meta_path, r))?;
        let (schema, absent) = meta.schema().map_err(|r| DatasetError::invalid(&meta_path, r))?;
        let ds = Self { dir: dir.to_path_buf(), meta, slots, schema, absent };
        expect_len(&dir.join("ids.bin"), ds.meta.n as u64 * 16)?;
        ds.check_part(dir, ds.meta.n)?;
        ds.check_part(&dir.join("q"), ds.meta.queries)?;
        Ok(ds)
    }

    fn check_part(&self, dir: &Path, count: usize) -> Result<(), DatasetError> {
        let count = count as u64;
        for &(e, dims) in &self.slots {
            let files = slot_file(dims);
            let path = |ext: &str| dir.join(format!("{}.{ext}", e.short_name()));
            let total = match files.offsets {
                Some(off) => {
                    expect_len(&path(off), (count + 1) * 8)?;
                    let offsets = read_u64s(&path(off))?;
                    if offsets.windows(2).any(|w| w[0] > w[1]) || offsets.first() != Some(&0) {
                        return Err(DatasetError::invalid(
                            &path(off),
                            "offsets must start at 0 and never decrease",
                        ));
                    }
                    offsets.last().copied().unwrap_or(0)
                }
                None => count,
            };
            let width = match dims {
                EmbedderDims::Dense(d) | EmbedderDims::TokenLevel { per_token: d } => d as u64 * 4,
                EmbedderDims::Sparse { .. } => 4,
                EmbedderDims::Binary { bits } => bits.div_ceil(8) as u64,
            };
            expect_len(&path(files.main), total * width)?;
            if let Some(val) = files.values {
                expect_len(&path(val), total * 4)?;
            }
        }
        Ok(())
    }

    pub fn meta(&self) -> &DatasetMeta {
        &self.meta
    }

    /// The store schema of this dataset (absent slots as one-byte binary placeholders).
    pub fn schema(&self) -> &StoreSchema {
        &self.schema
    }

    /// Slots the dataset does not have; records carry a zero placeholder code in them.
    pub fn absent_slots(&self) -> &[Embedder] {
        &self.absent
    }

    /// The embedders the dataset has.
    pub fn embedders(&self) -> impl Iterator<Item = Embedder> + '_ {
        self.slots.iter().map(|(e, _)| *e)
    }

    /// The records, in row order.
    pub fn records(&self) -> Result<RecordReader, DatasetError> {
        RecordReader::new(&self.dir, self.meta.n, true, &self.slots, &self.absent)
    }

    /// All queries (ids are `1..=queries`, as queries have none).
    pub fn queries(&self) -> Result<Vec<TeleologicalArray>, DatasetError> {
        RecordReader::new(&self.dir.join("q"), self.meta.queries, false, &self.slots, &self.absent)?.collect()
    }

    /// Ground-truth rows of `e` (`queries` rows of `gt_k`), or `None` if the dataset has none.
    pub fn ground_truth(&self, e: Embedder) -> Result<Option<Vec<Vec<u32>>>, DatasetError> {
        let path = self.dir.join("gt").join(format!("{}.top100", e.short_name()));
        if !path.exists() {
            return Ok(None);
        }
        let k = self.meta.gt_k;
        expect_len(&path, (self.meta.queries * k * 4) as u64)?;
        let bytes = fs::read(&path).map_err(|err| DatasetError::io(&path, err))?;
        let rows: Vec<u32> =
            bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Some(
            rows.chunks(k.max(1)).map(|r| r.iter().copied().filter(|&x| x != u32::MAX).collect()).collect(),
        ))
    }

    /// All records' outputs of `e`, for brute-force scoring.
    pub fn column(&self, e: Embedder) -> Result<BruteForce, DatasetError> {
        let mut column = BruteForce::new(self.schema.get(e));
        for a in self.records()? {
            column.push(a?.get(e));
        }
        Ok(column)
    }
}

struct SlotReader {
    embedder: Embedder,
    dims: EmbedderDims,
    main: BufReader<File>,
    values: Option<BufReader<File>>,
    offsets: Vec<u64>,
    path: PathBuf,
}

/// Streams the records of a dataset part in row order.
pub struct RecordReader {
    dir: PathBuf,
    row: usize,
    count: usize,
    ids: Option<BufReader<File>>,
    namespaces: Lines<BufReader<File>>,
    content: Lines<BufReader<File>>,
    slots: Vec<SlotReader>,
    absent: Vec<Embedder>,
}

fn open(path: &Path) -> Result<BufReader<File>, DatasetError> {
    File::open(path).map(|f| BufReader::with_capacity(1 << 20, f)).map_err(|e| DatasetError::io(path, e))
}

fn read_f32s(r: &mut impl Read, n: usize, path: &Path) -> Result<Vec<f32>, DatasetError> {
    let mut buf = vec![0u8; n * 4];
    r.read_exact(&mut buf).map_err(|e| DatasetError::io(path, e))?;
    Ok(buf.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

impl RecordReader {
    fn new(
        dir: &Path,
        count: usize,
        with_ids: bool,
        slots: &[(Embedder, EmbedderDims)],
        absent: &[Embedder],
    ) -> Result<Self, DatasetError> {
        let mut readers = Vec::new();
        for &(e, dims) in slots {
            let files = slot_file(dims);
            let path = |ext: &str| dir.join(format!("{}.{ext}", e.short_name()));
            readers.push(SlotReader {
                embedder: e,
                dims,
                main: open(&path(files.main))?,
                values: files.values.map(|v| open(&path(v))).transpose()?,
                offsets: match files.offsets {
                    Some(off) => read_u64s(&path(off))?,
                    None => Vec::new(),
                },
                path: path(files.main),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            row: 0,
            count,
            ids: if with_ids { Some(open(&dir.join("ids.bin"))?) } else { None },
            namespaces: open(&dir.join("namespaces.txt"))?.lines(),
            content: open(&dir.join("content.txt"))?.lines(),
            slots: readers,
            absent: absent.to_vec(),
        })
    }

    fn read_one(&mut self) -> Result<TeleologicalArray, DatasetError> {
        let row = self.row;
        let id = match &mut self.ids {
            Some(r) => {
                let mut b = [0u8; 16];
                r.read_exact(&mut b).map_err(|e| DatasetError::io(&self.dir.join("ids.bin"), e))?;
                Uuid::from_bytes(b)
            }
            None => Uuid::from_u128(row as u128 + 1),
        };
        let mut a = TeleologicalArray::new(id);
        let line = |lines: &mut Lines<BufReader<File>>, name: &str| -> Result<String, DatasetError> {
            match lines.next() {
                Some(Ok(l)) => Ok(l),
                Some(Err(e)) => Err(DatasetError::io(&self.dir.join(name), e)),
                None => {
                    Err(DatasetError::invalid(&self.dir.join(name), format!("has no line for row {row}")))
                }
            }
        };
        let ns = line(&mut self.namespaces, "namespaces.txt")?;
        let content = line(&mut self.content, "content.txt")?;
        if !ns.is_empty() {
            a.metadata = Some(ArrayMetadata { namespace: Some(ns), ..Default::default() });
        }
        a.content = (!content.is_empty()).then_some(content);
        for s in &mut self.slots {
            let out = match s.dims {
                EmbedderDims::Dense(d) => EmbedderOutput::Dense(read_f32s(&mut s.main, d, &s.path)?),
                EmbedderDims::Sparse { .. } => {
                    let n = (s.offsets[row + 1] - s.offsets[row]) as usize;
                    let mut buf = vec![0u8; n * 4];
                    s.main.read_exact(&mut buf).map_err(|e| DatasetError::io(&s.path, e))?;
                    let indices =
                        buf.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    let values = match &mut s.values {
                        Some(v) => read_f32s(v, n, &s.path)?,
                        None => Vec::new(),
                    };
                    EmbedderOutput::Sparse(SparseVector::new(indices, values))
                }
                EmbedderDims::TokenLevel { per_token } => {
                    let n = (s.offsets[row + 1] - s.offsets[row]) as usize;
                    let flat = read_f32s(&mut s.main, n * per_token, &s.path)?;
                    let tokens = flat.chunks_exact(per_token).map(<[f32]>::to_vec).collect();
                    EmbedderOutput::TokenLevel(TokenEmbeddings::new(tokens, per_token))
                }
                EmbedderDims::Binary { bits } => {
                    let mut buf = vec![0u8; bits.div_ceil(8)];
                    s.main.read_exact(&mut buf).map_err(|e| DatasetError::io(&s.path, e))?;
                    EmbedderOutput::Binary(buf)
                }
            };
            a.set(s.embedder, out);
        }
        for &e in &self.absent {
            a.set(e, EmbedderOutput::Binary(vec![0]));
        }
        Ok(a)
    }
}

impl Iterator for RecordReader {
    type Item = Result<TeleologicalArray, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.row >= self.count {
            return None;
        }
        let item = self.read_one();
        self.row += 1;
        if item.is_err() {
            // A broken file cannot be read past: stop after reporting it.
            self.row = self.count;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.row;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_dataset, GenConfig, Generator};

    #[test]
    fn written_dataset_reads_back_with_exact_ground_truth() {
        let dir = tempfile::tempdir().unwrap();
        let mut schema = StoreSchema::default();
        schema.set(Embedder::Semantic, EmbedderDims::Dense(32));
        schema.set(Embedder::Code, EmbedderDims::Dense(16));
        let g = Generator::new(GenConfig::for_size(schema, 5, 300));
        write_dataset(dir.path(), &g, 5, 300, 7, 10, &mut |_, _, _| {}).unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        assert_eq!(ds.meta().n, 300);
        let records: Vec<_> = ds.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 300);
        assert_eq!(records[17].get(Embedder::Hdc), g.record(17).get(Embedder::Hdc));
        assert_eq!(records[17].get(Embedder::SpladeKeyword), g.record(17).get(Embedder::SpladeKeyword));
        assert_eq!(records[17].id, g.record(17).id);
        let queries = ds.queries().unwrap();
        assert_eq!(queries.len(), 7);
        for e in Embedder::all() {
            let gt = ds.ground_truth(e).unwrap().unwrap();
            assert_eq!(gt.len(), 7);
            // The first ground-truth row is the best by brute force over the read-back data.
            let col = ds.column(e).unwrap();
            assert_eq!(gt[3][0], col.top_k(queries[3].get(e), 1)[0].row, "{e}");
            assert_eq!(gt[3].len(), 10);
        }
        // A missing file is named in the error.
        fs::remove_file(dir.path().join("E7.f32")).unwrap();
        let err = Dataset::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("E7.f32"), "{err}");
    }
}
