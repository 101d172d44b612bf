//! Just enough JSON to write the admin API's answers: quoted strings and flat objects built field by
//! field. Writing only; the API reads no JSON beyond a weight (`super::parse`).

use std::fmt::{Display, Write};

/// `text` as a JSON string, quotes included.
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object being written, one field after another.
#[derive(Debug)]
pub(crate) struct Object(String);

impl Object {
    pub(crate) fn new() -> Object {
        Object(String::from("{"))
    }

    /// A field whose value is already JSON (a number, `true`, `null`, an array...).
    pub(crate) fn raw(mut self, key: &str, value: impl Display) -> Object {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{value}", quote(key));
        self
    }

    pub(crate) fn text(self, key: &str, value: &str) -> Object {
        self.raw(key, quote(value))
    }

    /// A string, or `null` for `None`.
    pub(crate) fn text_or_null(self, key: &str, value: Option<&str>) -> Object {
        match value {
            Some(value) => self.text(key, value),
            None => self.raw(key, "null"),
        }
    }

    pub(crate) fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `[a,b,...]` of JSON values.
pub(crate) fn array<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    let mut out = String::from("[");
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(item.as_ref());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_quote_escapes_what_json_requires() {
        assert_eq!(quote("a\"b\\c\u{1}\n"), "\"a\\\"b\\\\c\\u0001\\n\"");
        assert_eq!(quote("é"), "\"é\"");
    }

    #[test]
    fn test_object_and_array() {
        let object = Object::new()
            .raw("id", 3)
            .text("route", "web")
            .text_or_null("upstream", None)
            .raw("ok", true)
            .finish();
        assert_eq!(
            object,
            "{\"id\":3,\"route\":\"web\",\"upstream\":null,\"ok\":true}"
        );
        assert_eq!(array(["1", "2"]), "[1,2]");
        assert_eq!(array(Vec::<String>::new()), "[]");
    }
}
