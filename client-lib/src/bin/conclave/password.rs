//! Where the password comes from: `--password-file`, then `$CONCLAVE_PASSWORD`,
//! then the terminal.

use std::path::Path;

use anyhow::{Context, bail};

/// Environment variable holding the password for scripts.
pub(crate) const PASSWORD_ENV: &str = "CONCLAVE_PASSWORD";

/// Whether a password typed at the terminal is asked for twice (a new account's
/// password is, since a typo there would lock the user out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirm {
    Once,
    Twice,
}

/// The password, from the first source that has one.
pub(crate) fn obtain(
    password_file: Option<&Path>,
    from_env: Option<String>,
    confirm: Confirm,
) -> anyhow::Result<String> {
    if let Some(path) = password_file {
        let contents = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read password file {}", path.display()))?;
        return parse_password_file(&contents)
            .with_context(|| format!("password file {}", path.display()));
    }
    if let Some(password) = from_env {
        if password.is_empty() {
            bail!("{PASSWORD_ENV} is set but empty");
        }
        return Ok(password);
    }
    prompt(confirm)
}

/// The first line of a password file, without its line ending. Only the first
/// line counts, so a file ending in a newline (as editors write them) works.
pub(crate) fn parse_password_file(contents: &str) -> anyhow::Result<String> {
    let first_line = contents.split('\n').next().unwrap_or_default();
    let password = first_line.strip_suffix('\r').unwrap_or(first_line);
    if password.is_empty() {
        bail!("first line is empty");
    }
    Ok(password.to_owned())
}

fn prompt(confirm: Confirm) -> anyhow::Result<String> {
    let no_terminal = || {
        format!(
            "cannot ask for a password (no terminal): pass --password-file FILE or set {PASSWORD_ENV}"
        )
    };
    let password = rpassword::prompt_password("Password: ").with_context(no_terminal)?;
    if password.is_empty() {
        bail!("empty password");
    }
    if confirm == Confirm::Twice {
        let again = rpassword::prompt_password("Password (again): ").with_context(no_terminal)?;
        if again != password {
            bail!("the two passwords differ");
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_first_line_without_line_ending() {
        for (contents, expected) in [
            ("hunter22\n", Some("hunter22")),
            ("hunter22", Some("hunter22")),
            ("hunter22\r\n", Some("hunter22")),
            ("hunter22\nsecond line\n", Some("hunter22")),
            ("  spaced out  \n", Some("  spaced out  ")),
            ("pass\rword\n", Some("pass\rword")),
            ("", None),
            ("\n", None),
            ("\r\nhunter22\n", None),
        ] {
            let parsed = parse_password_file(contents).ok();
            assert_eq!(parsed.as_deref(), expected, "{contents:?}");
        }
    }

    #[test]
    fn password_file_comes_first_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "from-file\n").unwrap();
        let password = obtain(Some(&path), Some("from-env".into()), Confirm::Once).unwrap();
        assert_eq!(password, "from-file");
        let password = obtain(None, Some("from-env".into()), Confirm::Once).unwrap();
        assert_eq!(password, "from-env");
        assert!(obtain(None, Some(String::new()), Confirm::Once).is_err());

        let missing = dir.path().join("missing");
        let error = obtain(Some(&missing), None, Confirm::Once).unwrap_err();
        assert!(
            format!("{error:#}").contains("cannot read password file"),
            "{error:#}"
        );
    }
}
