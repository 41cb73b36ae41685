//! The samples of a Prometheus text exposition (`GET /metrics`): `name{k="v",...} value
//! [timestamp]` lines. Comments are skipped except for telling which metric families a page
//! declares; a line that does not parse is skipped, never an error (the page is not ours).

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample line of the page that parses.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(sample)
        .collect()
}

/// Whether the page names the metric family `name` in a `# HELP` or `# TYPE` line.
pub fn declares(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("#")
            && matches!(words.next(), Some("HELP" | "TYPE"))
            && words.next() == Some(name)
    })
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let after = line[name_end..].trim_start();
    let (labels, rest) = match after.strip_prefix('{') {
        Some(inner) => labels(inner)?,
        None => (Vec::new(), after),
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` (after the opening brace) into pairs and the text after the brace.
fn labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut pairs = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Some((pairs, rest));
        }
        let (key, rest) = text.split_once('=')?;
        let (value, rest) = quoted(rest.trim_start().strip_prefix('"')?)?;
        pairs.push((key.trim().to_string(), value));
        text = rest.trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// A label value up to its closing quote, with `\\`, `\"` and `\n` unescaped.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_with_and_without_labels() {
        let page = "# HELP epas_x_total Things.\n# TYPE epas_x_total counter\n\
                    epas_x_total{sharing_ratio=\"0.50\",kind=\"a\"} 12\n\
                    plain 3.5e2 1700000000000\n\
                    spaced { a = \"1\" , } 7\n\n";
        let s = samples(page);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "epas_x_total");
        assert_eq!(s[0].label("sharing_ratio"), Some("0.50"));
        assert_eq!(s[0].label("kind"), Some("a"));
        assert_eq!(s[0].label("missing"), None);
        assert_eq!(s[0].value, 12.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("plain", 350.0));
        assert!(s[1].labels.is_empty());
        assert_eq!((s[2].label("a"), s[2].value), (Some("1"), 7.0));
        assert!(declares(page, "epas_x_total"));
        assert!(!declares(page, "epas_x"));
        assert!(!declares("epas_x_total 1", "epas_x_total"));
    }

    #[test]
    fn escaped_label_values_and_special_numbers() {
        let s = samples("m{path=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} +Inf\nm{x=\"}\"} NaN\nm -Inf");
        assert_eq!(s[0].label("path"), Some("a\"b\\c\nd"));
        assert_eq!(s[0].label("le"), Some("+Inf"));
        assert_eq!(s[0].value, f64::INFINITY);
        assert_eq!(s[1].label("x"), Some("}"));
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn lines_that_do_not_parse_are_skipped() {
        let page = "<html>not metrics</html>\nm{a=\"1\" 5\nm{a=1} 5\nm{a=\"unclosed} 5\n\
                    m\nm{} x\n{a=\"1\"} 5\nok{} 2";
        let s = samples(page);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!((s[0].name.as_str(), s[0].value), ("ok", 2.0));
    }
}
