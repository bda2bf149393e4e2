//! Rendering for the client commands: aligned tables, key/value listings, and the small
//! formatters (bytes, ages, times) they use. Everything returns a `String` so it can be tested
//! without capturing stdout.

use nodeagent_types::Timestamp;
use serde_json::Value;

/// A table with a header row; columns are left-aligned and separated by three spaces.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for r in std::iter::once(&headers).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                line.push_str(c);
                if i + 1 < n {
                    let pad = width[i] - c.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Two aligned columns: key and value.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(format!("{k:<w$}   {v}").trim_end());
        out.push('\n');
    }
    out
}

/// Flattens JSON into `a.b[0].c = value` pairs, in document order. Arrays of scalars stay on one
/// line as compact JSON (`["/bin/sleep","300"]`) so a command line reads as one value; nulls and
/// empty containers are left out.
pub fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &key, out);
            }
        }
        Value::Array(a) if a.is_empty() => {}
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((prefix.to_string(), v.to_string()));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, &format!("{prefix}[{i}]"), out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Prints the server's JSON as the `-o json` output.
pub fn json(v: &Value) -> String {
    // Serializing a `Value` cannot fail; fall back to compact form rather than panic.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// Bytes in binary units, as `64Mi` or `1.5Gi`; small values as plain `512B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// An age in the style of kubectl: `42s`, `5m`, `3h`, `2d`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Reads an RFC 3339 timestamp as the server writes it.
pub fn timestamp(v: &Value) -> Option<Timestamp> {
    serde_json::from_value(v.clone()).ok()
}

/// The age of an RFC 3339 timestamp, or `-`.
pub fn age_of(v: &Value) -> String {
    match timestamp(v) {
        Some(t) => {
            let now = Timestamp::now().as_nanos();
            age(now.saturating_sub(t.as_nanos()) / 1_000_000_000)
        }
        None => "-".to_string(),
    }
}

/// `2024-05-01T12:34:56.789012345Z` → `12:34:56.789` (UTC): samples and events are close
/// together, so the time of day to the millisecond is what tells them apart.
pub fn time_of_day(v: &Value) -> String {
    let Some(s) = v.as_str() else {
        return "-".to_string();
    };
    let Some((_, t)) = s.split_once('T') else {
        return s.to_string();
    };
    let t = t.trim_end_matches('Z');
    match t.split_once('.') {
        Some((hms, frac)) => {
            let ms: String = frac.chars().take(3).collect();
            format!("{hms}.{ms:0<3}")
        }
        None => format!("{t}.000"),
    }
}

/// A JSON value as a table cell: strings bare, absent as `-`.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["abc".into(), "x".into()]);
        t.row(vec!["a".into(), "longer".into()]);
        assert_eq!(t.render(), "ID    NAME\nabc   x\na     longer\n");
    }

    #[test]
    fn flattening() {
        let v = json!({"a": {"b": 1, "c": ["x", "y"], "d": null, "e": []},
                       "f": [{"g": "h"}], "s": "str"});
        let mut out = Vec::new();
        flatten(&v, "", &mut out);
        let keys: Vec<_> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            vec!["a.b=1", "a.c=[\"x\",\"y\"]", "f[0].g=h", "s=str"]
        );
        assert_eq!(key_values(&out[..2]), "a.b   1\na.c   [\"x\",\"y\"]\n");
    }

    #[test]
    fn formatting() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(64 << 20), "64Mi");
        assert_eq!(bytes(3 << 29), "1.5Gi");
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 86400), "3d");
        assert_eq!(
            time_of_day(&json!("2024-05-01T12:34:56.789012345Z")),
            "12:34:56.789"
        );
        assert_eq!(time_of_day(&json!("2024-05-01T12:34:56Z")), "12:34:56.000");
        assert_eq!(time_of_day(&json!(null)), "-");
        assert_eq!(cell(Some(&json!(5))), "5");
        assert_eq!(cell(None), "-");
    }
}
