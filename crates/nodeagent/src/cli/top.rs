//! `nodeagent top`: a live terminal view of the node in the manner of htop/ctop (issue 19).
//!
//! One line of host summary (CPU busy and by mode, memory, load), then the objects sorted by
//! CPU (cores, from consecutive samples' `cpu_usage_ns`), with memory, status, limits and a
//! sparkline of recent CPU; a line of help, prompt or the last action's answer at the bottom.
//!
//! It is a plain client of the API, over the unix socket by default like every client command:
//! the samples come from one `/v1/metrics/stream` (the newest sample of each object every
//! `--interval`), statuses and limits from `GET /v1/objects` every two seconds and after each
//! action. Keys act on the selected object through `PATCH /v1/objects/{id}?wait=true`.
//!
//! Terminal handling is ratatui's (alternate screen, raw mode, restored on exit and on panic);
//! keys are read on a thread of their own, since crossterm's reads block.

use super::client::{segment, Client};
use super::output;
use super::sse::SseReader;
use super::GlobalOpts;
use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// How often samples are shown (the stream's `every`), 10ms to 1h
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub interval: String,
}

/// CPU values kept per object for its sparkline.
const HISTORY: usize = 60;
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const LIST_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Cpu,
    Memory,
    Name,
}

impl SortBy {
    fn label(self) -> &'static str {
        match self {
            SortBy::Cpu => "cpu",
            SortBy::Memory => "memory",
            SortBy::Name => "name",
        }
    }
}

/// What the prompt at the bottom is asking for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Normal,
    Filter,
    /// Setting the selected object's CPU (cores) or memory.
    Set {
        what: Setting,
        id: String,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Cpu,
    Memory,
}

#[derive(Debug, Default)]
struct Obj {
    id: String,
    name: String,
    kind: String,
    status: String,
    cpu_limit: Option<f64>,
    /// Cores over the last two samples.
    cpu: Option<f64>,
    memory: Option<u64>,
    memory_limit: Option<u64>,
    /// `(ts ns, cpu_usage_ns)` of the last sample.
    last: Option<(u64, u64)>,
    history: VecDeque<f64>,
}

impl Obj {
    fn take_sample(&mut self, s: &Value) {
        let ts = s
            .get("ts")
            .and_then(output::timestamp)
            .map(|t| t.as_nanos());
        let usage = s.get("cpu_usage_ns").and_then(Value::as_u64);
        if let (Some(ts), Some(usage)) = (ts, usage) {
            if let Some((t0, u0)) = self.last {
                if ts > t0 && usage >= u0 {
                    let c = (usage - u0) as f64 / (ts - t0) as f64;
                    self.cpu = Some(c);
                    if self.history.len() == HISTORY {
                        self.history.pop_front();
                    }
                    self.history.push_back(c);
                }
            }
            self.last = Some((ts, usage));
        }
        self.memory = s.get("memory_bytes").and_then(Value::as_u64);
        self.memory_limit = s.get("memory_limit_bytes").and_then(Value::as_u64);
    }
}

