//! The console's own rules, through its router: cookies, CSRF, the mapping of
//! the API's codes to pages and statuses, security headers, redirects to the
//! login page. The admin API here is a test double that answers fixed values
//! and records every call (the console's pages over the real API on a real
//! store are tested in the homeserver).

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use conclave_admin_ui::{ConsoleSettings, router};
use conclave_proto::admin::CallerAddress;
use conclave_proto::admin::v1::admin_session_service_server::AdminSessionService;
use conclave_proto::admin::v1::audit_service_server::AuditService;
use conclave_proto::admin::v1::federation_admin_service_server::FederationAdminService;
use conclave_proto::admin::v1::group_admin_service_server::GroupAdminService;
use conclave_proto::admin::v1::registration_token_admin_service_server::RegistrationTokenAdminService;
use conclave_proto::admin::v1::user_admin_service_server::UserAdminService;
use conclave_proto::admin::v1::*;
use futures::Stream;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;
use tower::ServiceExt;

/// The one session token the double accepts.
const GOOD_TOKEN: &str = "good-token";
/// A token the double answers UNAUTHENTICATED for, as for an expired session.
const STALE_TOKEN: &str = "stale-token";
/// The browser's address as the server would see it.
const BROWSER: &str = "127.0.0.7:50123";

/// One call the console made.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    authorization: Option<String>,
    address: Option<IpAddr>,
}

/// The admin API, answering fixed values and recording every call.
#[derive(Default)]
struct Double {
    calls: Mutex<Vec<Call>>,
}

impl Double {
    fn record<T>(&self, method: &'static str, request: &tonic::Request<T>) {
        let call = Call {
            method,
            authorization: request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            address: request
                .extensions()
                .get::<CallerAddress>()
                .map(|CallerAddress(address)| *address),
        };
        self.calls.lock().expect("calls lock").push(call);
    }

    /// Records the call and checks its session, as the real API would.
    fn authorize<T>(
        &self,
        method: &'static str,
        request: &tonic::Request<T>,
    ) -> Result<(), Status> {
        self.record(method, request);
        let expected = format!("Bearer {GOOD_TOKEN}");
        match request.metadata().get("authorization") {
            Some(value) if value.to_str().ok() == Some(expected.as_str()) => Ok(()),
            _ => Err(Status::unauthenticated("admin session expired")),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn called(&self, method: &str) -> bool {
        self.calls().iter().any(|call| call.method == method)
    }
}

fn alice() -> User {
    User {
        user_id: "alice@a.example".to_owned(),
        state: UserState::Active as i32,
        admin: false,
        device_count: 1,
        ..User::default()
    }
}

fn usable_token(id: u64) -> RegistrationToken {
    RegistrationToken {
        id,
        uses_allowed: 5,
        uses_remaining: 5,
        created_by: "admin@a.example".to_owned(),
        state: RegistrationTokenState::Usable as i32,
        ..RegistrationToken::default()
    }
}

#[tonic::async_trait]
impl AdminSessionService for Double {
    async fn login(
        &self,
        request: tonic::Request<AdminLoginRequest>,
    ) -> Result<Response<AdminSession>, Status> {
        self.record("Login", &request);
        let login = request.into_inner();
        match (login.username.as_str(), login.password.as_str()) {
            ("admin", "right") => Ok(Response::new(AdminSession {
                token: GOOD_TOKEN.to_owned(),
                user_id: "admin@a.example".to_owned(),
                ..AdminSession::default()
            })),
            ("alice", "right") => Err(Status::permission_denied(
                "alice@a.example is not an administrator",
            )),
            ("limited", _) => Err(Status::with_error_details(
                Code::ResourceExhausted,
                "too many login attempts",
                tonic_types::ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(
                    30,
                ))),
            )),
            _ => Err(Status::unauthenticated("wrong username or password")),
        }
    }

    async fn logout(
        &self,
        request: tonic::Request<AdminLogoutRequest>,
    ) -> Result<Response<AdminLogoutResponse>, Status> {
        self.authorize("Logout", &request)?;
        Ok(Response::new(AdminLogoutResponse {}))
    }

