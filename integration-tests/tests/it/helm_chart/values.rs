//! What the values do: wrong ones refused with a message naming them, each
//! optional object off by default and rendered when enabled, the TOML they
//! render, NOTES.txt's warnings, the README's table of them, and the files the
//! chart ships (its version, the alert rules and the dashboard).

use super::{ci_file, config_value, deployment, render, rendered_config};
use conclave_test_support::chart::{
    Manifest, Render, chart_directory, find, repository_root, run_python_tool,
};
use serde_json::json;

fn refused(render: Render) -> String {
    match render.run() {
        Ok(manifests) => panic!(
            "{render:?} was accepted: {:?}",
            manifests
                .iter()
                .map(|manifest| manifest.name())
                .collect::<Vec<_>>()
        ),
        Err(message) => message,
    }
}

#[test]
fn wrong_values_are_refused_with_a_message_naming_them() {
    let default = || Render::values(ci_file("default"));
    let cases: Vec<(&str, Render, &[&str])> = vec![
        (
            "replicas as a word",
            default().set("replicas", json!("two")),
            &["/replicas", "want integer"],
        ),
        (
            "an unknown top-level key",
            default().set("replica", json!(3)),
            &["additional properties 'replica' not allowed"],
        ),
        (
            "a typo in a section",
            default().set("database.maxConnection", json!(3)),
            &["/database", "'maxConnection' not allowed"],
        ),
        (
            "an admin session that never idles out",
            default().set("admin.sessionIdleMinutes", json!(0)),
            &["/admin/sessionIdleMinutes", "minimum"],
        ),
        (
            "a domain with capitals and _",
            default().set("domain", json!("A_B.example")),
            &["/domain", "does not match pattern"],
        ),
        (
            "a plaintext peer endpoint",
            Render::values(ci_file("federation")).set(
                "federation.peers",
                json!({"b.example": {"endpoint": "http://federation.b.example:7401"}}),
            ),
            &[
                "/federation/peers/b.example/endpoint",
                "does not match pattern",
            ],
        ),
        (
            "a database URL of another kind",
            default().set("database.url", json!("mysql://db/conclave")),
            &["/database/url"],
        ),
        (
            "a shutdown deadline too long",
            default().set("shutdown.deadlineSeconds", json!(601)),
            &["/shutdown/deadlineSeconds", "maximum"],
        ),
        (
            "an unknown registration policy",
            default().set("registration.policy", json!("invite")),
            &["/registration/policy"],
        ),
        (
            "a sampling ratio above 1",
            default().set("telemetry.samplingRatio", json!(1.5)),
            &["/telemetry/samplingRatio"],
        ),
        (
            "a resource attribute the server sets",
            default().set("telemetry.resourceAttributes", json!({"service.name": "x"})),
            &["telemetry.resourceAttributes names \"service.name\", which the server sets itself"],
        ),
        (
            "no domain",
            Render::default().set("database.url", json!("postgres://db/conclave")),
            &["/domain", "minLength"],
        ),
        (
            "no database",
            Render::default().set("domain", json!("a.example")),
            &[
                "a database is required",
                "database.url",
                "database.existingSecret",
            ],
        ),
        (
            "the database URL given two ways",
            default().set("database.existingSecret", json!("mine")),
            &["database.url and database.existingSecret are both set"],
        ),
        (
            "federation without a certificate",
            default().set(
                "federation",
                json!({"enabled": true, "trustRoots": {"existingSecret": "ca"}}),
            ),
            &["federation.certificate needs exactly one source, got 0"],
        ),
        (
            "a certificate given two ways",
            Render::values(ci_file("federation"))
                .set("federation.certificate.existingSecret", json!("mine")),
            &["federation.certificate needs exactly one source, got 2"],
        ),
        (
            "peers with federation off",
            default().set(
                "federation.peers",
                json!({"b.example": {"endpoint": "https://b.example"}}),
            ),
            &["federation.peers is set but federation.enabled is false"],
        ),
        (
            "a peer that is not a domain",
            Render::values(ci_file("federation")).set(
                "federation.peers",
                json!({"B_x": {"endpoint": "https://x"}}),
            ),
            &["federation.peers has the key \"B_x\", which is not a domain"],
        ),
        (
            "the own domain as a peer",
            Render::values(ci_file("federation")).set(
                "federation.peers",
                json!({"a.example": {"endpoint": "https://a.example"}}),
            ),
            &["federation.peers lists a.example, this homeserver's own domain"],
        ),
        (
            "extraConfig overriding a modelled value",
            default().set(
                "extraConfig",
                json!({"limits": {"call_deadline_seconds": 5}}),
            ),
            &["extraConfig.limits.call_deadline_seconds is rendered by the chart from a value"],
        ),
        (
            "an Ingress with TLS at the pod",
            Render::values(ci_file("federation")).set("clientApi.ingress.enabled", json!(true)),
            &["clientApi.ingress.enabled with clientApi.tls.enabled"],
        ),
        (
            "plaintext client gRPC on a LoadBalancer",
            default().set("clientApi.service.type", json!("LoadBalancer")),
            &["clientApi.service.type LoadBalancer without clientApi.tls.enabled"],
        ),
        (
            "a pod label the chart selects by",
            default().set("podLabels", json!({"app.kubernetes.io/name": "other"})),
            &["podLabels has \"app.kubernetes.io/name\", a label the chart sets itself"],
        ),
        (
            "a Redis URL on a port the NetworkPolicy blocks",
            Render::values(ci_file("federation"))
                .set("networkPolicy.egress.redisPort", json!(6379)),
            &["redis.url uses port 6380 but networkPolicy.egress.redisPort is 6379"],
        ),
        (
            "a database URL on a port the NetworkPolicy blocks",
            Render::values(ci_file("full-cluster")).set(
                "database.url",
                json!("postgres://u:p@db.internal:6432/conclave"),
            ),
            &["database.url uses port 6432 but networkPolicy.egress.databasePort is 5432"],
        ),
    ];
    for (case, render, expected) in cases {
        let message = refused(render);
        for fragment in expected {
            assert!(
                message.contains(fragment),
                "{case}: {fragment:?} is not in\n{message}"
            );
        }
    }
}

