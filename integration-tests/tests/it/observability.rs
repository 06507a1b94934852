//! The operator's files in `observability/`: the Prometheus alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`); the
//! dashboard's queries parse (promtool again); rules and dashboard query only
//! metrics a homeserver exports; each alert has a severity, a summary, a
//! description and a runbook section.
//!
//! promtool comes with Debian's `prometheus` package; when it is missing the
//! tests fail and say so (`PROMTOOL` names another binary).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every sample name a homeserver's `/metrics` exposes, read from the
/// tables of `docs/metrics.md` (`| \`name\` | type | ...`; a histogram
/// stands for its `_bucket`, `_sum` and `_count` samples), and `up`, which
/// Prometheus adds per target. The homeserver's own test keeps that document
/// complete, so a query of a metric that does not exist fails here.
fn known_metrics() -> BTreeSet<String> {
    let document = observability().with_file_name("docs").join("metrics.md");
    let text = std::fs::read_to_string(&document)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", document.display()));
    let mut known = BTreeSet::from(["up".to_owned()]);
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", "`name`", "type", ...] for a table row.
        let (Some(name), Some(kind)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(name) = name
            .strip_prefix('`')
            .and_then(|name| name.strip_suffix('`'))
        else {
            continue;
        };
        match *kind {
            "counter" | "gauge" => {
                known.insert(name.to_owned());
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.insert(format!("{name}{suffix}"));
                }
            }
            _ => {}
        }
    }
    assert!(
        known.len() > 20,
        "{} lists too few metrics: {known:?}",
        document.display()
    );
    known
}

fn observability() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .join("observability")
}

#[test]
fn promtool_accepts_the_alert_rules() {
    promtool(&["check", "rules", "alerts.yml"]);
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let output = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn the_alert_rules_query_known_metrics_and_carry_what_an_operator_needs() {
    let path = observability().join("prometheus/alerts.yml");
    let rules: serde_norway::Value = serde_norway::from_str(&read(&path))
        .unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()));
    let runbook = read(&observability().join("README.md"));
    let known = known_metrics();
    let mut alerts = Vec::new();
    for group in sequence(&rules["groups"]) {
        for rule in sequence(&group["rules"]) {
            let alert = text(&rule["alert"]);
            let expr = text(&rule["expr"]);
            assert_known(&known, &format!("alert {alert}"), expr);
            let severity = text(&rule["labels"]["severity"]);
            assert!(
                ["warning", "critical"].contains(&severity),
                "alert {alert}: severity {severity:?}"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    !text(&rule["annotations"][annotation]).is_empty(),
                    "alert {alert} has no {annotation}"
                );
            }
            let link = text(&rule["annotations"]["runbook"]);
            let anchor = link
                .strip_prefix("observability/README.md#")
                .unwrap_or_else(|| panic!("alert {alert}'s runbook {link:?} is not in the README"));
            let has_section = runbook.lines().any(|line| {
                line.strip_prefix("### ")
                    .is_some_and(|heading| heading.trim().to_lowercase() == anchor)
            });
            assert!(
                has_section,
                "alert {alert}: observability/README.md has no section for #{anchor}"
            );
            alerts.push(alert.to_owned());
        }
    }
    for expected in [
        "ConclaveFederationOutboxLagging",
        "ConclaveFederationOutboxGrowing",
        "ConclaveFederationPeerDown",
        "ConclaveCertificateExpiringSoon",
        "ConclaveFederationPeerCertificateExpiringSoon",
        "ConclaveGrpcErrorRatioHigh",
        "ConclaveGrpcLatencyHigh",
        "ConclaveDevicesLowOnKeyPackages",
        "ConclaveRedisDown",
        "ConclaveHomeserverDown",
    ] {
        assert!(
            alerts.iter().any(|alert| alert == expected),
            "no alert {expected}"
        );
    }
}

