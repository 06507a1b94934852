//! The chart passes `helm lint --strict` and every object it renders passes
//! the Kubernetes API's schemas (1.30 and 1.33, strictly) or, for custom
//! resources, their CRDs' schemas.

use super::{all_values_files, render_file};
use conclave_test_support::chart::{Render, repository_root, run_python_tool, write_manifests};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The custom resources the chart may render; kubernetes-validate has no
/// schema for them (it warns and passes), so
/// `helm/tools/validate_custom_resources.py` checks them against their CRDs.
const CUSTOM_KINDS: [&str; 3] = ["Certificate", "ServiceMonitor", "PrometheusRule"];

#[test]
fn helm_lint_strict_finds_nothing_with_every_values_file() {
    for file in all_values_files() {
        if let Err(findings) = Render::values(&file).lint() {
            panic!("helm lint --strict with {}:\n{findings}", file.display());
        }
    }
}

#[test]
fn every_rendered_object_is_valid_for_kubernetes_1_30_and_1_33() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let mut core_files: Vec<PathBuf> = Vec::new();
    let mut custom_files: Vec<PathBuf> = Vec::new();
    for (index, values_file) in all_values_files().iter().enumerate() {
        let manifests = render_file(values_file);
        let subdirectory = directory.path().join(index.to_string());
        std::fs::create_dir(&subdirectory).expect("a subdirectory");
        for (manifest, path) in manifests
            .iter()
            .zip(write_manifests(&manifests, &subdirectory))
        {
            if CUSTOM_KINDS.contains(&manifest.kind()) {
                custom_files.push(path);
            } else {
                core_files.push(path);
            }
        }
    }
    // Both versions at once: each run reads its schemas for a while.
    let runs: Vec<(&str, (bool, String))> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["1.30.0", "1.33.0"]
            .into_iter()
            .map(|version| {
                let core_files = &core_files;
                scope.spawn(move || {
                    let mut arguments = vec![
                        "--strict".to_owned(),
                        "--kubernetes-version".to_owned(),
                        version.to_owned(),
                    ];
                    arguments.extend(core_files.iter().map(|path| path.display().to_string()));
                    (version, run_python_tool("kubernetes-validate", &arguments))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("kubernetes-validate ran"))
            .collect()
    });
    for (version, (success, printed)) in runs {
        assert!(
            success,
            "kubernetes-validate --strict -k {version} refused:\n{printed}"
        );
        // A kind it has no schema for only gets a warning: none may reach
        // this list.
        let passed: BTreeSet<&str> = printed
            .lines()
            .filter(|line| line.starts_with("INFO") && line.contains(" passed for resource "))
            .filter_map(|line| line.split_whitespace().nth(1))
            .collect();
        for path in &core_files {
            assert!(
                passed.contains(path.display().to_string().as_str()),
                "kubernetes-validate -k {version} did not pass {}:\n{printed}",
                path.display()
            );
        }
    }
    assert!(
        !custom_files.is_empty(),
        "the CI matrix renders no custom resource: the full-cluster and cert-manager files should"
    );
    let script = repository_root().join("helm/tools/validate_custom_resources.py");
    let mut arguments = vec![script.display().to_string()];
    arguments.extend(custom_files.iter().map(|path| path.display().to_string()));
    let (success, printed) = run_python_tool("python", &arguments);
    assert!(
        success,
        "custom resources refused by their CRDs' schemas:\n{printed}"
    );
    let valid = printed
        .lines()
        .filter(|line| line.starts_with("OK "))
        .count();
    assert_eq!(valid, custom_files.len(), "{printed}");
    let kinds: BTreeSet<&str> = CUSTOM_KINDS
        .iter()
        .copied()
        .filter(|kind| printed.contains(&format!(" {kind}/")))
        .collect();
    assert_eq!(
        kinds,
        CUSTOM_KINDS.into_iter().collect(),
        "every custom kind is rendered and validated by some values file"
    );
}

#[test]
fn the_crd_check_refuses_an_unknown_field_and_a_missing_required_one() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let typo = directory.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\n\
         spec:\n  selector: {matchLabels: {a: b}}\n  endpoints:\n    - port: http\n      intervall: 30s\n",
    )
    .expect("written");
    let missing = directory.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: x}\n\
         spec:\n  dnsNames: [a.example]\n  issuerRef: {name: ca}\n",
    )
    .expect("written");
    let script = repository_root().join("helm/tools/validate_custom_resources.py");
    let (success, printed) = run_python_tool(
        "python",
        [script.as_os_str(), typo.as_os_str(), missing.as_os_str()],
    );
    assert!(!success, "{printed}");
    assert!(
        printed.contains("/spec/endpoints/0/intervall: not a field of the CRD's schema"),
        "{printed}"
    );
    assert!(
        printed.contains("/spec/secretName: Field required"),
        "{printed}"
    );
}
