//! Reaching a homeserver: a gRPC channel over TLS (or plain HTTP/2 to loopback), the
//! bearer-token interceptor, and the typed service clients built on them.

use std::sync::Arc;
use std::time::Duration;

use conclave_proto::client::v1::account_service_client::AccountServiceClient;
use conclave_proto::client::v1::delivery_service_client::DeliveryServiceClient;
use conclave_proto::client::v1::group_service_client::GroupServiceClient;
use conclave_proto::client::v1::key_package_service_client::KeyPackageServiceClient;
use rustls::pki_types::CertificateDer;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::call_tracing::TracedChannel;
use crate::server_url::ServerUrl;
use crate::session::AccessToken;
use crate::trust::{CertificateRefusal, ExplainingVerifier};

/// How long establishing a connection (TCP, TLS, HTTP/2) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Ping an idle connection this often, so a dead server or NAT mapping is noticed
/// before the next request rather than by it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Why no channel to the homeserver could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP, TLS or HTTP/2 setup failed; `reason` is the whole cause chain on one line.
    #[error("cannot connect to {server_url}: {reason}")]
    Unreachable { server_url: String, reason: String },
    /// The server's certificate was refused: not trusted, for another name,
    /// expired. Trying again does not help; trusting its CA (or fixing the
    /// server) does.
    #[error("cannot connect to {server_url}: {refusal}")]
    Certificate {
        server_url: String,
        refusal: CertificateRefusal,
    },
    /// tonic refused the endpoint configuration (an internal mistake, not the user's).
    #[error("cannot set up a connection to {server_url}: {reason}")]
    Configuration { server_url: String, reason: String },
    /// The access token cannot be sent as an HTTP header value.
    #[error("the stored access token is not valid header text; log out and log in again")]
    InvalidToken,
}

/// Opens a channel to `server_url`, with TLS for `https://` verified against the
/// system's trust store plus `extra_roots` (the CA files the user named; see
/// `crate::trust`). Each call through the channel gets a span and sends its
/// trace context (`crate::call_tracing`).
pub(crate) async fn connect(
    server_url: &ServerUrl,
    extra_roots: &[CertificateDer<'static>],
) -> Result<TracedChannel, ConnectError> {
    let configuration = |reason: String| ConnectError::Configuration {
        server_url: server_url.to_string(),
        reason,
    };
    let mut endpoint = Endpoint::from(server_url.uri().clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .user_agent(concat!("conclave-client/", env!("CARGO_PKG_VERSION")))
        .map_err(|error| configuration(error_chain(&error)))?;
    let mut verifier = None;
    if server_url.uses_tls() {
        let explaining = Arc::new(ExplainingVerifier::new(extra_roots).map_err(configuration)?);
        let tls = ClientTlsConfig::new().domain_name(server_url.host());
        endpoint = endpoint
            .tls_config_with_verifier(tls, explaining.clone())
            .map_err(|error| configuration(error_chain(&error)))?;
        verifier = Some(explaining);
    }
    tracing::debug!(%server_url, "connecting");
    let refusals = verifier.map(|verifier| RefusalWatch {
        server_url: server_url.to_string(),
        verifier,
    });
    match endpoint.connect().await {
        Ok(channel) => Ok(TracedChannel::new(channel, refusals)),
        Err(error) => Err(match refusals.as_ref().and_then(RefusalWatch::refused) {
            Some(refused) => refused.into(),
            None => ConnectError::Unreachable {
                server_url: server_url.to_string(),
                reason: error_chain(&error),
            },
        }),
    }
}

/// The TLS verifier of a channel's connections, with the address they go to:
/// tonic reconnects inside the channel, and this explains a certificate the
/// verifier refused there, as it does at the first connection.
#[derive(Debug, Clone)]
pub(crate) struct RefusalWatch {
    server_url: String,
    verifier: Arc<ExplainingVerifier>,
}

impl RefusalWatch {
    /// The certificate refused since the last look, if one was.
    pub(crate) fn refused(&self) -> Option<RefusedCertificate> {
        self.verifier
            .take_refusal()
            .map(|refusal| RefusedCertificate {
                server_url: self.server_url.clone(),
                refusal,
            })
    }
}

/// A connection refused for the server's certificate: the error of a call
/// whose channel could not reconnect for it, found again in the call's status
/// by [`refused_certificate`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to {server_url}: {refusal}")]
pub(crate) struct RefusedCertificate {
    server_url: String,
    refusal: CertificateRefusal,
}

impl From<RefusedCertificate> for ConnectError {
    fn from(refused: RefusedCertificate) -> Self {
        ConnectError::Certificate {
            server_url: refused.server_url,
            refusal: refused.refusal,
        }
    }
}

/// The certificate refusal a failed call's status carries (its channel
/// reconnected and the server's certificate was refused), as the error the
/// first connection would have given.
pub(crate) fn refused_certificate(status: &tonic::Status) -> Option<ConnectError> {
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedCertificate>() {
            return Some(refused.clone().into());
        }
        source = cause.source();
    }
    None
}

/// Adds `authorization: Bearer <token>` to every request, when there is a session.
#[derive(Clone)]
pub(crate) struct BearerAuth(Option<MetadataValue<Ascii>>);

impl BearerAuth {
    /// No authorization header: for Register and Login.
    pub(crate) fn none() -> Self {
        BearerAuth(None)
    }

    pub(crate) fn new(token: &AccessToken) -> Result<Self, ConnectError> {
        let value = format!("Bearer {}", token.as_str())
            .parse()
            .map_err(|_| ConnectError::InvalidToken)?;
        Ok(BearerAuth(Some(value)))
    }
}

impl Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(crate) type AccountClient = AccountServiceClient<InterceptedService<TracedChannel, BearerAuth>>;
pub(crate) type KeyPackageClient =
    KeyPackageServiceClient<InterceptedService<TracedChannel, BearerAuth>>;

pub(crate) fn account_client(channel: TracedChannel, auth: BearerAuth) -> AccountClient {
    AccountServiceClient::with_interceptor(channel, auth)
}

pub(crate) fn key_package_client(channel: TracedChannel, auth: BearerAuth) -> KeyPackageClient {
    KeyPackageServiceClient::with_interceptor(channel, auth)
}

pub(crate) type GroupClient = GroupServiceClient<InterceptedService<TracedChannel, BearerAuth>>;
pub(crate) type DeliveryClient =
    DeliveryServiceClient<InterceptedService<TracedChannel, BearerAuth>>;

pub(crate) fn group_client(channel: TracedChannel, auth: BearerAuth) -> GroupClient {
    GroupServiceClient::with_interceptor(channel, auth)
}

pub(crate) fn delivery_client(channel: TracedChannel, auth: BearerAuth) -> DeliveryClient {
    DeliveryServiceClient::with_interceptor(channel, auth)
}

/// An error and all its causes on one line ("transport error: tcp connect error:
/// Connection refused"), since tonic's own Display shows only the outermost.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and tonic often repeat the inner message in the outer one.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_added_only_with_a_token() {
        let request = BearerAuth::none().call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());

        let token = AccessToken::new("abc123".to_owned());
        let request = BearerAuth::new(&token)
            .unwrap()
            .call(tonic::Request::new(()))
            .unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer abc123"
        );
        assert!(BearerAuth::new(&AccessToken::new("bad\ntoken".to_owned())).is_err());
    }

    #[tokio::test]
    async fn unreachable_server_is_one_clear_line() {
        // Bind then drop a listener, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url: ServerUrl = format!("http://127.0.0.1:{port}").parse().unwrap();
        let error = connect(&url, &[]).await.unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cannot connect to {url}: ")),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }
}
