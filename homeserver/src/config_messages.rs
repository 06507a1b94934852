//! Plain-language messages for a configuration that cannot be read (the
//! file, the key, what was wrong and what is allowed, instead of serde's
//! wording), and the check that every `CONCLAVE_*` environment variable
//! names a configuration key.

use std::path::Path;

/// `CONCLAVE_*` variables that are not configuration keys, so the homeserver
/// leaves them alone: the `conclave` client's (which may be set in the same
/// shell), and those of the test suite and the scripts. Any other
/// `CONCLAVE_*` variable must name a key of the configuration.
pub const NON_CONFIGURATION_VARIABLES: &[&str] = &[
    // The `conclave` client.
    "CONCLAVE_SERVER",
    "CONCLAVE_STATE",
    "CONCLAVE_PASSWORD",
    "CONCLAVE_CA_FILE",
    // The test suite.
    "CONCLAVE_TEST_POSTGRES_URL",
    "CONCLAVE_CHROMIUM",
    "CONCLAVE_FUZZ_SMOKE_MUTATIONS",
    "CONCLAVE_WRITE_FUZZ_SEEDS",
    "CONCLAVE_HOMESERVER_BINARY",
    "CONCLAVE_CLIENT_BINARY",
    // scripts/container-images.
    "CONCLAVE_PODMAN_DIR",
    "CONCLAVE_RUST_SYSROOT",
];

/// Whether `name` is one of the variables Kubernetes puts into every container
/// for each Service of its namespace (its "service links"): a Service named
/// `conclave` or `conclave-...` yields `CONCLAVE_SERVICE_HOST`,
/// `CONCLAVE_SERVICE_PORT[_NAME]`, `CONCLAVE_PORT` and
/// `CONCLAVE_PORT_7400_TCP[_PROTO|_PORT|_ADDR]`. They are not meant for the
/// homeserver, and refusing them would stop a pod that merely shares a
/// namespace with such a Service (the chart turns service links off, other
/// manifests may not). No configuration key ends in `PORT` or contains
/// `SERVICE_HOST` / `SERVICE_PORT`.
pub(crate) fn is_kubernetes_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.contains("_SERVICE_PORT") || name.ends_with("_PORT")
    {
        return true;
    }
    // `..._PORT_<number>_<protocol>` and its `_PROTO`, `_PORT`, `_ADDR` forms.
    let Some((_, after)) = name.rsplit_once("_PORT_") else {
        return false;
    };
    let mut parts = after.split('_');
    let number = parts.next().unwrap_or_default();
    let protocol = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    !number.is_empty()
        && number.bytes().all(|byte| byte.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && matches!(rest.as_slice(), [] | ["PROTO"] | ["PORT"] | ["ADDR"])
}

/// Where a value came from, as the `config` crate names it for a value read
/// from the environment.
const ENVIRONMENT_ORIGIN: &str = "the environment";

/// The message for a configuration that `config` could not read or serde
/// could not deserialise. `file` is the configuration file, if any, named
/// when the error itself does not say where the value came from.
pub(crate) fn describe(error: &config::ConfigError, file: Option<&Path>) -> String {
    let file_name = file.map(|path| path.display().to_string());
    match error {
        config::ConfigError::FileParse { uri, cause } => {
            let place = file_name.or(uri.clone()).unwrap_or_default();
            format!(
                "{place}: not valid TOML: {}",
                toml_error(&cause.to_string())
            )
        }
        config::ConfigError::Foreign(cause) => one_line(&cause.to_string()),
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => {
            let key = key.clone().unwrap_or_default();
            format!(
                "{}: {unexpected} is not allowed; it must be {}",
                place(origin.as_deref(), file_name.as_deref(), &key),
                expected_in_words(expected)
            )
        }
        config::ConfigError::At { error, origin, key } => {
            let key = key.clone().unwrap_or_default();
            let place = |key: &str| place(origin.as_deref(), file_name.as_deref(), key);
            match error.as_ref() {
                config::ConfigError::Message(message) => describe_message(message, &key, place),
                other => format!("{}: {}", place(&key), describe(other, file)),
            }
        }
        config::ConfigError::Message(message) => {
            describe_message(message, "", |key| place(None, file_name.as_deref(), key))
        }
        other => one_line(&other.to_string()),
    }
}

