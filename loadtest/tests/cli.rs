//! The built `epas-loadtest` binary without a server: flags, exit statuses, failed
//! connections. (Runs against a real `epas serve` are in the workspace's tests/loadtest.rs.)

use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epas-loadtest"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn help_and_bad_flags() {
    let help = loadtest(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--ratio-sweep", "--burstiness", "--slo-ttft-ms", "--plot"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
    for bad in [
        &["--concurrency", "0"][..],
        &["--concurrency", "4", "--rate", "2"],
        &["--ratios", "0.5:x"],
        &["--plot", "chart.svg"],
        &["--url", "not a url"],
        &["--prompt-tokens", "uniform:9:1"],
        &["--frobnicate"],
    ] {
        let o = loadtest(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("error"), "{bad:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{bad:?}: {}", stderr(&o));
    }
}

#[test]
fn missing_files_are_errors_not_panics() {
    let o = loadtest(&["--merge", "/nonexistent/report.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = loadtest(&["--model", "m", "--corpus", "/nonexistent/corpus"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/corpus"), "{}", stderr(&o));
}

#[test]
fn refused_connections_are_counted_and_the_report_is_written() {
    let dir = std::env::temp_dir().join(format!("epas-lt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let url = format!("http://127.0.0.1:{}", closed_port());
    // Without --model the tool asks the server which model it serves: a clear error.
    let o = loadtest(&["--url", &url, "--requests", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--model"), "{}", stderr(&o));

    let o = loadtest(&[
        "--url",
        &url,
        "--model",
        "m",
        "--concurrency",
        "2",
        "--requests",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    // 3: nothing completed; the report is still written.
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let overall = &report["runs"][0]["overall"];
    assert_eq!(overall["sent"], 3);
    assert_eq!(overall["failed"], 3);
    assert_eq!(overall["errors"]["connect"], 3);

    // Saved reports merge into one table and chart, even with nothing measured in them.
    let (md, png) = (dir.join("m.md"), dir.join("m.png"));
    let both = format!("{},{}", json.display(), json.display());
    let o = loadtest(&[
        "--merge",
        &both,
        "--markdown",
        md.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("c=2"));
    assert!(std::fs::read_to_string(&md).unwrap().contains("connect x3"));
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    std::fs::remove_dir_all(&dir).unwrap();
}
