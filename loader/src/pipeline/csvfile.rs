//! Reading one delivery file: the BOM, the header and its columns, and each row with its
//! physical line number and the exact bytes it occupies in the file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use csv::ByteRecord;

use super::{InputError, Progress, ProgressFn};
use crate::clean::{Column, FileKind};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How often reading reports its progress.
const PROGRESS_STEP: u64 = 1 << 20;

/// Below this many consumed bytes the tail is not compacted (compaction moves the rest).
const TAIL_SLACK: usize = 64 << 10;

/// The file as the csv reader sees it, keeping the bytes the reader has pulled in but whose
/// record has not been handed out yet, so that a row's raw text is available without a
/// second read of the file.
struct Tail {
    file: File,
    /// Bytes from csv offset `start` on.
    buf: Vec<u8>,
    start: u64,
    /// Bytes read from the file so far (csv offsets, i.e. after the BOM).
    read: u64,
}

impl Read for Tail {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(out)?;
        self.buf.extend_from_slice(&out[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl Tail {
    /// The bytes between two csv offsets, both already read.
    fn slice(&self, from: u64, to: u64) -> &[u8] {
        let from = usize::try_from(from.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        let to = usize::try_from(to.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .clamp(from, self.buf.len());
        &self.buf[from..to]
    }

    /// Forgets the bytes before `offset`; compacts only once enough has piled up, so that
    /// each byte is moved a bounded number of times.
    fn release(&mut self, offset: u64) {
        let consumed = usize::try_from(offset.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        if consumed >= TAIL_SLACK && consumed * 2 >= self.buf.len() {
            self.buf.drain(..consumed);
            self.start += consumed as u64;
        }
    }
}

/// One non-blank row as read from the file, before any rule.
pub(crate) struct RawRow<'a> {
    /// Physical line number of its first line.
    pub line: u64,
    /// Byte offset in the file.
    pub offset: u64,
    /// Its text exactly as in the file, without the line terminator.
    pub raw: &'a [u8],
    /// Its fields, untrimmed.
    pub record: &'a ByteRecord,
    /// Header names, trimmed, in file order.
    pub header: &'a [String],
    /// For each of the file kind's columns (`FileKind::columns` order), its index in the row.
    pub columns: &'a [usize],
}

/// A delivery file open for reading, header already read and mapped.
pub(crate) struct CsvFile {
    kind: FileKind,
    path: PathBuf,
    reader: csv::Reader<Tail>,
    record: ByteRecord,
    bom: u64,
    size: u64,
    header: Vec<String>,
    columns: Vec<usize>,
    /// csv offset up to which the previous row reached.
    consumed: u64,
    progress: Option<ProgressFn>,
    reported: u64,
}

impl CsvFile {
    /// Opens `dir/<file name>` and reads its header. Every problem that makes the file
    /// unusable as a whole (missing, unreadable, no header, a column missing or doubled) is
    /// an error here, before any row is read.
    pub fn open(
        dir: &Path,
        kind: FileKind,
        progress: Option<ProgressFn>,
    ) -> Result<Self, InputError> {
        let path = dir.join(kind.file_name());
        let read_error = |source| InputError::Read {
            path: path.clone(),
            source,
        };
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(InputError::MissingFile { path });
            }
            Err(error) => return Err(read_error(error)),
        };
        let size = file.metadata().map_err(read_error)?.len();
        let mut head = [0u8; 3];
        let mut got = 0;
        while got < head.len() {
            match file.read(&mut head[got..]).map_err(read_error)? {
                0 => break,
                n => got += n,
            }
        }
        // The BOM is skipped before the csv reader sees it: otherwise it sticks to the first
        // header name and breaks a quoted first field.
        let bom = if head[..got] == *BOM {
            BOM.len() as u64
        } else {
            file.seek(SeekFrom::Start(0)).map_err(read_error)?;
            0
        };
        let tail = Tail {
            file,
            buf: Vec::new(),
            start: 0,
            read: 0,
        };
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(tail);
        let mut csv_file = Self {
            kind,
            path,
            reader,
            record: ByteRecord::new(),
            bom,
            size,
            header: Vec::new(),
            columns: Vec::new(),
            consumed: 0,
            progress,
            reported: 0,
        };
        csv_file.read_header()?;
        Ok(csv_file)
    }

    fn read_header(&mut self) -> Result<(), InputError> {
        if !self.read_record()? {
            return Err(InputError::EmptyFile {
                path: self.path.clone(),
            });
        }
        self.consumed = self.reader.position().byte();
        let mut header = Vec::with_capacity(self.record.len());
        for (index, name) in self.record.iter().enumerate() {
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

    fn read_record(&mut self) -> Result<bool, InputError> {
        self.reader
            .read_byte_record(&mut self.record)
            .map_err(|error| {
                let path = self.path.clone();
                match error.into_kind() {
                    csv::ErrorKind::Io(source) => InputError::Read { path, source },
                    // Byte records with flexible lengths leave only I/O to fail; kept for safety.
                    other => InputError::Csv {
                        path,
                        detail: format!("{other:?}"),
                    },
                }
            })
    }

    /// The next row that is not blank, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<RawRow<'_>>, InputError> {
        loop {
            self.reader.get_mut().release(self.consumed);
            if !self.read_record()? {
                self.report(true);
                return Ok(None);
            }
            let end = self.reader.position().byte();
            let start = self
                .record
                .position()
                .map_or(self.consumed, csv::Position::byte);
            let first_line = self.record.position().map_or(1, csv::Position::line);
            self.consumed = end;
            self.report(false);

            // The span starts where the previous record stopped: the rest of its line
            // terminator and any empty lines the csv reader skipped come first.
            let span = self.reader.get_ref().slice(start, end);
            let lead = span
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let newlines = span[..lead].iter().filter(|b| **b == b'\n').count() as u64;
            let body = &span[lead..];
            let trail = body
                .iter()
                .rev()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let raw_len = body.len() - trail;
            if is_blank(&body[..raw_len]) {
                continue;
            }
            let this = &*self;
            let span = this.reader.get_ref().slice(start, end);
            return Ok(Some(RawRow {
                line: first_line + newlines,
                offset: this.bom + start + lead as u64,
                raw: &span[lead..lead + raw_len],
                record: &this.record,
                header: &this.header,
                columns: &this.columns,
            }));
        }
    }

    fn report(&mut self, done: bool) {
        let Some(progress) = &self.progress else {
            return;
        };
        let bytes = self.bom + self.reader.get_ref().read;
        if done || bytes >= self.reported + PROGRESS_STEP {
            self.reported = bytes;
            progress(Progress::Read {
                file: self.kind,
                bytes,
                total: self.size,
            });
        }
    }
}

/// `DATASET.md`: a line that is empty or only separators and white space is not a row.
fn is_blank(raw: &[u8]) -> bool {
    std::str::from_utf8(raw).is_ok_and(|text| text.chars().all(|c| c == ',' || c.is_whitespace()))
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
                header: header.to_vec(),
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

fn column_name(column: Column) -> String {
    format!("{} / {}", column.korean(), column.english())
}

/// Reads rows back by their byte span, for rejects settled long after their file was read.
pub(crate) struct RawText {
    dir: PathBuf,
    files: Vec<(FileKind, File)>,
}

impl RawText {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            files: Vec::new(),
        }
    }

    pub fn read(&mut self, kind: FileKind, offset: u64, len: u64) -> Result<Vec<u8>, InputError> {
        let path = self.dir.join(kind.file_name());
        let read_error = |source| InputError::Read {
            path: path.clone(),
            source,
        };
        let index = match self.files.iter().position(|(k, _)| *k == kind) {
            Some(index) => index,
            None => {
                self.files
                    .push((kind, File::open(&path).map_err(read_error)?));
                self.files.len() - 1
            }
        };
        let file = &mut self.files[index].1;
        file.seek(SeekFrom::Start(offset)).map_err(read_error)?;
        let len = usize::try_from(len)
            .map_err(|_| read_error(io::Error::other("row longer than memory")))?;
        let mut raw = vec![0; len];
        file.read_exact(&mut raw).map_err(read_error)?;
        Ok(raw)
    }
}
