//! JSON written as Python's `json.dumps` writes it (`", "` and `": "` between items, or an
//! indented layout), the form chat templates and tool-calling models were trained on.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter, Serializer};

/// `json.dumps(value)` (`indent: None`) or `json.dumps(value, indent=n)`. With `ensure_ascii`,
/// characters outside ASCII are written as `\uXXXX` escapes, as Python does by default.
pub fn to_string<T: Serialize + ?Sized>(
    value: &T,
    indent: Option<usize>,
    ensure_ascii: bool,
) -> serde_json::Result<String> {
    let mut out = Vec::new();
    match indent {
        None => value.serialize(&mut Serializer::with_formatter(&mut out, SpacedFormatter))?,
        Some(n) => {
            let indentation = " ".repeat(n);
            let formatter = PrettyFormatter::with_indent(indentation.as_bytes());
            value.serialize(&mut Serializer::with_formatter(&mut out, formatter))?
        }
    }
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(if ensure_ascii {
        ascii_escaped(&text)
    } else {
        text
    })
}

/// One line, with a space after each `,` and `:` (Python's default separators).
struct SpacedFormatter;

impl Formatter for SpacedFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.begin_array_value(writer, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `json` with every non-ASCII character as `\uXXXX` (UTF-16 units). Outside strings JSON has
/// only ASCII, so this touches string contents alone.
fn ascii_escaped(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_matches_python_json_dumps() {
        let v = json!({"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2.5], "x": {}}});
        // json.dumps(v, ensure_ascii=False)
        assert_eq!(
            to_string(&v, None, false).unwrap(),
            r#"{"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2.5], "x": {}}}"#
        );
        // json.dumps(v)
        assert_eq!(
            to_string(&v, None, true).unwrap(),
            r#"{"name": "get_weather", "arguments": {"city": "Z\u00fcrich", "days": [1, 2.5], "x": {}}}"#
        );
        // json.dumps({"a": [1, "😀"], "b": []}, indent=2)
        assert_eq!(
            to_string(&json!({"a": [1, "😀"], "b": []}), Some(2), true).unwrap(),
            "{\n  \"a\": [\n    1,\n    \"\\ud83d\\ude00\"\n  ],\n  \"b\": []\n}"
        );
    }
}
