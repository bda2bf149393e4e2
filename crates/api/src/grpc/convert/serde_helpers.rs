//! The serde helpers that the generated protobuf messages name in their attributes (see
//! `crates/api/build.rs`, which picks them per proto field shape). They are generic over the
//! field's Rust type, so that one attribute string serves every field of a shape.

use serde::de::{Deserialize as _, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};
use std::fmt;

/// `skip_serializing_if` of repeated and map fields: proto3 cannot tell an empty list from none,
/// so an empty one is not given.
pub fn is_empty<T>(v: &T) -> bool
where
    for<'a> &'a T: IntoIterator,
{
    v.into_iter().next().is_none()
}

/// A float field, plain or `optional`.
pub trait Float {
    /// The value, where it is one JSON numbers cannot carry (NaN, ±infinity).
    fn non_finite(&self) -> Option<f64>;
}

impl Float for f64 {
    fn non_finite(&self) -> Option<f64> {
        (!self.is_finite()).then_some(*self)
    }
}

impl Float for f32 {
    fn non_finite(&self) -> Option<f64> {
        f64::from(*self).non_finite()
    }
}

impl<T: Float> Float for Option<T> {
    fn non_finite(&self) -> Option<f64> {
        self.as_ref().and_then(Float::non_finite)
    }
}

/// `serialize_with` of float fields. JSON numbers have no NaN or infinity, and serde_json would
/// write them as `null`, which the parser reads as "not given" (for a limit: "no limit"). They
/// are written as proto3's JSON mapping writes them, as the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"`, which the parser refuses for a number field, naming that field.
pub fn finite<T: Float + Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    match v.non_finite() {
        Some(bad) if bad.is_nan() => s.serialize_str("NaN"),
        Some(bad) if bad > 0.0 => s.serialize_str("Infinity"),
        Some(_) => s.serialize_str("-Infinity"),
        None => v.serialize(s),
    }
}

/// A string field, plain or `optional`.
pub trait Text: Sized {
    fn from_text<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl Text for String {
    fn from_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

impl Text for Option<String> {
    fn from_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }
}

/// `deserialize_with` of string fields: the JSON model writes some quantities as numbers where
/// the proto has a string (`resources.memory` is reported as a byte count), so a number is read
/// as its decimal form. A list or a map is read as its JSON text: a `k8s` manifest given to the
/// JSON API as a list of objects is YAML text in the proto (JSON is YAML, so the text means the
/// same documents when it comes back).
pub fn text<'de, D: Deserializer<'de>, T: Text>(d: D) -> Result<T, D::Error> {
    T::from_text(d)
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number, a list or a map")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<String, A::Error> {
        let v = serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(a))?;
        Ok(v.to_string())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<String, A::Error> {
        let v = serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(a))?;
        Ok(v.to_string())
    }
}

struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        String::from_text(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(default, deserialize_with = "text")]
        s: String,
        #[serde(default, deserialize_with = "text")]
        o: Option<String>,
        #[serde(serialize_with = "finite")]
        f: Option<f64>,
    }

    #[test]
    fn numbers_read_as_text_and_non_finite_floats_are_refused() {
        let t: T = serde_json::from_value(serde_json::json!({"s": 5, "o": 67108864, "f": 1.5}))
            .expect("numbers");
        assert_eq!(t.s, "5");
        assert_eq!(t.o.as_deref(), Some("67108864"));
        let t: T = serde_json::from_value(serde_json::json!({"o": null, "f": null})).expect("null");
        assert_eq!(t.o, None);
        let t: T = serde_json::from_value(
            serde_json::json!({"s": [{"a": 1}], "o": {"b": [2]}, "f": null}),
        )
        .expect("a list and a map");
        assert_eq!(t.s, r#"[{"a":1}]"#);
        assert_eq!(t.o.as_deref(), Some(r#"{"b":[2]}"#));
        assert!(serde_json::from_value::<T>(serde_json::json!({"s": true, "f": null})).is_err());
        assert!(serde_json::to_value(&t).is_ok());
        for (bad, text) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            let t = T {
                s: String::new(),
                o: None,
                f: Some(bad),
            };
            let v = serde_json::to_value(&t).expect("non-finite");
            assert_eq!(v["f"], text);
        }
        let t = T {
            s: String::new(),
            o: None,
            f: Some(0.5),
        };
        assert_eq!(serde_json::to_value(&t).expect("finite")["f"], 0.5);
        assert!(is_empty(&Vec::<u32>::new()));
        assert!(!is_empty(&vec![1]));
        assert!(is_empty(&std::collections::HashMap::<String, String>::new()));
    }
}
