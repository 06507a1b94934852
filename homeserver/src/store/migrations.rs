//! The database schema, as sea-orm migrations that run at start. Each migration is
//! written once and never edited after it has shipped; changes come as new ones.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, blob, boolean, integer, string, string_null,
};

/// All migrations, oldest first.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateAccountsAndKeyPackages)]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    PasswordHash,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    UserId,
    DisplayName,
    SignaturePublicKey,
    AccessTokenHash,
    CreatedAtMs,
    LastSeenAtMs,
}

#[derive(DeriveIden)]
enum RegistrationTokens {
    Table,
    Id,
    TokenHash,
    UsesAllowed,
    UsesCount,
    ExpiresAtMs,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum KeyPackages {
    Table,
    Id,
    DeviceId,
    HashRef,
    Data,
    LastResort,
    NotAfterMs,
    ClaimedAtMs,
    ClaimedBy,
    CreatedAtMs,
}

/// Accounts, devices (with their signature keys and access tokens), registration
/// tokens and the key-package directory.
struct CreateAccountsAndKeyPackages;

impl MigrationName for CreateAccountsAndKeyPackages {
    fn name(&self) -> &str {
        "m0001_create_accounts_and_key_packages"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAccountsAndKeyPackages {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(big_pk_auto(Users::Id))
                    .col(string(Users::Username).unique_key())
                    .col(string(Users::PasswordHash))
                    .col(big_integer(Users::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .col(string(Devices::Id).primary_key())
                    .col(big_integer(Devices::UserId))
                    .col(string(Devices::DisplayName))
                    .col(blob(Devices::SignaturePublicKey).unique_key())
                    .col(blob(Devices::AccessTokenHash).unique_key())
                    .col(big_integer(Devices::CreatedAtMs))
                    .col(big_integer(Devices::LastSeenAtMs))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Devices::Table, Devices::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("devices_by_user")
                    .table(Devices::Table)
                    .col(Devices::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RegistrationTokens::Table)
                    .col(big_pk_auto(RegistrationTokens::Id))
                    .col(blob(RegistrationTokens::TokenHash).unique_key())
                    .col(integer(RegistrationTokens::UsesAllowed))
                    .col(integer(RegistrationTokens::UsesCount))
                    .col(big_integer_null(RegistrationTokens::ExpiresAtMs))
                    .col(big_integer(RegistrationTokens::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KeyPackages::Table)
                    .col(big_pk_auto(KeyPackages::Id))
                    .col(string(KeyPackages::DeviceId))
                    .col(blob(KeyPackages::HashRef).unique_key())
                    .col(blob(KeyPackages::Data))
                    .col(boolean(KeyPackages::LastResort))
                    .col(big_integer(KeyPackages::NotAfterMs))
                    .col(big_integer_null(KeyPackages::ClaimedAtMs))
                    .col(string_null(KeyPackages::ClaimedBy))
                    .col(big_integer(KeyPackages::CreatedAtMs))
                    .foreign_key(
                        ForeignKey::create()
                            .from(KeyPackages::Table, KeyPackages::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Claims look for the oldest unclaimed ordinary package of one device.
        manager
            .create_index(
                Index::create()
                    .name("key_packages_for_claim")
                    .table(KeyPackages::Table)
                    .col(KeyPackages::DeviceId)
                    .col(KeyPackages::LastResort)
                    .col(KeyPackages::ClaimedAtMs)
                    .col(KeyPackages::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