/// What serde says in a message (an unknown key, an unknown variant, an
/// invalid value), reworded; `key` is the table or key it is about.
fn describe_message(message: &str, key: &str, place: impl Fn(&str) -> String) -> String {
    if let Some((field, allowed)) = unknown_one_of(message, "unknown field") {
        let table = if key.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in [{key}]")
        };
        let hint = nearest(&field, &allowed)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        return format!(
            "{}: `{field}` is not a configuration key {table}{hint}; the keys there are {}",
            place(&join_key(key, &field)),
            allowed.join(", ")
        );
    }
    if let Some((variant, allowed)) = unknown_one_of(message, "unknown variant") {
        let hint = nearest(&variant, &allowed)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        return format!(
            "{}: `{variant}` is not allowed{hint}; it must be one of {}",
            place(key),
            allowed.join(", ")
        );
    }
    // `config`'s own wording for an unknown variant of a unit enum.
    if let Some((enum_name, variant)) = message
        .strip_prefix("enum ")
        .and_then(|rest| rest.split_once(" does not have variant constructor "))
        && !enum_variants(enum_name).is_empty()
    {
        let allowed = enum_variants(enum_name);
        let hint = nearest(variant, &allowed)
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        return format!(
            "{}: `{variant}` is not allowed{hint}; it must be one of {}",
            place(key),
            allowed.join(", ")
        );
    }
    if message == "invalid socket address syntax" {
        return format!(
            "{}: not a socket address; it must be IP:PORT, such as 127.0.0.1:7400 or [::1]:7400",
            place(key)
        );
    }
    let message = message
        .strip_prefix("invalid value: ")
        .unwrap_or(message)
        .replace(", expected ", " is not allowed; it must be ");
    format!("{}: {}", place(key), one_line(&message))
}

/// Reads serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a`", or "there are no fields"): the name and what is allowed.
fn unknown_one_of(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?.trim_start();
    let rest = rest.strip_prefix('`')?;
    let (name, rest) = rest.split_once('`')?;
    let allowed = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((name.to_owned(), allowed))
}

/// The values of the configuration's enum named `enum_name`, as serde reads
/// them (serde_json's refusal of an empty name lists them).
fn enum_variants(enum_name: &str) -> Vec<String> {
    fn variants<T: serde::de::DeserializeOwned>() -> Vec<String> {
        match serde_json::from_str::<T>("\"\"") {
            Ok(_) => Vec::new(),
            Err(error) => unknown_one_of(&error.to_string(), "unknown variant")
                .map(|(_, allowed)| allowed)
                .unwrap_or_default(),
        }
    }
    match enum_name {
        "RegistrationPolicy" => variants::<crate::config::RegistrationPolicy>(),
        "LogFormat" => variants::<crate::config::LogFormat>(),
        _ => Vec::new(),
    }
}

