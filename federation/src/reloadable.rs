//! The federation TLS material in use now, replaced whole when its files are
//! renewed: every new handshake, in either direction, takes the current one;
//! connections made before a replacement keep the handshake they made.
//!
//! Replacing builds new rustls configurations rather than swapping the
//! certificate inside long-lived ones, for two reasons: the server's
//! client-certificate verifier hands out the trust roots' names by reference
//! (so it cannot look them up in something that changes), and each
//! configuration carries a TLS session cache. A resumed TLS 1.3 session skips
//! the certificates, so a cache kept across a replacement would let a peer
//! whose CA was just removed resume its old session, and would let this server
//! resume its calls with its old client certificate; fresh configurations
//! start with empty caches.

use crate::peers::CertificatePin;
use crate::server::CurrentServerConfig;
use crate::tls::{TlsError, TlsMaterial};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The federation TLS material in use now, with the configurations made of it.
pub struct ReloadableTls {
    current: RwLock<Arc<Loaded>>,
}

/// One generation of material and what is made of it.
struct Loaded {
    material: TlsMaterial,
    server_config: Arc<ServerConfig>,
    /// The client configuration per peer pin, made when first needed: a
    /// connection to a peer makes one only when the generation is new.
    client_configs: Mutex<HashMap<Option<CertificatePin>, Arc<ClientConfig>>>,
}

impl Loaded {
    fn new(material: TlsMaterial) -> Result<Loaded, TlsError> {
        Ok(Loaded {
            server_config: material.server_config()?,
            material,
            client_configs: Mutex::new(HashMap::new()),
        })
    }
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("material", &self.loaded().material)
            .finish()
    }
}

impl ReloadableTls {
    /// Starts with `material`.
    pub fn new(material: TlsMaterial) -> Result<ReloadableTls, TlsError> {
        Ok(ReloadableTls {
            current: RwLock::new(Arc::new(Loaded::new(material)?)),
        })
    }

    /// Makes `material` the one of every handshake from now on. Refused, with
    /// the current material kept, if it is for another domain than the current
    /// one (a homeserver's domain does not change while it runs).
    pub fn replace(&self, material: TlsMaterial) -> Result<(), TlsError> {
        let current_domain = self.loaded().material.domain().clone();
        if material.domain() != &current_domain {
            return Err(TlsError::DomainChanged {
                domain: current_domain,
                new_domain: material.domain().clone(),
            });
        }
        let loaded = Arc::new(Loaded::new(material)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This homeserver's own (end-entity) certificate now.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.loaded().material.certificate().clone()
    }

    /// The pin of this homeserver's certificate now.
    pub fn certificate_pin(&self) -> CertificatePin {
        self.loaded().material.certificate_pin()
    }

    /// The federation listener's configuration now ([`TlsMaterial::server_config`]).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.loaded().server_config.clone()
    }

    /// The configuration for calling a peer pinned to `pin` (or unpinned) now
    /// ([`TlsMaterial::client_config`]).
    pub fn client_config(
        &self,
        pin: Option<CertificatePin>,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let loaded = self.loaded();
        let mut configs = loaded
            .client_configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = configs.get(&pin) {
            return Ok(config.clone());
        }
        let config = loaded.material.client_config(pin)?;
        configs.insert(pin, config.clone());
        Ok(config)
    }
}

impl CurrentServerConfig for ReloadableTls {
    fn current(&self) -> Arc<ServerConfig> {
        self.server_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientOptions, FederationClient};
    use crate::dev_certs::DevCertificateAuthority;
    use crate::observer::NoObserver;
    use crate::peers::{PeerRegistry, PeerSettings};
    use crate::test_tls::{domain, handshake, material, now};
    use std::time::Duration;

