//! Configuration files: TOML text parsed into the configuration and validated
//! as `Config::load` does, then the peers turned into the federation registry.

use crate::config::Config;

/// A configuration file's text. The files it names (TLS certificates and
/// keys) are not read: validation never reads them (`crate::preflight`
/// does, at start), and a fuzzed path could name a device that never ends.
pub fn config(data: &[u8]) {
    let _ = judge_config(data);
}

pub(super) fn judge_config(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|error| error.to_string())?;
    let mut config = Config::from_toml(text).map_err(|error| error.to_string())?;
    // Every check that needs no file still runs: the federation's values
    // before the files, and the peers through the registry below.
    config.client_api.tls_certificate = None;
    config.client_api.tls_private_key = None;
    let federation = &mut config.federation;
    (
        federation.certificate,
        federation.private_key,
        federation.trust_roots,
    ) = (None, None, None);
    let peers = std::mem::take(&mut federation.peers);
    config.validate().map_err(|error| error.to_string())?;
    config.federation.peers = peers;
    config
        .federation
        .peer_registry(config.domain())
        .map_err(|error| error.to_string())?;
    Ok(())
}
