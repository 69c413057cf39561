//! Arrays as NDJSON: one `TeleologicalArray` (its serde JSON shape) per line.
//!
//! Errors name the line, so that a bad line in a million-line file can be found.

use std::io::BufRead;

use anyhow::anyhow;
use context_graph_core::teleology::{validate_array, StoreSchema, TeleologicalArray};

/// Parses and checks lines; blank lines are skipped.
pub struct ArrayLines<R> {
    input: R,
    line_no: usize,
    schema: StoreSchema,
    max_tokens: usize,
    buf: String,
}

impl<R: BufRead> ArrayLines<R> {
    /// Arrays from `input`, each checked against `schema` as the store would check it.
    pub fn new(input: R, schema: StoreSchema, max_tokens: usize) -> Self {
        Self { input, line_no: 0, schema, max_tokens, buf: String::new() }
    }

    fn parse(&self, text: &str) -> anyhow::Result<TeleologicalArray> {
        let line = self.line_no;
        let array: TeleologicalArray = serde_json::from_str(text).map_err(|e| {
            // serde_json reports "line 1" (of this line's text): give the file's line instead.
            let msg = e.to_string();
            let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m);
            anyhow!(
                "line {line}, column {}: not a valid array: {msg}\n\
                 hint: each line must be one JSON array object as described in docs/CLI.md",
                e.column()
            )
        })?;
        validate_array(&array, &self.schema, self.max_tokens)
            .map_err(|e| anyhow!("line {line}: {e}\nhint: `teleo stats` shows the shape of every slot"))?;
        Ok(array)
    }
}

impl<R: BufRead> Iterator for ArrayLines<R> {
    /// The line number and its array, or an error naming the line.
    type Item = anyhow::Result<(usize, TeleologicalArray)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line_no += 1;
            match self.input.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(anyhow!("line {}: cannot read: {e}", self.line_no))),
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            return Some(self.parse(text).map(|a| (self.line_no, a)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use context_graph_core::teleology::{Embedder, EmbedderDims, EmbedderOutput};

    fn schema() -> StoreSchema {
        let mut s = StoreSchema::default();
        for e in Embedder::all() {
            s.set(e, EmbedderDims::Binary { bits: 8 });
        }
        s
    }

    fn line(id: u128) -> String {
        let mut a = TeleologicalArray::new(uuid::Uuid::from_u128(id));
        for e in Embedder::all() {
            a.set(e, EmbedderOutput::Binary(vec![id as u8]));
        }
        serde_json::to_string(&a).unwrap()
    }

    #[test]
    fn errors_name_the_line_of_the_file() {
        let text = format!("{}\n\n{{\"id\": 3,\n", line(1));
        let mut it = ArrayLines::new(text.as_bytes(), schema(), 512);
        assert_eq!(it.next().unwrap().unwrap().0, 1);
        let err = it.next().unwrap().unwrap_err().to_string();
        assert!(err.starts_with("line 3, column"), "{err}");
    }

    #[test]
    fn wrong_shapes_name_the_slot() {
        let text = line(1).replace("{\"Binary\":[1]}", "{\"Dense\":[1.0]}");
        let err = ArrayLines::new(text.as_bytes(), schema(), 512).next().unwrap().unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("slot E1"), "{err}");
    }
}