    async fn who_am_i(
        &self,
        request: tonic::Request<AdminWhoAmIRequest>,
    ) -> Result<Response<AdminWhoAmIResponse>, Status> {
        self.authorize("WhoAmI", &request)?;
        Ok(Response::new(AdminWhoAmIResponse {
            user_id: "admin@a.example".to_owned(),
            domain: "a.example".to_owned(),
            ..AdminWhoAmIResponse::default()
        }))
    }

    async fn get_overview(
        &self,
        request: tonic::Request<GetOverviewRequest>,
    ) -> Result<Response<Overview>, Status> {
        self.authorize("GetOverview", &request)?;
        Ok(Response::new(Overview {
            domain: "a.example".to_owned(),
            active_users: 42,
            peers: 1,
            peers_failing: 1,
            warnings: vec![Warning {
                severity: Severity::Critical as i32,
                message: "b.example has failed deliveries for an hour".to_owned(),
                page: "/admin/federation".to_owned(),
            }],
            ..Overview::default()
        }))
    }
}

#[tonic::async_trait]
impl UserAdminService for Double {
    async fn list_users(
        &self,
        request: tonic::Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        self.authorize("ListUsers", &request)?;
        if request.get_ref().query == "boom" {
            return Err(Status::internal("database at db.internal:5432 refused"));
        }
        Ok(Response::new(ListUsersResponse {
            users: vec![alice()],
            next_page_token: "bmV4dA".to_owned(),
        }))
    }

    async fn get_user(
        &self,
        request: tonic::Request<GetUserRequest>,
    ) -> Result<Response<UserDetail>, Status> {
        self.authorize("GetUser", &request)?;
        if request.get_ref().user_id != "alice@a.example" {
            return Err(Status::not_found(format!(
                "no user {}",
                request.get_ref().user_id
            )));
        }
        Ok(Response::new(UserDetail {
            user: Some(alice()),
            devices: vec![Device {
                device_id: "00112233aabbccdd".to_owned(),
                credential_identity: "alice@a.example/00112233aabbccdd".to_owned(),
                display_name: "laptop".to_owned(),
                key_packages: 3,
                has_last_resort: true,
                groups: 1,
                ..Device::default()
            }],
            groups: vec![GroupMembership {
                group_id: vec![0xab, 0xcd],
                hub_domain: "a.example".to_owned(),
                device_ids: vec!["00112233aabbccdd".to_owned()],
                ..GroupMembership::default()
            }],
        }))
    }

    async fn suspend_user(
        &self,
        request: tonic::Request<SuspendUserRequest>,
    ) -> Result<Response<User>, Status> {
        self.authorize("SuspendUser", &request)?;
        Ok(Response::new(alice()))
    }

    async fn unsuspend_user(
        &self,
        request: tonic::Request<UnsuspendUserRequest>,
    ) -> Result<Response<User>, Status> {
        self.authorize("UnsuspendUser", &request)?;
        Err(Status::failed_precondition(
            "alice@a.example is not suspended (it is active)",
        ))
    }

    async fn deactivate_user(
        &self,
        request: tonic::Request<DeactivateUserRequest>,
    ) -> Result<Response<DeactivateUserResponse>, Status> {
        self.authorize("DeactivateUser", &request)?;
        Ok(Response::new(DeactivateUserResponse {
            user: Some(alice()),
            devices_removed: 1,
            key_packages_deleted: 3,
            groups_left: 1,
        }))
    }

    async fn list_devices(
        &self,
        request: tonic::Request<ListUserDevicesRequest>,
    ) -> Result<Response<ListUserDevicesResponse>, Status> {
        self.authorize("ListDevices", &request)?;
        Ok(Response::new(ListUserDevicesResponse::default()))
    }

    async fn revoke_device(
        &self,
        request: tonic::Request<RevokeDeviceRequest>,
    ) -> Result<Response<RevokeDeviceResponse>, Status> {
        self.authorize("RevokeDevice", &request)?;
        Ok(Response::new(RevokeDeviceResponse {
            key_packages_deleted: 3,
            groups_left: 1,
        }))
    }

