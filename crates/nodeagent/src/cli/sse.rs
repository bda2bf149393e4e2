//! A minimal Server-Sent Events reader for the agent's streams (`metrics -f`, `top`): it splits
//! the body into events and keeps each one's `event`, `id` and `data` fields. Comments
//! (keep-alives) and unknown fields are skipped, as the SSE spec says.

use anyhow::Context as _;
use http_body_util::BodyExt as _;

/// One event of a stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the server named none.
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads events from a streaming body.
pub struct SseReader {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(body: hyper::body::Incoming) -> SseReader {
        SseReader {
            body,
            buf: Vec::new(),
        }
    }

    /// The next event; `None` once the server ended the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        loop {
            if let Some(ev) = take_event(&mut self.buf) {
                if let Some(ev) = ev {
                    return Ok(Some(ev));
                }
                continue;
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    let frame = frame.context("reading the stream")?;
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend(data.iter().filter(|&&b| b != b'\r'));
                    }
                }
            }
        }
    }
}

/// Takes one blank-line-terminated block off `buf`: `None` if there is no whole block yet,
/// `Some(None)` for a block with no data (a comment), `Some(Some(event))` otherwise.
fn take_event(buf: &mut Vec<u8>) -> Option<Option<SseEvent>> {
    // `\r` is dropped as it comes (see `SseReader::next`), so a block ends at the first blank line.
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    let block = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 2);
    let mut ev = SseEvent {
        event: "message".into(),
        ..SseEvent::default()
    };
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => ev.event = value.to_string(),
            "id" => ev.id = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return Some(None);
    }
    ev.data = data.join("\n");
    Some(Some(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_into_events() {
        let mut buf =
            b": keep-alive\n\nevent: sample\nid: 7\ndata: {\"a\":1}\n\nevent: x\nda".to_vec();
        assert_eq!(take_event(&mut buf), Some(None));
        let ev = take_event(&mut buf).flatten().expect("an event");
        assert_eq!(ev.event, "sample");
        assert_eq!(ev.id.as_deref(), Some("7"));
        assert_eq!(ev.data, "{\"a\":1}");
        // An incomplete block waits for more.
        assert_eq!(take_event(&mut buf), None);
        buf.extend(b"ta: 2\r\ndata: 3\r\n\r\n".iter().filter(|&&b| b != b'\r'));
        let ev = take_event(&mut buf).flatten().expect("an event");
        assert_eq!((ev.event.as_str(), ev.data.as_str()), ("x", "2\n3"));
        assert!(buf.is_empty());
    }
}
