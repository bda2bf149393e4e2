//! `create`, `get`, `update`, `delete`: the object commands.
//!
//! The client does not validate specs: it converts YAML to JSON and sends it as it is, so the
//! server (the one place that knows the rules) checks it and names the field at fault.

use super::client::{segment, Client};
use super::output::{self, Table};
use super::OutputFormat;
use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::{json, Map, Value};
use std::io::Read as _;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Spec file (YAML or JSON; `-` reads standard input)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Answer once the object is running (or has failed), not when it is accepted
    #[arg(long)]
    pub wait: bool,
    /// With several documents: create the good ones even if some are bad (or fail), and exit
    /// 1 naming those. Without it, every document is checked first and none is created if one
    /// is bad, and the first failure stops the rest
    #[arg(long)]
    pub continue_on_error: bool,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Id or name of one object; without it, list all. In the list, CPU is the cores used
    /// over the last two samples and the limit (`0.48/0.50`), MEMORY the bytes used, the limit
    /// and the percent of it (`12Mi/64Mi 19%`); EXIT is the last exit code (or signal) and
    /// RESTARTS the restarts by the restart policy
    pub id: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Id or name of the object
    pub id: String,
    /// CPU limit in cores (0.5 = 50 ms per 100 ms period)
    #[arg(long, value_name = "CORES")]
    pub cpu: Option<f64>,
    /// Relative CPU weight, 1..=10000 (default of a new cgroup: 100)
    #[arg(long, value_name = "N")]
    pub cpu_weight: Option<u64>,
    /// CPUs the object may run on, e.g. 0-1 or 0,2
    #[arg(long, value_name = "LIST")]
    pub cpuset: Option<String>,
    /// Memory limit: bytes or a quantity such as 256Mi or 1G
    #[arg(long, value_name = "QUANTITY")]
    pub memory: Option<String>,
    /// Most processes/threads the object may have
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Freeze every process of the object
    #[arg(long, conflicts_with = "resume")]
    pub pause: bool,
    /// Thaw a paused object
    #[arg(long)]
    pub resume: bool,
    /// Answer once the change is in the cgroup files
    #[arg(long)]
    pub wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Id or name of the object
    pub id: String,
    /// Answer once the workload and its cgroup are gone
    #[arg(long)]
    pub wait: bool,
    /// For an adopted container: stop and remove it too (by default the agent releases it and
    /// it keeps running)
    #[arg(long)]
    pub remove: bool,
}

