//! Reading one delivery file: refusing what is not a regular file, the BOM, the header and
//! its columns, then each physical line with its number and the exact bytes it occupies.
//!
//! Records are physical lines (LF or CRLF). A line is split into fields by CSV quoting rules
//! (`csv_core`), but a quoted field must close on the line where it opens: a line that ends
//! inside an open quote is a row rejected as `unclosed_quote`, and reading goes on at the next
//! line, so one stray quote costs one row, never the rest of the file. Lines are bounded: a
//! line longer than `max_line_bytes` is a row rejected as `line_too_long` whose bytes past
//! the limit are skipped as they stream by, never buffered; only its first
//! [`RAW_KEPT_BYTES`] are kept for the rejects file.
//!
//! Memory: one buffer of `max_line_bytes` plus [`READ_CHUNK`], and field buffers of at most
//! `max_line_bytes`, whatever the file holds.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use csv_core::{ReadRecordResult, Terminator};
use invest_dataset::{Column, FileKind, Rule};

use super::{InputError, Progress, ProgressFn};
use crate::clean::Fault;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How often reading reports its progress.
const PROGRESS_STEP: u64 = 1 << 20;

/// Bytes read from the file at a time (beyond the room a whole line needs).
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// Bytes of a too-long line kept as its raw text (cut back to a UTF-8 boundary).
pub(crate) const RAW_KEPT_BYTES: usize = 256;

/// Opens a delivery file for reading without ever blocking, and refuses anything that is not
/// a regular file: a FIFO would hang the load (or feed it forever), a device such as
/// `/dev/zero` behind a symlink never ends, a directory or socket is no delivery.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), InputError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(InputError::MissingFile {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(InputError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    // fstat of what was opened, not stat of the path: no window for a swap in between.
    let metadata = file.metadata().map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let what = if file_type.is_fifo() {
            "a FIFO (named pipe)"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(InputError::NotRegular {
            path: path.to_owned(),
            what,
        });
    }
    Ok((file, metadata.len()))
}

/// Counts of the physical lines of a file: `lines = 1 (header) + blank + rows` always.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LineCounts {
    /// Physical lines, the header included.
    pub lines: u64,
    /// Lines that are empty or only separators and white space.
    pub blank: u64,
    /// Lines handed out as rows.
    pub rows: u64,
}

/// One non-blank line as read from the file, before any rule.
pub(crate) struct RawRow<'a> {
    /// Physical line number.
    pub line: u64,
    /// Byte offset of the line in the file.
    pub offset: u64,
    /// Length of the line in bytes, without its terminator.
    pub len: u64,
    /// The line exactly as in the file, without the terminator; for a line too long to
    /// read, its first bytes only.
    pub raw: &'a [u8],
    /// Its fields (untrimmed), or why the line could not be split into fields.
    pub fields: Result<Fields<'a>, Fault>,
    /// Header names, trimmed, in file order.
    pub header: &'a [String],
    /// For each of the file kind's columns (`FileKind::columns` order), its index in the row.
    pub columns: &'a [usize],
}

impl RawRow<'_> {
    /// The raw bytes of field `index`, when the line was split and has as many fields as
    /// the header.
    pub fn field(&self, index: usize) -> Option<&[u8]> {
        let fields = self.fields.as_ref().ok()?;
        if fields.len() != self.header.len() {
            return None;
        }
        fields.clone().nth(index)
    }
}

/// The fields of a line, as slices of one buffer.
#[derive(Clone)]
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    ends: &'a [usize],
    next: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = *self.ends.get(self.next)?;
        let start = match self.next {
            0 => 0,
            n => self.ends[n - 1],
        };
        self.next += 1;
        self.bytes.get(start..end)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ends.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// What splitting a line found.
enum Split {
    /// `ends` holds this many field ends.
    Fields(usize),
    /// The line ended inside a quoted field that opened at this 0-based field index.
    Unclosed(usize),
}

/// One line located in the buffer (or skipped past, when too long).
enum Line {
    /// `buf[start..end]` without its terminator.
    Whole { start: usize, end: usize },
    /// Longer than the limit: `len` bytes in all, the first ones kept in `long`.
    TooLong { len: u64 },
}

