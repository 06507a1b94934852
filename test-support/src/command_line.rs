//! A binary's shell completions and manual pages checked the way a shell and
//! `man` would read them: the bash script parsed by `bash -n`, the zsh and
//! fish scripts naming every subcommand, and the manual page rendered by
//! groff (its roff structure checked where groff is missing).

use std::path::Path;
use std::process::{Command, Output};

/// Runs `binary` with `arguments`, with no Conclave settings from the caller's
/// environment, and returns its stdout; it must succeed with nothing on stderr.
pub fn stdout_of(binary: &Path, arguments: &[&str]) -> String {
    let output = run(binary, arguments);
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{} {arguments:?}: {output:?}",
        binary.display()
    );
    String::from_utf8(output.stdout).expect("the output is text")
}

fn run(binary: &Path, arguments: &[&str]) -> Output {
    Command::new(binary)
        .args(arguments)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()))
}

/// The subcommands `binary --help` lists (but `help`).
pub fn subcommands(binary: &Path) -> Vec<String> {
    let help = stdout_of(binary, &["--help"]);
    let names: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 3, "no subcommands in {help}");
    names
}

/// `binary completions SHELL` for bash, zsh and fish: each script is produced
/// and names every subcommand, and bash parses its own.
pub fn check_completions(binary: &Path) {
    let subcommands = subcommands(binary);
    let directory = tempfile::tempdir().expect("a temporary directory");
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(binary, &["completions", shell]);
        for subcommand in &subcommands {
            assert!(
                script.contains(subcommand.as_str()),
                "the {shell} completions do not name {subcommand}"
            );
        }
        if shell == "bash" {
            let path = directory.path().join("completions.bash");
            std::fs::write(&path, &script).expect("writing the bash completions");
            let parsed = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("bash runs");
            assert!(parsed.status.success(), "bash -n: {parsed:?}");
        }
    }
    let refused = run(binary, &["completions", "cmd.exe"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}

/// `binary man`: a manual page that groff renders, naming every subcommand;
/// and `binary man --out DIR`: a page for the binary and one per subcommand.
pub fn check_manual(binary: &Path, name: &str) {
    let subcommands = subcommands(binary);
    let page = stdout_of(binary, &["man"]);
    assert!(page.contains(".TH "), "no title header: {page}");
    assert!(page.contains(".SH NAME"), "no NAME section: {page}");
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join(format!("{name}.1"));
    std::fs::write(&path, &page).expect("writing the page");
    let text = match render(&path) {
        Some(text) => text,
        // No groff here: the roff source must still name them.
        None => page.replace("\\-", "-"),
    };
    assert!(text.contains(name), "{text}");
    for subcommand in &subcommands {
        assert!(
            text.contains(subcommand.as_str()),
            "the manual page does not name {subcommand}:\n{text}"
        );
    }

    let out = directory.path().join("man1");
    let out_text = out.to_str().expect("a UTF-8 path");
    stdout_of(binary, &["man", "--out", out_text]);
    for page in std::iter::once(name.to_owned()).chain(
        subcommands
            .iter()
            .map(|subcommand| format!("{name}-{subcommand}")),
    ) {
        let path = out.join(format!("{page}.1"));
        assert!(path.is_file(), "{} was not written", path.display());
    }
}

/// The page as groff sets it in plain ASCII (no bold, underline or
/// hyphenation), or `None` without groff.
fn render(page: &Path) -> Option<String> {
    let output = Command::new("groff")
        .args(["-man", "-Tascii", "-P-cbou", "-rHY=0", "-rLL=200n"])
        .arg(page)
        .output()
        .ok()?;
    assert!(output.status.success(), "groff failed: {output:?}");
    Some(String::from_utf8(output.stdout).expect("groff -Tascii prints ASCII"))
}