pub async fn create(client: &Client, out: OutputFormat, args: CreateArgs) -> anyhow::Result<()> {
    let specs = read_specs(&args.file)?;
    let path = if args.wait {
        "/v1/objects?wait=true"
    } else {
        "/v1/objects"
    };
    let n = specs.len();
    if n == 1 {
        let answer = client.post(path, &specs[0]).await?;
        print_created(out, &answer);
        return Ok(());
    }
    // Several documents: check them all before creating any (issue 21), so that a typo in the
    // second is not found after the first was created and the third silently skipped.
    let taken = existing_names(client).await?;
    let bad = check_documents(&specs, &taken);
    if !bad.is_empty() && !args.continue_on_error {
        anyhow::bail!(
            "{} of {n} documents cannot be created, so none was (--continue-on-error creates \
             the others):\n  {}",
            bad.len(),
            bad.iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    let mut failed: Vec<String> = bad.iter().map(|(_, m)| m.clone()).collect();
    for m in &failed {
        eprintln!("error: {m}");
    }
    let mut created: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if bad.iter().any(|(j, _)| *j == i) {
            continue;
        }
        match client.post(path, spec).await {
            Ok(answer) => {
                print_created(out, &answer);
                created.push(document_label(i, n, spec));
            }
            Err(e) if args.continue_on_error => {
                let m = format!("{}: {e:#}", document_label(i, n, spec));
                eprintln!("error: {m}");
                failed.push(m);
            }
            Err(e) => {
                let rest: Vec<String> = (i + 1..n)
                    .map(|j| document_label(j, n, &specs[j]))
                    .collect();
                let created = if created.is_empty() {
                    "none".to_string()
                } else {
                    created.join(", ")
                };
                let rest = if rest.is_empty() {
                    String::new()
                } else {
                    format!("; not attempted: {}", rest.join(", "))
                };
                anyhow::bail!(
                    "{}: {e:#} (created before it: {created}{rest})",
                    document_label(i, n, spec)
                );
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} of {n} documents were not created", failed.len());
    }
    Ok(())
}

fn print_created(out: OutputFormat, answer: &Value) {
    match out {
        OutputFormat::Json => print!("{}", output::json(answer)),
        OutputFormat::Table => println!("{}", summary("created", answer)),
    }
}

/// `document 2 of 3 (web-2)`: how an error names a document of a multi-document file.
fn document_label(i: usize, n: usize, spec: &Value) -> String {
    match spec.get("name").and_then(Value::as_str) {
        Some(name) => format!("document {} of {n} ({name})", i + 1),
        None => format!("document {} of {n} (no name)", i + 1),
    }
}

/// The names of the objects the daemon has now.
async fn existing_names(client: &Client) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let list = client.get("/v1/objects").await?;
    Ok(list
        .get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect())
}

/// Every document that cannot be created, by index, with the reason: a spec the server's own
/// rules refuse (the same parser, from the types crate), a name used twice in the file, or a
/// name the daemon already has. What only the daemon can know (its policy, a missing image)
/// still shows at create time.
fn check_documents(
    specs: &[Value],
    taken: &std::collections::BTreeSet<String>,
) -> Vec<(usize, String)> {
    let n = specs.len();
    let mut bad = Vec::new();
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, spec) in specs.iter().enumerate() {
        let label = document_label(i, n, spec);
        let bytes = serde_json::to_vec(spec).unwrap_or_default();
        match nodeagent_types::ObjectSpec::from_json(&bytes) {
            Err(e) => bad.push((i, format!("{label}: {e}"))),
            Ok(s) => {
                if let Some(j) = seen.insert(s.name.clone(), i) {
                    bad.push((
                        i,
                        format!("{label}: name {:?} is also document {}", s.name, j + 1),
                    ));
                } else if taken.contains(&s.name) {
                    bad.push((
                        i,
                        format!("{label}: name {:?} is already taken on the node", s.name),
                    ));
                }
            }
        }
    }
    bad
}

pub async fn get(client: &Client, out: OutputFormat, args: GetArgs) -> anyhow::Result<()> {
    match args.id {
        Some(id) => {
            let obj = client.get(&format!("/v1/objects/{}", segment(&id))).await?;
            match out {
                OutputFormat::Json => print!("{}", output::json(&obj)),
                OutputFormat::Table => print!("{}", describe(&obj)),
            }
        }
        None => {
            let list = client.get("/v1/objects").await?;
            match out {
                OutputFormat::Json => print!("{}", output::json(&list)),
                OutputFormat::Table => {
                    let usage = usage_of(client, &list).await;
                    print!("{}", list_table(&list, &usage))
                }
            }
        }
    }
    Ok(())
}

pub async fn update(client: &Client, out: OutputFormat, args: UpdateArgs) -> anyhow::Result<()> {
    let body = patch_body(&args);
    if body.as_object().is_some_and(Map::is_empty) {
        // Sent as it is, the server's answer would name the API's fields (`resources`,
        // `paused`), which the CLI user never sees.
        anyhow::bail!(
            "nothing to update for {}: give at least one of --cpu, --cpu-weight, --cpuset, \
             --memory, --pids, --pause or --resume",
            args.id
        );
    }
    let mut path = format!("/v1/objects/{}", segment(&args.id));
    if args.wait {
        path.push_str("?wait=true");
    }
    let answer = client.patch(&path, &body).await?;
    match out {
        OutputFormat::Json => print!("{}", output::json(&answer)),
        OutputFormat::Table => println!("{}", summary("updated", &answer)),
    }
    Ok(())
}

