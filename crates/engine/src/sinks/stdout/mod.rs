//! `stdout`: one JSON line per record on the agent's standard output.

use super::{encode_line, Record, Sink};
use std::io::Write;

pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink { buf: Vec::new() }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, records: &[Record]) -> std::io::Result<()> {
        self.buf.clear();
        for r in records {
            encode_line(r, &mut self.buf)?;
        }
        std::io::stdout().lock().write_all(&self.buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}
