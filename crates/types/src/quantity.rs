//! Parsers for the quantities a spec carries: memory sizes, durations and CPU lists.
//!
//! Each parser is total: it returns a message for any input and never panics, which the property
//! tests in this module check.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The largest memory limit accepted: 1 PiB. Anything larger is a typo, not a limit.
pub const MAX_MEMORY: u64 = 1 << 50;

/// Parses a byte count or a quantity with a unit: `1048576`, `64Mi`, `1.5G`, `512K`.
/// Units: K, M, G, T (powers of 1000) and Ki, Mi, Gi, Ti (powers of 1024); `k` and a trailing `B`
/// (`64MiB`) are accepted as the same. The result must be a whole number of bytes, at most 1 PiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "empty quantity; expected bytes or a number with a unit (K, M, G, Ki, Mi, Gi)".into(),
        );
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid quantity {s:?}: expected bytes or a number with a unit (K, M, G, Ki, Mi, Gi)"
        ));
    }
    let mult: u64 = match unit.trim_end_matches('B') {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid unit {unit:?} in {s:?}: use K, M, G, T, Ki, Mi, Gi or Ti"
            ))
        }
    };
    let bytes = if num.contains('.') {
        let v: f64 = num
            .parse()
            .map_err(|_| format!("invalid number {num:?} in {s:?}"))?;
        let b = v * mult as f64;
        if !b.is_finite() || b > MAX_MEMORY as f64 {
            return Err(format!("{s:?} is larger than the maximum of 1Pi"));
        }
        if b.fract() != 0.0 {
            return Err(format!("{s:?} is not a whole number of bytes"));
        }
        b as u64
    } else {
        let v: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is larger than the maximum of 1Pi"))?;
        v.checked_mul(mult)
            .ok_or_else(|| format!("{s:?} is larger than the maximum of 1Pi"))?
    };
    if bytes > MAX_MEMORY {
        return Err(format!("{s:?} is larger than the maximum of 1Pi"));
    }
    Ok(bytes)
}

/// A memory size in bytes. Deserializes from a non-negative integer or a quantity string, and
/// serializes back as the integer, so what GET returns is unambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(pub u64);

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count or a quantity such as \"64Mi\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                if v > MAX_MEMORY {
                    return Err(E::custom(format!("{v} is larger than the maximum of 1Pi")));
                }
                Ok(Memory(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "{v} is negative; a memory size must be positive"
                    )));
                }
                self.visit_u64(v as u64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Memory, E> {
                if v < 0.0 {
                    return Err(E::custom(format!(
                        "{v} is negative; a memory size must be positive"
                    )));
                }
                Err(E::custom(format!(
                    "{v} is not a whole number of bytes; use an integer or a quantity such as \"64Mi\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                parse_memory(v).map(Memory).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a duration: an integer with a unit, `us`, `ms`, `s`, `m` or `h` (`100ms`, `1s`, `5m`).
/// Several parts may follow each other (`1m30s`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; expected e.g. \"100ms\", \"1s\" or \"5m\"".into());
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let d = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if d == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number with a unit (us, ms, s, m, h), e.g. \"100ms\""
            ));
        }
        let n: u128 = rest[..d]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[d..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..u] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (us, ms, s, m, h)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use us, ms, s, m or h)"
                ))
            }
        };
        rest = &rest[u..];
        total = n
            .checked_mul(unit_ns)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= u64::MAX as u128)
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    }
    Ok(std::time::Duration::from_nanos(total as u64))
}

/// A duration that reads and writes as text (`"100ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        let (v, u) = if ns == 0 {
            (0, "s")
        } else if ns.is_multiple_of(3_600_000_000_000) {
            (ns / 3_600_000_000_000, "h")
        } else if ns.is_multiple_of(60_000_000_000) {
            (ns / 60_000_000_000, "m")
        } else if ns.is_multiple_of(1_000_000_000) {
            (ns / 1_000_000_000, "s")
        } else if ns.is_multiple_of(1_000_000) {
            (ns / 1_000_000, "ms")
        } else if ns.is_multiple_of(1_000) {
            (ns / 1_000, "us")
        } else {
            (ns, "ns")
        };
        write!(f, "{v}{u}")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"100ms\" or \"1s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map(Duration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// The most CPUs a cpuset may name; far above any real machine, it bounds the parser's work.
pub const MAX_CPU_INDEX: u32 = 8191;

/// Parses a kernel CPU list (`"0-3,8,10-11"`) into sorted, deduplicated indices.
pub fn parse_cpuset(s: &str) -> Result<Vec<u32>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty cpuset; expected a CPU list such as \"0\" or \"0-3,6\"".into());
    }
    let mut out = Vec::new();
    for part in t.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u32 = a
            .parse()
            .map_err(|_| format!("invalid cpuset {s:?}: {part:?} is not a CPU number or range"))?;
        let b: u32 = b
            .parse()
            .map_err(|_| format!("invalid cpuset {s:?}: {part:?} is not a CPU number or range"))?;
        if a > b {
            return Err(format!(
                "invalid cpuset {s:?}: range {part:?} runs backwards"
            ));
        }
        if b > MAX_CPU_INDEX {
            return Err(format!("invalid cpuset {s:?}: CPU {b} is out of range"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A validated CPU list, kept in the user's text form (which is what cgroupfs takes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CpuSet(pub String);

impl CpuSet {
    pub fn cpus(&self) -> Vec<u32> {
        parse_cpuset(&self.0).unwrap_or_default()
    }
}

impl Serialize for CpuSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CpuSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_cpuset(&s).map_err(de::Error::custom)?;
        Ok(CpuSet(s.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory("512K"), Ok(512_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("-1").is_err());
        assert!(parse_memory("64Xi").is_err());
        assert!(parse_memory("Mi").is_err());
        assert!(parse_memory("2Pi").is_err());
        assert!(parse_memory("99999999999999999999999").is_err());
        assert!(parse_memory("0.5").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("100ms"),
            Ok(std::time::Duration::from_millis(100))
        );
        assert_eq!(
            parse_duration("1m30s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_millis(60_000).to_string(), "1m");
    }

    #[test]
    fn cpusets() {
        assert_eq!(parse_cpuset("0-2,5,1"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpuset("3-1").is_err());
        assert!(parse_cpuset("a").is_err());
        assert!(parse_cpuset("0-99999999").is_err());
        assert!(parse_cpuset("").is_err());
    }

    proptest! {
        #[test]
        fn memory_never_panics(s in "\\PC{0,24}") {
            let _ = parse_memory(&s);
        }

        #[test]
        fn memory_roundtrips_binary_units(n in 0u64..(1 << 20), unit in prop::sample::select(vec![("Ki", 10u32), ("Mi", 20), ("Gi", 30)])) {
            let s = format!("{n}{}", unit.0);
            prop_assert_eq!(parse_memory(&s), Ok(n << unit.1));
        }

        #[test]
        fn duration_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn duration_display_roundtrips(ns in 0u64..u64::MAX / 4) {
            let d = Duration(std::time::Duration::from_nanos(ns));
            prop_assert_eq!(parse_duration(&d.to_string()), Ok(d.0));
        }

        #[test]
        fn cpuset_never_panics(s in "[0-9,\\- a]{0,20}") {
            if let Ok(v) = parse_cpuset(&s) {
                prop_assert!(v.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
