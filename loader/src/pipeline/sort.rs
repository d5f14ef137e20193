//! An external merge sort with a memory budget: items are kept in memory until the budget is
//! used up, then sorted and spilled as a run to a temporary folder; at the end the runs are
//! merged (several passes when there are too many to open at once). A day that fits in the
//! budget never touches the disk.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::mem;
use std::path::PathBuf;

use tempfile::TempDir;

/// An item the sorter can spill: ordered, with a byte-exact encoding of its own.
pub(crate) trait Spill: Ord + Sized {
    /// Heap bytes the item owns beyond its own size (strings and the like).
    fn heap_bytes(&self) -> usize;
    /// Appends the encoding of the item.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes an item from exactly the bytes `encode` produced.
    fn decode(bytes: &[u8]) -> io::Result<Self>;
}

/// Most runs merged at once: bounds open files and merge buffers.
pub(crate) const DEFAULT_FAN_IN: usize = 64;

const RUN_BUFFER: usize = 64 << 10;

pub(crate) struct ExternalSorter<T> {
    budget: usize,
    fan_in: usize,
    scratch_parent: Option<PathBuf>,
    dir: Option<TempDir>,
    buffer: Vec<T>,
    buffered_bytes: usize,
    runs: Vec<PathBuf>,
    runs_spilled: u64,
    next_run: u64,
    len: u64,
}

impl<T: Spill> ExternalSorter<T> {
    /// A sorter that keeps about `budget` bytes in memory and spills under `scratch_parent`
    /// (the system's temporary folder when `None`).
    pub fn new(budget: usize, fan_in: usize, scratch_parent: Option<PathBuf>) -> Self {
        Self {
            budget,
            fan_in: fan_in.max(2),
            scratch_parent,
            dir: None,
            buffer: Vec::new(),
            buffered_bytes: 0,
            runs: Vec::new(),
            runs_spilled: 0,
            next_run: 0,
            len: 0,
        }
    }

    pub fn push(&mut self, item: T) -> io::Result<()> {
        self.buffered_bytes += mem::size_of::<T>() + item.heap_bytes();
        self.buffer.push(item);
        self.len += 1;
        if self.buffered_bytes >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Items pushed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Sorted runs written to disk so far (merge passes not counted).
    pub fn runs_spilled(&self) -> u64 {
        self.runs_spilled
    }

    fn new_run_path(&mut self) -> io::Result<PathBuf> {
        if self.dir.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix("loader-sort-");
            self.dir = Some(match &self.scratch_parent {
                Some(parent) => builder.tempdir_in(parent)?,
                None => builder.tempdir()?,
            });
        }
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| io::Error::other("sort folder vanished"))?;
        let path = dir.path().join(format!("run-{:06}", self.next_run));
        self.next_run += 1;
        Ok(path)
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.buffer.sort_unstable();
        let path = self.new_run_path()?;
        let mut writer = RunWriter::create(&path)?;
        for item in self.buffer.drain(..) {
            writer.write(&item)?;
        }
        writer.finish()?;
        self.runs.push(path);
        self.runs_spilled += 1;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// All items in ascending order.
    pub fn finish(mut self) -> io::Result<Sorted<T>> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            return Ok(Sorted::Memory(mem::take(&mut self.buffer).into_iter()));
        }
        self.spill()?;
        // Pre-merge until one pass can open every run.
        while self.runs.len() > self.fan_in {
            let group: Vec<PathBuf> = self.runs.drain(..self.fan_in).collect();
            let path = self.new_run_path()?;
            let mut merge = Merge::<T>::open(&group)?;
            let mut writer = RunWriter::create(&path)?;
            while let Some(item) = merge.next_item()? {
                writer.write(&item)?;
            }
            writer.finish()?;
            drop(merge);
            for run in group {
                std::fs::remove_file(run)?;
            }
            self.runs.push(path);
        }
        let merge = Merge::open(&self.runs)?;
        let dir = self
            .dir
            .take()
            .ok_or_else(|| io::Error::other("spilled runs without a folder"))?;
        Ok(Sorted::Merge { merge, _dir: dir })
    }
}

/// The sorted items: straight from memory, or merged from the spilled runs.
pub(crate) enum Sorted<T> {
    Memory(std::vec::IntoIter<T>),
    /// Keeps the folder of the runs alive until the merge is dropped.
    Merge {
        merge: Merge<T>,
        _dir: TempDir,
    },
}

impl<T: Spill> Iterator for Sorted<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Sorted::Memory(items) => items.next().map(Ok),
            Sorted::Merge { merge, .. } => merge.next_item().transpose(),
        }
    }
}