/// The kinds and name suffixes of the optional objects, with the values that
/// turn each on.
fn optional_objects() -> Vec<(&'static str, &'static str, Render)> {
    let default = || Render::values(ci_file("default"));
    vec![
        ("HorizontalPodAutoscaler", "conclave", default().set("autoscaling.enabled", json!(true))),
        ("PodDisruptionBudget", "conclave", default().set("podDisruptionBudget.enabled", json!(true))),
        ("ServiceMonitor", "conclave", default().set("metrics.serviceMonitor.enabled", json!(true))),
        ("PrometheusRule", "conclave", default().set("metrics.prometheusRule.enabled", json!(true))),
        ("ConfigMap", "-dashboard", default().set("metrics.grafanaDashboard.enabled", json!(true))),
        ("NetworkPolicy", "conclave", default().set("networkPolicy.enabled", json!(true))),
        ("Ingress", "-client", default().set("clientApi.ingress.enabled", json!(true))),
        (
            "Certificate",
            "-federation-tls",
            default().set(
                "federation",
                json!({"enabled": true, "certificate": {"certManager": {"enabled": true, "issuerRef": {"name": "ca"}}},
                       "trustRoots": {"existingSecret": "ca"}}),
            ),
        ),
        ("Service", "-federation", Render::values(ci_file("existing-secrets"))),
    ]
}

