//! What commands print: aligned tables for people, JSON lines for scripts.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// `println!` that ignores a closed stdout: after `teleo ls | head` the reader has what it
/// wanted, and a panic or an error message would be noise. Any other write error (a full
/// disk under `> file`) is kept, and `main` exits with it (see [`take_write_error`]).
macro_rules! say {
    () => {
        $crate::output::say_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::say_line(format_args!($($arg)*))
    };
}

/// One line on stdout; see `say!` for what happens to a write error.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    note_write(writeln!(std::io::stdout().lock(), "{args}"));
}

/// Flush stdout now (what a reader waiting for a line, such as the address `serve` prints,
/// needs before the command goes on).
pub fn flush_stdout() {
    note_write(std::io::stdout().lock().flush());
}

/// The first stdout write error other than a closed pipe.
static WRITE_ERROR: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Keep `result`'s error unless it is a closed pipe (the reader left: not a failure).
fn note_write(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut first = WRITE_ERROR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            first.get_or_insert(e);
        }
    }
}

/// The first error writing to stdout (other than a closed pipe), once output is done: a
/// command whose output was lost must not exit 0. Flushes stdout first.
pub fn take_write_error() -> Option<std::io::Error> {
    note_write(std::io::stdout().flush());
    WRITE_ERROR.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
}

/// A table printed with columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
}

impl Table {
    /// A table with these column titles; a title starting with '>' is right-aligned.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.trim_start_matches('>').to_owned()).collect(),
            right: header.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let line = |cells: &[String], out: &mut std::io::StdoutLock<'_>| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate().take(cols) {
                let pad = width[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if self.right[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    if i + 1 < cols {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            note_write(writeln!(out, "{}", s.trim_end()));
        };
        line(&self.header, &mut out);
        let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        line(&rule, &mut out);
        for row in &self.rows {
            line(row, &mut out);
        }
    }
}

/// Print one value as a line of JSON.
pub fn json_line(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    note_write(writeln!(std::io::stdout().lock(), "{text}"));
    Ok(())
}

/// `1 array`, `2 arrays`.
pub fn arrays(n: usize) -> String {
    if n == 1 {
        "1 array".to_owned()
    } else {
        format!("{n} arrays")
    }
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A duration in the unit that keeps 3 significant digits readable: µs, ms or s.
pub fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// The first `max` characters of `s`, with an ellipsis if cut.
pub fn preview(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_readable() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(Duration::from_micros(250)), "250 µs");
        assert_eq!(duration(Duration::from_micros(2500)), "2.50 ms");
        assert_eq!(preview("abcdef", 4), "abc…");
        assert_eq!(preview("abc", 4), "abc");
    }
}
