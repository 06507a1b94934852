//! Account requests the server must refuse, each with the right code, a message
//! that names the problem, and no change to any account.

use crate::harness::{
    Api, TestDevice, assert_refused, device, key_packages, login_request, new_signer,
    register_request, start, start_with_api, with_authorization,
};
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::account_service_client::AccountServiceClient;
use conclave_proto::client::v1::key_package_service_client::KeyPackageServiceClient;
use conclave_test_support::DatabaseChoice;
use tonic::transport::Channel;
use tonic::{Code, Status};

on_both_databases!(
    malformed_registrations_change_nothing,
    bad_logins_change_nothing,
    hidden_characters_in_names_are_refused_by_name,
    display_names_are_stored_in_nfc,
    requests_without_a_valid_token_are_unauthenticated,
);

/// What must not change when a request is refused: alice's devices, and that bob
/// has no account (logging in as bob fails as for any unknown user).
async fn assert_unchanged(case: &str, api: &Api, alice: &TestDevice) {
    assert_eq!(
        api.device_ids(alice).await,
        [alice.device_id.as_str()],
        "{case}: alice's devices changed"
    );
    let bob = api.try_login(login_request("bob", &new_signer())).await;
    assert_refused(
        case,
        bob,
        Code::Unauthenticated,
        "wrong username or password",
    );
}

async fn malformed_registrations_change_nothing(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let alice = api.register("alice").await;
    let bob_signer = new_signer();
    let bob = || register_request("bob", &bob_signer);
    let named = |username: &str| register_request(username, &bob_signer);
    let long_name = "b".repeat(33);

    for (case, request, code, message) in [
        (
            "missing device",
            proto::RegisterRequest {
                device: None,
                ..bob()
            },
            Code::InvalidArgument,
            "device is required".to_owned(),
        ),
        (
            "uppercase username",
            named("Bob"),
            Code::InvalidArgument,
            r#"username "Bob" is invalid"#.to_owned(),
        ),
        (
            "empty username",
            named(""),
            Code::InvalidArgument,
            r#"username "" is invalid"#.to_owned(),
        ),
        (
            "username too long",
            named(&long_name),
            Code::InvalidArgument,
            format!("username {long_name:?} is invalid"),
        ),
        (
            "short password",
            proto::RegisterRequest {
                password: "short".to_owned(),
                ..bob()
            },
            Code::InvalidArgument,
            "password must be between 8 and 1024 bytes long, got 5".to_owned(),
        ),
        (
            "signature key of 31 bytes",
            proto::RegisterRequest {
                device: Some(proto::DeviceEnrolment {
                    signature_public_key: vec![7; 31],
                    ..Default::default()
                }),
                ..bob()
            },
            Code::InvalidArgument,
            "device.signature_public_key must be a 32-byte Ed25519 public key, got 31 bytes"
                .to_owned(),
        ),
        (
            "display name with a control character",
            proto::RegisterRequest {
                device: Some(device(&bob_signer, "tab\there")),
                ..bob()
            },
            Code::InvalidArgument,
            "device.display_name may not contain U+0009 (a control character)".to_owned(),
        ),
        (
            "display name too long",
            proto::RegisterRequest {
                device: Some(device(&bob_signer, &"x".repeat(65))),
                ..bob()
            },
            Code::InvalidArgument,
            "device.display_name must be at most 64 characters, got 65".to_owned(),
        ),
        (
            "duplicate username",
            named("alice"),
            Code::AlreadyExists,
            "username alice is already taken".to_owned(),
        ),
        (
            "signature key bound to another device",
            register_request("bob", &alice.signer),
            Code::AlreadyExists,
            "this signature key is already bound to another device".to_owned(),
        ),
    ] {
        let result = api.try_register(request).await;
        assert_refused(case, result, code, &message);
        assert_unchanged(case, &api, &alice).await;
    }
    // bob's own key and name were never taken.
    api.try_register(bob())
        .await
        .expect("bob registers after all");
}

