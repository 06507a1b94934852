//! The crates the homeserver and the client share are compiled with one set
//! of features whichever is built (`cargo build -p conclave-client`,
//! `cargo run -p conclave-homeserver`, `cargo build --workspace`,
//! `cargo test`), so that one build serves the others: read from `cargo tree`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Whether a crate is compiled for the target (what the program links) or
/// for the host (build scripts, procedural macros and what they use): cargo
/// resolves their features apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Platform {
    Target,
    Host,
}

/// Every feature each crate (`name vVERSION`, per platform) is compiled with
/// in one `cargo` invocation's build.
type FeatureSets = BTreeMap<(String, Platform), BTreeSet<String>>;

/// The features `cargo tree` resolves for `packages` (`--workspace` or
/// `-p NAME`) over the dependency `edges`.
fn feature_sets(packages: &[&str], edges: &str) -> FeatureSets {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace's root");
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["tree", "--locked", "--prefix", "indent", "--edges", edges])
        .args(["--format", "{p}|{f}"])
        .args(packages)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_tree(&String::from_utf8(output.stdout).expect("cargo tree prints UTF-8"))
}

/// Reads `cargo tree --prefix indent --format '{p}|{f}'`: four characters of
/// indentation per level, a `[build-dependencies]` line before a crate's
/// build dependencies, and a blank line between the trees of several roots.
fn parse_tree(tree: &str) -> FeatureSets {
    let mut sets = FeatureSets::new();
    // Per depth: whether the crate there is compiled for the host, and
    // whether its build dependencies are being listed.
    let mut host_at_depth: Vec<bool> = Vec::new();
    let mut build_section_at_depth: Vec<bool> = Vec::new();
    for line in tree.lines() {
        if line.trim().is_empty() {
            host_at_depth.clear();
            build_section_at_depth.clear();
            continue;
        }
        let entry = line.trim_start_matches(['│', '├', '└', '─', ' ', '\u{a0}']);
        let depth = (line.chars().count() - entry.chars().count()) / 4;
        if entry.starts_with('[') {
            // Lists the children of the crate at `depth`.
            build_section_at_depth.truncate(depth);
            build_section_at_depth.resize(depth + 1, false);
            build_section_at_depth[depth] = entry.starts_with("[build-dependencies]");
            continue;
        }
        let (package, features) = entry
            .split_once('|')
            .unwrap_or_else(|| panic!("unexpected line of cargo tree: {line:?}"));
        let host = package.contains("(proc-macro)")
            || depth.checked_sub(1).is_some_and(|parent| {
                host_at_depth.get(parent).copied().unwrap_or(false)
                    || build_section_at_depth.get(parent).copied().unwrap_or(false)
            });
        host_at_depth.truncate(depth);
        host_at_depth.push(host);
        // A new crate at this depth: its own children are yet to come.
        build_section_at_depth.truncate(depth);
        // The workspace's own crates differ by design.
        if package.contains(" (/") {
            continue;
        }
        let name: String = package.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let platform = if host {
            Platform::Host
        } else {
            Platform::Target
        };
        sets.entry((name, platform)).or_default().extend(
            features
                .trim_end_matches(" (*)")
                .split(',')
                .filter(|feature| !feature.is_empty())
                .map(str::to_owned),
        );
    }
    sets
}

/// One line per crate built by both with different features.
fn differences(first: (&str, &FeatureSets), second: (&str, &FeatureSets)) -> Vec<String> {
    let (first_name, first_sets) = first;
    let (second_name, second_sets) = second;
    first_sets
        .iter()
        .filter_map(|(key, first_features)| {
            let second_features = second_sets.get(key)?;
            (first_features != second_features).then(|| {
                let (crate_name, platform) = key;
                format!(
                    "{crate_name} ({platform:?}): only {first_name} has {:?}, only {second_name} has {:?}",
                    first_features.difference(second_features).collect::<Vec<_>>(),
                    second_features.difference(first_features).collect::<Vec<_>>(),
                )
            })
        })
        .collect()
}

#[test]
fn shared_crates_have_one_feature_set_in_every_build() {
    let client = feature_sets(&["-p", "conclave-client"], "normal,build");
    let homeserver = feature_sets(&["-p", "conclave-homeserver"], "normal,build");
    let workspace = feature_sets(&["--workspace"], "normal,build");
    let tests = feature_sets(&["--workspace"], "normal,build,dev");
    // What the comparison stands on: both builds have serde, for the target.
    for build in [&client, &homeserver] {
        assert!(
            build.keys().any(
                |(name, platform)| name.starts_with("serde v") && *platform == Platform::Target
            ),
            "{build:?}"
        );
    }
    let builds = [
        ("cargo build -p conclave-client", &client),
        ("cargo build -p conclave-homeserver", &homeserver),
        ("cargo build --workspace", &workspace),
        ("cargo test --workspace", &tests),
    ];
    let mut found = Vec::new();
    for (index, first) in builds.iter().enumerate() {
        for second in &builds[index + 1..] {
            found.extend(differences(*first, *second));
        }
    }
    assert!(
        found.is_empty(),
        "crates compiled with other features depending on the command, so one build \
         does not serve the other (add the features to workspace-hack/Cargo.toml):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_tree_parser_tells_host_from_target() {
    let tree = "\
conclave-client v0.1.0 (/work/client-lib)|
├── chrono v0.4.45|clock,std
│   └── num-traits v0.2.19|std
│       [build-dependencies]
│       └── autocfg v1.5.1|
├── clap_derive v4.6.9 (proc-macro)|default
│   └── heck v0.5.0|
└── num-traits v0.2.19|i128 (*)

conclave-homeserver v0.1.0 (/work/homeserver)|
└── autocfg v1.5.1|std
";
    let sets = parse_tree(tree);
    let features = |name: &str, platform| {
        sets.get(&(name.to_owned(), platform))
            .map(|set| set.iter().cloned().collect::<Vec<_>>().join(","))
    };
    assert_eq!(
        features("chrono v0.4.45", Platform::Target).as_deref(),
        Some("clock,std")
    );
    assert_eq!(
        features("num-traits v0.2.19", Platform::Target).as_deref(),
        Some("i128,std")
    );
    assert_eq!(
        features("autocfg v1.5.1", Platform::Host).as_deref(),
        Some("")
    );
    assert_eq!(
        features("autocfg v1.5.1", Platform::Target).as_deref(),
        Some("std")
    );
    assert_eq!(
        features("clap_derive v4.6.9", Platform::Host).as_deref(),
        Some("default")
    );
    assert_eq!(features("heck v0.5.0", Platform::Host).as_deref(), Some(""));
    assert_eq!(features("heck v0.5.0", Platform::Target), None);
    assert_eq!(sets.len(), 6);
}
