//! The speculative-decoding table: per run, the draft tokens the server checked and kept, by
//! its own `sharing_ratio` label (the effective ratio, so not always the ratio asked for).
//! Shown only when some run has those counters.

use crate::report::{Report, RunReport};
use crate::speculation::SpecCounts;
use crate::table::{aligned, markdown_table, several_labels};

const HEADERS: [&str; 7] = [
    "run",
    "load",
    "ratio",
    "drafts",
    "draft tokens",
    "accepted tokens",
    "acceptance",
];

fn cells(run: &RunReport, ratio: &str, c: &SpecCounts) -> Vec<String> {
    vec![
        run.label.clone(),
        run.load.label(),
        ratio.to_string(),
        c.drafts.to_string(),
        c.draft_tokens.to_string(),
        c.accepted_tokens.to_string(),
        c.acceptance_rate
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "-".into()),
    ]
}

/// A row per label a run moved, plus `all` when it moved several or none; `None` when no
/// run has the counters.
fn table(report: &Report) -> Option<(Vec<&'static str>, Vec<Vec<String>>)> {
    let mut body = Vec::new();
    for run in &report.runs {
        let Some(spec) = &run.speculation else {
            continue;
        };
        for (label, counts) in &spec.by_ratio {
            let ratio = if label.is_empty() { "-" } else { label };
            body.push(cells(run, ratio, counts));
        }
        if spec.by_ratio.len() != 1 {
            body.push(cells(run, "all", &spec.overall));
        }
    }
    if body.is_empty() {
        return None;
    }
    // The run column only when runs have different labels, as in the main table.
    let skip = usize::from(!several_labels(report));
    let headers = HEADERS[skip..].to_vec();
    let body = body.into_iter().map(|row| row[skip..].to_vec()).collect();
    Some((headers, body))
}

pub(crate) fn terminal(report: &Report) -> String {
    match table(report) {
        Some((headers, body)) => format!(
            "\nspeculative decoding (the server's counters over each run, by its sharing_ratio label):\n{}",
            aligned(&headers, &body)
        ),
        None => String::new(),
    }
}

pub(crate) fn markdown(report: &Report) -> String {
    match table(report) {
        Some((headers, body)) => format!(
            "\nSpeculative decoding, from the server's counters over each run (ratio: its \
             `sharing_ratio` label; acceptance = accepted / draft tokens):\n\n{}",
            markdown_table(&headers, &body)
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;
    use crate::runner::RunOutput;
    use crate::speculation::Speculation;
    use crate::stats::Slo;

    fn run(label: &str, speculation: Option<Speculation>) -> RunReport {
        let output = RunOutput {
            records: Vec::new(),
            duration: 1.0,
            interrupted: false,
        };
        let load = Load::Closed { concurrency: 1 };
        RunReport::new(label, load, &[], &output, &Slo::default(), speculation)
    }

    fn counts(drafts: u64, draft_tokens: u64, accepted_tokens: u64) -> SpecCounts {
        SpecCounts::from_array([drafts, draft_tokens, accepted_tokens])
    }

    #[test]
    fn rows_per_label_an_all_row_and_nothing_without_counters() {
        let two_labels = Speculation {
            by_ratio: [
                ("0.00".into(), counts(3, 12, 9)),
                ("0.50".into(), counts(1, 4, 1)),
            ]
            .into(),
            overall: counts(4, 16, 10),
        };
        let idle = Speculation {
            by_ratio: Default::default(),
            overall: counts(0, 0, 0),
        };
        let report = Report::new(
            Vec::new(),
            vec![
                run("a", Some(two_labels)),
                run("a", None),
                run("a", Some(idle)),
            ],
        );
        let (headers, body) = table(&report).unwrap();
        assert_eq!(headers[0], "load", "one label: no run column");
        assert_eq!(
            body,
            vec![
                vec!["c=1", "0.00", "3", "12", "9", "75.0%"],
                vec!["c=1", "0.50", "1", "4", "1", "25.0%"],
                vec!["c=1", "all", "4", "16", "10", "62.5%"],
                vec!["c=1", "all", "0", "0", "0", "-"],
            ]
        );
        let md = markdown(&report);
        assert!(md.contains("| load | ratio | drafts |"), "{md}");
        assert!(md.contains("| c=1 | all | 4 | 16 | 10 | 62.5% |"), "{md}");
        assert!(terminal(&report).contains("accepted tokens  acceptance"));

        let plain = Report::new(Vec::new(), vec![run("a", None)]);
        assert_eq!(table(&plain), None);
        assert_eq!(
            (terminal(&plain), markdown(&plain)),
            (String::new(), String::new())
        );
    }

    #[test]
    fn the_run_column_appears_with_several_labels() {
        let one = Speculation {
            by_ratio: [("0.00".into(), counts(1, 4, 4))].into(),
            overall: counts(1, 4, 4),
        };
        let report = Report::new(Vec::new(), vec![run("a", Some(one)), run("b", None)]);
        let (headers, body) = table(&report).unwrap();
        assert_eq!(headers[0], "run");
        assert_eq!(
            body,
            vec![vec!["a", "c=1", "0.00", "1", "4", "4", "100.0%"]]
        );
    }

    #[test]
    fn json_reports_with_and_without_the_counters_load() {
        let with = Speculation {
            by_ratio: [("0.00".into(), counts(1, 4, 3))].into(),
            overall: counts(1, 4, 3),
        };
        let report = Report::new(
            Vec::new(),
            vec![run("a", Some(with.clone())), run("a", None)],
        );
        let json = report.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["runs"][0]["speculation"]["overall"]["acceptance_rate"],
            0.75
        );
        assert_eq!(
            value["runs"][0]["speculation"]["by_ratio"]["0.00"]["draft_tokens"],
            4
        );
        // A run without counters writes no field, as reports did before there were any.
        assert!(value["runs"][1].get("speculation").is_none());
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.runs[0].speculation, Some(with));
        assert_eq!(back.runs[1].speculation, None);
    }
}
