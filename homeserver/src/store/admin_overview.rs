//! The counts of the admin overview, each one `COUNT` (or a small aggregate)
//! so that the console's front page stays cheap on a large domain.

use super::entities::{device, group, registration_token, user};
use super::{Connection, StoreError};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

/// The domain's counts that the database alone knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainCounts {
    pub(crate) users: u64,
    pub(crate) devices: u64,
    pub(crate) hosted_groups: u64,
    pub(crate) followed_groups: u64,
    /// Registration tokens with uses left that have not expired at `now_ms`.
    pub(crate) usable_registration_tokens: u64,
}

pub(crate) async fn domain_counts(
    db: &impl Connection,
    now_ms: i64,
) -> Result<DomainCounts, StoreError> {
    let connection = db.database();
    let users = user::Entity::find().count(connection).await?;
    let devices = device::Entity::find().count(connection).await?;
    let hosted_groups = group::Entity::find()
        .filter(group::Column::HubDomain.is_null())
        .count(connection)
        .await?;
    let followed_groups = group::Entity::find()
        .filter(group::Column::HubDomain.is_not_null())
        .count(connection)
        .await?;
    // The condition of `consume_registration_token`.
    let usable_registration_tokens = registration_token::Entity::find()
        .filter(
            Expr::col(registration_token::Column::UsesCount)
                .lt(Expr::col(registration_token::Column::UsesAllowed)),
        )
        .filter(
            registration_token::Column::ExpiresAtMs
                .is_null()
                .or(registration_token::Column::ExpiresAtMs.gt(now_ms)),
        )
        .count(connection)
        .await?;
    Ok(DomainCounts {
        users,
        devices,
        hosted_groups,
        followed_groups,
        usable_registration_tokens,
    })
}
