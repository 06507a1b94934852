//! The counts of the admin overview, each one `COUNT` (or a small aggregate)
//! so that the console's front page stays cheap on a large domain.

use super::entities::{device, group, user};
use super::{Connection, StoreError};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

/// The domain's counts that the database alone knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainCounts {
    /// Accounts neither suspended nor deactivated.
    pub(crate) active_users: u64,
    /// Suspended accounts (not deactivated: deactivation is final and wins).
    pub(crate) suspended_users: u64,
    pub(crate) deactivated_users: u64,
    pub(crate) devices: u64,
    pub(crate) hosted_groups: u64,
    pub(crate) followed_groups: u64,
    /// Registration tokens with uses left, not expired at `now_ms` and not
    /// revoked.
    pub(crate) usable_registration_tokens: u64,
}

pub(crate) async fn domain_counts(
    db: &impl Connection,
    now_ms: i64,
) -> Result<DomainCounts, StoreError> {
    let connection = db.database();
    let active_users = user::Entity::find()
        .filter(user::Column::SuspendedAtMs.is_null())
        .filter(user::Column::DeactivatedAtMs.is_null())
        .count(connection)
        .await?;
    let suspended_users = user::Entity::find()
        .filter(user::Column::SuspendedAtMs.is_not_null())
        .filter(user::Column::DeactivatedAtMs.is_null())
        .count(connection)
        .await?;
    let deactivated_users = user::Entity::find()
        .filter(user::Column::DeactivatedAtMs.is_not_null())
        .count(connection)
        .await?;
    let devices = device::Entity::find().count(connection).await?;
    let hosted_groups = group::Entity::find()
        .filter(group::Column::HubDomain.is_null())
        .count(connection)
        .await?;
    let followed_groups = group::Entity::find()
        .filter(group::Column::HubDomain.is_not_null())
        .count(connection)
        .await?;
    // Revoked tokens are not usable either (the store's one condition).
    let usable_registration_tokens = super::count_usable_registration_tokens(db, now_ms).await?;
    Ok(DomainCounts {
        active_users,
        suspended_users,
        deactivated_users,
        devices,
        hosted_groups,
        followed_groups,
        usable_registration_tokens,
    })
}