#[derive(Debug, Default)]
struct HostLine {
    name: String,
    /// Busy share of all CPUs and the share of the main modes, from the last two samples.
    busy: Option<f64>,
    modes: Vec<(&'static str, f64)>,
    last_modes: Option<Value>,
    memory_used: Option<u64>,
    memory_total: Option<u64>,
    load: Option<(f64, f64, f64)>,
}

impl HostLine {
    fn take_sample(&mut self, s: &Value) {
        let Some(h) = s.get("host") else { return };
        let modes = h.get("cpu").cloned();
        if let (Some(prev), Some(cur)) = (&self.last_modes, &modes) {
            let names = [
                "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
            ];
            let d: Vec<(&'static str, f64)> = names
                .iter()
                .map(|n| {
                    let a = prev.get(n).and_then(Value::as_u64).unwrap_or(0);
                    let b = cur.get(n).and_then(Value::as_u64).unwrap_or(0);
                    (*n, b.saturating_sub(a) as f64)
                })
                .collect();
            let total: f64 = d.iter().map(|(_, v)| v).sum();
            if total > 0.0 {
                let idle: f64 = d
                    .iter()
                    .filter(|(n, _)| *n == "idle" || *n == "iowait")
                    .map(|(_, v)| v)
                    .sum();
                self.busy = Some(100.0 * (total - idle) / total);
                self.modes = d
                    .iter()
                    .filter(|(n, _)| matches!(*n, "user" | "nice" | "system" | "iowait" | "steal"))
                    .map(|(n, v)| (*n, 100.0 * v / total))
                    .collect();
            }
        }
        self.last_modes = modes;
        let total = h.get("memory_total_bytes").and_then(Value::as_u64);
        let avail = h.get("memory_available_bytes").and_then(Value::as_u64);
        self.memory_total = total;
        self.memory_used = total.zip(avail).map(|(t, a)| t.saturating_sub(a));
        let l = |k: &str| h.get(k).and_then(Value::as_f64);
        self.load = l("load1")
            .zip(l("load5"))
            .zip(l("load15"))
            .map(|((a, b), c)| (a, b, c));
    }
}

enum Msg {
    Key(KeyEvent),
    Samples(Value),
    List(Vec<Value>),
    /// The answer to an action, for the bottom line.
    Said(String),
    Connected(bool),
}

struct App {
    objects: HashMap<String, Obj>,
    host: HostLine,
    sort: SortBy,
    descending: bool,
    filter: String,
    mode: Mode,
    input: String,
    message: String,
    /// The selected object's id; kept across re-sorts.
    selected: Option<String>,
    table: TableState,
    connected: bool,
    quit: bool,
}

impl App {
    fn new() -> App {
        App {
            objects: HashMap::new(),
            host: HostLine::default(),
            sort: SortBy::Cpu,
            descending: true,
            filter: String::new(),
            mode: Mode::Normal,
            input: String::new(),
            message: String::new(),
            selected: None,
            table: TableState::default(),
            connected: false,
            quit: false,
        }
    }

    /// The objects shown, filtered and sorted (the host is on the summary line, not here).
    fn rows(&self) -> Vec<&Obj> {
        let f = self.filter.to_lowercase();
        let mut v: Vec<&Obj> = self
            .objects
            .values()
            .filter(|o| o.id != "host")
            .filter(|o| {
                f.is_empty()
                    || o.name.to_lowercase().contains(&f)
                    || o.kind.to_lowercase().contains(&f)
                    || o.status.to_lowercase().contains(&f)
            })
            .collect();
        let by_name = |a: &&Obj, b: &&Obj| a.name.cmp(&b.name);
        match self.sort {
            SortBy::Cpu => v.sort_by(|a, b| {
                a.cpu
                    .unwrap_or(-1.0)
                    .total_cmp(&b.cpu.unwrap_or(-1.0))
                    .then_with(|| by_name(b, a))
            }),
            SortBy::Memory => v.sort_by(|a, b| a.memory.cmp(&b.memory).then_with(|| by_name(b, a))),
            SortBy::Name => v.sort_by(by_name),
        }
        // Ascending orders; numbers break ties by name Z to A, so that reversed (biggest first,
        // the default) ties read A to Z.
        if self.descending {
            v.reverse();
        }
        v
    }

    fn list(&mut self, list: Vec<Value>) {
        let mut keep = std::collections::HashSet::new();
        for o in list {
            let Some(id) = o.get("id").and_then(Value::as_str) else {
                continue;
            };
            keep.insert(id.to_string());
            let e = self.objects.entry(id.to_string()).or_default();
            e.id = id.to_string();
            e.name = str_of(&o, "name");
            e.kind = str_of(&o, "kind");
            e.status = str_of(&o, "status");
            e.cpu_limit = o.pointer("/spec/resources/cpu").and_then(Value::as_f64);
        }
        self.objects
            .retain(|id, _| id == "host" || keep.contains(id));
    }

    fn samples(&mut self, v: &Value) {
        if let Some(samples) = v.get("samples").and_then(Value::as_array) {
            for s in samples {
                let Some(id) = s.get("id").and_then(Value::as_str) else {
                    continue;
                };
                if id == "host" {
                    self.host.take_sample(s);
                }
                // Samples of an object not listed yet wait for the next list for their name.
                let e = self.objects.entry(id.to_string()).or_insert_with(|| Obj {
                    id: id.to_string(),
                    name: id.to_string(),
                    ..Obj::default()
                });
                e.take_sample(s);
            }
        }
        if let Some(gone) = v.get("gone").and_then(Value::as_array) {
            for g in gone.iter().filter_map(Value::as_str) {
                self.objects.remove(g);
            }
        }
    }