async fn bad_logins_change_nothing(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let alice = api.register("alice").await;
    let signer = new_signer();
    let alice_login = || login_request("alice", &signer);

    let wrong_password = api
        .try_login(proto::LoginRequest {
            password: "not the password".to_owned(),
            ..alice_login()
        })
        .await;
    let unknown_user = api.try_login(login_request("nobody", &signer)).await;
    let wrong = "wrong username or password";
    let wrong_password = assert_refused(
        "wrong password",
        wrong_password,
        Code::Unauthenticated,
        wrong,
    );
    let unknown_user = assert_refused("unknown user", unknown_user, Code::Unauthenticated, wrong);
    assert_eq!(
        wrong_password.message(),
        unknown_user.message(),
        "a wrong password and an unknown user must be indistinguishable"
    );
    assert_unchanged("wrong password", &api, &alice).await;

    for (case, request, code, message) in [
        (
            "missing device",
            proto::LoginRequest {
                device: None,
                ..alice_login()
            },
            Code::InvalidArgument,
            "device is required",
        ),
        (
            "signature key bound to another device",
            login_request("alice", &alice.signer),
            Code::AlreadyExists,
            "this signature key is already bound to another device",
        ),
        (
            "user of another domain",
            login_request("alice@elsewhere.example", &signer),
            Code::InvalidArgument,
            "belongs to domain elsewhere.example",
        ),
        (
            "malformed username",
            login_request("Alice", &signer),
            Code::InvalidArgument,
            r#"username "Alice" is invalid"#,
        ),
        (
            "signature key of 33 bytes",
            proto::LoginRequest {
                device: Some(proto::DeviceEnrolment {
                    signature_public_key: vec![7; 33],
                    ..Default::default()
                }),
                ..alice_login()
            },
            Code::InvalidArgument,
            "got 33 bytes",
        ),
    ] {
        let result = api.try_login(request).await;
        assert_refused(case, result, code, message);
        assert_unchanged(case, &api, &alice).await;
    }
    api.try_login(alice_login())
        .await
        .expect("the right password still works");
}

/// Display names and usernames holding bidirectional controls, invisible or
/// control characters: Register and Login both answer INVALID_ARGUMENT naming the
/// character as U+XXXX, and store nothing.
async fn hidden_characters_in_names_are_refused_by_name(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let alice = api.register("alice").await;
    let signer = new_signer();
    let device = |display_name: &str| Some(device(&signer, display_name));
    let display_names = [
        ("right-to-left override", "phone\u{202E}txt.exe", "U+202E"),
        ("left-to-right embedding", "\u{202A}phone", "U+202A"),
        ("first strong isolate", "phone\u{2068}", "U+2068"),
        ("pop directional isolate", "phone\u{2069}", "U+2069"),
        ("right-to-left mark", "phone\u{200F}", "U+200F"),
        ("arabic letter mark", "phone\u{061C}", "U+061C"),
        ("zero-width space", "ph\u{200B}one", "U+200B"),
        ("zero-width joiner", "ph\u{200D}one", "U+200D"),
        ("word joiner", "ph\u{2060}one", "U+2060"),
        ("byte-order mark", "\u{FEFF}phone", "U+FEFF"),
        ("line separator", "ph\u{2028}one", "U+2028"),
        ("escape", "ph\u{1B}[31mone", "U+001B"),
        ("stray variation selector", "\u{FE0F}phone", "U+FE0F"),
    ];
    for (case, display_name, character) in display_names {
        let message = format!("device.display_name may not contain {character}");
        let registration = api
            .try_register(proto::RegisterRequest {
                device: device(display_name),
                ..register_request("bob", &signer)
            })
            .await;
        assert_refused(case, registration, Code::InvalidArgument, &message);
        assert_unchanged(case, &api, &alice).await;
        let login = api
            .try_login(proto::LoginRequest {
                device: device(display_name),
                ..login_request("alice", &signer)
            })
            .await;
        assert_refused(case, login, Code::InvalidArgument, &message);
        assert_unchanged(case, &api, &alice).await;
    }
    for (case, username, character) in [
        ("username with an override", "bob\u{202E}", "U+202E"),
        ("username with a zero-width space", "b\u{200B}ob", "U+200B"),
        ("username with a byte-order mark", "\u{FEFF}bob", "U+FEFF"),
    ] {
        let message = format!("it contains {character}, which usernames may not contain");
        let registration = api.try_register(register_request(username, &signer)).await;
        let status = assert_refused(case, registration, Code::InvalidArgument, &message);
        assert!(
            !status.message().contains(|c: char| c > '\u{7F}'),
            "{case}: the message echoes the character: {:?}",
            status.message()
        );
        assert_unchanged(case, &api, &alice).await;
        let login = api.try_login(login_request(username, &signer)).await;
        assert_refused(case, login, Code::InvalidArgument, &message);
        assert_unchanged(case, &api, &alice).await;
    }
    api.try_register(register_request("bob", &signer))
        .await
        .expect("bob registers with a plain name after all");
}