/// A delivery file open for reading, header already read and mapped.
pub(crate) struct CsvFile {
    kind: FileKind,
    path: PathBuf,
    file: File,
    /// Size when opened; a file that grows or shrinks while read is refused.
    size: u64,
    /// Bytes read from the file so far.
    read: u64,
    eof: bool,
    max_line_bytes: usize,
    /// Bytes read and not yet handed out are `buf[start..end]`; `buf[start]` is at file
    /// offset `offset`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    offset: u64,
    /// Where the search for the next LF resumes (bytes before it hold none).
    scanned: usize,
    /// The kept head of the last too-long line.
    long: Vec<u8>,
    parser: csv_core::Reader,
    field_bytes: Vec<u8>,
    field_ends: Vec<usize>,
    header: Vec<String>,
    columns: Vec<usize>,
    counts: LineCounts,
    progress: Option<ProgressFn>,
    reported: u64,
}

/// A CSV parser that splits one line: LF is the only terminator (a bare CR is a character of
/// the line), and no BOM is stripped (the file's BOM is ours to strip, and anywhere else it
/// is content).
fn line_parser() -> csv_core::Reader {
    let mut parser = csv_core::ReaderBuilder::new()
        .terminator(Terminator::Any(b'\n'))
        .build();
    prime(&mut parser);
    parser
}

/// A fresh parser strips a leading BOM from its first input; an empty line first makes it
/// forget that (it skips empty lines and stays at the start of a record).
fn prime(parser: &mut csv_core::Reader) {
    let _ = parser.read_record(b"\n", &mut [], &mut []);
}

impl CsvFile {
    /// Opens `dir/<file name>` and reads its header. Every problem that makes the file
    /// unusable as a whole (missing, not a regular file, unreadable, no header, a header too
    /// long or with an open quote, a column missing or doubled) is an error here, before any
    /// row is read.
    pub fn open(
        dir: &Path,
        kind: FileKind,
        max_line_bytes: usize,
        progress: Option<ProgressFn>,
    ) -> Result<Self, InputError> {
        let path = dir.join(kind.file_name());
        let (file, size) = open_regular(&path)?;
        let max_line_bytes = max_line_bytes.max(1);
        let mut csv_file = Self {
            kind,
            path,
            file,
            size,
            read: 0,
            eof: false,
            max_line_bytes,
            // Room for a whole line with its CRLF and a chunk to read into.
            buf: vec![0; max_line_bytes + 2 + READ_CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            scanned: 0,
            long: Vec::with_capacity(RAW_KEPT_BYTES),
            parser: line_parser(),
            field_bytes: Vec::new(),
            field_ends: Vec::new(),
            header: Vec::new(),
            columns: Vec::new(),
            counts: LineCounts::default(),
            progress,
            reported: 0,
        };
        csv_file.read_header()?;
        Ok(csv_file)
    }

    /// A second handle on the same open file, for reading rows back by their span.
    pub fn handle(&self) -> Result<File, InputError> {
        self.file
            .try_clone()
            .map_err(|source| self.read_error(source))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line counts so far (final once `next_row` returned `None`).
    pub fn counts(&self) -> LineCounts {
        self.counts
    }

    fn read_error(&self, source: io::Error) -> InputError {
        InputError::Read {
            path: self.path.clone(),
            source,
        }
    }

    fn header_error(&self, reason: String) -> InputError {
        InputError::Header {
            path: self.path.clone(),
            reason,
        }
    }

    fn read_header(&mut self) -> Result<(), InputError> {
        // The BOM is ours to skip: a parser would glue it to the first header name.
        while self.end - self.start < BOM.len() && !self.eof {
            self.fill()?;
        }
        if self.buf[self.start..self.end].starts_with(BOM) {
            self.start += BOM.len();
            self.offset += BOM.len() as u64;
            self.scanned = self.start;
        }
        let line = match self.next_line()? {
            None => {
                return Err(InputError::EmptyFile {
                    path: self.path.clone(),
                });
            }
            Some(Line::TooLong { len }) => {
                return Err(self.header_error(format!(
                    "the header (line 1) is {len} bytes long, above the limit of {} bytes \
                     (--max-line-bytes); this is not a delivery file",
                    self.max_line_bytes
                )));
            }
            Some(Line::Whole { start, end }) => (start, end),
        };
        self.counts.lines = 1;
        let (start, end) = line;
        if is_blank(&self.buf[start..end]) {
            return Err(self.header_error(
                "line 1 is blank; the first line of a delivery file must be its header".into(),
            ));
        }
        let count = match self.split(start, end) {
            Split::Fields(count) => count,
            Split::Unclosed(index) => {
                return Err(self.header_error(format!(
                    "header field {} opens a quote that does not close on line 1",
                    index + 1
                )));
            }
        };
        let mut header = Vec::with_capacity(count);
        let fields = Fields {
            bytes: &self.field_bytes,
            ends: &self.field_ends[..count],
            next: 0,
        };
        for (index, name) in fields.enumerate() {
            let name = std::str::from_utf8(name).map_err(|_| InputError::HeaderNotUtf8 {
                path: self.path.clone(),
                position: index + 1,
            })?;
            header.push(name.trim().to_owned());
        }
        self.columns = map_columns(&self.path, self.kind, &header)?;
        self.header = header;
        Ok(())
    }

    /// Reads more of the file into the buffer, moving the unread bytes to its front first
    /// when the room behind them is short.
    fn fill(&mut self) -> Result<(), InputError> {
        if self.buf.len() - self.end < READ_CHUNK && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.scanned -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        let room = &mut self.buf[self.end..];
        let n = loop {
            match self.file.read(room) {
                Ok(n) => break n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(self.read_error(error)),
            }
        };
        self.read += n as u64;
        self.end += n;
        if self.read > self.size {
            return Err(self.changed(self.read));
        }
        if n == 0 {
            self.eof = true;
            let now = self.file.metadata().map_err(|e| self.read_error(e))?.len();
            if self.read != self.size || now != self.size {
                return Err(self.changed(now.max(self.read)));
            }
        }
        self.report(false);
        Ok(())
    }

    fn changed(&self, now: u64) -> InputError {
        InputError::Changed {
            path: self.path.clone(),
            size: self.size,
            now,
        }
    }

    /// The next physical line, or `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<Line>, InputError> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buf[self.scanned..self.end]) {
                let lf = self.scanned + at;
                let start = self.start;
                let end = if lf > start && self.buf[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                self.consume(lf + 1);
                if end - start > self.max_line_bytes {
                    return Ok(Some(self.too_long(start, end, 0)));
                }
                return Ok(Some(Line::Whole { start, end }));
            }
            self.scanned = self.end;
            let pending = self.end - self.start;
            // No LF within the limit plus a CRLF: too long, whatever follows.
            if pending >= self.max_line_bytes + 2 {
                return self.skip_long_line().map(Some);
            }
            if self.eof {
                if pending == 0 {
                    return Ok(None);
                }
                // The last line, without a terminator.
                let (start, end) = (self.start, self.end);
                self.consume(end);
                if end - start > self.max_line_bytes {
                    return Ok(Some(self.too_long(start, end, 0)));
                }
                return Ok(Some(Line::Whole { start, end }));
            }
            self.fill()?;
        }
    }