    fn selected_obj(&self) -> Option<&Obj> {
        self.selected.as_ref().and_then(|id| self.objects.get(id))
    }

    fn move_selection(&mut self, by: isize) {
        let ids: Vec<String> = self.rows().iter().map(|o| o.id.clone()).collect();
        if ids.is_empty() {
            self.selected = None;
            return;
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|s| ids.iter().position(|i| i == s));
        let next = match at {
            None => 0,
            Some(i) => (i as isize + by).clamp(0, ids.len() as isize - 1) as usize,
        };
        self.selected = Some(ids[next].clone());
    }
}

fn str_of(o: &Value, k: &str) -> String {
    o.get(k).and_then(Value::as_str).unwrap_or("-").to_string()
}

pub async fn run(global: &GlobalOpts, args: TopArgs) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!("`top` needs a terminal; for scripts use `nodeagent get` or `metrics -f`");
    }
    let every = nodeagent_types::parse_duration(&args.interval)
        .map_err(|e| anyhow::anyhow!("--interval: {e}"))?;
    let client = Arc::new(Client::new(global)?);
    // Fail before taking over the terminal if the agent cannot be reached.
    let first = client.get("/v1/objects").await?;
    let host = client.get("/v1/host").await.ok();

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    spawn_keys(tx.clone());
    spawn_stream(client.clone(), every, tx.clone());
    spawn_lists(client.clone(), tx.clone());