#[test]
fn each_optional_object_is_absent_by_default_and_rendered_when_enabled() {
    let defaults = render(&Render::values(ci_file("default")));
    let rendered = |manifests: &[Manifest], kind: &str, suffix: &str| {
        manifests
            .iter()
            .any(|manifest| manifest.kind() == kind && manifest.name().ends_with(suffix))
    };
    for (kind, suffix, enabled) in optional_objects() {
        assert!(
            !rendered(&defaults, kind, suffix),
            "{kind} *{suffix} is rendered by default"
        );
        assert!(
            rendered(&render(&enabled), kind, suffix),
            "{kind} *{suffix} is missing with {enabled:?}"
        );
    }
    let budget = |values: Render| {
        let manifests = render(&values);
        find(&manifests, "PodDisruptionBudget", "conclave").object["spec"].clone()
    };
    let by_default =
        budget(Render::values(ci_file("default")).set("podDisruptionBudget.enabled", json!(true)));
    assert_eq!(by_default["maxUnavailable"], 1);
    assert!(by_default.get("minAvailable").is_none());
    let minimum = budget(Render::values(ci_file("default")).set(
        "podDisruptionBudget",
        json!({"enabled": true, "minAvailable": "50%"}),
    ));
    assert_eq!(minimum["minAvailable"], "50%");
    assert!(
        minimum.get("maxUnavailable").is_none(),
        "one of the two, as policy/v1 requires"
    );
    let mut kinds: Vec<&str> = defaults.iter().map(|manifest| manifest.kind()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Job",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount"
        ],
        "the default install"
    );
}

#[test]
fn the_toml_maps_the_values_and_lists_peers_by_quoted_domain() {
    let manifests = render(
        &Render::values(ci_file("federation"))
            .set("limits.callDeadlineSeconds", json!(45))
            .set("telemetry.samplingRatio", json!(0.5))
            .set("telemetry.resourceAttributes", json!({"deployment.environment": "production"}))
            .set("extraConfig", json!({"limits": {"a_future_key": 7}, "a_future_section": {"name": "quoted \"value\""}})),
    );
    let config = rendered_config(&manifests);
    let integer = |key: &str| config_value(&config, key).and_then(|value| value.as_integer());
    let string = |key: &str| config_value(&config, key).and_then(|value| value.as_str());
    assert_eq!(string("domain"), Some("a.example"));
    assert_eq!(integer("limits.call_deadline_seconds"), Some(45));
    assert_eq!(
        config_value(&config, "telemetry.sampling_ratio").and_then(|value| value.as_float()),
        Some(0.5)
    );
    assert_eq!(string("log.format"), Some("json"));
    assert_eq!(string("redis.key_prefix"), Some("conclave"));
    assert_eq!(integer("shutdown.deadline_seconds"), Some(20));
    assert_eq!(integer("limits.a_future_key"), Some(7));
    assert_eq!(string("a_future_section.name"), Some("quoted \"value\""));
    assert!(
        config_value(&config, "database.url").is_none(),
        "the URL comes from a Secret"
    );
    assert!(
        config_value(&config, "redis.url").is_none(),
        "the URL comes from a Secret"
    );
    let attributes = config_value(&config, "telemetry.resource_attributes")
        .and_then(|value| value.as_table())
        .expect("resource attributes");
    assert_eq!(
        attributes["deployment.environment"].as_str(),
        Some("production")
    );
    let peers = config_value(&config, "federation.peers")
        .and_then(|value| value.as_table())
        .expect("peers");
    assert_eq!(peers.keys().collect::<Vec<_>>(), ["b.example", "c.example"]);
    assert_eq!(
        peers["b.example"]["endpoint"].as_str(),
        Some("https://federation.b.example:7401")
    );
    assert_eq!(
        peers["b.example"]["pinned_sha256"].as_str(),
        Some("5b6cb37cbc6d8811fd28b37077592c8fe6913027a323033b8852d9723d012671")
    );
    assert!(peers["c.example"].get("pinned_sha256").is_none());
    // Every section the homeserver reads is rendered explicitly.
    for section in [
        "database",
        "client_api",
        "http",
        "registration",
        "key_packages",
        "groups",
        "federation",
        "limits",
        "shutdown",
        "redis",
        "leases",
        "telemetry",
        "log",
        "admin",
    ] {
        assert!(
            config.get(section).is_some_and(|value| value.is_table()),
            "[{section}] is missing"
        );
    }
    assert_eq!(
        config_value(&config, "admin.enabled").and_then(|value| value.as_bool()),
        Some(true)
    );
    assert_eq!(integer("admin.session_idle_minutes"), Some(30));
    let replicas = deployment(&manifests)["spec"]["replicas"].as_u64();
    assert_eq!(replicas, Some(2));
}

