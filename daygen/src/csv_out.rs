//! Writes one delivery file in a chosen style: byte-order mark, line endings, quoting,
//! column order, blank lines and white-space padding, all decided by a seeded generator so
//! the bytes are the same on every run.

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ColumnOrder, FileStyle, LineEnding, Quoting};

/// Padding that trimming removes (space and tab, the white space files really carry).
const PADS: &[&[u8]] = &[b" ", b"  ", b"\t", b" \t"];

/// One row in every this many carries padding when padding is on.
const PADDED_ROW_ONE_IN: u32 = 8;

/// A blank line is sprinkled before roughly one row in this many when blank lines are on.
const BLANK_LINE_ONE_IN: u32 = 997;

/// A CSV file being written.
pub(super) struct CsvOut<W: Write> {
    out: W,
    style: FileStyle,
    columns: usize,
    blank_lines: bool,
    padding: bool,
    rng: ChaCha8Rng,
    lines: u64,
    rows: u64,
    /// One blank line is always placed before this data row, so that even a small file
    /// carries one when blank lines are on.
    forced_blank_before: u64,
    /// Field bytes in file order for the current row.
    order: Vec<usize>,
}

impl<W: Write> CsvOut<W> {
    /// Starts the file: byte-order mark and header (`header` in the standard column order).
    pub(super) fn new(
        out: W,
        style: FileStyle,
        header: &[&str],
        blank_lines: bool,
        padding: bool,
        seed: u64,
    ) -> io::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let forced_blank_before = rng.random_range(0..8);
        let columns = header.len();
        let order = match style.columns {
            ColumnOrder::Standard => (0..columns).collect(),
            ColumnOrder::Reversed => (0..columns).rev().collect(),
        };
        let mut file = Self {
            out,
            style,
            columns,
            blank_lines,
            padding,
            rng,
            lines: 0,
            rows: 0,
            forced_blank_before,
            order,
        };
        if style.bom {
            file.out.write_all(b"\xEF\xBB\xBF")?;
        }
        let header: Vec<&[u8]> = header.iter().map(|h| h.as_bytes()).collect();
        file.line(&header, false)?;
        Ok(file)
    }

    /// Writes one data row; `fields` in the standard column order. A row with a different
    /// number of fields (a `field_count` fault) is written as given.
    pub(super) fn row(&mut self, fields: &[&[u8]]) -> io::Result<()> {
        if self.blank_lines
            && (self.rows == self.forced_blank_before
                || self.rng.random_ratio(1, BLANK_LINE_ONE_IN))
        {
            self.blank_line()?;
        }
        let pad = self.padding && self.rng.random_ratio(1, PADDED_ROW_ONE_IN);
        self.line(fields, pad)?;
        self.rows += 1;
        Ok(())
    }

    /// Data rows written so far (header and blank lines excluded).
    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the file (a trailing blank line if blank lines are on, then the final line
    /// ending if the style has one) and returns the writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        if self.blank_lines {
            self.blank_line()?;
        }
        if self.style.final_newline {
            self.end_of_line()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn end_of_line(&mut self) -> io::Result<()> {
        match self.style.line_ending {
            LineEnding::Lf => self.out.write_all(b"\n"),
            LineEnding::CrLf => self.out.write_all(b"\r\n"),
        }
    }

    /// Line endings go before every line but the first, so that a file without a final
    /// line ending needs no look-ahead.
    fn start_line(&mut self) -> io::Result<()> {
        if self.lines > 0 {
            self.end_of_line()?;
        }
        self.lines += 1;
        Ok(())
    }

    fn blank_line(&mut self) -> io::Result<()> {
        self.start_line()?;
        // Empty, white space only, or separators only: all are skipped, none is a row.
        match self.rng.random_range(0..4u32) {
            0 => Ok(()),
            1 => self.out.write_all(b"  "),
            2 => {
                for _ in 1..self.columns {
                    self.out.write_all(b",")?;
                }
                Ok(())
            }
            _ => self.out.write_all(b" ,\t"),
        }
    }

    fn line(&mut self, fields: &[&[u8]], pad: bool) -> io::Result<()> {
        self.start_line()?;
        let reorder = fields.len() == self.columns;
        for (at, &field) in fields.iter().enumerate() {
            if at > 0 {
                self.out.write_all(b",")?;
            }
            let value = if reorder {
                fields[self.order[at]]
            } else {
                field
            };
            let (left, right) = if pad {
                self.pads()
            } else {
                (&b""[..], &b""[..])
            };
            self.field(value, left, right)?;
        }
        Ok(())
    }

    fn pads(&mut self) -> (&'static [u8], &'static [u8]) {
        let pick = |rng: &mut ChaCha8Rng| PADS[rng.random_range(0..PADS.len())];
        match self.rng.random_range(0..6u32) {
            0 => (pick(&mut self.rng), b""),
            1 => (b"", pick(&mut self.rng)),
            2 => {
                let left = pick(&mut self.rng);
                (left, pick(&mut self.rng))
            }
            _ => (b"", b""),
        }
    }

    fn field(&mut self, value: &[u8], left: &[u8], right: &[u8]) -> io::Result<()> {
        // Records are physical lines: a line break inside a field would make the loader
        // reject the row as unclosed_quote, which no planned fault expects.
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a generated field holds a line break: {:?}",
                    String::from_utf8_lossy(value)
                ),
            ));
        }
        let quote = match self.style.quoting {
            Quoting::Always => true,
            Quoting::WhenNeeded => value
                .iter()
                .any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n')),
        };
        if !quote {
            self.out.write_all(left)?;
            self.out.write_all(value)?;
            return self.out.write_all(right);
        }
        // Padding goes inside the quotes: outside them it would not be valid CSV.
        self.out.write_all(b"\"")?;
        self.out.write_all(left)?;
        let mut rest = value;
        while let Some(at) = rest.iter().position(|&b| b == b'"') {
            self.out.write_all(&rest[..=at])?;
            self.out.write_all(b"\"")?;
            rest = &rest[at + 1..];
        }
        self.out.write_all(rest)?;
        self.out.write_all(right)?;
        self.out.write_all(b"\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderLanguage;

    fn style(
        quoting: Quoting,
        line_ending: LineEnding,
        bom: bool,
        final_newline: bool,
    ) -> FileStyle {
        FileStyle {
            header: HeaderLanguage::Korean,
            quoting,
            line_ending,
            bom,
            final_newline,
            columns: ColumnOrder::Standard,
        }
    }

    #[test]
    fn generate_csv_styles() {
        let mut file = CsvOut::new(
            Vec::new(),
            style(Quoting::Always, LineEnding::Lf, false, true),
            &["a", "b"],
            false,
            false,
            1,
        )
        .unwrap();
        file.row(&[b"x,y", b"say \"hi\""]).unwrap();
        assert_eq!(
            file.finish().unwrap(),
            b"\"a\",\"b\"\n\"x,y\",\"say \"\"hi\"\"\"\n"
        );

        let mut file = CsvOut::new(
            Vec::new(),
            style(Quoting::WhenNeeded, LineEnding::CrLf, true, false),
            &["a", "b"],
            false,
            false,
            1,
        )
        .unwrap();
        file.row(&[b"1", b"2,3"]).unwrap();
        file.row(&[b"4", b"5"]).unwrap();
        assert_eq!(
            file.finish().unwrap(),
            b"\xEF\xBB\xBFa,b\r\n1,\"2,3\"\r\n4,5"
        );

        let mut reversed = style(Quoting::WhenNeeded, LineEnding::Lf, false, true);
        reversed.columns = ColumnOrder::Reversed;
        let mut file = CsvOut::new(Vec::new(), reversed, &["a", "b"], false, false, 1).unwrap();
        file.row(&[b"1", b"2"]).unwrap();
        file.row(&[b"1", b"2", b"3"]).unwrap();
        assert_eq!(file.finish().unwrap(), b"b,a\n2,1\n1,2,3\n");
    }

    #[test]
    fn generate_never_writes_a_line_break_inside_a_field() {
        let mut file = CsvOut::new(
            Vec::new(),
            style(Quoting::Always, LineEnding::Lf, false, true),
            &["a", "b"],
            false,
            false,
            1,
        )
        .unwrap();
        for bad in [&b"x\ny"[..], b"x\r", b"\r\n"] {
            let error = file.row(&[b"1", bad]).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