    async fn list_low_key_package_stock(
        &self,
        request: tonic::Request<ListLowKeyPackageStockRequest>,
    ) -> Result<Response<ListLowKeyPackageStockResponse>, Status> {
        self.authorize("ListLowKeyPackageStock", &request)?;
        Ok(Response::new(ListLowKeyPackageStockResponse {
            threshold: 2,
            ..ListLowKeyPackageStockResponse::default()
        }))
    }
}

#[tonic::async_trait]
impl RegistrationTokenAdminService for Double {
    async fn create_registration_token(
        &self,
        request: tonic::Request<CreateRegistrationTokenRequest>,
    ) -> Result<Response<CreateRegistrationTokenResponse>, Status> {
        self.authorize("CreateRegistrationToken", &request)?;
        let uses = request.get_ref().uses;
        if uses == 0 || uses > 1_000_000 {
            return Err(Status::invalid_argument(format!(
                "uses must be 1 to 1000000, not {uses}"
            )));
        }
        Ok(Response::new(CreateRegistrationTokenResponse {
            token: "s3cret-registration-token".to_owned(),
            registration_token: Some(usable_token(7)),
        }))
    }

    async fn list_registration_tokens(
        &self,
        request: tonic::Request<ListRegistrationTokensRequest>,
    ) -> Result<Response<ListRegistrationTokensResponse>, Status> {
        self.authorize("ListRegistrationTokens", &request)?;
        Ok(Response::new(ListRegistrationTokensResponse {
            registration_tokens: vec![usable_token(7)],
            next_page_token: String::new(),
        }))
    }

    async fn revoke_registration_token(
        &self,
        request: tonic::Request<RevokeRegistrationTokenRequest>,
    ) -> Result<Response<RegistrationToken>, Status> {
        self.authorize("RevokeRegistrationToken", &request)?;
        match request.get_ref().id {
            404 => Err(Status::not_found("no registration token 404")),
            409 => Err(Status::failed_precondition(
                "registration token 409 is already revoked",
            )),
            id => Ok(Response::new(usable_token(id))),
        }
    }
}

#[tonic::async_trait]
impl GroupAdminService for Double {
    async fn list_groups(
        &self,
        request: tonic::Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        self.authorize("ListGroups", &request)?;
        if request.get_ref().query == "off" {
            return Err(Status::unimplemented("the admin API is off"));
        }
        Ok(Response::new(ListGroupsResponse::default()))
    }

    async fn inspect_group(
        &self,
        request: tonic::Request<InspectGroupRequest>,
    ) -> Result<Response<GroupInspection>, Status> {
        self.authorize("InspectGroup", &request)?;
        if request.get_ref().group_id != [0xab, 0xcd] {
            return Err(Status::not_found("no such group"));
        }
        Ok(Response::new(GroupInspection {
            group: Some(GroupSummary {
                group_id: vec![0xab, 0xcd],
                hub_domain: "a.example".to_owned(),
                hosted_here: true,
                epoch: 5,
                member_devices: 3,
                ..GroupSummary::default()
            }),
            ..GroupInspection::default()
        }))
    }
}

fn report(domain: &str) -> DoctorReport {
    DoctorReport {
        domain: domain.to_owned(),
        endpoint: "b.example:8448".to_owned(),
        checks: vec![
            DoctorCheck {
                name: "connect".to_owned(),
                outcome: CheckOutcome::Pass as i32,
                detail: "connected to 127.0.0.1:8448".to_owned(),
                duration_ms: 2,
            },
            DoctorCheck {
                name: "certificate_expiry".to_owned(),
                outcome: CheckOutcome::Warn as i32,
                detail: "the certificate expires in 9 days".to_owned(),
                duration_ms: 0,
            },
        ],
        healthy: true,
        ..DoctorReport::default()
    }
}

