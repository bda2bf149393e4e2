//! `nodeagent fleet`: the same operations as the other client commands, sent over NATS to every
//! node that matches a selector (or to named nodes), with one row per node. A node that did not
//! answer within `--timeout` is listed as such, never left out; with `--durable` a command waits
//! in JetStream for nodes that are down and is applied when they are back.

use super::objects::{self, DeleteArgs, UpdateArgs};
use super::output::{self, Table};
use super::{monitor, OutputFormat};
use anyhow::Context as _;
use nodeagent_api::bus::client::{FanOut, FleetClient, Sent};
use nodeagent_api::bus::wire::{self, DurableResult, Op, QueryValue, Request, Selector};
use nodeagent_api::bus::BusAuth;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    /// NATS server URL(s), comma-separated
    #[arg(
        long,
        env = "NODEAGENT_NATS_URL",
        value_name = "URLS",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: Vec<String>,
    /// NATS user (with --nats-password-file)
    #[arg(long, env = "NODEAGENT_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// A file holding the NATS password (of --nats-user)
    #[arg(long, env = "NODEAGENT_NATS_PASSWORD_FILE", value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// A file holding a NATS token
    #[arg(long, env = "NODEAGENT_NATS_TOKEN_FILE", value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// A file holding an nkey seed
    #[arg(long, env = "NODEAGENT_NATS_NKEY_FILE", value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// A NATS .creds file
    #[arg(long, env = "NODEAGENT_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// CA of the NATS servers' certificates (turns TLS on)
    #[arg(long, env = "NODEAGENT_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Where replies to the fleet client come back (for an authorization that gives each
    /// user its own inbox)
    #[arg(long, env = "NODEAGENT_NATS_INBOX_PREFIX", value_name = "PREFIX")]
    pub nats_inbox_prefix: Option<String>,
    /// The JetStream domain of the hub (`[bus] jetstream_domain`), for a client behind a leaf
    /// node
    #[arg(long, env = "NODEAGENT_NATS_DOMAIN", value_name = "DOMAIN")]
    pub nats_domain: Option<String>,
    /// Subject prefix the agents use (`[bus] prefix`)
    #[arg(long, env = "NODEAGENT_BUS_PREFIX", default_value = wire::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Who you are, for the nodes' audit records [default: $USER@hostname]
    #[arg(long, env = "NODEAGENT_BUS_IDENTITY", value_name = "NAME")]
    pub identity: Option<String>,
    /// How long to wait for the nodes' answers (for --durable, for their results)
    #[arg(long, default_value = "2s", value_name = "DURATION", global = true)]
    pub timeout: String,
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// Which nodes: `--selector` labels and `--nodes` names (both must match when both are given).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Only nodes with these labels, e.g. zone=a,tier=web
    #[arg(long, value_name = "K=V,...")]
    pub selector: Option<String>,
    /// Only these nodes (comma-separated bus names)
    #[arg(long, value_name = "NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Send through JetStream: nodes that are down apply it when they are back (mutating
    /// commands only)
    #[arg(long)]
    pub durable: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum FleetCommand {
    /// List the nodes on the bus: labels, liveness (up, stale, gone, stopped), objects
    Nodes,
    /// Create the registry and results buckets and the durable commands stream (agents
    /// create them too, where their permissions allow; see the README's authorization example)
    Init {
        /// Replicas of each (3 in a 3-server cluster)
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// List each node's objects, or show one object on each node
    Get {
        /// Id or name; without it, list all
        id: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Create the object(s) of a spec file on each node
    Create {
        /// Spec file (YAML or JSON; `-` reads standard input)
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Answer once the object runs (or has failed)
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Change an object's resources in place on each node
    Update {
        #[command(flatten)]
        args: UpdateArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Delete an object on each node
    Delete {
        #[command(flatten)]
        args: DeleteArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Start or stop reporting an object to a sink on each node, or send its latest once
    Push {
        #[command(flatten)]
        args: monitor::PushArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Show the result of durable commands by id (as `fleet ... --durable` printed them)
    Result {
        /// node:id pairs
        #[arg(required = true, value_name = "NODE:ID")]
        ids: Vec<String>,
    },
}

fn default_identity() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{user}@{host}")
}

pub async fn run(out: OutputFormat, a: FleetArgs) -> anyhow::Result<()> {
    let timeout = nodeagent_types::quantity::parse_duration(&a.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout {:?}: {e}", a.timeout))?;
    let auth = BusAuth {
        user: a.nats_user.clone(),
        password_file: a.nats_password_file.clone(),
        token_file: a.nats_token_file.clone(),
        nkey_file: a.nats_nkey_file.clone(),
        creds_file: a.nats_creds.clone(),
        tls_ca: a.nats_tls_ca.clone(),
        tls_cert: None,
        tls_key: None,
        inbox_prefix: a.nats_inbox_prefix.clone(),
        jetstream_domain: a.nats_domain.clone(),
    };
    let identity = a.identity.clone().unwrap_or_else(default_identity);
    // Every step has its own bound, but a command line must never hang on a server that
    // accepts the connection and then says nothing: the whole command is bounded too.
    let limit = timeout.max(Duration::from_secs(2)) + Duration::from_secs(10);
    match tokio::time::timeout(limit, fleet_command(out, a, auth, identity, timeout)).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the bus did not answer within {limit:?}"),
    }
}

async fn fleet_command(
    out: OutputFormat,
    a: FleetArgs,
    auth: BusAuth,
    identity: String,
    timeout: Duration,
) -> anyhow::Result<()> {
    let c = FleetClient::connect(&a.nats, &auth, Some(&a.prefix), Some(&identity))
        .await
        .context("--nats")?;
    match a.command {
        FleetCommand::Nodes => nodes(&c, out).await,
        FleetCommand::Init { replicas } => {
            c.init(replicas).await?;
            if out == OutputFormat::Table {
                println!(
                    "the bus is ready: buckets {} and {}, stream {}",
                    wire::REGISTRY_BUCKET,
                    wire::RESULTS_BUCKET,
                    wire::COMMANDS_STREAM
                );
            }
            Ok(())
        }
        FleetCommand::Get { id, target } => {
            let (op, req) = match id {
                Some(id) => (Op::Get, keyed(&id)),
                None => (Op::List, Request::default()),
            };
            send(&c, out, op, req, &target, timeout).await
        }
        FleetCommand::Create { file, wait, target } => {
            let specs = objects::read_specs(&file)?;
            for spec in specs {
                let mut req = Request {
                    body: Some(spec),
                    ..Default::default()
                };
                if wait {
                    req.query.insert("wait".into(), QueryValue::Bool(true));
                }
                send(&c, out, Op::Create, req, &target, timeout).await?;
            }
            Ok(())
        }
        FleetCommand::Update { args, target } => {
            let body = objects::patch_body(&args);
            if body.as_object().is_some_and(|m| m.is_empty()) {
                anyhow::bail!(
                    "nothing to update for {}: give at least one of --cpu, --cpu-weight, --cpuset, --memory, --pids, --pause or --resume",
                    args.id
                );
            }
            let mut req = keyed(&args.id);
            req.body = Some(body);
            send(&c, out, Op::Update, req, &target, timeout).await
        }
        FleetCommand::Delete { args, target } => {
            let mut req = keyed(&args.id);
            if args.wait {
                req.query.insert("wait".into(), QueryValue::Bool(true));
            }
            if args.remove {
                req.query.insert("remove".into(), QueryValue::Bool(true));
            }
            send(&c, out, Op::Delete, req, &target, timeout).await
        }
        FleetCommand::Push { args, target } => {
            let (route, body) = monitor::push_body(&args)?;
            let op = Op::parse(route).context("push route")?;
            let mut req = keyed(&args.id);
            req.body = Some(body);
            send(&c, out, op, req, &target, timeout).await
        }
        FleetCommand::Result { ids } => {
            let mut sent = Vec::new();
            for p in ids {
                let Some((node, id)) = p.split_once(':') else {
                    anyhow::bail!("{p:?}: give NODE:ID");
                };
                sent.push(Sent {
                    node: node.into(),
                    id: id.into(),
                });
            }
            let results = c.wait_results(&sent, Duration::ZERO).await?;
            print_durable(out, &results)
        }
    }
}

fn keyed(id: &str) -> Request {
    Request {
        key: Some(id.to_string()),
        ..Default::default()
    }
}

fn selector_of(t: &Target) -> anyhow::Result<Selector> {
    let labels = match &t.selector {
        Some(s) => Selector::parse_labels(s).map_err(|e| anyhow::anyhow!("--selector: {e}"))?,
        None => Default::default(),
    };
    Ok(Selector {
        labels,
        nodes: t.nodes.clone(),
    })
}

async fn nodes(c: &FleetClient, out: OutputFormat) -> anyhow::Result<()> {
    let nodes = c.nodes().await?;
    if out == OutputFormat::Json {
        print!("{}", output::json(&json!({ "nodes": nodes })));
        return Ok(());
    }
    let now = wire::now_ms();
    let mut t = Table::new(&[
        "NODE",
        "STATE",
        "HEARTBEAT",
        "OBJECTS",
        "VERSION",
        "LABELS",
        "ADDRESSES",
    ]);
    for n in &nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            n.node.clone(),
            n.liveness(now).as_str().to_string(),
            format!(
                "{} ago",
                output::age(now.saturating_sub(n.heartbeat_ms) / 1000)
            ),
            n.objects.to_string(),
            n.version.clone(),
            labels.join(","),
            n.addresses.join(","),
        ]);
    }
    print!("{}", t.render());
    if nodes.is_empty() {
        println!("(no node has registered on this bus)");
    }
    Ok(())
}

async fn send(
    c: &FleetClient,
    out: OutputFormat,
    op: Op,
    req: Request,
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<()> {
    let selector = selector_of(target)?;
    if target.durable {
        if !op.mutating() {
            anyhow::bail!("--durable is for create, update, delete and push");
        }
        let nodes = c.durable_targets(&selector).await?;
        if nodes.is_empty() {
            anyhow::bail!("no node matches: the registry has no such node, and --nodes names none");
        }
        let sent = c.send_durable(&nodes, op, &req).await?;
        let results = c.wait_results(&sent, timeout).await?;
        return print_durable(out, &results);
    }
    let fan = c.fan_out(op, req, selector, timeout).await?;
    print_fan_out(out, op, &fan, timeout)
}

/// One line about a node's answer.
fn result_cell(op: Op, r: &Value, status: u16) -> String {
    if !(200..300).contains(&status) {
        let msg = r["error"]["message"].as_str().unwrap_or("error");
        return format!("{status} {msg}");
    }
    match op {
        Op::Create => objects::summary("created", r),
        Op::Update => objects::summary("updated", r),
        Op::Delete => objects::summary("deleted", r),
        Op::Get => objects::summary("", r).trim().to_string(),
        _ => output::cell(Some(r)),
    }
}

fn print_fan_out(out: OutputFormat, op: Op, fan: &FanOut, timeout: Duration) -> anyhow::Result<()> {
    let failed = fan.replies.iter().filter(|r| !r.ok()).count();
    if out == OutputFormat::Json {
        print!(
            "{}",
            output::json(&json!({"replies": fan.replies, "missing": fan.missing}))
        );
    } else if op == Op::List {
        let mut t = Table::new(&["NODE", "NAME", "KIND", "STATUS", "ID"]);
        for r in &fan.replies {
            if !r.ok() {
                t.row(vec![r.node.clone(), result_cell(op, &r.body, r.status)]);
                continue;
            }
            for o in r.body["objects"].as_array().into_iter().flatten() {
                t.row(vec![
                    r.node.clone(),
                    output::cell(o.get("name")),
                    output::cell(o.get("kind")),
                    output::cell(o.get("status")),
                    output::cell(o.get("id")),
                ]);
            }
        }
        missing_rows(&mut t, fan, timeout, 5);
        print!("{}", t.render());
    } else {
        let mut t = Table::new(&["NODE", "STATUS", "RESULT"]);
        for r in &fan.replies {
            t.row(vec![
                r.node.clone(),
                r.status.to_string(),
                result_cell(op, &r.body, r.status),
            ]);
        }
        missing_rows(&mut t, fan, timeout, 3);
        print!("{}", t.render());
    }
    if fan.replies.is_empty() && fan.missing.is_empty() {
        anyhow::bail!("no node answered within {timeout:?} (none matches, or none is connected)");
    }
    let total = fan.replies.len() + fan.missing.len();
    let missing = fan.missing.len();
    match (failed, missing) {
        (0, 0) => Ok(()),
        (f, 0) => anyhow::bail!("{f} of {total} nodes failed"),
        (0, m) => anyhow::bail!("{m} of {total} nodes did not answer within {timeout:?}"),
        (f, m) => {
            anyhow::bail!("{f} of {total} nodes failed, and {m} did not answer within {timeout:?}")
        }
    }
}

fn missing_rows(t: &mut Table, fan: &FanOut, timeout: Duration, cols: usize) {
    for n in &fan.missing {
        let mut row = vec![n.clone(), "-".into()];
        row.resize(cols - 1, String::new());
        row.push(format!("no answer within {timeout:?}"));
        t.row(row);
    }
}

fn print_durable(
    out: OutputFormat,
    results: &[(Sent, Option<DurableResult>)],
) -> anyhow::Result<()> {
    if out == OutputFormat::Json {
        let v: Vec<Value> = results
            .iter()
            .map(|(s, r)| json!({"node": s.node, "id": s.id, "result": r}))
            .collect();
        print!("{}", output::json(&json!({ "commands": v })));
    } else {
        let mut t = Table::new(&["NODE", "COMMAND", "STATE", "RESULT"]);
        for (s, r) in results {
            let (state, res) = match r {
                Some(r) => {
                    let op = Op::parse(&r.op).unwrap_or(Op::Get);
                    ("applied", result_cell(op, &r.body, r.status))
                }
                None => (
                    "queued",
                    "not applied yet: the node applies it when it reads the bus".into(),
                ),
            };
            t.row(vec![
                s.node.clone(),
                format!("{}:{}", s.node, s.id),
                state.into(),
                res,
            ]);
        }
        print!("{}", t.render());
    }
    let failed = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| !(200..300).contains(&r.status)))
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} nodes refused the command", results.len());
    }
    Ok(())
}