    /// The certificate b.example's server presented, or both sides' errors.
    async fn presented(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Result<CertificatePin, String> {
        handshake(server, client, "b.example")
            .await
            .map(|handshake| CertificatePin::of(&handshake.server_certificate))
    }

    #[tokio::test]
    async fn new_handshakes_take_the_replacement_and_its_trust_roots() {
        let authority = DevCertificateAuthority::generate(now()).unwrap();
        let new_authority = DevCertificateAuthority::generate(now()).unwrap();
        let b_first = authority.issue(&domain("b.example"), &[]).unwrap();
        let b_renewed = authority.issue(&domain("b.example"), &[]).unwrap();
        let a = material(
            &authority.issue(&domain("a.example"), &[]).unwrap(),
            &[&authority],
        );
        let a_of_new_authority = material(
            &new_authority.issue(&domain("a.example"), &[]).unwrap(),
            &[&authority],
        );
        let b = ReloadableTls::new(material(&b_first, &[&authority])).unwrap();
        let a_config = a.client_config(None).unwrap();
        let server_config_before = b.server_config();

        assert_eq!(
            presented(b.server_config(), a_config.clone()).await,
            Ok(b_first.pin)
        );
        let refused = presented(
            b.server_config(),
            a_of_new_authority.client_config(None).unwrap(),
        )
        .await
        .unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{refused}");

        // Renewed, and trusting the new authority too.
        b.replace(material(&b_renewed, &[&authority, &new_authority]))
            .unwrap();
        assert_eq!(b.certificate_pin(), b_renewed.pin);
        assert_eq!(
            CertificatePin::of(&b.certificate()),
            b_renewed.pin,
            "the certificate is the renewed one"
        );
        assert_eq!(
            presented(b.server_config(), a_config.clone()).await,
            Ok(b_renewed.pin)
        );
        assert_eq!(
            presented(
                b.server_config(),
                a_of_new_authority.client_config(None).unwrap()
            )
            .await,
            Ok(b_renewed.pin)
        );
        // A configuration taken before the replacement (an open connection's)
        // is left as it was.
        assert_eq!(
            presented(server_config_before, a_config).await,
            Ok(b_first.pin)
        );

        // Material for another domain is refused and changes nothing.
        let error = b
            .replace(material(
                &authority.issue(&domain("c.example"), &[]).unwrap(),
                &[&authority],
            ))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the new certificate is for c.example, but this homeserver's domain is b.example"
        );
        assert_eq!(b.certificate_pin(), b_renewed.pin);
    }

    /// A peer that completes each TLS handshake, reports the client
    /// certificate it got, and hangs up (so every call makes a new connection).
    async fn recording_peer(
        config: Arc<ServerConfig>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<CertificatePin>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(stream) = acceptor.accept(tcp).await
                    && let Some(certificates) = stream.get_ref().1.peer_certificates()
                {
                    let _ = sender.send(CertificatePin::of(&certificates[0]));
                }
            }
        });
        (address, receiver)
    }

    /// The next client certificate the recording peer got.
    async fn next(
        presented: &mut tokio::sync::mpsc::UnboundedReceiver<CertificatePin>,
        what: &str,
    ) -> CertificatePin {
        tokio::time::timeout(Duration::from_secs(10), presented.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no handshake in 10 s"))
            .expect("the recording peer runs")
    }

    #[tokio::test]
    async fn connections_made_after_a_replacement_present_the_new_client_certificate() {
        let authority = DevCertificateAuthority::generate(now()).unwrap();
        let a_first = authority.issue(&domain("a.example"), &[]).unwrap();
        let a_renewed = authority.issue(&domain("a.example"), &[]).unwrap();
        let b = material(
            &authority.issue(&domain("b.example"), &[]).unwrap(),
            &[&authority],
        );
        let (address, mut presented) = recording_peer(b.server_config().unwrap()).await;
        let endpoint = format!("https://{address}");
        let registry = PeerRegistry::new(
            domain("a.example"),
            [PeerSettings {
                domain: "b.example",
                endpoint: &endpoint,
                pinned_sha256: None,
            }],
        )
        .unwrap();
        let options = ClientOptions {
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_message_bytes: 1024 * 1024,
        };
        let tls = Arc::new(ReloadableTls::new(material(&a_first, &[&authority])).unwrap());
        let client =
            FederationClient::observed(tls.clone(), &registry, &options, Arc::new(NoObserver))
                .unwrap();
        let requester: conclave_core::ids::CredentialIdentity =
            "alice@a.example/00000000000000a1".parse().unwrap();
        let b_domain = domain("b.example");
        let call = || client.fetch_group_info(&b_domain, &requester, vec![1]);

        // The peer hangs up after the handshake: the call fails, and the
        // next one connects again.
        call().await.unwrap_err();
        assert_eq!(next(&mut presented, "first call").await, a_first.pin);
        tls.replace(material(&a_renewed, &[&authority])).unwrap();
        // Handshakes of connections made before the replacement, if the
        // first call made more than one, are not this test's subject.
        while presented.try_recv().is_ok() {}
        call().await.unwrap_err();
        assert_eq!(
            next(&mut presented, "call after the renewal").await,
            a_renewed.pin
        );
    }
}
