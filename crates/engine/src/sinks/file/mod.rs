//! `file`: JSON lines appended to `<state-dir>/reports.jsonl`, rotated to `reports.jsonl.1` once
//! it passes a size cap so a long-running agent never fills the disk.

use super::{encode_line, Record, Sink};
use std::fs::{File, OpenOptions};
use std::io::Write;
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
