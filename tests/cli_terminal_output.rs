//! What `epas` writes when its output is not a terminal: no colour codes, lines that end, and the
//! API's words for why generation stopped.

use std::process::Command;

/// `epas generate` on the built-in model with stdout and stderr piped, logging at `info` and
/// `NO_COLOR` unset: only the missing terminal can turn colours off.
fn generate_builtin(max_tokens: &str) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_epas"))
        .args([
            "generate",
            "--model",
            "builtin",
            "--prompt",
            "Mr. Speaker, Mr. Vice President",
            "--max-tokens",
            max_tokens,
            "--ignore-eos",
        ])
        .env("EPAS_THREADS", "2")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(o.status.success(), "{stderr}");
    (stdout, stderr)
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let (_, stderr) = generate_builtin("2");
    assert!(
        stderr.contains("INFO"),
        "the model load is logged: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "ANSI escape in {stderr:?}");
}

/// The output of `epas generate` run on a terminal (util-linux `script` gives it a
/// pseudo-terminal), with `NO_COLOR` set to `no_color` or unset.
fn generate_on_a_terminal(no_color: Option<&str>) -> String {
    let command = format!(
        "{} generate --model builtin --prompt x --max-tokens 1",
        env!("CARGO_BIN_EXE_epas")
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env("EPAS_THREADS", "2")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    let o = script
        .output()
        .expect("util-linux `script` runs the command on a terminal");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}");
    out
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    assert!(generate_on_a_terminal(None).contains('\u{1b}'));
    assert!(!generate_on_a_terminal(Some("1")).contains('\u{1b}'));
    // https://no-color.org: an empty NO_COLOR is as if unset.
    assert!(generate_on_a_terminal(Some("")).contains('\u{1b}'));
}

#[test]
fn generate_ends_its_lines_and_says_the_finish_reason_as_the_api_does() {
    let (stdout, stderr) = generate_builtin("3");
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    assert!(stderr.contains("finish_reason: length"), "{stderr}");
    assert!(!stderr.contains("finish: "), "{stderr}");
}