#[test]
fn the_dashboard_queries_known_metrics_through_its_variables() {
    let path = observability().join("grafana/conclave.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()));
    assert!(
        dashboard["schemaVersion"]
            .as_u64()
            .is_some_and(|version| version >= 36),
        "schemaVersion"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables")
        .iter()
        .map(|variable| variable["name"].as_str().expect("a variable's name"))
        .collect();
    assert_eq!(variables, ["datasource", "domain", "instance"]);
    let known = known_metrics();
    let mut queried = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().expect("a panel's title");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title}'s data source"
        );
        let targets = panel["targets"].as_array().expect("a panel's targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target's expr");
            assert_known(&known, &format!("panel {title}"), expr);
            assert!(
                expr.contains(r#"domain=~"$domain""#) && expr.contains(r#"instance=~"$instance""#),
                "panel {title} ignores the domain or instance variable: {expr}"
            );
            queried.extend(metric_names(expr));
        }
    }
    // Every metric has a panel (the process's start time and virtual memory
    // aside, which say little).
    let unshown: Vec<&String> = known
        .iter()
        .filter(|name| !queried.contains(*name))
        .filter(|name| !name.ends_with("_sum") && !name.ends_with("_count"))
        .filter(|name| {
            !["process_start_time_seconds", "process_virtual_memory_bytes"].contains(&name.as_str())
        })
        .collect();
    assert!(unshown.is_empty(), "no panel shows {unshown:?}");
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let path = observability().join("grafana/conclave.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()));
    // Each query as a recording rule, Grafana's variables replaced by what
    // they stand for, so that `promtool check rules` parses it.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("a target's expr")
                .replace("$__rate_interval", "5m")
                .replace("$domain", ".*")
                .replace("$instance", ".*");
            count += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query_{count}\n        expr: {}\n",
                serde_json::Value::String(expr)
            ));
        }
    }
    assert!(count > 20, "only {count} queries");
    let directory = tempfile::tempdir().expect("a temporary directory");
    let rules_path = directory.path().join("dashboard.yml");
    std::fs::write(&rules_path, rules).expect("write the rules");
    let output = promtool(&["check", "rules", rules_path.to_str().expect("a UTF-8 path")]);
    assert!(output.contains(&format!("{count} rules found")), "{output}");
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (service, le) (rate(a_bucket{code=~"x|y", le!="1"}[$__rate_interval]))) / ignoring(code) group_left(kind) b_total offset 5m > 1e3 and on (peer) max without (instance) (c) - time() < 14 * 86400"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["a_bucket", "b_total", "c"]
    );
}

/// Runs `promtool ARGS` in `observability/prometheus/`; panics with its output
/// unless it succeeds, or when it cannot be found.
fn promtool(args: &[&str]) -> String {
    let binary = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let output = Command::new(&binary)
        .args(args)
        .current_dir(observability().join("prometheus"))
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} ({error}): install Debian's prometheus package \
                 (apt-get install -y --no-install-recommends prometheus), or set PROMTOOL",
                binary.to_string_lossy()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        output.status
    );
    text
}

fn assert_known(known: &BTreeSet<String>, place: &str, expr: &str) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{place} queries no metric: {expr}");
    let unknown: Vec<&String> = names.iter().filter(|name| !known.contains(*name)).collect();
    assert!(
        unknown.is_empty(),
        "{place} queries {unknown:?}, which no homeserver exports: {expr}"
    );
}

/// The metric names a PromQL expression selects: identifiers outside label
/// matchers, ranges, strings and label lists, that are neither functions,
/// keywords nor numbers. Enough for the expressions of this repository, not a
/// PromQL parser.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LIST_KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may be followed by `by (...)` rather than `(`.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let characters: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut braces, mut in_range, mut label_list_next, mut in_label_list) =
        (0usize, false, false, false);
    let mut index = 0;
    while index < characters.len() {
        let character = characters[index];
        match character {
            '"' | '\'' | '`' => {
                index += 1;
                while index < characters.len() && characters[index] != character {
                    if characters[index] == '\\' {
                        index += 1;
                    }
                    index += 1;
                }
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => in_range = true,
            ']' => in_range = false,
            '(' if label_list_next => {
                in_label_list = true;
                label_list_next = false;
            }
            ')' if in_label_list => in_label_list = false,
            _ if character.is_ascii_digit() || character == '$' => {
                // A number or duration (`1e3`, `0.99`, `5m`), or a Grafana
                // variable.
                while index + 1 < characters.len()
                    && (characters[index + 1].is_ascii_alphanumeric()
                        || ['_', '.', '{', '}'].contains(&characters[index + 1]))
                {
                    index += 1;
                }
            }
            _ if character.is_ascii_alphabetic() || character == '_' || character == ':' => {
                let start = index;
                while index + 1 < characters.len()
                    && (characters[index + 1].is_ascii_alphanumeric()
                        || ['_', ':'].contains(&characters[index + 1]))
                {
                    index += 1;
                }
                let identifier: String = characters[start..=index].iter().collect();
                let next = characters[index + 1..]
                    .iter()
                    .find(|character| !character.is_whitespace());
                if braces > 0 || in_range || in_label_list {
                    // A label name or value.
                } else if LABEL_LIST_KEYWORDS.contains(&identifier.as_str()) {
                    label_list_next = true;
                } else if KEYWORDS.contains(&identifier.to_lowercase().as_str())
                    || next == Some(&'(')
                {
                    // A keyword, a function or an aggregation.
                } else {
                    names.insert(identifier);
                }
            }
            _ => {}
        }
        index += 1;
    }
    names
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn sequence(value: &serde_norway::Value) -> &Vec<serde_norway::Value> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
}

fn text(value: &serde_norway::Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}