/// Runs are a sequence of (u32 little-endian length, encoding) pairs.
struct RunWriter {
    writer: BufWriter<File>,
    scratch: Vec<u8>,
}

impl RunWriter {
    fn create(path: &PathBuf) -> io::Result<Self> {
        Ok(Self {
            writer: BufWriter::with_capacity(RUN_BUFFER, File::create(path)?),
            scratch: Vec::new(),
        })
    }

    fn write(&mut self, item: &impl Spill) -> io::Result<()> {
        self.scratch.clear();
        item.encode(&mut self.scratch);
        let len = u32::try_from(self.scratch.len())
            .map_err(|_| io::Error::other("sort item over 4 GiB"))?;
        self.writer.write_all(&len.to_le_bytes())?;
        self.writer.write_all(&self.scratch)
    }

    fn finish(mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

struct RunReader {
    reader: BufReader<File>,
    scratch: Vec<u8>,
}

impl RunReader {
    fn open(path: &PathBuf) -> io::Result<Self> {
        Ok(Self {
            reader: BufReader::with_capacity(RUN_BUFFER, File::open(path)?),
            scratch: Vec::new(),
        })
    }

    fn next_item<T: Spill>(&mut self) -> io::Result<Option<T>> {
        if self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        self.scratch.resize(u32::from_le_bytes(len) as usize, 0);
        self.reader.read_exact(&mut self.scratch)?;
        T::decode(&self.scratch).map(Some)
    }
}

/// A head item of a run; ties (impossible with unique keys) go to the earlier run.
struct Head<T> {
    item: T,
    run: usize,
}

impl<T: Ord> PartialEq for Head<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T: Ord> Eq for Head<T> {}

impl<T: Ord> PartialOrd for Head<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Head<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.item.cmp(&other.item).then(self.run.cmp(&other.run))
    }
}

/// k-way merge of sorted runs.
pub(crate) struct Merge<T> {
    runs: Vec<RunReader>,
    heap: BinaryHeap<Reverse<Head<T>>>,
}

impl<T: Spill> Merge<T> {
    fn open(paths: &[PathBuf]) -> io::Result<Self> {
        let mut runs = Vec::with_capacity(paths.len());
        let mut heap = BinaryHeap::with_capacity(paths.len());
        for (run, path) in paths.iter().enumerate() {
            let mut reader = RunReader::open(path)?;
            if let Some(item) = reader.next_item()? {
                heap.push(Reverse(Head { item, run }));
            }
            runs.push(reader);
        }
        Ok(Self { runs, heap })
    }

    fn next_item(&mut self) -> io::Result<Option<T>> {
        let Some(Reverse(Head { item, run })) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(reader) = self.runs.get_mut(run)
            && let Some(next) = reader.next_item()?
        {
            self.heap.push(Reverse(Head { item: next, run }));
        }
        Ok(Some(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Word(String);

    impl Spill for Word {
        fn heap_bytes(&self) -> usize {
            self.0.len()
        }
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.0.as_bytes());
        }
        fn decode(bytes: &[u8]) -> io::Result<Self> {
            String::from_utf8(bytes.to_vec())
                .map(Word)
                .map_err(io::Error::other)
        }
    }

    fn words(n: u64) -> Vec<Word> {
        // A fixed permutation, so that the input is far from sorted.
        (0..n)
            .map(|i| Word(format!("w{:08}", (i * 7919) % n)))
            .collect()
    }

    fn sort(budget: usize, fan_in: usize, n: u64) -> (Vec<Word>, u64) {
        let mut sorter = ExternalSorter::new(budget, fan_in, None);
        for word in words(n) {
            sorter.push(word).unwrap();
        }
        let runs = sorter.runs_spilled();
        (
            sorter
                .finish()
                .unwrap()
                .collect::<io::Result<Vec<_>>>()
                .unwrap(),
            runs,
        )
    }

    #[test]
    fn in_memory_when_within_budget() {
        let (sorted, runs) = sort(1 << 20, DEFAULT_FAN_IN, 1000);
        assert_eq!(runs, 0);
        let mut expected = words(1000);
        expected.sort();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn spilled_and_merged_in_several_passes() {
        let (sorted, runs) = sort(1024, 3, 1000);
        assert!(runs > 9, "expected many runs, got {runs}");
        let mut expected = words(1000);
        expected.sort();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn empty() {
        let (sorted, runs) = sort(1024, 3, 0);
        assert!(sorted.is_empty());
        assert_eq!(runs, 0);
    }
}
