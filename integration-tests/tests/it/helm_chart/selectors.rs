//! Everything that selects pods selects the homeserver's and only those; the
//! migration hook Job runs before the release's objects, with what it needs.

use super::{all_values_files, ci_file, deployment, migration_job, render, render_file};
use conclave_test_support::chart::{Manifest, Render, find};
use serde_json::{Map, Value};

/// Whether `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector is a map");
    assert!(!selector.is_empty(), "an empty selector selects everything");
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn labels(object: &Value) -> &Value {
    &object["metadata"]["labels"]
}

#[test]
fn selectors_match_the_homeserver_pods_and_not_the_migration_job() {
    for file in all_values_files() {
        let manifests = render_file(&file);
        let context = file.display().to_string();
        let deployment = deployment(&manifests);
        let pod_labels = labels(&deployment["spec"]["template"]);
        let job_pod_labels = labels(&migration_job(&manifests)["spec"]["template"]);
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        assert!(
            selects(selector, pod_labels),
            "{context}: the Deployment selects its pods"
        );
        assert!(
            !selects(selector, job_pod_labels),
            "{context}: nor the Job's pod"
        );
        for manifest in &manifests {
            let object = &manifest.object;
            let (what, selector) = match manifest.kind() {
                "Service" => ("Service", &object["spec"]["selector"]),
                "PodDisruptionBudget" | "NetworkPolicy" => (
                    manifest.kind(),
                    if manifest.kind() == "NetworkPolicy" {
                        &object["spec"]["podSelector"]["matchLabels"]
                    } else {
                        &object["spec"]["selector"]["matchLabels"]
                    },
                ),
                _ => continue,
            };
            let name = manifest.name();
            assert!(
                selects(selector, pod_labels),
                "{context}: {what} {name} selects the pods"
            );
            assert!(
                !selects(selector, job_pod_labels),
                "{context}: {what} {name} must not select the migration Job's pod"
            );
        }
        if let Some(autoscaler) = manifests
            .iter()
            .find(|manifest| manifest.kind() == "HorizontalPodAutoscaler")
        {
            let target = &autoscaler.object["spec"]["scaleTargetRef"];
            assert_eq!(target["kind"], "Deployment", "{context}");
            assert_eq!(target["name"], deployment["metadata"]["name"], "{context}");
            assert!(
                deployment["spec"].get("replicas").is_none(),
                "{context}: the autoscaler owns replicas"
            );
        }
        if let Some(monitor) = manifests
            .iter()
            .find(|manifest| manifest.kind() == "ServiceMonitor")
        {
            let selector = &monitor.object["spec"]["selector"]["matchLabels"];
            let http = find(&manifests, "Service", "-http");
            assert!(
                selects(selector, labels(&http.object)),
                "{context}: the ServiceMonitor finds the http Service"
            );
            let endpoint = &monitor.object["spec"]["endpoints"][0];
            assert_eq!(endpoint["port"], "http");
            assert_eq!(endpoint["path"], "/metrics");
        }
    }
}

fn annotation<'a>(manifest: &'a Manifest, key: &str) -> &'a str {
    manifest.object["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "{} {} has no annotation {key}",
                manifest.kind(),
                manifest.name()
            )
        })
}

#[test]
fn the_migration_job_is_a_hook_that_runs_migrate_with_the_domain_and_database() {
    for file in all_values_files() {
        let manifests = render_file(&file);
        let context = file.display().to_string();
        let job = find(&manifests, "Job", "-migrate");
        assert_eq!(
            annotation(job, "helm.sh/hook"),
            "pre-install,pre-upgrade",
            "{context}"
        );
        assert_eq!(
            annotation(job, "helm.sh/hook-delete-policy"),
            "before-hook-creation,hook-succeeded",
            "{context}"
        );
        let job_weight: i64 = annotation(job, "helm.sh/hook-weight")
            .parse()
            .expect("a number");
        let spec = &job.object["spec"];
        assert!(spec["backoffLimit"].as_u64().is_some(), "{context}");
        assert!(
            spec["activeDeadlineSeconds"].as_u64().is_some(),
            "{context}"
        );
        let pod_spec = &spec["template"]["spec"];
        assert_eq!(pod_spec["restartPolicy"], "Never");
        let migrate = &pod_spec["containers"][0];
        assert_eq!(migrate["args"], serde_json::json!(["migrate"]), "{context}");
        let environment: Map<String, Value> = migrate["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|variable| {
                (
                    variable["name"].as_str().expect("a name").to_owned(),
                    variable.clone(),
                )
            })
            .collect();
        assert_eq!(
            environment.keys().collect::<Vec<_>>(),
            ["CONCLAVE_DATABASE__URL", "CONCLAVE_DOMAIN"],
            "{context}: env only, no configuration file"
        );
        assert!(
            migrate.get("volumeMounts").is_none(),
            "{context}: no files needed"
        );
        let reference = &environment["CONCLAVE_DATABASE__URL"]["valueFrom"]["secretKeyRef"];
        let secret_name = reference["name"].as_str().expect("a Secret");
        // A Secret the chart makes must exist before the Job: as a hook of
        // lower weight (the release's own objects come after pre-install hooks).
        if let Some(secret) = manifests
            .iter()
            .find(|manifest| manifest.kind() == "Secret" && manifest.name() == secret_name)
        {
            assert_eq!(
                annotation(secret, "helm.sh/hook"),
                "pre-install,pre-upgrade",
                "{context}"
            );
            let secret_weight: i64 = annotation(secret, "helm.sh/hook-weight")
                .parse()
                .expect("a number");
            assert!(
                secret_weight < job_weight,
                "{context}: the Secret is made first"
            );
            let key = reference["key"].as_str().expect("a key");
            assert!(
                secret.object["data"].get(key).is_some(),
                "{context}: {secret_name} has {key}"
            );
        } else {
            let deployment = deployment(&manifests);
            let deployment_env =
                deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
            assert!(
                deployment_env.contains(&format!("\"name\":\"{secret_name}\"")),
                "{context}: the Job reads {secret_name}, which neither the chart makes as a hook nor the Deployment uses"
            );
        }
    }
}

#[test]
fn without_migrations_no_hook_is_rendered() {
    let manifests = render(
        &Render::values(ci_file("default"))
            .set("migrations", serde_json::json!({"enabled": false})),
    );
    assert!(
        manifests
            .iter()
            .all(|manifest| manifest.object["metadata"]["annotations"]
                .get("helm.sh/hook")
                .is_none()),
        "{:?}",
        manifests
            .iter()
            .map(|manifest| manifest.name())
            .collect::<Vec<_>>()
    );
}