    /// Hands out `buf[start..to]` (already looked at).
    fn consume(&mut self, to: usize) {
        self.offset += (to - self.start) as u64;
        self.start = to;
        self.scanned = to;
    }

    /// Keeps the head of a too-long line whose bytes `buf[start..end]` are in the buffer and
    /// `skipped` more were streamed past.
    fn too_long(&mut self, start: usize, end: usize, skipped: u64) -> Line {
        self.long.clear();
        let head = &self.buf[start..end];
        self.long
            .extend_from_slice(&head[..head.len().min(RAW_KEPT_BYTES)]);
        Line::TooLong {
            len: (end - start) as u64 + skipped,
        }
    }

    /// Streams past the rest of a line that does not fit, keeping only its head.
    fn skip_long_line(&mut self) -> Result<Line, InputError> {
        self.long.clear();
        let head = &self.buf[self.start..self.end];
        self.long
            .extend_from_slice(&head[..head.len().min(RAW_KEPT_BYTES)]);
        let mut len = (self.end - self.start) as u64;
        let mut last = self.buf[self.end - 1];
        self.consume(self.end);
        loop {
            if self.start == self.end {
                if self.eof {
                    // Ends with the file; a final CR is part of no terminator here.
                    return Ok(Line::TooLong { len });
                }
                self.fill()?;
                continue;
            }
            let chunk = &self.buf[self.start..self.end];
            match memchr::memchr(b'\n', chunk) {
                Some(at) => {
                    let before = if at > 0 { chunk[at - 1] } else { last };
                    len += at as u64;
                    if before == b'\r' {
                        len -= 1;
                    }
                    self.consume(self.start + at + 1);
                    return Ok(Line::TooLong { len });
                }
                None => {
                    len += chunk.len() as u64;
                    last = chunk[chunk.len() - 1];
                    self.consume(self.end);
                }
            }
        }
    }

