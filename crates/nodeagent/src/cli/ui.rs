//! `nodeagent ui`: prints a URL that logs a browser in to the web console once.
//!
//! It asks the agent for a one-time login code (`POST /v1/console/codes`, over the unix socket
//! by default, or over TCP with the token) and puts it in the URL's fragment (`#login=...`),
//! which browsers do not send to the server: the code never appears in a request line, a proxy's
//! or the agent's logs, or a Referer. The console's script trades it for an HttpOnly session
//! cookie. The code works once, within 60 s; the token itself is never in the URL.

use super::client::Client;
use super::GlobalOpts;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct UiArgs {
    /// The agent's address as the browser reaches it [default: --addr, else
    /// http://127.0.0.1:7464]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

pub async fn run(client: &Client, global: &GlobalOpts, args: UiArgs) -> anyhow::Result<()> {
    let answer = client.post("/v1/console/codes", &json!({})).await?;
    let path = answer
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the agent's answer has no path: {answer}"))?;
    let base = args
        .url
        .or_else(|| global.addr.clone())
        .unwrap_or_else(|| "http://127.0.0.1:7464".to_string());
    let ttl = answer
        .get("expires_in_s")
        .and_then(Value::as_u64)
        .unwrap_or(60);
    println!("{}{path}", base.trim_end_matches('/'));
    eprintln!("open it in a browser within {ttl} s; it logs in once");
    Ok(())
}
