//! `file`: JSON lines appended to `<state-dir>/reports.jsonl`, rotated to `reports.jsonl.1` once
//! it passes a size cap so a long-running agent never fills the disk.

use super::{encode_line, Record, Sink};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct FileSink {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    buf: Vec<u8>,
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<FileSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes: max_bytes.max(4096),
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        self.buf.clear();
        for r in records {
            encode_line(r, &mut self.buf)?;
        }
        if self.size > 0 && self.size + self.buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        // One write per batch of whole lines: a reader never sees half a line from us.
        self.file.write_all(&self.buf)?;
        self.size += self.buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
    fn resume_seq(&mut self) -> u64 {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        // The current file first; right after a rotation it may be empty, and the last record
        // is in the rotated one.
        [self.path.clone(), PathBuf::from(rotated)]
            .iter()
            .find_map(|p| last_seq_in(p).ok().flatten())
            .unwrap_or(0)
    }
}

/// How much of a file's end is read to find its last record: a record is well under 4 KiB (a
/// host sample with dozens of disks and interfaces), so this holds many.
const TAIL_BYTES: u64 = 256 * 1024;

/// The `seq` of the last whole record (a line that ends in a newline and parses) in the file at
/// `path`; `None` when it has none. A torn last line (a crash mid-write) is passed over.
fn last_seq_in(path: &Path) -> std::io::Result<Option<u64>> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        return Ok(None);
    };
    // Lines that end in a newline, newest first; a first line cut by `start` will not parse.
    Ok(tail[..end]
        .split(|&b| b == b'\n')
        .rev()
        .find_map(|line| serde_json::from_slice::<Seq>(line).ok())
        .map(|s| s.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeagent_types::{Kind, Sample};

    fn rec(i: u64) -> Record {
        Record {
            node: "n".into(),
            seq: i,
            id: "abc".into(),
            name: "x".into(),
            kind: Kind::Process,
            sample: Sample {
                id: "abc".into(),
                seq: i,
                pids: Some(1),
                ..Sample::default()
            },
        }
    }

    /// Issue 21: the seq of a file's records goes on across restarts of its sink (here: its
    /// thread, started twice on the same file, as an agent restart does), and also right after a
    /// rotation; a torn last line is passed over.
    #[test]
    fn seq_goes_on_across_restarts_and_rotation() {
        use crate::sinks::{spawn, SinkType};
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("reports.jsonl");
        let events = std::sync::Arc::new(crate::EventLog::new(10));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        for _run in 0..3 {
            let sink = FileSink::open(&p, 1 << 20).expect("open");
            let h =
                spawn("file", SinkType::File, Box::new(sink), 8, events.clone()).expect("spawn");
            h.try_send(vec![rec(0), rec(0)], None);
            rt.block_on(h.flush());
        }
        let text = std::fs::read_to_string(&p).expect("read");
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"].as_u64())
            .map(|s| s.expect("seq"))
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
        // A torn line at the end, then a rotation that leaves the current file empty.
        std::fs::write(&p, format!("{text}{{\"node\":\"n\",\"se")).expect("tear");
        assert_eq!(FileSink::open(&p, 1 << 20).expect("open").resume_seq(), 6);
        std::fs::rename(&p, dir.path().join("reports.jsonl.1")).expect("rotate");
        assert_eq!(FileSink::open(&p, 1 << 20).expect("open").resume_seq(), 6);
    }

    proptest::proptest! {
        /// Whatever the file's end holds (torn lines, garbage, huge numbers), reading the last
        /// seq never panics, and a well-formed last record is found after any junk before it.
        #[test]
        fn last_seq_never_panics(junk in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), seq in 1u64..u64::MAX) {
            let dir = tempfile::tempdir().expect("tempdir");
            let p = dir.path().join("r.jsonl");
            std::fs::write(&p, &junk).expect("write");
            let _ = last_seq_in(&p);
            let mut with_record = junk.clone();
            with_record.extend_from_slice(format!("\n{{\"seq\":{seq}}}\n").as_bytes());
            std::fs::write(&p, &with_record).expect("write");
            proptest::prop_assert_eq!(last_seq_in(&p).expect("read"), Some(seq));
        }
    }

    #[test]
    fn appends_lines_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("reports.jsonl");
        let mut s = FileSink::open(&p, 4096).expect("open");
        s.write(&[rec(1), rec(2)]).expect("write");
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value =
            serde_json::from_str(text.lines().next().unwrap_or("")).expect("json");
        assert_eq!(v["node"], "n");
        assert_eq!(v["sample"]["pids"], 1);
        for i in 0..100 {
            s.write(&[rec(i)]).expect("write");
        }
        assert!(dir.path().join("reports.jsonl.1").exists());
        assert!(std::fs::metadata(&p).expect("meta").len() <= 4096);
    }
}
