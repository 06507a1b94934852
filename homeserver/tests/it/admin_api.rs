//! `conclave.admin.v1` through the real server's client port: admin sessions
//! (login, the refusals, WhoAmI, logout), the overview and the audit log
//! (paging, filters, export), with an administrator made as an operator
//! makes one, by `conclave-homeserver admin grant`.

use crate::admin_cli::{admin_command, succeeded};
use crate::harness::{Api, assert_status, authorized, channel, with_authorization};
use conclave_proto::admin::v1 as admin;
use conclave_proto::admin::v1::admin_session_service_client::AdminSessionServiceClient;
use conclave_proto::admin::v1::audit_service_client::AuditServiceClient;
use conclave_test_support::{
    AdjustableClock, DatabaseChoice, PASSWORD, TestHomeserver, TestOptions,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

on_both_databases!(
    sessions_overview_and_audit_log,
    sessions_expire_and_logins_are_limited,
    the_admin_api_is_unimplemented_when_disabled,
);

fn login_request(username: &str, password: &str) -> admin::AdminLoginRequest {
    admin::AdminLoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

async fn start(database: DatabaseChoice) -> (TestHomeserver, Channel) {
    let options = TestOptions {
        domain: "a.example".to_owned(),
        ..TestOptions::on(database)
    };
    let server = TestHomeserver::start_with(options).await;
    let channel = channel(&server).await;
    (server, channel)
}

async fn sessions_overview_and_audit_log(database: DatabaseChoice) {
    let (server, channel) = start(database).await;
    let api = Api::new(channel.clone());
    api.register("alice").await;
    api.register("bob").await;
    let url = &server.config().database.url;
    succeeded(&admin_command("a.example", url, &["grant", "alice"]).await);
    let mut sessions = AdminSessionServiceClient::new(channel.clone());
    let mut audit = AuditServiceClient::new(channel);

    assert_status(
        sessions.login(login_request("alice", "guess")).await,
        Code::Unauthenticated,
        "wrong username or password",
    );
    assert_status(
        sessions.login(login_request("bob", PASSWORD)).await,
        Code::PermissionDenied,
        "bob@a.example is not an administrator",
    );
    assert_status(
        sessions
            .login(login_request("alice@b.example", PASSWORD))
            .await,
        Code::InvalidArgument,
        "b.example",
    );
    let session = sessions
        .login(login_request("alice", PASSWORD))
        .await
        .expect("alice logs in")
        .into_inner();
    assert_eq!(session.user_id, "alice@a.example");
    assert_eq!(session.idle_timeout_seconds, 1800);
    let token = session.token;

    let me = sessions
        .who_am_i(authorized(&token, admin::AdminWhoAmIRequest {}))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(
        (me.user_id.as_str(), me.domain.as_str()),
        ("alice@a.example", "a.example")
    );
    assert_eq!(me.expires_at, session.expires_at);
    assert_status(
        sessions.who_am_i(admin::AdminWhoAmIRequest {}).await,
        Code::Unauthenticated,
        "missing admin session token",
    );
    // A device's access token is no admin session.
    let device = api.login("alice").await;
    assert_status(
        sessions
            .who_am_i(authorized(&device.token, admin::AdminWhoAmIRequest {}))
            .await,
        Code::Unauthenticated,
        "the admin session is unknown or ended",
    );

    let overview = sessions
        .get_overview(authorized(&token, admin::GetOverviewRequest {}))
        .await
        .expect("overview")
        .into_inner();
    assert_eq!(overview.domain, "a.example");
    assert_eq!((overview.active_users, overview.devices), (2, 3));
    assert_eq!((overview.hosted_groups, overview.peers), (0, 0));

    // The audit log so far, newest first, two at a time.
    let list = |page_size: u32, page_token: String, filter: Option<admin::AuditFilter>| {
        authorized(
            &token,
            admin::ListAuditEntriesRequest {
                filter,
                page_size,
                page_token,
            },
        )
    };
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = audit
            .list_audit_entries(list(2, page_token, None))
            .await
            .expect("a page")
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let summary: Vec<_> = seen
        .iter()
        .map(|entry| (entry.actor.as_str(), entry.action.as_str(), entry.succeeded))
        .collect();
    assert_eq!(
        summary,
        [
            ("alice@a.example", "session.login", true),
            ("bob@a.example", "session.login", false),
            ("alice@a.example", "session.login", false),
            ("operator", "admin.grant", true),
        ]
    );
    assert_eq!(seen[0].address, "127.0.0.1");
    assert_eq!(seen[3].address, "");
    assert!(seen.windows(2).all(|pair| pair[0].id > pair[1].id));

    let only_refusals_of_bob = admin::AuditFilter {
        actor: "bob@a.example".to_owned(),
        action_prefix: "session.".to_owned(),
        ..admin::AuditFilter::default()
    };
    let found = audit
        .list_audit_entries(list(0, String::new(), Some(only_refusals_of_bob)))
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(found.entries.len(), 1);
    assert_eq!(
        found.entries[0].detail,
        "bob@a.example is not an administrator"
    );
    assert_status(
        audit
            .list_audit_entries(list(501, String::new(), None))
            .await,
        Code::InvalidArgument,
        "page_size 501 is above the limit of 500",
    );
    assert_status(
        audit
            .list_audit_entries(list(10, "!".to_owned(), None))
            .await,
        Code::InvalidArgument,
        "page_token",
    );

    // The export: oldest first, itself audited (and so in it).
    let mut stream = audit
        .export_audit_log(authorized(
            &token,
            admin::ExportAuditLogRequest { filter: None },
        ))
        .await
        .expect("export")
        .into_inner();
    let mut exported = Vec::new();
    while let Some(entry) = stream.message().await.expect("an entry") {
        exported.push(entry);
    }
    let actions: Vec<_> = exported.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "admin.grant",
            "session.login",
            "session.login",
            "session.login",
            "audit.export"
        ]
    );
    assert_eq!(exported[4].detail, "every entry");

    sessions
        .logout(authorized(&token, admin::AdminLogoutRequest {}))
        .await
        .expect("logout");
    assert_status(
        sessions
            .who_am_i(authorized(&token, admin::AdminWhoAmIRequest {}))
            .await,
        Code::Unauthenticated,
        "the admin session is unknown or ended",
    );
    assert_status(
        audit
            .list_audit_entries(with_authorization(
                Some("Bearer x"),
                admin::ListAuditEntriesRequest::default(),
            ))
            .await,
        Code::Unauthenticated,
        "log in again",
    );
}

