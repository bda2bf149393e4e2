//! Query strings. They are parsed here rather than by axum's `Query` extractor so that every
//! mistake — an unknown parameter, a repeated one, a value of the wrong type — is a contract-shaped
//! 400 that names the parameter.

use crate::request::{parse_bool, parse_u64, truncate};
use nodeagent_types::{ApiError, ErrorCode};

/// The decoded parameters of one request, checked against what the route accepts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes `raw` (the part after `?`). A parameter the route does not take is an error, so a
    /// typo such as `?wiat=true` does not silently mean "don't wait".
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(k)?;
            let v = decode(v).map_err(|e| e.with_field(k.clone()))?;
            if !allowed.contains(&k.as_str()) {
                let expected = if allowed.is_empty() {
                    "this route takes no query parameters".to_string()
                } else {
                    format!("expected one of: {}", allowed.join(", "))
                };
                return Err(ApiError::invalid(
                    truncate(&k),
                    format!("unknown query parameter; {expected}"),
                ));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(ApiError::invalid(k, "query parameter given more than once"));
            }
            pairs.push((k, v));
        }
        Ok(Query { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: `true`, `false`, `1` or `0`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name).map(|v| parse_bool(name, v)).transpose()
    }

    /// A string parameter, as given (decoded).
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)
    }

    /// A non-negative integer parameter.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name).map(|v| parse_u64(name, v)).transpose()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the result must be
/// UTF-8.
fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("malformed query string near {:?}", truncate(s)),
        )
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or_else(bad)?;
                // `from_str_radix` alone would also take a sign, as in "%+1".
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_parameters() {
        let q = Query::parse(Some("wait=true"), &["wait"]).expect("valid");
        assert_eq!(q.bool("wait"), Ok(Some(true)));
        let q = Query::parse(None, &["wait"]).expect("valid");
        assert_eq!(q.bool("wait"), Ok(None));
        let q = Query::parse(Some("since=%34%32"), &["since"]).expect("valid");
        assert_eq!(q.u64("since"), Ok(Some(42)));
        let q = Query::parse(Some("&limit=5&"), &["limit"]).expect("valid");
        assert_eq!(q.u64("limit"), Ok(Some(5)));
    }

    #[test]
    fn rejects_with_the_parameter_named() {
        let field = |r: Result<Query, ApiError>| r.expect_err("should fail").field;
        assert_eq!(
            field(Query::parse(Some("wiat=true"), &["wait"])).as_deref(),
            Some("wiat")
        );
        assert_eq!(field(Query::parse(Some("x=1"), &[])).as_deref(), Some("x"));
        assert_eq!(
            field(Query::parse(Some("wait=1&wait=0"), &["wait"])).as_deref(),
            Some("wait")
        );
        assert_eq!(
            field(Query::parse(Some("wait=%zz"), &["wait"])).as_deref(),
            Some("wait")
        );
        let q = Query::parse(Some("wait=maybe"), &["wait"]).expect("parses");
        assert_eq!(
            q.bool("wait").expect_err("bad").field.as_deref(),
            Some("wait")
        );
        let q = Query::parse(Some("since=-3"), &["since"]).expect("parses");
        assert_eq!(
            q.u64("since").expect_err("bad").field.as_deref(),
            Some("since")
        );
    }

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(decode("a+b%20c").as_deref().ok(), Some("a b c"));
        assert!(decode("%").is_err());
        assert!(decode("%ff").is_err());
        assert!(decode("%+1").is_err());
    }
}