pub async fn delete(client: &Client, out: OutputFormat, args: DeleteArgs) -> anyhow::Result<()> {
    let mut path = format!("/v1/objects/{}", segment(&args.id));
    let mut query = Vec::new();
    if args.wait {
        query.push("wait=true");
    }
    if args.remove {
        query.push("remove=true");
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let answer = client.delete(&path).await?;
    match out {
        OutputFormat::Json => print!("{}", output::json(&answer)),
        OutputFormat::Table => println!("{}", summary("deleted", &answer)),
    }
    Ok(())
}

/// The PATCH body: only the fields given, so the rest stay as they are. `--memory` goes as
/// text, letting the server parse the quantity and name the field if it is wrong.
pub(crate) fn patch_body(args: &UpdateArgs) -> Value {
    let mut resources = Map::new();
    if let Some(v) = args.cpu {
        resources.insert("cpu".into(), json!(v));
    }
    if let Some(v) = args.cpu_weight {
        resources.insert("cpu_weight".into(), json!(v));
    }
    if let Some(v) = &args.cpuset {
        resources.insert("cpuset".into(), json!(v));
    }
    if let Some(v) = &args.memory {
        resources.insert("memory".into(), json!(v));
    }
    if let Some(v) = args.pids {
        resources.insert("pids".into(), json!(v));
    }
    let mut body = Map::new();
    if !resources.is_empty() {
        body.insert("resources".into(), Value::Object(resources));
    }
    if args.pause {
        body.insert("paused".into(), json!(true));
    } else if args.resume {
        body.insert("paused".into(), json!(false));
    }
    Value::Object(body)
}

/// Reads one spec (JSON) or one or more (YAML documents separated by `---`).
pub(crate) fn read_specs(file: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let (text, name) = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the spec from standard input")?;
        (s, "standard input".to_string())
    } else {
        let s = std::fs::read_to_string(file)
            .with_context(|| format!("reading spec file {}", file.display()))?;
        (s, file.display().to_string())
    };
    let is_json =
        file.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with(['{', '[']);
    let specs = parse_specs(&text, is_json).with_context(|| format!("parsing {name}"))?;
    if specs.is_empty() {
        anyhow::bail!("{name} holds no spec");
    }
    Ok(specs)
}

fn parse_specs(text: &str, is_json: bool) -> anyhow::Result<Vec<Value>> {
    if is_json {
        return Ok(match serde_json::from_str::<Value>(text)? {
            Value::Array(items) => items,
            one => vec![one],
        });
    }
    let mut specs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        // An empty document (a trailing `---`) is not a spec.
        if !v.is_null() {
            specs.push(v);
        }
    }
    Ok(specs)
}

/// One line for the answer of a mutation: `created process web-1 id=... status=running pid=7`,
/// or `accepted ... event=12` for an answer that does not wait.
pub(crate) fn summary(verb: &str, answer: &Value) -> String {
    let status = answer.get("status").and_then(Value::as_str).unwrap_or("");
    let verb = if status == "accepted" {
        "accepted"
    } else {
        verb
    };
    let obj = answer.get("object").unwrap_or(answer);
    let mut line = verb.to_string();
    for key in ["kind", "name"] {
        if let Some(v) = obj.get(key).and_then(Value::as_str) {
            line.push(' ');
            line.push_str(v);
        }
    }
    let id = answer.get("id").or_else(|| obj.get("id"));
    if let Some(id) = id.and_then(Value::as_str) {
        line.push_str(&format!(" id={id}"));
    }
    for key in ["status", "pid", "event_id"] {
        if key == "status" && verb == "accepted" {
            continue;
        }
        if let Some(v) = obj.get(key).or_else(|| answer.get(key)) {
            if !v.is_null() {
                line.push_str(&format!(
                    " {}={}",
                    key.trim_end_matches("_id"),
                    output::cell(Some(v))
                ));
            }
        }
    }
    line
}

/// The two newest samples of each listed object, by id, for the usage columns: one small
/// request per object over the socket. An object with no samples (or gone meanwhile) has none.
async fn usage_of(client: &Client, list: &Value) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    let ids = list
        .get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("id").and_then(Value::as_str));
    for id in ids {
        let path = format!("/v1/objects/{}/metrics?limit=2", segment(id));
        if let Ok(v) = client.get(&path).await {
            out.insert(id.to_string(), v);
        }
    }
    out
}

/// `0.48/0.50`: cores used (over the last two samples) and the limit; `-` for either that is
/// not known.
fn cpu_cell(limit: Option<&Value>, samples: &[Value]) -> String {
    let used = match samples {
        [.., prev, cur] => super::monitor::cpu_cores(prev, cur).map(|c| format!("{c:.2}")),
        _ => None,
    };
    let limit = limit.and_then(Value::as_f64).map(|l| format!("{l:.2}"));
    match (used, limit) {
        (None, None) => "-".to_string(),
        (u, None) => u.unwrap_or_else(|| "-".to_string()),
        (u, Some(l)) => format!("{}/{l}", u.unwrap_or_else(|| "-".to_string())),
    }
}