async fn the_admin_api_is_unimplemented_when_disabled(database: DatabaseChoice) {
    let options = TestOptions::on(database).configure(|config| config.admin.enabled = false);
    let server = TestHomeserver::start_with(options).await;
    let mut sessions = AdminSessionServiceClient::new(channel(&server).await);
    assert_status(
        sessions.login(login_request("alice", PASSWORD)).await,
        Code::Unimplemented,
        "",
    );
}

async fn sessions_expire_and_logins_are_limited(database: DatabaseChoice) {
    let clock = Arc::new(AdjustableClock::default());
    let options = TestOptions {
        domain: "a.example".to_owned(),
        ..TestOptions::on(database)
    }
    .clock(clock.clone())
    .configure(|config| {
        config.admin.session_idle_minutes = 5;
        config.admin.session_max_hours = 1;
        config.limits.auth_attempt_burst = 6;
        config.limits.auth_attempts_per_minute = 1;
    });
    let server = TestHomeserver::start_with(options).await;
    let channel = channel(&server).await;
    let api = Api::new(channel.clone());
    api.register("alice").await;
    succeeded(
        &admin_command(
            "a.example",
            &server.config().database.url,
            &["grant", "alice"],
        )
        .await,
    );
    let mut sessions = AdminSessionServiceClient::new(channel);
    let login_client = sessions.clone();
    let login = async || {
        login_client
            .clone()
            .login(login_request("alice", PASSWORD))
            .await
            .map(|session| session.into_inner().token)
    };
    let whoami = |token: &str| authorized(token, admin::AdminWhoAmIRequest {});

    // Idle for the configured 5 minutes.
    let idle = login().await.expect("a session");
    clock.advance(Duration::from_secs(4 * 60));
    sessions.who_am_i(whoami(&idle)).await.expect("still open");
    clock.advance(Duration::from_secs(5 * 60));
    assert_status(
        sessions.who_am_i(whoami(&idle)).await,
        Code::Unauthenticated,
        "the admin session expired; log in again",
    );

    // Busy, but past its hour.
    let busy = login().await.expect("a session");
    for _ in 0..14 {
        clock.advance(Duration::from_secs(4 * 60));
        sessions.who_am_i(whoami(&busy)).await.expect("still open");
    }
    clock.advance(Duration::from_secs(4 * 60));
    assert_status(
        sessions.who_am_i(whoami(&busy)).await,
        Code::Unauthenticated,
        "the admin session expired; log in again",
    );

    // The client API's limits: the address's bucket (6 at once, then one a
    // minute; full again after the hour above) is spent by these six.
    for _ in 0..6 {
        assert_status(
            sessions.login(login_request("alice", "guess")).await,
            Code::Unauthenticated,
            "wrong username or password",
        );
    }
    let refused = assert_status(
        login().await,
        Code::ResourceExhausted,
        "too many register and login attempts from this address",
    );
    let retry_after = refused
        .get_details_retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("a RetryInfo");
    assert!(retry_after > Duration::ZERO, "{retry_after:?}");
}
