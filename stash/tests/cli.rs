//! Smoke tests of the `stash` binary; the real tests live in the `tests/` package.

use std::process::Command;

#[test]
fn help_works() {
    let out = Command::new(env!("CARGO_BIN_EXE_stash"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: stash"));
}

#[test]
fn bad_flag_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_stash"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