    let mut app = App::new();
    app.host.name = host
        .as_ref()
        .and_then(|h| h.get("hostname"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    app.list(
        first
            .get("objects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    app.move_selection(0);

    let mut terminal = ratatui::init();
    let result = async {
        // Redraws follow messages, at most every 50 ms (a burst of keys or samples is drawn
        // once), and at least every 250 ms.
        let mut redraw = tokio::time::interval(Duration::from_millis(250));
        let mut last_draw: Option<Instant> = None;
        loop {
            if last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(50)) {
                terminal
                    .draw(|f| draw(f, &mut app))
                    .context("drawing the terminal")?;
                last_draw = Some(Instant::now());
            }
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    handle(&mut app, m, &client, &tx);
                }
                _ = redraw.tick() => {}
            }
            if app.quit {
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    ratatui::restore();
    result
}

fn handle(app: &mut App, m: Msg, client: &Arc<Client>, tx: &mpsc::UnboundedSender<Msg>) {
    match m {
        Msg::Samples(v) => app.samples(&v),
        Msg::List(l) => app.list(l),
        Msg::Said(s) => app.message = s,
        Msg::Connected(c) => app.connected = c,
        Msg::Key(k) => key(app, k, client, tx),
    }
    if app.selected_obj().is_none()
        || app
            .rows()
            .iter()
            .all(|o| Some(&o.id) != app.selected.as_ref())
    {
        app.selected = None;
        app.move_selection(0);
    }
}

fn key(app: &mut App, k: KeyEvent, client: &Arc<Client>, tx: &mpsc::UnboundedSender<Msg>) {
    if k.kind != KeyEventKind::Press {
        return;
    }
    if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
        app.quit = true;
        return;
    }
    match app.mode.clone() {
        Mode::Filter => match k.code {
            KeyCode::Enter => app.mode = Mode::Normal,
            KeyCode::Esc => {
                app.filter.clear();
                app.mode = Mode::Normal;
            }
            KeyCode::Backspace => {
                app.filter.pop();
            }
            KeyCode::Char(c) => app.filter.push(c),
            _ => {}
        },
        Mode::Set { what, id, name } => match k.code {
            KeyCode::Enter => {
                let value = app.input.trim().to_string();
                app.mode = Mode::Normal;
                app.input.clear();
                let body = match what {
                    Setting::Cpu => match value.parse::<f64>() {
                        Ok(c) => json!({"resources": {"cpu": c}}),
                        Err(_) => {
                            app.message = format!("cpu: {value:?} is not a number of cores");
                            return;
                        }
                    },
                    Setting::Memory => json!({"resources": {"memory": value}}),
                };
                let what = match what {
                    Setting::Cpu => "cpu",
                    Setting::Memory => "memory",
                };
                patch(client, tx, id, format!("{name}: {what} {value}"), body);
            }
            KeyCode::Esc => {
                app.mode = Mode::Normal;
                app.input.clear();
            }
            KeyCode::Backspace => {
                app.input.pop();
            }
            KeyCode::Char(c) => app.input.push(c),
            _ => {}
        },
        Mode::Normal => match k.code {
            KeyCode::Char('q') | KeyCode::Esc => app.quit = true,
            KeyCode::Up | KeyCode::Char('k') => app.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => app.move_selection(1),
            KeyCode::PageUp => app.move_selection(-10),
            KeyCode::PageDown => app.move_selection(10),
            KeyCode::Home => app.move_selection(isize::MIN / 2),
            KeyCode::End => app.move_selection(isize::MAX / 2),
            KeyCode::Char('c') => sort(app, SortBy::Cpu),
            KeyCode::Char('m') => sort(app, SortBy::Memory),
            KeyCode::Char('n') => sort(app, SortBy::Name),
            KeyCode::Char('s') => {
                let next = match app.sort {
                    SortBy::Cpu => SortBy::Memory,
                    SortBy::Memory => SortBy::Name,
                    SortBy::Name => SortBy::Cpu,
                };
                app.sort = next;
                app.descending = next != SortBy::Name;
            }
            KeyCode::Char('/') | KeyCode::Char('f') => {
                app.mode = Mode::Filter;
            }
            KeyCode::Char('p') => {
                if let Some(o) = app.selected_obj() {
                    let pause = o.status != "paused";
                    let what = if pause { "pause" } else { "resume" };
                    patch(
                        client,
                        tx,
                        o.id.clone(),
                        format!("{}: {what}", o.name),
                        json!({ "paused": pause }),
                    );
                }
            }
            KeyCode::Char('C') | KeyCode::Char('M') => {
                if let Some(o) = app.selected_obj() {
                    let what = if k.code == KeyCode::Char('C') {
                        Setting::Cpu
                    } else {
                        Setting::Memory
                    };
                    app.mode = Mode::Set {
                        what,
                        id: o.id.clone(),
                        name: o.name.clone(),
                    };
                    app.input.clear();
                }
            }
            _ => {}
        },
    }
}

fn sort(app: &mut App, by: SortBy) {
    if app.sort == by {
        app.descending = !app.descending;
    } else {
        app.sort = by;
        // Biggest first for numbers, A to Z for names.
        app.descending = by != SortBy::Name;
    }
}

/// Sends a PATCH in the background and reports its answer on the bottom line; the list is read
/// again at once so the status and limits shown follow.
fn patch(
    client: &Arc<Client>,
    tx: &mpsc::UnboundedSender<Msg>,
    id: String,
    what: String,
    body: Value,
) {
    let client = client.clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let path = format!("/v1/objects/{}?wait=true", segment(&id));
        let said = match client.patch(&path, &body).await {
            Ok(_) => format!("{what}: done"),
            Err(e) => format!("{what}: {e}"),
        };
        let _ = tx.send(Msg::Said(said));
        if let Ok(v) = client.get("/v1/objects").await {
            let l = v.get("objects").and_then(Value::as_array).cloned();
            let _ = tx.send(Msg::List(l.unwrap_or_default()));
        }
    });
}

fn spawn_keys(tx: mpsc::UnboundedSender<Msg>) {
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(Event::Key(k)) => {
                if tx.send(Msg::Key(k)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    });
}

/// Follows `/v1/metrics/stream`, reconnecting (after a second) if the agent goes away.
fn spawn_stream(client: Arc<Client>, every: Duration, tx: mpsc::UnboundedSender<Msg>) {
    let path = format!("/v1/metrics/stream?every={}ms", every.as_millis().max(1));
    tokio::spawn(async move {
        loop {
            if let Ok(body) = client.open_stream(&path).await {
                let _ = tx.send(Msg::Connected(true));
                let mut sse = SseReader::new(body);
                while let Ok(Some(ev)) = sse.next().await {
                    if ev.event != "samples" {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        if tx.send(Msg::Samples(v)).is_err() {
                            return;
                        }
                    }
                }
            }
            if tx.send(Msg::Connected(false)).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

fn spawn_lists(client: Arc<Client>, tx: mpsc::UnboundedSender<Msg>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(LIST_EVERY).await;
            if let Ok(v) = client.get("/v1/objects").await {
                let l = v.get("objects").and_then(Value::as_array).cloned();
                if tx.send(Msg::List(l.unwrap_or_default())).is_err() {
                    return;
                }
            }
        }
    });
}

fn sparkline(h: &VecDeque<f64>, width: usize) -> String {
    let vals: Vec<f64> = h.iter().rev().take(width).rev().copied().collect();
    let max = vals.iter().copied().fold(0.0f64, f64::max);
    vals.iter()
        .map(|v| {
            if max <= 0.0 {
                SPARK[0]
            } else {
                SPARK[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn host_line(app: &App) -> String {
    let h = &app.host;
    let mut s = format!("nodeagent top  {}", h.name);
    match h.busy {
        Some(b) => {
            s.push_str(&format!("  cpu {b:.1}%"));
            let modes: Vec<String> = h
                .modes
                .iter()
                .map(|(n, v)| format!("{} {v:.1}", &n[..3.min(n.len())]))
                .collect();
            if !modes.is_empty() {
                s.push_str(&format!(" ({})", modes.join(" ")));
            }
        }
        None => s.push_str("  cpu -"),
    }
    if let (Some(u), Some(t)) = (h.memory_used, h.memory_total) {
        s.push_str(&format!("  mem {}/{}", output::bytes(u), output::bytes(t)));
    }
    if let Some((a, b, c)) = h.load {
        s.push_str(&format!("  load {a:.2} {b:.2} {c:.2}"));
    }
    let n = app.objects.keys().filter(|k| k.as_str() != "host").count();
    s.push_str(&format!("  {n} objects"));
    if !app.connected {
        s.push_str("  [no stream]");
    }
    s
}

fn draw(f: &mut Frame<'_>, app: &mut App) {
    let area = f.area();
    if area.height < 4 || area.width < 20 {
        f.render_widget(
            Paragraph::new(format!(
                "terminal too small ({}x{}); q quits",
                area.width, area.height
            )),
            area,
        );
        return;
    }
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(host_line(app)).style(Style::new().add_modifier(Modifier::BOLD)),
        top,
    );
    draw_table(f, app, body);
    f.render_widget(Paragraph::new(bottom_line(app)), bottom);
}

fn bottom_line(app: &App) -> Line<'static> {
    match &app.mode {
        Mode::Filter => Line::from(format!(
            "filter: {}_  (Enter keeps, Esc clears)",
            app.filter
        )),
        Mode::Set { what, name, .. } => {
            let what = match what {
                Setting::Cpu => "cpu (cores, e.g. 0.5)",
                Setting::Memory => "memory (e.g. 64Mi)",
            };
            Line::from(format!(
                "{name} {what}: {}_  (Enter sets, Esc cancels)",
                app.input
            ))
        }
        Mode::Normal => {
            let sort = format!(
                "sort {} {}",
                app.sort.label(),
                if app.descending { "▼" } else { "▲" }
            );
            let filter = if app.filter.is_empty() {
                String::new()
            } else {
                format!("  filter {:?}", app.filter)
            };
            let mut spans = vec![Span::styled(
                format!("{sort}{filter}  "),
                Style::new().fg(Color::Cyan),
            )];
            if app.message.is_empty() {
                spans.push(Span::raw(
                    "q quit  ↑↓ select  c/m/n sort  / filter  p pause/resume  C cpu  M memory",
                ));
            } else {
                spans.push(Span::raw(app.message.clone()));
            }
            Line::from(spans)
        }
    }
}

fn draw_table(f: &mut Frame<'_>, app: &mut App, area: Rect) {
    let w = area.width;
    // Columns dropped as the terminal narrows: the sparkline, then the limits, then kind.
    let wide = w >= 100;
    let medium = w >= 70;
    let narrow = w >= 44;
    let spark_w = if wide {
        (w as usize - 84).min(HISTORY)
    } else {
        0
    };
    let mut header = vec!["NAME", "CPU"];
    let mut widths = vec![Constraint::Min(10), Constraint::Length(6)];
    if medium {
        header.push("CPU LIM");
        widths.push(Constraint::Length(7));
    }
    header.push("MEMORY");
    widths.push(Constraint::Length(9));
    if medium {
        header.push("MEM LIM");
        widths.push(Constraint::Length(9));
    }
    if narrow {
        header.push("STATUS");
        widths.push(Constraint::Length(8));
    }
    if medium {
        header.push("KIND");
        widths.push(Constraint::Length(9));
    }
    if wide {
        header.push("CPU HISTORY");
        widths.push(Constraint::Length(spark_w as u16));
    }
    let rows = app.rows();
    let selected = app
        .selected
        .as_ref()
        .and_then(|s| rows.iter().position(|o| &o.id == s));
    let table_rows: Vec<Row<'_>> = rows
        .iter()
        .map(|o| {
            let mut cells = vec![
                Cell::from(o.name.clone()),
                Cell::from(o.cpu.map_or("-".into(), |c| format!("{c:.2}"))),
            ];
            if medium {
                cells.push(Cell::from(
                    o.cpu_limit.map_or("-".into(), |c| format!("{c}")),
                ));
            }
            cells.push(Cell::from(o.memory.map_or("-".into(), output::bytes)));
            if medium {
                cells.push(Cell::from(
                    o.memory_limit
                        .filter(|&l| l < (1 << 62))
                        .map_or("-".into(), output::bytes),
                ));
            }
            if narrow {
                let style = match o.status.as_str() {
                    "running" => Style::new().fg(Color::Green),
                    "paused" => Style::new().fg(Color::Yellow),
                    "failed" | "lost" => Style::new().fg(Color::Red),
                    _ => Style::new(),
                };
                cells.push(Cell::from(o.status.clone()).style(style));
            }
            if medium {
                cells.push(Cell::from(o.kind.clone()));
            }
            if wide {
                cells.push(
                    Cell::from(sparkline(&o.history, spark_w)).style(Style::new().fg(Color::Cyan)),
                );
            }
            Row::new(cells)
        })
        .collect();
    let table = Table::new(table_rows, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::REVERSED)))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD))
        .highlight_symbol(">");
    app.table.select(selected);
    f.render_stateful_widget(table, area, &mut app.table);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, cpu: Option<f64>, memory: Option<u64>) -> Obj {
        Obj {
            id: format!("id-{name}"),
            name: name.into(),
            kind: "process".into(),
            status: "running".into(),
            cpu,
            memory,
            ..Obj::default()
        }
    }