    /// Splits `buf[start..end]` into `field_bytes`/`field_ends` by CSV quoting rules.
    fn split(&mut self, start: usize, end: usize) -> Split {
        let line = &self.buf[start..end];
        // Fields are never longer than the line (quotes only shrink them), and there are
        // at most as many fields as bytes plus one; the terminator fed below adds a byte to
        // an unclosed field. The buffers grow to the longest line once.
        if self.field_bytes.len() < line.len() + 1 {
            self.field_bytes.resize(line.len() + 1, 0);
        }
        if self.field_ends.len() < line.len() + 1 {
            self.field_ends.resize(line.len() + 1, 0);
        }
        let (mut input, mut fed_terminator) = (line, false);
        let (mut out, mut ends) = (0, 0);
        loop {
            let (result, nin, nout, nend) = self.parser.read_record(
                input,
                &mut self.field_bytes[out..],
                &mut self.field_ends[ends..],
            );
            debug_assert!(nin == input.len() || result == ReadRecordResult::Record);
            out += nout;
            ends += nend;
            match result {
                ReadRecordResult::InputEmpty if !fed_terminator => {
                    input = b"\n";
                    fed_terminator = true;
                }
                ReadRecordResult::Record => return Split::Fields(ends),
                // Only on empty input, which a line never is; start afresh all the same.
                ReadRecordResult::End => {
                    self.parser.reset();
                    prime(&mut self.parser);
                    return Split::Fields(ends);
                }
                // The terminator went into a quoted field: the quote is still open.
                ReadRecordResult::InputEmpty
                | ReadRecordResult::OutputFull
                | ReadRecordResult::OutputEndsFull => {
                    self.parser.reset();
                    prime(&mut self.parser);
                    return Split::Unclosed(ends);
                }
            }
        }
    }

    /// The next row that is not blank, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<RawRow<'_>>, InputError> {
        loop {
            let offset = self.offset;
            let Some(line) = self.next_line()? else {
                self.report(true);
                return Ok(None);
            };
            self.counts.lines += 1;
            let number = self.counts.lines;
            match line {
                Line::Whole { start, end } => {
                    if is_blank(&self.buf[start..end]) {
                        self.counts.blank += 1;
                        continue;
                    }
                    self.counts.rows += 1;
                    let split = self.split(start, end);
                    let this = &*self;
                    let fields = match split {
                        Split::Fields(count) => Ok(Fields {
                            bytes: &this.field_bytes,
                            ends: &this.field_ends[..count],
                            next: 0,
                        }),
                        Split::Unclosed(index) => Err(this.unclosed(index, number)),
                    };
                    return Ok(Some(RawRow {
                        line: number,
                        offset,
                        len: (end - start) as u64,
                        raw: &this.buf[start..end],
                        fields,
                        header: &this.header,
                        columns: &this.columns,
                    }));
                }
                Line::TooLong { len } => {
                    self.counts.rows += 1;
                    let this = &*self;
                    let kept = utf8_prefix(&this.long);
                    let fault = Fault::new(
                        Rule::LineTooLong,
                        format!(
                            "line {number} is {len} bytes long; at most {} bytes are read per \
                             line (--max-line-bytes), so the rest of it was skipped unread and \
                             only its first {} bytes are kept here; reading resumed at the next \
                             line. A quote opened earlier and never closed, or a file that is \
                             not CSV, makes lines like this",
                            this.max_line_bytes,
                            kept.len()
                        ),
                    );
                    return Ok(Some(RawRow {
                        line: number,
                        offset,
                        len,
                        raw: kept,
                        fields: Err(fault),
                        header: &this.header,
                        columns: &this.columns,
                    }));
                }
            }
        }
    }

    fn unclosed(&self, index: usize, line: u64) -> Fault {
        let name = self
            .header
            .get(index)
            .map(|name| format!(" ({name:?})"))
            .unwrap_or_default();
        Fault::new(
            Rule::UnclosedQuote,
            format!(
                "field {}{name} opens a quote on line {line} that does not close on that line; \
                 a field may not span lines, so this row is rejected and reading resumes at \
                 line {}; look for a stray or unescaped \" (a quote inside a quoted field is \
                 written \"\")",
                index + 1,
                line + 1
            ),
        )
    }

    fn report(&mut self, done: bool) {
        let Some(progress) = &self.progress else {
            return;
        };
        if done || self.read >= self.reported + PROGRESS_STEP {
            self.reported = self.read;
            progress(Progress::Read {
                file: self.kind,
                bytes: self.read,
                total: self.size,
            });
        }
    }
}

