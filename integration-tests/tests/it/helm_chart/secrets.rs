//! Secret values reach only Secret objects (never a ConfigMap, the pods'
//! specs or any other object), and a change of the configuration or of a
//! chart-made Secret changes the pods' checksum annotations, so they roll.

use super::{ci_file, deployment, render};
use base64::Engine;
use conclave_test_support::chart::{Manifest, Render};
use serde_json::{Value, json};

/// Every string of a JSON value, recursively.
fn strings(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(text) => found.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| strings(item, found)),
        Value::Object(map) => map.values().for_each(|item| strings(item, found)),
        _ => {}
    }
}

/// A Secret's values in clear: `data` decoded, and `stringData`.
fn secret_values(secret: &Manifest) -> Vec<String> {
    let mut values = Vec::new();
    if let Some(data) = secret.object["data"].as_object() {
        for encoded in data.values() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_str().expect("base64 text"))
                .expect("valid base64");
            values.push(String::from_utf8(bytes).expect("UTF-8"));
        }
    }
    strings(&secret.object["stringData"], &mut values);
    values
}

fn pem(label: &str, sentinel: &str) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(sentinel);
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

#[test]
fn secret_values_appear_in_secrets_only() {
    let sentinels = [
        (
            "database.url",
            "postgres://conclave:SENTINEL-DB-PASSWORD@db:5432/conclave",
        ),
        ("redis.url", "redis://:SENTINEL-REDIS-PASSWORD@redis:6380"),
    ];
    let pems = [
        (
            "clientApi.tls.certificate",
            pem("CERTIFICATE", "SENTINEL-CLIENT-CERT"),
        ),
        (
            "clientApi.tls.privateKey",
            pem("PRIVATE KEY", "SENTINEL-CLIENT-KEY"),
        ),
        (
            "federation.certificate.certificate",
            pem("CERTIFICATE", "SENTINEL-FED-CERT"),
        ),
        (
            "federation.certificate.privateKey",
            pem("PRIVATE KEY", "SENTINEL-FED-KEY"),
        ),
        (
            "federation.trustRoots.caCertificates",
            pem("CERTIFICATE", "SENTINEL-TRUST"),
        ),
    ];
    let mut values = Render::values(ci_file("federation"));
    for (path, secret) in &sentinels {
        values = values.set(path, json!(secret));
    }
    for (path, secret) in &pems {
        values = values.set(path, json!(secret));
    }
    let manifests = render(&values);
    let secret_texts: Vec<String> = manifests
        .iter()
        .filter(|manifest| manifest.kind() == "Secret")
        .flat_map(secret_values)
        .collect();
    let all_secrets: Vec<String> = sentinels
        .iter()
        .map(|(_, secret)| (*secret).to_owned())
        .chain(pems.iter().map(|(_, secret)| secret.clone()))
        .collect();
    for secret in &all_secrets {
        assert!(
            secret_texts.iter().any(|text| text == secret),
            "{secret:?} is in no Secret: the chart must store it"
        );
    }
    for manifest in manifests
        .iter()
        .filter(|manifest| manifest.kind() != "Secret")
    {
        let mut texts = Vec::new();
        strings(&manifest.object, &mut texts);
        let everything = texts.join("\n");
        for marker in ["SENTINEL", "U0VOVElORU"] {
            // U0VOVElORU is "SENTINEL" in base64: not even encoded.
            assert!(
                !everything.contains(marker),
                "{} {} holds a secret value:\n{everything}",
                manifest.kind(),
                manifest.name()
            );
        }
    }
}

#[test]
fn extra_config_cannot_carry_a_secret() {
    for (key, value) in [
        ("database", json!({"url": "postgres://u:p@db/conclave"})),
        ("redis", json!({"url": "redis://:p@redis:6379"})),
    ] {
        let error = Render::values(ci_file("default"))
            .set("extraConfig", json!({ key: value }))
            .run()
            .expect_err("a URL in extraConfig is refused");
        assert!(
            error.contains(&format!("extraConfig.{key}.url would put")),
            "{key}: {error}"
        );
    }
}

fn pod_annotation(manifests: &[Manifest], key: &str) -> String {
    deployment(manifests)["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the pods have no {key} annotation"))
        .to_owned()
}

#[test]
fn checksum_annotations_change_with_the_configuration_and_the_secrets() {
    let base = render(&Render::values(ci_file("federation")));
    let config_changed = render(
        &Render::values(ci_file("federation")).set("registration", json!({"policy": "token"})),
    );
    let secret_changed = render(&Render::values(ci_file("federation")).set(
        "database.url",
        json!("postgres://conclave:another-password@db:5432/conclave"),
    ));
    let certificate_changed = render(&Render::values(ci_file("federation")).set(
        "federation.certificate.certificate",
        json!(pem("CERTIFICATE", "renewed")),
    ));
    let config = |manifests: &[Manifest]| pod_annotation(manifests, "checksum/config");
    let secrets = |manifests: &[Manifest]| pod_annotation(manifests, "checksum/secrets");
    assert_ne!(
        config(&base),
        config(&config_changed),
        "a configuration change rolls the pods"
    );
    assert_eq!(secrets(&base), secrets(&config_changed));
    assert_ne!(
        secrets(&base),
        secrets(&secret_changed),
        "a new database URL rolls the pods"
    );
    assert_eq!(
        config(&base),
        config(&secret_changed),
        "the URL is not in the configuration"
    );
    assert_ne!(
        secrets(&base),
        secrets(&certificate_changed),
        "a new certificate rolls the pods"
    );
    let again = render(&Render::values(ci_file("federation")));
    assert_eq!(
        config(&base),
        config(&again),
        "the same values give the same checksums"
    );
    assert_eq!(secrets(&base), secrets(&again));
}