/// `section.key`, or `key` at the top level.
fn join_key(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

/// Where a key was read: `FILE: KEY`, or the environment variable that set it.
fn place(origin: Option<&str>, file: Option<&str>, key: &str) -> String {
    if origin == Some(ENVIRONMENT_ORIGIN) {
        return format!("environment variable {}", variable_name(key));
    }
    let key = if key.is_empty() { "(top level)" } else { key };
    // The file as the operator named it (`config` gives it relative to the
    // working directory).
    match file.or(origin) {
        Some(origin) => format!("{origin}: {key}"),
        None => key.to_owned(),
    }
}

/// The `CONCLAVE_*` variable that sets `key` (`client_api.listen`:
/// `CONCLAVE_CLIENT_API__LISTEN`).
pub(crate) fn variable_name(key: &str) -> String {
    format!(
        "{}_{}",
        crate::config::ENV_PREFIX,
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// serde's name for an expected type, in words.
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        "i32" | "i64" | "an integer" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "string" => "a string (in quotes)",
        "a map" => "a table",
        other => return other.to_owned(),
    };
    words.to_owned()
}

/// The allowed name closest to `given` (by edit distance, case ignored), if
/// it is close enough to be what was meant.
pub(crate) fn nearest<'a>(given: &str, allowed: &'a [String]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    allowed
        .iter()
        .map(|name| (edit_distance(&given, &name.to_ascii_lowercase()), name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name.as_str())
}

/// Levenshtein distance, by characters.
fn edit_distance(first: &str, second: &str) -> usize {
    let second: Vec<char> = second.chars().collect();
    let mut previous: Vec<usize> = (0..=second.len()).collect();
    for (row, first_char) in first.chars().enumerate() {
        let mut current = vec![row + 1];
        for (column, second_char) in second.iter().enumerate() {
            let substitution = previous[column] + usize::from(first_char != *second_char);
            current.push(
                substitution
                    .min(previous[column + 1] + 1)
                    .min(current[column] + 1),
            );
        }
        previous = current;
    }
    previous[second.len()]
}

/// The toml crate's error, which quotes the line under its position and the
/// reason below, as `line L, column C: REASON`.
fn toml_error(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let position = lines.next().unwrap_or_default();
    let position = position
        .strip_prefix("TOML parse error at ")
        .unwrap_or(position);
    match lines.next_back() {
        Some(reason) => format!("{position}: {reason}"),
        None => position.to_owned(),
    }
}

/// A message on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a `CONCLAVE_*` variable is refused: it names no configuration key.
/// `message` is serde's, for the deserialisation of that variable alone.
pub(crate) fn unknown_variable(name: &str, error: &config::ConfigError) -> Option<String> {
    let (section, message) = match error {
        config::ConfigError::At { error, key, .. } => match error.as_ref() {
            config::ConfigError::Message(message) => (key.clone().unwrap_or_default(), message),
            _ => return None,
        },
        config::ConfigError::Message(message) => (String::new(), message),
        _ => return None,
    };
    let (field, allowed) = unknown_one_of(message, "unknown field")?;
    // `CONCLAVE_REDIS_URL` for `CONCLAVE_REDIS__URL`: one `_` where the
    // levels need two.
    let split_at_section = allowed.iter().find_map(|key| {
        let rest = field.strip_prefix(key.as_str())?.strip_prefix('_')?;
        (!rest.is_empty()).then(|| join_key(&join_key(&section, key), rest))
    });
    let near = nearest(&field, &allowed).map(|near| join_key(&section, near));
    let hint = match split_at_section.or(near) {
        Some(key) => format!("; did you mean {}?", variable_name(&key)),
        None => {
            let allowed: Vec<String> = allowed
                .iter()
                .map(|key| variable_name(&join_key(&section, key)))
                .collect();
            format!("; the variables there are {}", allowed.join(", "))
        }
    };
    Some(format!(
        "environment variable {name} names no configuration key{hint} (other CONCLAVE_* variables the homeserver ignores: {})",
        NON_CONFIGURATION_VARIABLES.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_service_links_are_recognised() {
        for name in [
            "CONCLAVE_SERVICE_HOST",
            "CONCLAVE_SERVICE_PORT",
            "CONCLAVE_SERVICE_PORT_CLIENT",
            "CONCLAVE_PORT",
            "CONCLAVE_PORT_7400_TCP",
            "CONCLAVE_PORT_7400_TCP_PROTO",
            "CONCLAVE_PORT_7400_TCP_PORT",
            "CONCLAVE_PORT_7400_TCP_ADDR",
            "CONCLAVE_ADMIN_PORT_7480_UDP",
        ] {
            assert!(is_kubernetes_service_link(name), "{name}");
        }
        for name in [
            "CONCLAVE_DOMAIN",
            "CONCLAVE_CLIENT_API__LISTEN",
            "CONCLAVE_PORT_X_TCP",
            "CONCLAVE_PORT_7400_HTTP",
            "CONCLAVE_PORT_7400_TCP_OTHER",
        ] {
            assert!(!is_kubernetes_service_link(name), "{name}");
        }
    }

    #[test]
    fn nearest_names_are_suggested() {
        let allowed: Vec<String> = ["listen", "tls_certificate", "max_message_bytes"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(nearest("listn", &allowed), Some("listen"));
        assert_eq!(nearest("LISTEN", &allowed), Some("listen"));
        assert_eq!(
            nearest("max_mesage_bytes", &allowed),
            Some("max_message_bytes")
        );
        assert_eq!(nearest("port", &allowed), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_configuration_enums_list_their_values() {
        assert_eq!(
            enum_variants("RegistrationPolicy"),
            ["open", "token", "closed"]
        );
        assert_eq!(enum_variants("LogFormat"), ["human", "json"]);
        assert!(enum_variants("Unknown").is_empty());
    }

    #[test]
    fn serde_messages_are_read() {
        assert_eq!(
            unknown_one_of(
                "unknown field `listn`, expected one of `listen`, `tls`",
                "unknown field"
            ),
            Some((
                "listn".to_owned(),
                vec!["listen".to_owned(), "tls".to_owned()]
            ))
        );
        assert_eq!(
            unknown_one_of("unknown variant `opne`, expected `open`", "unknown variant"),
            Some(("opne".to_owned(), vec!["open".to_owned()]))
        );
        assert_eq!(unknown_one_of("invalid length 3", "unknown field"), None);
        assert_eq!(
            variable_name("client_api.listen"),
            "CONCLAVE_CLIENT_API__LISTEN"
        );
        assert_eq!(variable_name("domain"), "CONCLAVE_DOMAIN");
    }
}
