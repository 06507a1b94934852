//! The pods the chart runs: locked down, probed on the right paths, listening
//! where the Services and the configuration say, given time to drain, and
//! started the way the image expects.

use super::{
    all_values_files, ci_file, config_value, container, containers, deployment, migration_job,
    render, render_file, rendered_config,
};
use conclave_test_support::chart::{Manifest, Render};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const CONFIG_PATH: &str = "/etc/conclave/config/conclave-homeserver.toml";

/// The pod specs the chart renders: the Deployment's and the hook Job's.
fn pod_specs(manifests: &[Manifest]) -> Vec<(&str, &Value)> {
    manifests
        .iter()
        .filter(|manifest| matches!(manifest.kind(), "Deployment" | "Job"))
        .map(|manifest| {
            (
                manifest.name(),
                &manifest.object["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn every_pod_and_container_runs_locked_down() {
    for file in all_values_files() {
        let manifests = render_file(&file);
        let specs = pod_specs(&manifests);
        assert_eq!(
            specs.len(),
            2,
            "{}: the Deployment and the Job",
            file.display()
        );
        for (name, pod_spec) in specs {
            let context = format!("{}: {name}", file.display());
            let pod = &pod_spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{context}");
            assert_eq!(pod["runAsUser"], 10001, "{context}");
            assert_eq!(pod["runAsGroup"], 10001, "{context}");
            assert_eq!(pod["fsGroup"], 10001, "{context}");
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{context}");
            assert_eq!(pod_spec["automountServiceAccountToken"], false, "{context}");
            // Service links would put CONCLAVE_CLIENT_PORT and the like in the
            // environment, which the homeserver reads as configuration.
            assert_eq!(pod_spec["enableServiceLinks"], false, "{context}");
            let all = containers(pod_spec);
            assert!(!all.is_empty(), "{context}");
            for container in all {
                let security = &container["securityContext"];
                let context = format!("{context}, container {}", container["name"]);
                assert_eq!(security["runAsNonRoot"], true, "{context}");
                assert_eq!(security["runAsUser"], 10001, "{context}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{context}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{context}");
                assert_eq!(
                    security["capabilities"]["drop"],
                    json!(["ALL"]),
                    "{context}"
                );
                assert_eq!(
                    security["seccompProfile"]["type"], "RuntimeDefault",
                    "{context}"
                );
                assert!(
                    container["resources"]["requests"]["memory"].is_string()
                        && container["resources"]["limits"]["memory"].is_string(),
                    "{context}: memory requested and limited"
                );
            }
        }
    }
}

#[test]
fn probes_ask_healthz_and_readyz_on_the_http_port() {
    for file in all_values_files() {
        let manifests = render_file(&file);
        let homeserver = container(
            &deployment(&manifests)["spec"]["template"]["spec"],
            "homeserver",
        );
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &homeserver[probe]["httpGet"];
            assert_eq!(get["path"], path, "{}: {probe}", file.display());
            assert_eq!(get["port"], "http", "{}: {probe}", file.display());
        }
    }
}

/// The container's ports by name.
fn container_ports(container: &Value) -> BTreeMap<String, u64> {
    container["ports"]
        .as_array()
        .expect("the container has ports")
        .iter()
        .map(|port| {
            (
                port["name"].as_str().expect("a named port").to_owned(),
                port["containerPort"].as_u64().expect("a port number"),
            )
        })
        .collect()
}

/// The port of a listen address of the configuration (`0.0.0.0:7400`), which
/// must listen on every address of the pod.
fn listen_port(config: &toml::Table, key: &str) -> u64 {
    let listen = config_value(config, key)
        .and_then(|value| value.as_str())
        .unwrap_or_else(|| panic!("the configuration has no {key}"));
    let (address, port) = listen.rsplit_once(':').expect("HOST:PORT");
    assert_eq!(
        address, "0.0.0.0",
        "{key} listens on every address of the pod"
    );
    port.parse().expect("a port number")
}

#[test]
fn ports_agree_between_the_configuration_the_container_and_the_services() {
    let custom_ports = Render::values(ci_file("federation")).set(
        "ports",
        json!({"client": 8400, "federation": 8401, "http": 8480}),
    );
    let mut renders: Vec<(String, Vec<Manifest>)> = all_values_files()
        .iter()
        .map(|file| (file.display().to_string(), render_file(file)))
        .collect();
    renders.push(("custom ports".to_owned(), render(&custom_ports)));
    for (context, manifests) in renders {
        let config = rendered_config(&manifests);
        let homeserver = container(
            &deployment(&manifests)["spec"]["template"]["spec"],
            "homeserver",
        );
        let ports = container_ports(homeserver);
        assert_eq!(
            ports["client"],
            listen_port(&config, "client_api.listen"),
            "{context}"
        );
        assert_eq!(
            ports["http"],
            listen_port(&config, "http.listen"),
            "{context}"
        );
        let federation_enabled = config_value(&config, "federation.certificate").is_some();
        if federation_enabled {
            assert_eq!(
                ports["federation"],
                listen_port(&config, "federation.listen"),
                "{context}"
            );
        } else {
            assert!(
                !ports.contains_key("federation"),
                "{context}: no federation port when it is off"
            );
        }
        let services: Vec<&Manifest> = manifests
            .iter()
            .filter(|manifest| manifest.kind() == "Service")
            .collect();
        let expected_services = if federation_enabled { 3 } else { 2 };
        assert_eq!(services.len(), expected_services, "{context}");
        for service in services {
            for port in service.object["spec"]["ports"].as_array().expect("ports") {
                let target = port["targetPort"].as_str().unwrap_or_else(|| {
                    panic!("{context}: {} targets a port by name", service.name())
                });
                assert!(
                    ports.contains_key(target),
                    "{context}: {} targets {target}, which the container does not declare",
                    service.name()
                );
                assert_eq!(port["name"], target, "{context}: {}", service.name());
            }
        }
    }
}

#[test]
fn the_grace_period_covers_the_pre_stop_sleep_and_the_shutdown_deadline() {
    let cases = [
        Render::values(ci_file("default")),
        Render::values(ci_file("default"))
            .set("shutdown", json!({"deadlineSeconds": 300}))
            .set("preStopSleepSeconds", json!(30)),
    ];
    for case in cases {
        let manifests = render(&case);
        let config = rendered_config(&manifests);
        let deadline = config_value(&config, "shutdown.deadline_seconds")
            .and_then(|value| value.as_integer())
            .expect("shutdown.deadline_seconds is rendered");
        let pod_spec = &deployment(&manifests)["spec"]["template"]["spec"];
        let pre_stop =
            container(pod_spec, "homeserver")["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_i64()
                .expect("a native preStop sleep");
        let grace = pod_spec["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace > deadline + pre_stop,
            "{case:?}: grace {grace} s is not above the deadline {deadline} s + preStop {pre_stop} s"
        );
    }
}

#[test]
fn the_homeserver_starts_as_the_image_expects() {
    for file in all_values_files() {
        let manifests = render_file(&file);
        let deployment = deployment(&manifests);
        let pod_spec = &deployment["spec"]["template"]["spec"];
        let homeserver = container(pod_spec, "homeserver");
        assert_eq!(
            homeserver["args"],
            json!(["--config", CONFIG_PATH, "run"]),
            "{}",
            file.display()
        );
        assert!(
            homeserver.get("command").is_none(),
            "the image's ENTRYPOINT runs"
        );
        let check = container(pod_spec, "check-config");
        assert_eq!(
            check["args"],
            json!(["--config", CONFIG_PATH, "check-config"])
        );
        assert_eq!(check["image"], homeserver["image"]);
        assert_eq!(
            check["env"], homeserver["env"],
            "check-config sees what run sees"
        );
        assert_eq!(check["volumeMounts"], homeserver["volumeMounts"]);
        let config_mount = homeserver["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|mount| mount["mountPath"] == "/etc/conclave/config")
            .expect("the configuration is mounted as a directory");
        let volume = pod_spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|volume| volume["name"] == config_mount["name"])
            .expect("the configuration's volume");
        assert!(
            volume["configMap"]["name"]
                .as_str()
                .expect("a ConfigMap")
                .ends_with("-config")
        );
        assert_eq!(
            deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            0
        );
        assert!(
            homeserver["image"]
                .as_str()
                .expect("an image")
                .starts_with("localhost/conclave-homeserver:0.1.0"),
            "{}",
            homeserver["image"]
        );
        let env_names: Vec<&str> = homeserver["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|variable| variable["name"].as_str())
            .collect();
        assert!(
            env_names.contains(&"CONCLAVE_DATABASE__URL"),
            "{env_names:?}"
        );
        let job = migration_job(&manifests);
        let migrate = container(&job["spec"]["template"]["spec"], "migrate");
        assert_eq!(migrate["image"], homeserver["image"]);
    }
}

#[test]
fn tls_material_is_mounted_where_the_configuration_names_it() {
    for name in ["federation", "existing-secrets", "cert-manager"] {
        let manifests = render(&Render::values(ci_file(name)));
        let config = rendered_config(&manifests);
        let pod_spec = &deployment(&manifests)["spec"]["template"]["spec"];
        let mounts: Vec<&str> = container(pod_spec, "homeserver")["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|mount| mount["mountPath"].as_str())
            .collect();
        for key in [
            "client_api.tls_certificate",
            "client_api.tls_private_key",
            "federation.certificate",
            "federation.private_key",
            "federation.trust_roots",
        ] {
            let path = config_value(&config, key)
                .and_then(|value| value.as_str())
                .unwrap_or_else(|| panic!("{name}: {key} is not set"));
            let (directory, _) = path.rsplit_once('/').expect("a file path");
            assert!(
                mounts.contains(&directory),
                "{name}: {key} = {path} is not in a mount: {mounts:?}"
            );
        }
        assert!(
            config_value(&config, "client_api.behind_tls_proxy").is_none(),
            "{name}: TLS at the pod needs no proxy"
        );
    }
    let plaintext = rendered_config(&render(&Render::values(ci_file("default"))));
    assert_eq!(
        config_value(&plaintext, "client_api.behind_tls_proxy").and_then(|value| value.as_bool()),
        Some(true)
    );
    assert!(config_value(&plaintext, "client_api.tls_certificate").is_none());
    assert!(config_value(&plaintext, "federation.certificate").is_none());
}