/// `12Mi/64Mi 19%`: bytes used (latest sample), the limit and the percent of it.
fn memory_cell(limit: Option<u64>, samples: &[Value]) -> String {
    let used = samples
        .last()
        .and_then(|s| s.get("memory_bytes"))
        .and_then(Value::as_u64);
    match (used, limit) {
        (None, None) => "-".to_string(),
        (Some(u), None) => output::bytes(u),
        (None, Some(l)) => format!("-/{}", output::bytes(l)),
        (Some(u), Some(l)) => format!(
            "{}/{} {:.0}%",
            output::bytes(u),
            output::bytes(l),
            u as f64 * 100.0 / l.max(1) as f64
        ),
    }
}

/// The last exit code, `sig N` for a signal, or `-`.
fn exit_cell(o: &Value) -> String {
    match (
        o.get("exit_code").and_then(Value::as_i64),
        o.get("exit_signal").and_then(Value::as_i64),
    ) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("sig {s}"),
        _ => "-".to_string(),
    }
}

fn list_table(list: &Value, usage: &std::collections::BTreeMap<String, Value>) -> String {
    let empty = Vec::new();
    let objects = list
        .get("objects")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .unwrap_or(&empty);
    // The CONTAINER column (Docker's short id, and the sync state while Docker lags behind) is
    // there only when some object is a container.
    let containers = objects.iter().any(|o| o.get("container").is_some());
    let mut headers = vec!["ID", "NAME", "KIND", "STATUS", "PID"];
    if containers {
        headers.push("CONTAINER");
    }
    headers.extend(["CPU", "MEMORY", "EXIT", "RESTARTS", "AGE"]);
    let mut t = Table::new(&headers);
    let none = Vec::new();
    for o in objects {
        let res = o.pointer("/spec/resources");
        let samples = o
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| usage.get(id))
            .and_then(|u| u.get("samples"))
            .and_then(Value::as_array)
            .unwrap_or(&none);
        let cpu = cpu_cell(res.and_then(|r| r.get("cpu")), samples);
        let memory = memory_cell(
            res.and_then(|r| r.get("memory")).and_then(Value::as_u64),
            samples,
        );
        let mut row = vec![
            output::cell(o.get("id")),
            output::cell(o.get("name")),
            output::cell(o.get("kind")),
            output::cell(o.get("status")),
            output::cell(o.get("pid")),
        ];
        if containers {
            row.push(container_cell(o.get("container")));
        }
        row.extend([
            cpu,
            memory,
            exit_cell(o),
            output::cell(o.get("restarts")),
            output::age_of(o.get("created_at").unwrap_or(&Value::Null)),
        ]);
        t.row(row);
    }
    t.render()
}

/// `5ca7b6e27ad5`, or `5ca7b6e27ad5 sync=pending` while Docker's config lags behind the cgroup.
fn container_cell(c: Option<&Value>) -> String {
    let Some(c) = c else {
        return "-".to_string();
    };
    let id = c.get("id").and_then(Value::as_str).unwrap_or("");
    let short: String = id.chars().take(12).collect();
    let short = if short.is_empty() {
        "-".to_string()
    } else {
        short
    };
    match c.get("sync").and_then(Value::as_str) {
        Some(s) if s != "in_sync" => format!("{short} sync={s}"),
        _ => short,
    }
}

