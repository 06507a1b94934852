//! The group inspector after a real chat (issue 14): alice and bob on
//! a.example, carol on b.example, in a group alice made on a.example (its
//! hub). `conclave-homeserver admin groups ...` (the real binary, `--json`)
//! against each domain's database shows the hub's view (every member, by
//! domain, the name from the group context, each local device's cursor and
//! lag, the follower domain's outbox cursor) and b.example's copy (carol
//! only, no name, no tree); never a message's content.

use std::process::{Output, Stdio};

use conclave_test_support::cluster::homeserver_binary;
use conclave_test_support::{DatabaseChoice, TestNetwork};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::{User, group_of};

on_both_databases!(the_inspector_shows_a_real_groups_state_and_delivery);

/// Runs `conclave-homeserver admin ARGS` against the database of `domain`.
async fn admin(network: &TestNetwork, domain: &str, arguments: &[&str]) -> Output {
    let config = network.config(domain);
    Command::new(homeserver_binary())
        .arg("admin")
        .args(arguments)
        .env_clear()
        .env("CONCLAVE_DOMAIN", &config.domain)
        .env("CONCLAVE_DATABASE__URL", &config.database.url)
        .env("CONCLAVE_LOG__FILTER", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running conclave-homeserver admin")
}

/// The JSON objects a command printed, one per line.
fn json_lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{output:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

async fn inspect(network: &TestNetwork, domain: &str, group_id: &str) -> Value {
    let mut lines =
        json_lines(&admin(network, domain, &["groups", "inspect", group_id, "--json"]).await);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.remove(0)
}

/// The member whose credential identity is `identity`.
fn member<'a>(inspection: &'a Value, identity: &str) -> &'a Value {
    inspection["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|member| member["credential_identity"] == identity)
        .unwrap_or_else(|| panic!("{identity} is not among {inspection}"))
}

async fn the_inspector_shows_a_real_groups_state_and_delivery(database: DatabaseChoice) {
    let network = TestNetwork::start(&["a.example", "b.example"], database).await;
    let [alice, bob, carol] = User::register_all(
        &network,
        ["alice@a.example", "bob@a.example", "carol@b.example"],
    )
    .await;
    // The commit adding bob and carol is the log's first entry (epoch 1).
    let group_id = group_of(&alice, "project x", &[&bob, &carol]).await;
    let secret = "the plaintext nobody but members may read";
    alice.send(&group_id, secret).await;
    bob.send(&group_id, "two").await;
    alice.send(&group_id, "three").await;
    // Everyone reads (and so acknowledges) the whole log: seq 1 to 4.
    alice.receive().await;
    bob.receive().await;
    carol
        .receive_until("the three messages", |user| {
            user.history(&group_id).len() == 3
        })
        .await;
    network.outbox_drained("a.example", "b.example").await;
    let group_hex = group_id.to_string();

    let hub = inspect(&network, "a.example", &group_hex).await;
    assert!(
        !hub.to_string().contains(secret),
        "no message content: {hub}"
    );
    let summary = &hub["group"];
    assert_eq!(summary["group_id"], group_hex.as_str());
    assert_eq!(summary["name"], "project x");
    assert_eq!(summary["hub_domain"], "a.example");
    assert_eq!(summary["hosted_here"], true);
    assert_eq!(summary["epoch"], 1);
    assert_eq!(summary["member_devices"], 3);
    assert_eq!(summary["last_seq"], 4);
    assert_eq!(
        hub["members_per_domain"],
        json!({"a.example": 2, "b.example": 1})
    );
    assert_eq!(hub["members"].as_array().map(Vec::len), Some(3), "{hub}");
    for user in [&alice, &bob] {
        let device = member(&hub, &user.identity().to_string());
        assert_eq!(device["local"], true, "{device}");
        assert_eq!(device["acknowledged_seq"], 4, "{device}");
        assert_eq!(device["behind"], 0, "{device}");
        assert!(device["leaf_index"].is_u64(), "{device}");
        assert!(device["last_seen_at_ms"].is_i64(), "{device}");
    }
    let remote = member(&hub, &carol.identity().to_string());
    assert_eq!(remote["local"], false, "{remote}");
    assert!(remote["leaf_index"].is_u64(), "{remote}");
    assert_eq!(hub["log_length"], 4);
    assert_eq!(hub["first_retained_seq"], 1);
    assert_eq!(hub["cipher_suite"], 1);
    assert_eq!(
        hub["followers"],
        json!([{"domain": "b.example", "confirmed_seq": 4, "behind": 0}])
    );
    let created = hub["created_at_ms"].as_i64().expect("created");
    let last_commit = hub["last_commit_at_ms"].as_i64().expect("a commit");
    assert!(created <= last_commit, "{hub}");
    assert!(last_commit <= summary["last_activity_at_ms"].as_i64().expect("activity"));

    // b.example's copy: its own device only, no tree, no name.
    let copy = inspect(&network, "b.example", &group_hex).await;
    assert_eq!(copy["group"]["hosted_here"], false);
    assert_eq!(copy["group"]["hub_domain"], "a.example");
    assert_eq!(copy["group"]["name"], Value::Null);
    assert_eq!(copy["group"]["epoch"], 1);
    assert_eq!(copy["group"]["last_seq"], 4);
    assert_eq!(copy["members_per_domain"], json!({"b.example": 1}));
    let device = member(&copy, &carol.identity().to_string());
    assert_eq!(device["local"], true);
    assert_eq!(device["leaf_index"], Value::Null);
    assert_eq!(device["acknowledged_seq"], 4);
    assert_eq!(device["behind"], 0);
    assert_eq!(copy["cipher_suite"], Value::Null);
    assert_eq!(copy["followers"], json!([]));

    // A message bob has not read yet: he is one behind, at the hub.
    alice.send(&group_id, "four").await;
    let hub = inspect(&network, "a.example", &group_hex).await;
    assert_eq!(hub["group"]["last_seq"], 5);
    let device = member(&hub, &bob.identity().to_string());
    assert_eq!(device["acknowledged_seq"], 4, "{device}");
    assert_eq!(device["behind"], 1, "{device}");

    // Listed: by member and by a prefix of the id; another user's search
    // finds nothing.
    for query in ["bob@a.example", "carol@b.example", &group_hex[..6]] {
        let listed = json_lines(
            &admin(
                &network,
                "a.example",
                &["groups", "list", "--query", query, "--json"],
            )
            .await,
        );
        assert_eq!(listed.len(), 1, "{query}: {listed:?}");
        assert_eq!(listed[0]["group_id"], group_hex.as_str(), "{query}");
        assert_eq!(listed[0]["name"], "project x", "{query}");
    }
    let nobody = json_lines(
        &admin(
            &network,
            "a.example",
            &["groups", "list", "--query", "dave@a.example", "--json"],
        )
        .await,
    );
    assert!(nobody.is_empty(), "{nobody:?}");
    let listed = json_lines(&admin(&network, "b.example", &["groups", "list", "--json"]).await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["hosted_here"], false);

    let unknown = admin(
        &network,
        "a.example",
        &["groups", "inspect", "00ff", "--json"],
    )
    .await;
    assert!(!unknown.status.success(), "{unknown:?}");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("there is no group 00ff here"),
        "{unknown:?}"
    );
}
