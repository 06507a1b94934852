//! The Helm chart `helm/conclave`, rendered offline (Helm 4 as a library) with
//! every values file of its CI matrix (`helm/conclave/ci/*-values.yaml`) and
//! the examples, and checked object by object. No cluster is needed; the
//! Python tools come from the checkout's `.venv` (`scripts/services`).
//!
//! # Layout
//! - [`validation`]: `helm lint --strict`, `kubernetes-validate --strict`
//!   against Kubernetes 1.30 and 1.33, the custom resources against their
//!   CRDs' schemas.
//! - [`pods`]: security contexts, probes, ports agreeing between the
//!   Deployment, the Services and the TOML, the shutdown's grace period, the
//!   contract with the image (config path, args, the `check-config` init
//!   container).
//! - [`selectors`]: Services, the PodDisruptionBudget, the autoscaler, the
//!   ServiceMonitor and the NetworkPolicy select the homeserver's pods and
//!   nothing else; the migration hook Job.
//! - [`secrets`]: secret values only ever in Secrets; checksum annotations
//!   that roll the pods.
//! - [`values`]: wrong values refused with a clear message, optional objects,
//!   the rendered TOML, NOTES.txt, the README's values table, the chart's
//!   version and the monitoring files it ships.

mod pods;
mod secrets;
mod selectors;
mod validation;
mod values;

use conclave_test_support::chart::{Manifest, Render, chart_directory, ci_values_files, find};
use serde_json::Value;
use std::path::PathBuf;

/// The values files the chart must render: the CI matrix, and the two example
/// domains of `helm/examples`.
fn all_values_files() -> Vec<PathBuf> {
    let mut files = ci_values_files();
    let examples = chart_directory().join("../examples");
    files.push(examples.join("a.example-values.yaml"));
    files.push(examples.join("b.example-values.yaml"));
    files
}

/// The chart rendered with one values file; panics with Helm's message.
fn render_file(file: &PathBuf) -> Vec<Manifest> {
    Render::values(file)
        .run()
        .unwrap_or_else(|error| panic!("{} does not render: {error}", file.display()))
}

/// The chart rendered with `render`; panics with Helm's message.
fn render(render: &Render) -> Vec<Manifest> {
    render
        .run()
        .unwrap_or_else(|error| panic!("{render:?} does not render: {error}"))
}

/// The CI matrix's file `ci/NAME-values.yaml`.
fn ci_file(name: &str) -> PathBuf {
    let path = chart_directory().join(format!("ci/{name}-values.yaml"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The homeserver's Deployment.
fn deployment(manifests: &[Manifest]) -> &Value {
    let deployments: Vec<&Manifest> = manifests
        .iter()
        .filter(|manifest| manifest.kind() == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "one Deployment is rendered");
    &deployments[0].object
}

/// The migration hook Job.
fn migration_job(manifests: &[Manifest]) -> &Value {
    &find(manifests, "Job", "-migrate").object
}

/// Every container of a pod spec, init containers included.
fn containers(pod_spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod_spec[*list].as_array().into_iter().flatten())
        .collect()
}

/// The container named `name` of a pod spec (init containers included).
fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    containers(pod_spec)
        .into_iter()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod_spec}"))
}

/// The rendered configuration file, parsed: the ConfigMap `<fullname>-config`
/// holds exactly one key, `conclave-homeserver.toml`.
fn rendered_config(manifests: &[Manifest]) -> toml::Table {
    let config_map = find(manifests, "ConfigMap", "-config");
    let data = config_map.object["data"]
        .as_object()
        .expect("the ConfigMap has data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["conclave-homeserver.toml"],
        "the ConfigMap holds the one configuration file"
    );
    let text = data["conclave-homeserver.toml"].as_str().expect("a string");
    text.parse::<toml::Table>()
        .unwrap_or_else(|error| panic!("the rendered configuration is not TOML: {error}\n{text}"))
}

/// A value of the rendered TOML by its dotted path (`client_api.listen`).
fn config_value<'a>(config: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut keys = path.split('.');
    let mut value = config.get(keys.next()?)?;
    for key in keys {
        value = value.as_table()?.get(key)?;
    }
    Some(value)
}
