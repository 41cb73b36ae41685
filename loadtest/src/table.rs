//! The report as text: an aligned table for the terminal and Markdown tables for files.

use crate::load::trim_number;
use crate::report::{Report, RunReport};
use crate::spec_table;
use crate::stats::Summary;

struct Row<'a> {
    label: &'a str,
    load: String,
    ratio: String,
    summary: &'a Summary,
}

/// Rows of one run: one per ratio, plus an `all` row when it mixed several.
fn rows(run: &RunReport) -> Vec<Row<'_>> {
    let mut rows: Vec<Row> = run
        .by_ratio
        .iter()
        .map(|r| Row {
            label: &run.label,
            load: run.load.label(),
            ratio: r
                .sharing_ratio
                .map(trim_number)
                .unwrap_or_else(|| "-".into()),
            summary: &r.summary,
        })
        .collect();
    if run.by_ratio.len() > 1 {
        rows.push(Row {
            label: &run.label,
            load: run.load.label(),
            ratio: "all".into(),
            summary: &run.overall,
        });
    }
    rows
}

fn num(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

const HEADERS: [&str; 15] = [
    "run",
    "load",
    "ratio",
    "ok",
    "failed",
    "req/s",
    "out tok/s",
    "total tok/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "TPOT p50 ms",
    "E2E p50 ms",
    "goodput req/s",
];

fn cells(row: &Row) -> [String; 15] {
    let s = row.summary;
    [
        row.label.to_string(),
        row.load.clone(),
        row.ratio.clone(),
        s.completed.to_string(),
        s.failed.to_string(),
        format!("{:.2}", s.request_throughput),
        format!("{:.1}", s.output_throughput),
        format!("{:.1}", s.total_throughput),
        num(s.ttft_ms.p50),
        num(s.ttft_ms.p99),
        num(s.itl_ms.p50),
        num(s.itl_ms.p99),
        num(s.tpot_ms.p50),
        num(s.e2e_ms.p50),
        s.goodput
            .as_ref()
            .map(|g| format!("{:.2} ({:.0}%)", g.requests_per_second, g.fraction * 100.0))
            .unwrap_or_else(|| "-".into()),
    ]
}

/// Which columns to show: `run` only when runs have different labels, goodput only when
/// an objective was set.
fn columns(report: &Report) -> Vec<usize> {
    let several = several_labels(report);
    let goodput = report.runs.iter().any(|r| r.overall.goodput.is_some());
    (0..HEADERS.len())
        .filter(|&i| (i != 0 || several) && (i != 14 || goodput))
        .collect()
}

/// Whether the runs have different labels (then tables name each row's run).
pub(crate) fn several_labels(report: &Report) -> bool {
    let labels: std::collections::BTreeSet<&str> =
        report.runs.iter().map(|r| r.label.as_str()).collect();
    labels.len() > 1
}

/// Text columns are left-aligned, numbers right-aligned.
fn is_text(header: &str) -> bool {
    matches!(header, "run" | "load" | "ratio")
}

/// Headers and rows in columns two spaces apart.
pub(crate) fn aligned(headers: &[&str], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in body {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if is_text(headers[i]) {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = line(headers.to_vec()) + "\n";
    for row in body {
        out += &line(row.iter().map(String::as_str).collect());
        out += "\n";
    }
    out
}

/// Headers and rows as a Markdown table.
pub(crate) fn markdown_table(headers: &[&str], body: &[Vec<String>]) -> String {
    let align: Vec<&str> = headers
        .iter()
        .map(|h| if is_text(h) { "---" } else { "---:" })
        .collect();
    let mut out = format!("| {} |\n|{}|\n", headers.join(" | "), align.join("|"));
    for row in body {
        out += &format!("| {} |\n", row.join(" | "));
    }
    out
}

fn table(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let cols = columns(report);
    let headers = cols.iter().map(|&i| HEADERS[i]).collect();
    let body = report
        .runs
        .iter()
        .flat_map(rows)
        .map(|row| {
            let all = cells(&row);
            cols.iter().map(|&i| all[i].clone()).collect()
        })
        .collect();
    (headers, body)
}

/// Lines naming each run's failures by kind, with the first message of each kind.
fn error_lines(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for run in &report.runs {
        for (kind, count) in &run.overall.errors {
            let example = run
                .error_examples
                .get(kind)
                .filter(|m| !m.is_empty())
                .map(|m| format!(" (e.g. {m})"))
                .unwrap_or_default();
            lines.push(format!(
                "{} {}: {kind} x{count}{example}",
                run.label,
                run.load.label()
            ));
        }
        if run.interrupted {
            lines.push(format!("{} {}: interrupted", run.label, run.load.label()));
        }
    }
    lines
}

pub fn terminal(report: &Report) -> String {
    let (headers, body) = table(report);
    let mut out = aligned(&headers, &body);
    let errors = error_lines(report);
    if !errors.is_empty() {
        out += "\nerrors:\n";
        for e in errors {
            out += &format!("  {e}\n");
        }
    }
    out += &spec_table::terminal(report);
    out
}

type Pick = fn(&Summary) -> Option<f64>;

/// With several sweep points: one table per metric, a row per run label and ratio, a column
/// per sweep point.
fn pivots(report: &Report) -> String {
    let mut loads: Vec<String> = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for run in &report.runs {
        if !loads.contains(&run.load.label()) {
            loads.push(run.load.label());
        }
        for row in rows(run) {
            let key = (row.label.to_string(), row.ratio.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    if loads.len() < 2 {
        return String::new();
    }
    let metrics: [(&str, Pick); 3] = [
        ("Output tokens/s", |s| Some(s.output_throughput)),
        ("TTFT p50, ms", |s| s.ttft_ms.p50),
        ("TPOT p50, ms", |s| s.tpot_ms.p50),
    ];
    let mut out = String::new();
    for (title, pick) in metrics {
        out += &format!("{title}:\n\n| run | ratio | {} |\n", loads.join(" | "));
        out += &format!("|---|---|{}\n", "---:|".repeat(loads.len()));
        for (label, ratio) in &keys {
            let cells: Vec<String> = loads
                .iter()
                .map(|load| {
                    report
                        .runs
                        .iter()
                        .filter(|r| r.label == *label && r.load.label() == *load)
                        .flat_map(rows)
                        .find(|row| row.ratio == *ratio)
                        .map(|row| num(pick(row.summary)))
                        .unwrap_or_else(|| "".into())
                })
                .collect();
            out += &format!("| {label} | {ratio} | {} |\n", cells.join(" | "));
        }
        out += "\n";
    }
    out
}

pub fn markdown(report: &Report) -> String {
    let (headers, body) = table(report);
    let mut out = String::from("## epas-loadtest results\n\n");
    out += &pivots(report);
    if !out.ends_with("\n\n") {
        out += "\n";
    }
    out += "All measurements:\n\n";
    out += &markdown_table(&headers, &body);
    let errors = error_lines(report);
    if !errors.is_empty() {
        out += "\nErrors:\n\n";
        for e in errors {
            out += &format!("- {}\n", e.replace('|', "\\|"));
        }
    }
    out += &spec_table::markdown(report);
    out += "\nSettings:\n\n";
    for s in &report.sources {
        out += &format!(
            "- **{}**: `{}` at {} ({}), prompts {} of {} tokens, max_tokens {}{}, seed {}\n",
            s.label,
            s.model,
            s.url,
            s.endpoint,
            s.prompts,
            s.prompt_tokens,
            s.max_tokens,
            if s.ignore_eos { ", ignore_eos" } else { "" },
            s.seed,
        );
        out += &format!("  `{}`\n", shell_words(&s.command));
    }
    out += "\nms columns are percentiles over completed requests (ITL over every gap between \
            streamed chunks); throughput is per second of the whole run, tokens as the \
            server's usage counts them.\n";
    out
}

/// A command line as one could paste it back into a shell.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let argv = [
            "a".to_string(),
            "b c".into(),
            "it's".into(),
            "--x=1,2".into(),
        ];
        assert_eq!(shell_words(&argv), r"a 'b c' 'it'\''s' --x=1,2");
    }
}