/// A display name is stored in NFC: a decomposed é comes back composed.
async fn display_names_are_stored_in_nfc(database: DatabaseChoice) {
    let (_server, api) = start_with_api(database).await;
    let signer = new_signer();
    let session = api
        .try_register(proto::RegisterRequest {
            device: Some(device(&signer, "Zoe\u{308}'s te\u{301}le\u{301}phone")),
            ..register_request("zoe", &signer)
        })
        .await
        .expect("a decomposed name is fine");
    let devices = api.try_list_devices(&session.access_token).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].display_name, "Zo\u{EB}'s t\u{E9}l\u{E9}phone");
}

/// Calls every authenticated RPC with one `authorization` value (or none), each
/// aimed at `victim`'s account, and returns each outcome by RPC name.
async fn call_every_authenticated_rpc(
    channel: &Channel,
    authorization: Option<&str>,
    victim: &TestDevice,
) -> Vec<(&'static str, Result<(), Status>)> {
    let mut accounts = AccountServiceClient::new(channel.clone());
    let mut key_packages = KeyPackageServiceClient::new(channel.clone());
    let upload = proto::UploadKeyPackagesRequest {
        key_packages: crate::harness::key_packages(victim, 1),
        last_resort_key_package: None,
    };
    let claim = proto::ClaimKeyPackagesRequest {
        user_id: victim.user_id.clone(),
        cipher_suite: 0,
    };
    let remove = proto::RemoveDeviceRequest {
        device_id: victim.device_id.clone(),
    };
    let stock = proto::GetKeyPackageStockRequest {};
    vec![
        (
            "WhoAmI",
            accounts
                .who_am_i(with_authorization(authorization, proto::WhoAmIRequest {}))
                .await
                .map(drop),
        ),
        (
            "ListDevices",
            accounts
                .list_devices(with_authorization(
                    authorization,
                    proto::ListDevicesRequest {},
                ))
                .await
                .map(drop),
        ),
        (
            "RemoveDevice",
            accounts
                .remove_device(with_authorization(authorization, remove))
                .await
                .map(drop),
        ),
        (
            "Logout",
            accounts
                .logout(with_authorization(authorization, proto::LogoutRequest {}))
                .await
                .map(drop),
        ),
        (
            "UploadKeyPackages",
            key_packages
                .upload_key_packages(with_authorization(authorization, upload))
                .await
                .map(drop),
        ),
        (
            "GetKeyPackageStock",
            key_packages
                .get_key_package_stock(with_authorization(authorization, stock))
                .await
                .map(drop),
        ),
        (
            "ClaimKeyPackages",
            key_packages
                .claim_key_packages(with_authorization(authorization, claim))
                .await
                .map(drop),
        ),
    ]
}

async fn requests_without_a_valid_token_are_unauthenticated(database: DatabaseChoice) {
    let server = start(database).await;
    let channel = crate::harness::channel(&server).await;
    let api = Api::new(channel.clone());
    let alice = api.register("alice").await;
    api.upload(&alice, key_packages(&alice, 1), None)
        .await
        .expect("upload");

    let missing = "missing access token";
    let invalid = "the access token is invalid or was revoked";
    let wrong_token = format!("Bearer {}x", alice.token);
    for (case, authorization, message) in [
        ("no authorization header", None, missing),
        ("basic scheme", Some("Basic YWxpY2U6cGFzc3dvcmQ="), missing),
        (
            "token without a scheme",
            Some(alice.token.as_str()),
            missing,
        ),
        ("bearer without a token", Some("Bearer "), missing),
        ("wrong token", Some(wrong_token.as_str()), invalid),
    ] {
        for (rpc, result) in call_every_authenticated_rpc(&channel, authorization, &alice).await {
            let case = format!("{case}, {rpc}");
            assert_refused(&case, result, Code::Unauthenticated, message);
        }
        // Nothing was removed, uploaded or claimed.
        assert_eq!(
            api.device_ids(&alice).await,
            [alice.device_id.as_str()],
            "{case}"
        );
        assert_eq!(api.stock(&alice).await.available, 1, "{case}");
    }
}
