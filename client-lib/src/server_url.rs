//! The homeserver address a client talks to, and the rule for when plain HTTP is allowed.
//!
//! An access token travels with every request, so it must never cross a network in
//! clear text: `https://` is required for every host except this machine's own
//! loopback addresses, where a developer's or a test's homeserver typically listens
//! without a certificate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::Uri;

/// Why a server URL was refused. Each message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerUrlError {
    /// The text is not a URL at all.
    #[error("server URL {url:?} is not a valid URL: {reason}")]
    Malformed { url: String, reason: String },
    /// The URL has no scheme or one other than `http`/`https`.
    #[error("server URL {0:?} must start with https:// (or http:// for a server on this machine)")]
    Scheme(String),
    /// The URL has no host.
    #[error("server URL {0:?} has no host")]
    MissingHost(String),
    /// The URL carries a path, query or user name; gRPC needs the bare origin.
    #[error(
        "server URL {0:?} must be just scheme, host and optional port, e.g. https://chat.example.org"
    )]
    NotAnOrigin(String),
    /// `http://` to a host that is not loopback would send the access token in clear.
    #[error(
        "server URL {0:?} uses plain http:// to a host that is not this machine; use https:// (http:// is allowed only for localhost, 127.0.0.0/8 and ::1)"
    )]
    InsecureRemote(String),
}

/// A validated homeserver origin such as `https://chat.example.org` or
/// `http://127.0.0.1:8443`. Displayed in a canonical form (lowercase scheme and
/// host, no trailing slash), which is also how it is remembered in the state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    uri: Uri,
    /// Whether the connection uses TLS (`https`).
    tls: bool,
}

impl ServerUrl {
    /// Whether connections to this server use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls
    }

    /// The host name or address without brackets, as TLS checks it.
    pub fn host(&self) -> &str {
        let host = self.uri.host().unwrap_or_default();
        host.trim_start_matches('[').trim_end_matches(']')
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }
}

impl FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(input: &str) -> Result<Self, ServerUrlError> {
        let uri: Uri =
            input
                .parse()
                .map_err(|error: http::uri::InvalidUri| ServerUrlError::Malformed {
                    url: input.to_owned(),
                    reason: error.to_string(),
                })?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ServerUrlError::Scheme(input.to_owned())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| ServerUrlError::MissingHost(input.to_owned()))?;
        if authority.host().is_empty() {
            return Err(ServerUrlError::MissingHost(input.to_owned()));
        }
        let path_is_root = matches!(uri.path(), "" | "/");
        if !path_is_root || uri.query().is_some() || authority.as_str().contains('@') {
            return Err(ServerUrlError::NotAnOrigin(input.to_owned()));
        }
        let host = authority.host().to_ascii_lowercase();
        if !tls && !is_loopback_host(&host) {
            return Err(ServerUrlError::InsecureRemote(input.to_owned()));
        }
        let canonical = match authority.port_u16() {
            Some(port) => format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
            None => format!("{}://{host}", if tls { "https" } else { "http" }),
        };
        // The canonical text was assembled from parts of a URI that just parsed, so
        // it parses again; the error arm is kept rather than unwrapping anyway.
        let uri = canonical.parse().map_err(|error: http::uri::InvalidUri| {
            ServerUrlError::Malformed {
                url: input.to_owned(),
                reason: error.to_string(),
            }
        })?;
        Ok(ServerUrl { uri, tls })
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Uri`'s Display adds a "/" path; the canonical form has none.
        let text = self.uri.to_string();
        f.write_str(text.strip_suffix('/').unwrap_or(&text))
    }
}

/// Whether `host` (as it appears in a URL, IPv6 in brackets) names this machine's
/// loopback interface: `localhost`, 127.0.0.0/8 or ::1 (also as ::ffff:127.x.y.z).
///
/// Names such as `foo.localhost` are refused: resolvers are not obliged to map
/// them to loopback, and a token sent in clear to a wrong guess is lost.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if host == "localhost" {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => address.is_loopback(),
        Ok(IpAddr::V6(address)) => {
            address.is_loopback() || address.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected` is the canonical form, or `Err(())` for a refusal.
    fn check(input: &str, expected: Result<&str, ()>) {
        let parsed = input.parse::<ServerUrl>();
        match (parsed, expected) {
            (Ok(url), Ok(canonical)) => assert_eq!(url.to_string(), canonical, "{input}"),
            (Err(_), Err(())) => {}
            (Ok(url), Err(())) => panic!("{input:?} was accepted as {url}"),
            (Err(error), Ok(_)) => panic!("{input:?} was refused: {error}"),
        }
    }

    #[test]
    fn https_is_allowed_everywhere() {
        check("https://chat.example.org", Ok("https://chat.example.org"));
        check("https://chat.example.org/", Ok("https://chat.example.org"));
        check(
            "HTTPS://Chat.Example.org:8443",
            Ok("https://chat.example.org:8443"),
        );
        check("https://192.0.2.7:443", Ok("https://192.0.2.7:443"));
        check(
            "https://[2001:db8::1]:8443",
            Ok("https://[2001:db8::1]:8443"),
        );
    }

    #[test]
    fn plain_http_only_to_loopback() {
        check("http://127.0.0.1:8080", Ok("http://127.0.0.1:8080"));
        check("http://127.1.2.3:8080", Ok("http://127.1.2.3:8080"));
        check("http://localhost:8080/", Ok("http://localhost:8080"));
        check("http://LOCALHOST", Ok("http://localhost"));
        check("http://[::1]:8080", Ok("http://[::1]:8080"));
        check(
            "http://[::ffff:127.0.0.1]:8080",
            Ok("http://[::ffff:127.0.0.1]:8080"),
        );
        check("http://chat.example.org", Err(()));
        check("http://192.168.1.10:8080", Err(()));
        check("http://10.0.0.1", Err(()));
        check("http://[2001:db8::1]", Err(()));
        check("http://foo.localhost", Err(()));
        check("http://localhost.example.org", Err(()));
        check("http://128.0.0.1", Err(()));
    }

    #[test]
    fn only_bare_origins() {
        check("chat.example.org", Err(()));
        check("ftp://chat.example.org", Err(()));
        check("https://", Err(()));
        check("https://chat.example.org/api", Err(()));
        check("https://chat.example.org/?x=1", Err(()));
        check("https://user@chat.example.org", Err(()));
        check("", Err(()));
        check("https://exa mple.org", Err(()));
    }

    #[test]
    fn insecure_remote_error_explains_the_rule() {
        let error = "http://chat.example.org".parse::<ServerUrl>().unwrap_err();
        assert!(matches!(error, ServerUrlError::InsecureRemote(_)));
        let message = error.to_string();
        assert!(message.contains("https://"), "{message}");
        assert!(message.contains("localhost"), "{message}");
    }

    #[test]
    fn host_is_unbracketed() {
        let url: ServerUrl = "http://[::1]:8080".parse().unwrap();
        assert_eq!(url.host(), "::1");
        assert!(!url.uses_tls());
        let url: ServerUrl = "https://chat.example.org".parse().unwrap();
        assert_eq!(url.host(), "chat.example.org");
        assert!(url.uses_tls());
    }
}
