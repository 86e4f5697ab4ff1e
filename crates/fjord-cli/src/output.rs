//! Writing to stdout: aligned tables and lines, with write errors turned into [`CliError`]s
//! (a closed pipe ends the command quietly in `main` instead of panicking as `println!` would).

use std::io::Write;

use crate::error::{CliError, Result};

/// Buffered, locked stdout.
pub struct Out {
    inner: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Out {
    /// Stdout.
    pub fn stdout() -> Out {
        Out { inner: std::io::BufWriter::new(std::io::stdout().lock()) }
    }

    /// Writes one line.
    pub fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(self.inner, "{text}").map_err(write_error)
    }

    /// Writes rows as columns separated by two spaces, each as wide as its widest cell; the
    /// first row is the header.
    pub fn table<R: AsRef<[String]>>(&mut self, rows: &[R]) -> Result<()> {
        let mut widths: Vec<usize> = Vec::new();
        for row in rows {
            for (i, cell) in row.as_ref().iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(max) => *max = (*max).max(w),
                    None => widths.push(w),
                }
            }
        }
        for row in rows {
            let cells = row.as_ref();
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            self.line(line)?;
        }
        Ok(())
    }

    /// Flushes the buffer.
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(write_error)
    }
}

fn write_error(e: std::io::Error) -> CliError {
    CliError::io("write", "stdout", e)
}

/// Builds a table row from anything printable.
#[macro_export]
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$($cell.to_string()),*] };
}
