//! Tests that keep the architecture true (ARCHITECTURE.md's invariants on
//! layering): they read this crate's sources as text and fail naming the file
//! and line that breaks a rule. Code in `#[cfg(test)]` modules is exempt: tests
//! may use a real clock or a database.

use std::path::{Path, PathBuf};

/// A rule: files under `folder` (relative to `src/`, empty for all) must not
/// contain `forbidden`, except the files under `exempt`.
struct Rule {
    folder: &'static str,
    exempt: &'static [&'static str],
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        folder: "rules",
        exempt: &[],
        forbidden: &[
            "tokio",
            "sea_orm",
            "tonic",
            "SystemTime",
            "Instant::now",
            "Utc::now",
            "getrandom",
            "conclave_federation",
            "conclave_proto",
            "crate::store",
            "crate::service",
            "crate::grpc",
            "crate::notify",
            "crate::config",
        ],
        why: "rules are pure: no async runtime, database, gRPC, clock or RNG, and \
              nothing of ours but conclave-core (time comes in as an argument)",
    },
    Rule {
        folder: "service",
        exempt: &[],
        forbidden: &["sea_orm", "tonic"],
        why: "the service speaks the domain: the store hides sea-orm, grpc/ hides tonic",
    },
    Rule {
        folder: "",
        exempt: &["store", "tidy.rs"],
        forbidden: &["sea_orm"],
        why: "only store/ knows sea-orm",
    },
    Rule {
        folder: "",
        exempt: &["grpc", "lib.rs", "main.rs", "telemetry", "tidy.rs"],
        forbidden: &["tonic::", "use tonic"],
        why: "only grpc/ knows tonic (lib.rs and main.rs start the servers, telemetry/ \
              sets up the OTLP exporter's channel)",
    },
    Rule {
        folder: "",
        exempt: &["cluster", "tidy.rs"],
        forbidden: &["redis::", "use redis"],
        why: "only cluster/ knows the redis crate: Redis is an implementation of \
              wake-ups and shared limits, behind their seams",
    },
    Rule {
        folder: "",
        exempt: &["tidy.rs", "main.rs"],
        forbidden: &[
            ".unwrap_or(0)",
            "unwrap_or(i64::MAX)",
            "unwrap_or(u64::MAX)",
        ],
        why: "a number that does not fit is an error naming its row (store::convert), \
              never a silent 0 or maximum; a deliberate saturation says so with a \
              `tidy: saturating` comment on its line",
    },
];

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(folder)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", folder.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// Marks a line whose saturating conversion is deliberate (a clock, say).
const SATURATING: &str = "tidy: saturating";

/// The file's lines before its first `#[cfg(test)]`, numbered from 1, without
/// comments; lines marked [`SATURATING`] are left out.
fn production_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter(|(_, line)| !line.contains(SATURATING))
        .map(|(index, line)| (index + 1, line.split("//").next().unwrap_or_default()))
        .collect()
}

/// Every breach of `rules` in the files under `root`: "file:line: text (why)".
fn breaches(root: &Path, rules: &[Rule]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root).expect("under the root");
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for rule in rules {
            let applies = relative.starts_with(rule.folder)
                && !rule
                    .exempt
                    .iter()
                    .any(|exempt| relative.starts_with(exempt));
            if !applies {
                continue;
            }
            for (number, line) in production_lines(&text) {
                for forbidden in rule.forbidden {
                    if line.contains(forbidden) {
                        found.push(format!(
                            "{}:{number}: `{forbidden}` ({})",
                            relative.display(),
                            rule.why
                        ));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn layers_use_only_what_they_may() {
    let found = breaches(&source_root(), RULES);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn every_file_says_what_it_owns() {
    let mut files = Vec::new();
    rust_files(&source_root(), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            !text.trim_start().starts_with("//!")
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line: {missing:?}"
    );
}

/// The checker itself finds what it should, so the tests above cannot pass by
/// reading nothing.
#[test]
fn the_checker_catches_a_breach_and_ignores_tests() {
    let folder = tempfile::tempdir().expect("a temporary directory");
    let rules_folder = folder.path().join("rules");
    std::fs::create_dir_all(&rules_folder).expect("a folder");
    std::fs::write(
        rules_folder.join("clock.rs"),
        "//! x\nfn now() { std::time::SystemTime::now(); } // SystemTime in a comment\n\
         #[cfg(test)]\nmod tests { use tokio; }\n",
    )
    .expect("a file");
    let found = breaches(folder.path(), &RULES[..1]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("rules/clock.rs:2: `SystemTime`"),
        "{found:?}"
    );
}
