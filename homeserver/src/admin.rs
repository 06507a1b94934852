//! Operator commands that act on the database directly, without a running server
//! (the `conclave-homeserver registration-token ...` subcommands).

use crate::config::Config;
use crate::service::registration_tokens::{self, NewRegistrationToken};
use crate::service::{Clock, Context};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a registration token good for `uses` registrations, expiring after
/// `valid_for_days` days if given.
pub async fn create_registration_token(
    config: Config,
    clock: Arc<dyn Clock>,
    uses: u32,
    valid_for_days: Option<u32>,
) -> Result<NewRegistrationToken, AdminError> {
    let store = Store::connect(&config.database.url, 1).await?;
    store.migrate().await?;
    let context = Context::new(store.clone(), config, clock);
    let valid_for_ms = valid_for_days.map(|days| i64::from(days) * 24 * 3600 * 1000);
    let token = registration_tokens::create(&context, uses, valid_for_ms).await?;
    store.close().await?;
    Ok(token)
}
