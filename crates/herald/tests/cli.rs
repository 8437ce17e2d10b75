//! The binary's command line, run as a user runs it.

use std::process::Command;

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .expect("run herald")
}

#[test]
fn help_lists_every_planned_subcommand() {
    let out = herald(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "pub", "sub", "token", "bench"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "`herald --help` does not list {sub}:\n{help}"
        );
    }
}

#[test]
fn unimplemented_subcommands_say_so_and_exit_2() {
    for sub in ["serve", "pub", "sub", "token", "bench"] {
        let out = herald(&[sub, "--some-flag", "x"]);
        assert_eq!(out.status.code(), Some(2), "herald {sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not implemented yet"), "herald {sub}: {err}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = herald(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