    #[test]
    fn sorts_and_filters() {
        let mut app = App::new();
        for o in [
            obj("a", Some(0.1), Some(30)),
            obj("b", Some(0.9), Some(10)),
            obj("c", None, Some(20)),
        ] {
            app.objects.insert(o.id.clone(), o);
        }
        let names = |app: &App| {
            app.rows()
                .iter()
                .map(|o| o.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&app), ["b", "a", "c"]);
        sort(&mut app, SortBy::Memory);
        assert_eq!(names(&app), ["a", "c", "b"]);
        sort(&mut app, SortBy::Name);
        assert_eq!(names(&app), ["a", "b", "c"]);
        sort(&mut app, SortBy::Name);
        assert_eq!(names(&app), ["c", "b", "a"]);
        app.filter = "B".into();
        assert_eq!(names(&app), ["b"]);
    }

    #[test]
    fn cpu_from_consecutive_samples() {
        let mut o = Obj::default();
        o.take_sample(&json!({"ts": "2026-01-01T00:00:00Z", "cpu_usage_ns": 0u64}));
        assert_eq!(o.cpu, None);
        o.take_sample(&json!({"ts": "2026-01-01T00:00:01Z", "cpu_usage_ns": 500_000_000u64}));
        assert!((o.cpu.expect("a rate") - 0.5).abs() < 1e-9, "{:?}", o.cpu);
        assert_eq!(sparkline(&o.history, 10), "█");
    }
}