#[test]
fn notes_warn_about_what_needs_attention() {
    let notes = |render: Render| {
        render
            .notes()
            .unwrap_or_else(|error| panic!("no NOTES: {error}"))
    };
    let default = notes(Render::values(ci_file("default")));
    assert!(
        default.contains("WARNING: 2 replicas without Redis"),
        "{default}"
    );
    assert!(default.contains("behind_tls_proxy = true"), "{default}");
    assert!(default.contains("federation is disabled"), "{default}");
    assert!(default.contains("/readyz"), "{default}");
    let federation = notes(Render::values(ci_file("federation")));
    assert!(!federation.contains("WARNING"), "{federation}");
    assert!(
        !federation.contains("federation is disabled"),
        "{federation}"
    );
    assert!(
        federation.contains("service chat-federation"),
        "{federation}"
    );
    assert!(
        federation.contains("Peers configured here: b.example, c.example"),
        "{federation}"
    );
}

#[test]
fn the_readme_values_table_is_in_sync_with_values_yaml() {
    let script = repository_root().join("helm/tools/values_table.py");
    let (success, printed) = run_python_tool("python", [script.as_os_str(), "--check".as_ref()]);
    assert!(success, "{printed}");
}

#[test]
fn the_chart_deploys_the_workspace_version() {
    let cargo = std::fs::read_to_string(repository_root().join("Cargo.toml")).expect("Cargo.toml");
    let workspace: toml::Table = cargo.parse().expect("Cargo.toml is TOML");
    let version = workspace["workspace"]["package"]["version"]
        .as_str()
        .expect("a workspace version");
    let chart_text =
        std::fs::read_to_string(chart_directory().join("Chart.yaml")).expect("Chart.yaml");
    let chart: serde_norway::Value =
        serde_norway::from_str(&chart_text).expect("Chart.yaml is YAML");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(version),
        "Chart.yaml's appVersion"
    );
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    let manifests = render(&Render::values(ci_file("default")));
    let image = deployment(&manifests)["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image")
        .to_owned();
    assert!(image.ends_with(&format!(":{version}")), "{image}");
}