/// One object as key/value lines: the usual fields first, then everything else it has.
fn describe(obj: &Value) -> String {
    let mut pairs = Vec::new();
    if let Some(created) = obj.get("created_at") {
        pairs.push(("age".to_string(), output::age_of(created)));
    }
    output::flatten(obj, "", &mut pairs);
    output::key_values(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_become_json() {
        let specs = parse_specs(
            "name: a\nkind: process\nprocess:\n  command: [/bin/sleep, \"300\"]\nresources:\n  cpu: 0.5\n  memory: 64Mi\n---\nname: b\n---\n",
            false,
        )
        .expect("yaml");
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0]["process"]["command"], json!(["/bin/sleep", "300"]));
        assert_eq!(specs[0]["resources"]["cpu"], json!(0.5));
        assert_eq!(specs[0]["resources"]["memory"], json!("64Mi"));
        assert_eq!(specs[1]["name"], json!("b"));
        let specs = parse_specs(r#"{"name":"a"}"#, true).expect("json");
        assert_eq!(specs, vec![json!({"name": "a"})]);
    }

    #[test]
    fn every_bad_document_is_named() {
        let specs = parse_specs(
            "name: a\nkind: process\nprocess: {command: [/bin/true]}\n---\nname: b\nkind: process\nprocess: {command: [/bin/true]}\nresources: {memroy: 1Mi}\n---\nname: a\nkind: process\nprocess: {command: [/bin/true]}\n---\nname: c\nkind: process\nprocess: {command: [/bin/true]}\n",
            false,
        )
        .expect("yaml");
        let taken = ["c".to_string()].into_iter().collect();
        let bad = check_documents(&specs, &taken);
        let idx: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![1, 2, 3], "{bad:?}");
        assert!(bad[0].1.starts_with("document 2 of 4 (b): "), "{bad:?}");
        assert!(bad[0].1.contains("memroy"), "{bad:?}");
        assert!(bad[1].1.contains("also document 1"), "{bad:?}");
        assert!(bad[2].1.contains("already taken"), "{bad:?}");
    }

    #[test]
    fn patch_has_only_what_was_given() {
        let args = UpdateArgs {
            id: "x".into(),
            cpu: Some(0.25),
            cpu_weight: None,
            cpuset: None,
            memory: Some("256Mi".into()),
            pids: None,
            pause: true,
            resume: false,
            wait: true,
        };
        assert_eq!(
            patch_body(&args),
            json!({"resources": {"cpu": 0.25, "memory": "256Mi"}, "paused": true})
        );
    }

    #[test]
    fn container_cells() {
        assert_eq!(container_cell(None), "-");
        let c = json!({"id": "5ca7b6e27ad52f339020458591ca8331", "sync": "in_sync"});
        assert_eq!(container_cell(Some(&c)), "5ca7b6e27ad5");
        let c = json!({"id": "5ca7b6e27ad52f339020458591ca8331", "sync": "pending"});
        assert_eq!(container_cell(Some(&c)), "5ca7b6e27ad5 sync=pending");
        let list = json!({"objects": [
            {"id": "a", "name": "p", "kind": "process", "status": "running"},
            {"id": "b", "name": "c", "kind": "container", "status": "running",
             "container": {"id": "5ca7b6e27ad52f33", "sync": "in_sync"}},
        ]});
        let t = list_table(&list, &Default::default());
        assert!(t.lines().next().unwrap_or("").contains("CONTAINER"), "{t}");
        let only_processes = json!({"objects": [{"id": "a", "kind": "process"}]});
        assert!(!list_table(&only_processes, &Default::default()).contains("CONTAINER"));
    }

    /// Issue 21: the list shows usage beside the limits, the exit code and the restarts.
    #[test]
    fn list_shows_usage_exit_and_restarts() {
        let list = json!({"objects": [
            {"id": "a", "name": "p", "kind": "process", "status": "running", "restarts": 2,
             "spec": {"resources": {"cpu": 0.5, "memory": 67108864}}},
            {"id": "b", "name": "q", "kind": "process", "status": "exited", "exit_code": 3,
             "restarts": 0, "spec": {}},
        ]});
        let usage: std::collections::BTreeMap<String, Value> = [(
            "a".to_string(),
            json!({"samples": [
                {"seq": 1, "ts": "2024-05-01T00:00:00Z", "cpu_usage_ns": 0, "memory_bytes": 1},
                {"seq": 2, "ts": "2024-05-01T00:00:01Z", "cpu_usage_ns": 480000000,
                 "memory_bytes": 16777216u64},
            ]}),
        )]
        .into_iter()
        .collect();
        let t = list_table(&list, &usage);
        let header = t.lines().next().unwrap_or("");
        assert!(
            header.contains("EXIT") && header.contains("RESTARTS"),
            "{t}"
        );
        let a = t.lines().find(|l| l.contains(" p ")).unwrap_or("");
        assert!(a.contains("0.48/0.50"), "{t}");
        assert!(a.contains("16Mi/64Mi 25%"), "{t}");
        assert!(a.contains(" 2 "), "{t}");
        let b = t.lines().find(|l| l.contains(" q ")).unwrap_or("");
        assert!(b.contains(" 3 "), "{t}");
    }

    #[test]
    fn summaries() {
        let obj =
            json!({"id": "ab", "name": "web", "kind": "process", "status": "running", "pid": 7});
        assert_eq!(
            summary("created", &obj),
            "created process web id=ab status=running pid=7"
        );
        let acc = json!({"id": "ab", "event_id": 3, "status": "accepted"});
        assert_eq!(summary("created", &acc), "accepted id=ab event=3");
    }
}