#[tonic::async_trait]
impl FederationAdminService for Double {
    async fn list_peers(
        &self,
        request: tonic::Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        self.authorize("ListPeers", &request)?;
        Ok(Response::new(ListPeersResponse {
            peers: vec![Peer {
                domain: "b.example".to_owned(),
                configured: true,
                endpoint: "b.example:8448".to_owned(),
                consecutive_failures: 4,
                last_error: "connection refused".to_owned(),
                ..Peer::default()
            }],
        }))
    }

    async fn run_doctor(
        &self,
        request: tonic::Request<RunDoctorRequest>,
    ) -> Result<Response<DoctorReport>, Status> {
        self.authorize("RunDoctor", &request)?;
        let domain = request.into_inner().domain;
        if domain != "b.example" {
            return Err(Status::not_found(format!(
                "{domain} is not a configured peer"
            )));
        }
        Ok(Response::new(report(&domain)))
    }

    async fn check_own_certificate(
        &self,
        request: tonic::Request<CheckOwnCertificateRequest>,
    ) -> Result<Response<DoctorReport>, Status> {
        self.authorize("CheckOwnCertificate", &request)?;
        Err(Status::failed_precondition("federation is off"))
    }
}

fn audit_entry(id: u64) -> AuditEntry {
    AuditEntry {
        id,
        at: Some(prost_types::Timestamp {
            seconds: 1_796_339_400,
            nanos: 0,
        }),
        actor: "admin@a.example".to_owned(),
        action: "user.suspend".to_owned(),
        target: "alice@a.example".to_owned(),
        address: "127.0.0.7".to_owned(),
        succeeded: true,
        detail: "spam".to_owned(),
    }
}

#[tonic::async_trait]
impl AuditService for Double {
    async fn list_audit_entries(
        &self,
        request: tonic::Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        self.authorize("ListAuditEntries", &request)?;
        Ok(Response::new(ListAuditEntriesResponse {
            entries: vec![audit_entry(2)],
            next_page_token: String::new(),
        }))
    }

    type ExportAuditLogStream = Pin<Box<dyn Stream<Item = Result<AuditEntry, Status>> + Send>>;

    async fn export_audit_log(
        &self,
        request: tonic::Request<ExportAuditLogRequest>,
    ) -> Result<Response<Self::ExportAuditLogStream>, Status> {
        self.authorize("ExportAuditLog", &request)?;
        let entries = vec![Ok(audit_entry(1)), Ok(audit_entry(2))];
        Ok(Response::new(Box::pin(futures::stream::iter(entries))))
    }
}

/// The console mounted as the homeserver mounts it.
fn console(double: &Arc<Double>, secure_cookies: bool) -> Router {
    let settings = ConsoleSettings {
        secure_cookies,
        base_path: "/admin".to_owned(),
    };
    Router::new().nest("/admin", router(double.clone(), settings))
}

fn csrf_for(session_token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(session_token.as_bytes()).expect("any key");
    mac.update(b"conclave-admin-csrf");
    hex::encode(mac.finalize().into_bytes())
}