#[test]
fn the_chart_ships_the_observability_alert_rules_and_dashboard() {
    for (original, in_chart) in [
        ("observability/prometheus/alerts.yml", "files/alerts.yml"),
        ("observability/grafana/conclave.json", "files/conclave.json"),
    ] {
        let original_text =
            std::fs::read_to_string(repository_root().join(original)).expect(original);
        let chart_text = std::fs::read_to_string(chart_directory().join(in_chart)).expect(in_chart);
        assert!(
            original_text == chart_text,
            "{original} and helm/conclave/{in_chart} differ: keep {original} a symlink to the chart's file"
        );
    }
    let manifests = render(
        &Render::values(ci_file("default"))
            .set("metrics.prometheusRule.enabled", json!(true))
            .set("metrics.grafanaDashboard.enabled", json!(true)),
    );
    let rules_text =
        std::fs::read_to_string(chart_directory().join("files/alerts.yml")).expect("alerts");
    let rules: serde_json::Value = serde_norway::from_str(&rules_text).expect("alerts.yml is YAML");
    let rule = find(&manifests, "PrometheusRule", "conclave");
    assert_eq!(
        rule.object["spec"]["groups"], rules["groups"],
        "the PrometheusRule holds the rules as written"
    );
    let dashboard = find(&manifests, "ConfigMap", "-dashboard");
    assert_eq!(
        dashboard.object["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
    let dashboard_text =
        std::fs::read_to_string(chart_directory().join("files/conclave.json")).expect("dashboard");
    let shipped: serde_json::Value = serde_json::from_str(
        dashboard.object["data"]["conclave.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("JSON");
    let original: serde_json::Value = serde_json::from_str(&dashboard_text).expect("JSON");
    assert_eq!(shipped, original);
}

#[test]
fn plaintext_behind_a_tls_load_balancer_and_no_pre_stop_sleep_render_when_asked() {
    let manifests = render(
        &Render::values(ci_file("default"))
            .set("clientApi.service.type", json!("LoadBalancer"))
            .set("clientApi.service.allowPlaintext", json!(true))
            .set("preStopSleepSeconds", json!(0)),
    );
    let client_service = find(&manifests, "Service", "-client");
    assert_eq!(client_service.object["spec"]["type"], "LoadBalancer");
    // A preStop sleep of 0 is refused before Kubernetes 1.33: no hook at all.
    let homeserver = super::container(
        &deployment(&manifests)["spec"]["template"]["spec"],
        "homeserver",
    );
    assert!(
        homeserver.get("lifecycle").is_none(),
        "a preStop hook was rendered for a sleep of 0: {homeserver}"
    );
}

#[test]
fn the_migration_job_takes_its_own_environment_account_and_the_pod_annotations() {
    let manifests = render(
        &Render::values(ci_file("default"))
            .set(
                "podAnnotations",
                json!({"sidecar.istio.io/inject": "false"}),
            )
            .set("migrations.serviceAccountName", json!("database-migrator"))
            .set(
                "migrations.extraEnv",
                json!([{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]),
            )
            .set(
                "extraEnv",
                json!([{"name": "CONCLAVE_LOG__FILTER", "value": "debug"}]),
            ),
    );
    let pod = &super::migration_job(&manifests)["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "database-migrator");
    let names: Vec<&str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the Job's container has an environment")
        .iter()
        .map(|variable| variable["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["CONCLAVE_DOMAIN", "CONCLAVE_DATABASE__URL", "HTTPS_PROXY"],
        "the Job gets migrations.extraEnv, not the pods' extraEnv"
    );
}

#[test]
fn the_admin_console_is_reachable_only_from_whom_the_values_name() {
    let policy = |render: Render| {
        let manifests = super::render(&render.set("networkPolicy.enabled", json!(true)));
        find(&manifests, "NetworkPolicy", "conclave").object.clone()
    };
    let http_rules = |policy: &serde_json::Value| -> Vec<serde_json::Value> {
        policy["spec"]["ingress"]
            .as_array()
            .expect("ingress rules")
            .iter()
            .filter(|rule| rule["ports"][0]["port"] == "http")
            .cloned()
            .collect()
    };
    let default = policy(Render::values(ci_file("default")));
    assert_eq!(http_rules(&default).len(), 1, "only monitoring: {default}");
    let ingress_controller = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]);
    let opened = policy(Render::values(ci_file("default")).set(
        "networkPolicy.ingress.adminFrom",
        ingress_controller.clone(),
    ));
    let rules = http_rules(&opened);
    assert_eq!(rules.len(), 2, "{opened}");
    assert_eq!(rules[1]["from"], ingress_controller);
    let console_off = policy(
        Render::values(ci_file("default"))
            .set("networkPolicy.ingress.adminFrom", ingress_controller)
            .set("admin.enabled", json!(false)),
    );
    assert_eq!(http_rules(&console_off).len(), 1, "{console_off}");
    let notes = Render::values(ci_file("default"))
        .notes()
        .unwrap_or_else(|error| panic!("no NOTES: {error}"));
    assert!(notes.contains("admin grant USER"), "{notes}");
    assert!(notes.contains("/admin/"), "{notes}");
}
