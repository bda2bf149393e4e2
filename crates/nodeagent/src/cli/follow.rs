//! `nodeagent metrics NAME -f`: follows `/v1/objects/{key}/metrics/stream` and prints one line
//! per sample as it is taken (the columns of `metrics`, CPU from the previous sample), or the
//! sample's JSON per line with `-o json`. It ends when the object is deleted (the stream's
//! `gone` event) or the agent stops.

use super::client::{segment, Client};
use super::monitor::{bytes_cell, cpu_cores, pair, MetricsArgs};
use super::output;
use super::sse::SseReader;
use super::OutputFormat;
use serde_json::Value;
use std::io::Write as _;

pub async fn metrics(client: &Client, out: OutputFormat, args: &MetricsArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/objects/{}/metrics/stream", segment(&args.id));
    if let Some(every) = &args.every {
        path.push_str(&format!("?every={}", segment(every)));
    }
    let mut stream = SseReader::new(client.open_stream(&path).await?);
    let mut prev: Option<Value> = None;
    if out == OutputFormat::Table {
        println!(
            "{:>8}  {:<12}  {:>6}  {:>9}  {:>4}  {:<19}  NET",
            "SEQ", "TIME", "CPU", "MEMORY", "PIDS", "IO"
        );
    }
    while let Some(ev) = stream.next().await? {
        match ev.event.as_str() {
            "sample" => {}
            "gone" => {
                eprintln!("{}: the object was deleted", args.id);
                return Ok(());
            }
            _ => continue,
        }
        let line = match out {
            OutputFormat::Json => ev.data.clone(),
            OutputFormat::Table => {
                let s: Value = serde_json::from_str(&ev.data)?;
                let cpu = prev
                    .as_ref()
                    .and_then(|p| cpu_cores(p, &s))
                    .map(|c| format!("{c:.3}"))
                    .unwrap_or_else(|| "-".to_string());
                let line = format!(
                    "{:>8}  {:<12}  {:>6}  {:>9}  {:>4}  {:<19}  {}",
                    output::cell(s.get("seq")),
                    output::time_of_day(s.get("ts").unwrap_or(&Value::Null)),
                    cpu,
                    bytes_cell(&s, "memory_bytes"),
                    output::cell(s.get("pids")),
                    pair(&s, "io_read_bytes", "io_write_bytes"),
                    pair(&s, "net_rx_bytes", "net_tx_bytes"),
                );
                prev = Some(s);
                line
            }
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    Ok(())
}