/// The longest prefix that does not end inside a UTF-8 sequence (bytes that are not UTF-8
/// at all are kept as they are).
fn utf8_prefix(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(error) if error.error_len().is_none() => &bytes[..error.valid_up_to()],
        _ => bytes,
    }
}

/// A line that is empty or only separators and white space (any Unicode white space) is not
/// a row. Most lines are rows, so this stops at their first other character.
fn is_blank(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some(&byte) = rest.first() {
        if byte < 0x80 {
            // ASCII white space as `char::is_whitespace` has it: tab to CR, and space.
            if !matches!(byte, b',' | b' ' | 0x09..=0x0D) {
                return false;
            }
            rest = &rest[1..];
            continue;
        }
        let len = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return false,
        };
        let Some(bytes) = rest.get(..len) else {
            return false;
        };
        match std::str::from_utf8(bytes)
            .ok()
            .and_then(|c| c.chars().next())
        {
            Some(c) if c.is_whitespace() => rest = &rest[len..],
            _ => return false,
        }
    }
    true
}

/// Finds each column the rules read by its Korean header or English alias.
fn map_columns(path: &Path, kind: FileKind, header: &[String]) -> Result<Vec<usize>, InputError> {
    kind.columns()
        .iter()
        .map(|column| {
            let mut found = header
                .iter()
                .enumerate()
                .filter(|(_, name)| column.matches(name))
                .map(|(index, _)| index);
            let first = found.next().ok_or_else(|| InputError::MissingColumn {
                path: path.to_owned(),
                column: column_name(*column),
                header: header.iter().map(|name| shorten(name)).collect(),
            })?;
            if let Some(second) = found.next() {
                return Err(InputError::DuplicateColumn {
                    path: path.to_owned(),
                    column: column_name(*column),
                    first: first + 1,
                    second: second + 1,
                });
            }
            Ok(first)
        })
        .collect()
}

/// A header name as shown in an error: a header line may be up to `--max-line-bytes` long.
fn shorten(name: &str) -> String {
    const SHOWN: usize = 40;
    match name.char_indices().nth(SHOWN) {
        None => name.to_owned(),
        Some((cut, _)) => format!("{}…", &name[..cut]),
    }
}

fn column_name(column: Column) -> String {
    format!("{} / {}", column.korean(), column.english())
}

/// Reads rows back by their byte span, for rejects settled long after their file was read,
/// from the very files that were read (positional reads on the same open file).
pub(crate) struct RawText {
    dir: PathBuf,
    files: Vec<(FileKind, File)>,
}

impl RawText {
    pub fn new(dir: &Path, files: Vec<(FileKind, File)>) -> Self {
        Self {
            dir: dir.to_owned(),
            files,
        }
    }

    /// `len` is a row's length, which the reader bounded by `--max-line-bytes`.
    pub fn read(&mut self, kind: FileKind, offset: u64, len: u64) -> Result<Vec<u8>, InputError> {
        let path = self.dir.join(kind.file_name());
        let read_error = |source| InputError::Read {
            path: path.clone(),
            source,
        };
        let file = self
            .files
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, file)| file)
            .ok_or_else(|| read_error(io::Error::other("file not open")))?;
        let len = usize::try_from(len)
            .map_err(|_| read_error(io::Error::other("row longer than memory")))?;
        let mut raw = vec![0; len];
        file.read_exact_at(&mut raw, offset).map_err(read_error)?;
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_separators_and_white_space_only() {
        let reference = |raw: &[u8]| {
            std::str::from_utf8(raw)
                .is_ok_and(|text| text.chars().all(|c| c == ',' || c.is_whitespace()))
        };
        for line in [
            &b""[..],
            b",,,",
            b" \t,\x0b,\x0c",
            "\u{3000},\u{a0}\u{2028}".as_bytes(),
            "\u{85}".as_bytes(),
            b"a",
            b",,x",
            "김,".as_bytes(),
            b"\"\"",
            b"\xff",
            b"\xe3\x80",
            b"\x1c",
            "\u{200b}".as_bytes(),
        ] {
            assert_eq!(is_blank(line), reference(line), "{line:?}");
        }
    }
}