struct Sent {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Sent {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// A request from the browser, with its address as `ConnectInfo` gives it.
fn browser(method: &str, path: &str, token: Option<&str>) -> axum::http::request::Builder {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(
            header::COOKIE,
            format!("theme=dark; conclave_admin={token}"),
        );
    }
    builder
}

fn form(builder: axum::http::request::Builder, body: &str) -> Request<Body> {
    builder
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn empty(builder: axum::http::request::Builder) -> Request<Body> {
    builder.body(Body::empty()).expect("request")
}

async fn send(app: &Router, mut request: Request<Body>) -> Sent {
    let address: SocketAddr = BROWSER.parse().expect("address");
    request.extensions_mut().insert(ConnectInfo(address));
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Sent {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

#[tokio::test]
async fn login_sets_a_strict_http_only_session_cookie_and_goes_to_the_overview() {
    let double = Arc::new(Double::default());
    let sent = send(
        &console(&double, false),
        form(
            browser("POST", "/admin/login", None),
            "username=admin&password=right",
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    assert_eq!(sent.header("location"), "/admin");
    let cookie = sent.header("set-cookie");
    assert!(cookie.starts_with("conclave_admin=good-token"), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing in {cookie}"
        );
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let login = &double.calls()[0];
    assert_eq!(login.method, "Login");
    assert_eq!(login.address, Some("127.0.0.7".parse().expect("ip")));

    let behind_tls = send(
        &console(&double, true),
        form(
            browser("POST", "/admin/login", None),
            "username=admin&password=right",
        ),
    )
    .await;
    assert!(behind_tls.header("set-cookie").contains("Secure"));
}

#[tokio::test]
async fn login_refusals_are_pages_with_their_status() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let cases = [
        (
            "username=alice&password=right",
            StatusCode::FORBIDDEN,
            "this account is not an administrator",
        ),
        (
            "username=admin&password=wrong",
            StatusCode::UNAUTHORIZED,
            "wrong username or password",
        ),
        (
            "username=limited&password=x",
            StatusCode::TOO_MANY_REQUESTS,
            "try again in 30 seconds",
        ),
    ];
    for (body, status, message) in cases {
        let sent = send(&app, form(browser("POST", "/admin/login", None), body)).await;
        assert_eq!(sent.status, status, "{body}");
        assert!(sent.body.contains(message), "{body}: {}", sent.body);
        assert!(sent.body.contains(r#"id="login-username""#));
        assert_eq!(sent.header("set-cookie"), "", "{body}");
    }
    let limited = send(
        &app,
        form(
            browser("POST", "/admin/login", None),
            "username=limited&password=x",
        ),
    )
    .await;
    assert_eq!(limited.header("retry-after"), "30");
}

#[tokio::test]
async fn pages_without_a_session_go_to_the_login_page_without_calling_the_api() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    for path in [
        "/admin",
        "/admin/users",
        "/admin/tokens",
        "/admin/audit/export",
    ] {
        let sent = send(&app, empty(browser("GET", path, None))).await;
        assert_eq!(sent.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(sent.header("location"), "/admin/login", "{path}");
    }
    assert!(double.calls().is_empty(), "{:?}", double.calls());
    let login = send(&app, empty(browser("GET", "/admin/login", None))).await;
    assert_eq!(login.status, StatusCode::OK);
    for id in ["login-username", "login-password", "login-submit"] {
        assert!(login.body.contains(&format!(r#"id="{id}""#)), "{id}");
    }
}

#[tokio::test]
async fn an_expired_session_goes_to_the_login_page_saying_so() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let sent = send(
        &app,
        empty(browser("GET", "/admin/users", Some(STALE_TOKEN))),
    )
    .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    assert_eq!(sent.header("location"), "/admin/login?expired=1");
    assert!(
        sent.header("set-cookie").contains("conclave_admin=;"),
        "the stale cookie is cleared"
    );
    let login = send(&app, empty(browser("GET", "/admin/login?expired=1", None))).await;
    assert!(login.body.contains("your session expired"));

    // htmx follows HX-Redirect with a full page load.
    let htmx = send(
        &app,
        empty(browser("GET", "/admin/users", Some(STALE_TOKEN)).header("hx-request", "true")),
    )
    .await;
    assert_eq!(htmx.header("hx-redirect"), "/admin/login?expired=1");
    assert_ne!(htmx.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn api_calls_carry_the_session_token_and_the_browsers_address() {
    let double = Arc::new(Double::default());
    let sent = send(
        &console(&double, false),
        empty(browser("GET", "/admin", Some(GOOD_TOKEN))),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert!(sent.body.contains("Overview of a.example"));
    assert!(sent.body.contains(r#"id="logout""#));
    assert!(
        sent.body
            .contains("b.example has failed deliveries for an hour")
    );
    assert!(sent.body.contains(r#"href="/admin/federation""#));
    let calls = double.calls();
    assert_eq!(
        calls.iter().map(|call| call.method).collect::<Vec<_>>(),
        ["GetOverview", "ListPeers"]
    );
    for call in calls {
        assert_eq!(call.authorization.as_deref(), Some("Bearer good-token"));
        assert_eq!(call.address, Some("127.0.0.7".parse().expect("ip")));
    }
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let bodies = [
        "uses=5".to_owned(),
        "uses=5&csrf=".to_owned(),
        format!("uses=5&csrf={}", csrf_for("another-session")),
        "uses=5&csrf=zz".to_owned(),
    ];
    for body in &bodies {
        let sent = send(
            &app,
            form(browser("POST", "/admin/tokens", Some(GOOD_TOKEN)), body),
        )
        .await;
        assert_eq!(sent.status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            sent.body.contains("invalid or missing CSRF token"),
            "{body}"
        );
    }
    // The right token from another site is refused too.
    let cross_site = send(
        &app,
        form(
            browser("POST", "/admin/tokens", Some(GOOD_TOKEN))
                .header("sec-fetch-site", "cross-site"),
            &format!("uses=5&csrf={}", csrf_for(GOOD_TOKEN)),
        ),
    )
    .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let logout = send(
        &app,
        form(browser("POST", "/admin/logout", Some(GOOD_TOKEN)), ""),
    )
    .await;
    assert_eq!(logout.status, StatusCode::FORBIDDEN);
    assert!(double.calls().is_empty(), "{:?}", double.calls());
}

#[tokio::test]
async fn the_csrf_token_is_accepted_from_the_form_or_htmxs_header() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let csrf = csrf_for(GOOD_TOKEN);
    let page = send(
        &app,
        empty(browser("GET", "/admin/tokens", Some(GOOD_TOKEN))),
    )
    .await;
    assert!(
        page.body
            .contains(&format!(r#"name="csrf" value="{csrf}""#)),
        "the page carries it"
    );
    assert!(
        page.body.contains(&format!(r#""X-CSRF-Token": "{csrf}""#)),
        "htmx sends it"
    );

    let by_form = send(
        &app,
        form(
            browser("POST", "/admin/tokens", Some(GOOD_TOKEN)),
            &format!("uses=5&valid_for_days=7&csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(by_form.status, StatusCode::OK, "{}", by_form.body);
    assert!(by_form.body.contains(
        r#"<output id="token-secret" data-created-token-id="7">s3cret-registration-token</output>"#
    ));

    let by_header = send(
        &app,
        form(
            browser("POST", "/admin/tokens/7/revoke", Some(GOOD_TOKEN))
                .header("x-csrf-token", &csrf),
            "",
        ),
    )
    .await;
    assert_eq!(by_header.status, StatusCode::SEE_OTHER);
    assert_eq!(by_header.header("location"), "/admin/tokens?done=revoked");
    assert!(double.called("RevokeRegistrationToken"));
}

#[tokio::test]
async fn api_errors_map_to_http_statuses_with_the_apis_message() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let csrf = csrf_for(GOOD_TOKEN);
    let post = |path: &str, body: String| form(browser("POST", path, Some(GOOD_TOKEN)), &body);

    let bad = send(&app, post("/admin/tokens", format!("uses=0&csrf={csrf}"))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("uses must be 1 to 1000000, not 0"),
        "the page again with the reason"
    );
    assert!(bad.body.contains(r#"id="token-create-uses""#));
    assert!(!bad.body.contains("token-secret"));

    let not_a_number = send(
        &app,
        post("/admin/tokens", format!("uses=many&csrf={csrf}")),
    )
    .await;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);
    assert!(not_a_number.body.contains("uses must be a whole number"));

    let missing = send(
        &app,
        post("/admin/tokens/404/revoke", format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no registration token 404"));

    let conflict = send(
        &app,
        post("/admin/tokens/409/revoke", format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert!(conflict.body.contains("already revoked"));

    let unsuspend = send(
        &app,
        post(
            "/admin/users/alice%40a.example/unsuspend",
            format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(unsuspend.status, StatusCode::CONFLICT);

    let off = send(
        &app,
        empty(browser("GET", "/admin/groups?q=off", Some(GOOD_TOKEN))),
    )
    .await;
    assert_eq!(off.status, StatusCode::NOT_FOUND);

    let internal = send(
        &app,
        empty(browser("GET", "/admin/users?q=boom", Some(GOOD_TOKEN))),
    )
    .await;
    assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !internal.body.contains("db.internal"),
        "internal details stay in the log"
    );

    let unknown_user = send(
        &app,
        empty(browser("GET", "/admin/users/bob", Some(GOOD_TOKEN))),
    )
    .await;
    assert_eq!(unknown_user.status, StatusCode::NOT_FOUND);

    let bad_group = send(
        &app,
        empty(browser("GET", "/admin/groups/xyz", Some(GOOD_TOKEN))),
    )
    .await;
    assert_eq!(bad_group.status, StatusCode::BAD_REQUEST);

    let bad_date = send(
        &app,
        empty(browser(
            "GET",
            "/admin/audit?since=yesterday",
            Some(GOOD_TOKEN),
        )),
    )
    .await;
    assert_eq!(bad_date.status, StatusCode::BAD_REQUEST);
    assert!(bad_date.body.contains("since must be a date"));
}

#[tokio::test]
async fn every_response_has_the_security_headers_and_pages_are_not_cached() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let page = send(&app, empty(browser("GET", "/admin", Some(GOOD_TOKEN)))).await;
    let asset_path = page
        .body
        .split(r#"src=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a script")
        .to_owned();
    assert_eq!(asset_path, "/admin/assets/htmx-2.0.11.min.js");
    let requests = [
        empty(browser("GET", "/admin", Some(GOOD_TOKEN))),
        empty(browser("GET", "/admin/login", None)),
        empty(browser("GET", "/admin/users", None)),
        form(browser("POST", "/admin/tokens", Some(GOOD_TOKEN)), "uses=1"),
        empty(browser("GET", &asset_path, None)),
    ];
    for request in requests {
        let path = request.uri().to_string();
        let sent = send(&app, request).await;
        let csp = sent.header("content-security-policy");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(sent.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(sent.header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(sent.header("x-content-type-options"), "nosniff", "{path}");
        let cache = sent.header("cache-control");
        if path == asset_path {
            assert_eq!(sent.status, StatusCode::OK);
            assert!(cache.contains("immutable"), "{cache}");
            assert!(sent.body.contains("htmx"));
        } else {
            assert_eq!(cache, "no-store", "{path}");
        }
    }
    let stale = send(
        &app,
        empty(browser("GET", "/admin/assets/htmx-1.0.0.min.js", None)),
    )
    .await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let sent = send(
        &app,
        form(
            browser("POST", "/admin/logout", Some(GOOD_TOKEN)),
            &format!("csrf={}", csrf_for(GOOD_TOKEN)),
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    assert_eq!(sent.header("location"), "/admin/login");
    let cookie = sent.header("set-cookie");
    assert!(
        cookie.contains("conclave_admin=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    assert!(double.called("Logout"));
}

#[tokio::test]
async fn deactivation_needs_its_confirmation_page() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let csrf = csrf_for(GOOD_TOKEN);
    let path = "/admin/users/alice%40a.example/deactivate";
    let unconfirmed = send(
        &app,
        form(
            browser("POST", path, Some(GOOD_TOKEN)),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    assert!(!double.called("DeactivateUser"));

    let confirmation = send(&app, empty(browser("GET", path, Some(GOOD_TOKEN)))).await;
    assert_eq!(confirmation.status, StatusCode::OK);
    assert!(confirmation.body.contains(r#"name="confirm" value="yes""#));

    let confirmed = send(
        &app,
        form(
            browser("POST", path, Some(GOOD_TOKEN)),
            &format!("csrf={csrf}&confirm=yes&reason=left"),
        ),
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::SEE_OTHER);
    assert_eq!(
        confirmed.header("location"),
        "/admin/users/alice%40a.example?done=deactivated&devices=1&key_packages=3&groups=1"
    );
    let after = send(
        &app,
        empty(browser(
            "GET",
            confirmed.header("location"),
            Some(GOOD_TOKEN),
        )),
    )
    .await;
    assert!(
        after
            .body
            .contains("1 devices removed, 3 key packages deleted, 1 groups"),
        "{}",
        after.body
    );
}

#[tokio::test]
async fn the_user_page_lists_devices_with_their_revoke_buttons() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let page = send(
        &app,
        empty(browser(
            "GET",
            "/admin/users/alice%40a.example",
            Some(GOOD_TOKEN),
        )),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(r#"<tr data-device-id="00112233aabbccdd">"#)
    );
    assert!(
        page.body
            .contains(r#"action="/admin/users/alice%40a.example/devices/00112233aabbccdd/revoke""#)
    );
    assert!(page.body.contains(r#"class="revoke""#));
    assert!(page.body.contains(r#"href="/admin/groups/abcd""#));

    let revoked = send(
        &app,
        form(
            browser(
                "POST",
                "/admin/users/alice%40a.example/devices/00112233aabbccdd/revoke",
                Some(GOOD_TOKEN),
            ),
            &format!("csrf={}", csrf_for(GOOD_TOKEN)),
        ),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert!(double.called("RevokeDevice"));

    let group = send(
        &app,
        empty(browser("GET", "/admin/groups/abcd", Some(GOOD_TOKEN))),
    )
    .await;
    assert!(group.body.contains(r#"<dd id="group-epoch">5</dd>"#));
    assert!(group.body.contains(r#"<dd id="group-member-count">3</dd>"#));
}

#[tokio::test]
async fn the_doctor_report_is_a_fragment_for_htmx_and_a_page_without_it() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let body = format!("domain=b.example&csrf={}", csrf_for(GOOD_TOKEN));
    let federation = send(
        &app,
        empty(browser("GET", "/admin/federation", Some(GOOD_TOKEN))),
    )
    .await;
    assert!(federation.body.contains(r#"<tr data-peer="b.example">"#));
    assert!(federation.body.contains(r#"class="doctor""#));

    let fragment = send(
        &app,
        form(
            browser("POST", "/admin/federation/doctor", Some(GOOD_TOKEN))
                .header("hx-request", "true"),
            &body,
        ),
    )
    .await;
    assert_eq!(fragment.status, StatusCode::OK);
    assert!(!fragment.body.contains("<html"), "a fragment");
    assert!(
        fragment
            .body
            .contains(r#"data-check="connect" data-outcome="pass""#)
    );
    assert!(
        fragment
            .body
            .contains(r#"data-check="certificate_expiry" data-outcome="warn""#)
    );
    assert!(fragment.body.contains("the certificate expires in 9 days"));

    let page = send(
        &app,
        form(
            browser("POST", "/admin/federation/doctor", Some(GOOD_TOKEN)),
            &body,
        ),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<html"));
    assert!(
        page.body
            .contains(r#"data-check="connect" data-outcome="pass""#)
    );

    let own = send(
        &app,
        form(
            browser(
                "POST",
                "/admin/federation/own-certificate",
                Some(GOOD_TOKEN),
            )
            .header("hx-request", "true"),
            &format!("csrf={}", csrf_for(GOOD_TOKEN)),
        ),
    )
    .await;
    assert_eq!(own.status, StatusCode::CONFLICT);
    assert!(own.body.contains("federation is off") && !own.body.contains("<html"));
}

#[tokio::test]
async fn the_audit_log_exports_as_json_lines() {
    let double = Arc::new(Double::default());
    let app = console(&double, false);
    let page = send(
        &app,
        empty(browser(
            "GET",
            "/admin/audit?action=user.",
            Some(GOOD_TOKEN),
        )),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(r#"href="/admin/audit/export?action=user.""#),
        "{}",
        page.body
    );

    let export = send(
        &app,
        empty(browser(
            "GET",
            "/admin/audit/export?action=user.",
            Some(GOOD_TOKEN),
        )),
    )
    .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.header("content-type"), "application/x-ndjson");
    assert!(
        export
            .header("content-disposition")
            .starts_with("attachment")
    );
    let lines: Vec<serde_json::Value> = export
        .body
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 1);
    assert_eq!(lines[1]["action"], "user.suspend");
    assert_eq!(lines[1]["at"], "2026-12-03T23:10:00Z");
}
