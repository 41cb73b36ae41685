//! Every flag `--help` lists says what it does.

use clap::CommandFactory;

use super::Cli;

/// `(subcommand, flag)` of every argument, in every subcommand, that has no help text.
fn flags_without_help(command: &clap::Command, path: &str) -> Vec<String> {
    let mut missing: Vec<String> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_help().is_none() && a.get_long_help().is_none())
        .map(|a| format!("{path} --{}", a.get_id()))
        .collect();
    for sub in command.get_subcommands() {
        missing.extend(flags_without_help(
            sub,
            &format!("{path} {}", sub.get_name()),
        ));
    }
    missing
}

#[test]
fn every_flag_has_help_text() {
    let mut cli = Cli::command();
    cli.build();
    let missing = flags_without_help(&cli, "epas");
    assert!(missing.is_empty(), "flags without help: {missing:#?}");
}
