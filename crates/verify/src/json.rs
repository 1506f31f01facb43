//! JSON decoding that refuses duplicate object members at any depth.
//!
//! RFC 7515 §5.2 lets a parser either refuse duplicates or take the last one; two parsers
//! that disagree on which `aud` or `alg` counts are a classic confusion attack, so we refuse.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// A JSON value decoded with duplicate members refused.
pub(crate) struct StrictValue(pub Value);

/// Decodes a JSON object (the only shape a JOSE header or JWT claims set may have).
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    match serde_json::from_slice::<StrictValue>(bytes) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        Ok(_) => Err(StrictError::NotObject),
        // The visitor's only custom error is the duplicate check; syntax errors classify apart.
        Err(e) if e.is_data() => Err(StrictError::Duplicate),
        Err(_) => Err(StrictError::Syntax),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrictError {
    Syntax,
    Duplicate,
    NotObject,
}

const DUPLICATE: &str = "duplicate member";

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let StrictValue(v) = access.next_value()?;
            map.insert(key, v);
        }
        Ok(Value::Object(map))
    }
}

/// A member name, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// One value of a claims set as the hot path needs it: scalars kept (strings borrowed where
/// possible), arrays of strings kept, anything else only validated (syntax and duplicate
/// members at any depth) and dropped, so that no value tree is built.
#[derive(Debug)]
pub(crate) enum Field<'de> {
    Str(Cow<'de, str>),
    Num(serde_json::Number),
    Bool(bool),
    Null,
    Strings(Vec<Cow<'de, str>>),
    Other,
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Num(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Field::Null, Field::Num))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        let mut strings = Some(Vec::new());
        while let Some(item) = seq.next_element::<Field<'de>>()? {
            match (item, strings.as_mut()) {
                (Field::Str(s), Some(list)) => list.push(s),
                _ => strings = None,
            }
        }
        Ok(strings.map_or(Field::Other, Field::Strings))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Field<'de>, A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(key)) = access.next_key()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            seen.push(key);
            access.next_value::<Field<'de>>()?;
        }
        Ok(Field::Other)
    }
}

/// The top-level members of a JSON object, duplicates refused at any depth; `None` when the
/// text is valid JSON but not an object.
struct Members<'de>(Option<Vec<(Cow<'de, str>, Field<'de>)>>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Members<'de>, A::Error> {
                let mut members: Vec<(Cow<'de, str>, Field<'de>)> = Vec::with_capacity(16);
                while let Some(Key(key)) = access.next_key()? {
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(DUPLICATE));
                    }
                    let value = access.next_value::<Field<'de>>()?;
                    members.push((key, value));
                }
                Ok(Members(Some(members)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members<'de>, A::Error> {
                while seq.next_element::<Field<'de>>()?.is_some() {}
                Ok(Members(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
            fn visit_unit<E>(self) -> Result<Members<'de>, E> {
                Ok(Members(None))
            }
        }
        deserializer.deserialize_any(MembersVisitor)
    }
}

/// The top-level members of `text`, for the hot path (no value tree is built).
pub(crate) fn parse_members(text: &str) -> Result<Vec<(Cow<'_, str>, Field<'_>)>, StrictError> {
    match serde_json::from_str::<Members<'_>>(text) {
        Ok(Members(Some(members))) => Ok(members),
        Ok(Members(None)) => Err(StrictError::NotObject),
        // The visitors' only custom error is the duplicate check.
        Err(e) if e.is_data() => Err(StrictError::Duplicate),
        Err(_) => Err(StrictError::Syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicates_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(StrictError::Duplicate)
        );
        assert_eq!(
            parse_object(br#"{"a":{"b":1,"b":1}}"#),
            Err(StrictError::Duplicate)
        );
        assert_eq!(
            parse_object(br#"{"a":[{"b":1,"b":1}]}"#),
            Err(StrictError::Duplicate)
        );
        assert!(parse_object(br#"{"a":{"b":1},"b":{"a":1}}"#).is_ok());
    }

    #[test]
    fn members_refuse_what_parse_object_refuses() {
        for (text, want) in [
            (r#"{"a":1,"a":2}"#, Err(StrictError::Duplicate)),
            (r#"{"a":1,"\u0061":2}"#, Err(StrictError::Duplicate)),
            (r#"{"a":{"b":1,"b":1}}"#, Err(StrictError::Duplicate)),
            (r#"{"a":[{"b":1,"b":1}]}"#, Err(StrictError::Duplicate)),
            (r#"[1]"#, Err(StrictError::NotObject)),
            (r#""x""#, Err(StrictError::NotObject)),
            (r#"{} x"#, Err(StrictError::Syntax)),
            (r#"{"a":1"#, Err(StrictError::Syntax)),
        ] {
            assert_eq!(parse_members(text).map(|_| ()), want, "{text}");
            assert_eq!(parse_object(text.as_bytes()).map(|_| ()), want, "{text}");
        }
        let members = parse_members(r#"{"aud":["x","y"],"n":1,"o":{"p":[1,"q"]}}"#).unwrap();
        assert!(matches!(&members[0].1, Field::Strings(v) if v.len() == 2));
        assert!(matches!(&members[1].1, Field::Num(_)));
        assert!(matches!(&members[2].1, Field::Other));
    }

    #[test]
    fn refuses_non_objects_and_trailing_garbage() {
        assert_eq!(parse_object(b"[1]"), Err(StrictError::NotObject));
        assert_eq!(parse_object(b"{} x"), Err(StrictError::Syntax));
        assert_eq!(parse_object(b"{\"a\":1"), Err(StrictError::Syntax));
    }
}
