//! The database schema, as sea-orm migrations that run at start. Each migration is
//! written once and never edited after it has shipped; changes come as new ones.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, blob, blob_null, boolean, integer, small_integer,
    string, string_null, text, text_null,
};

/// All migrations, oldest first.
pub(crate) struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateAccountsAndKeyPackages),
            Box::new(CreateGroupsAndDelivery),
            Box::new(AddFederatedGroups),
            Box::new(AddMessageDigests),
            Box::new(AddEnrolmentChallenges),
            Box::new(AddKeyPackageClaims),
            Box::new(AddBackgroundLeases),
            Box::new(DepartureAddPendingDepartures),
            Box::new(AdminUsersAddAccountState),
            Box::new(AdminCoreAuditLog),
            Box::new(AdminCoreAdminRole),
            Box::new(AdminCoreAdminSessions),
            Box::new(AdminGroupsAddGroupActivity),
            Box::new(AdminGroupsAddTokenRevocation),
            Box::new(HubcommitSharedWelcomes),
            Box::new(PqKeyPackageSuites),
            Box::new(HubStateFormat2),
            Box::new(HubUncompressedBlobs),
            Box::new(HubStateBesideWelcome),
        ]
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

#[derive(DeriveIden)]
enum Groups {
    Table,
    Id,
    MlsGroupId,
    Epoch,
    LastSeq,
    State,
    CreatedBy,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum GroupEvents {
    Table,
    GroupId,
    Seq,
    Kind,
    Epoch,
    SenderIdentity,
    Message,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum GroupCommits {
    Table,
    GroupId,
    Epoch,
    Seq,
}

#[derive(DeriveIden)]
enum GroupMembers {
    Table,
    GroupId,
    Identity,
    UserId,
    DeviceId,
    JoinedAfterSeq,
    RemovedAtSeq,
    AckedSeq,
}

#[derive(DeriveIden)]
enum Inboxes {
    Table,
    DeviceId,
    LastSeq,
    AckedSeq,
}

#[derive(DeriveIden)]
enum InboxEvents {
    Table,
    DeviceId,
    Seq,
    GroupId,
    CommitSeq,
    Welcome,
    RatchetTree,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum Submissions {
    Table,
    Identity,
    IdempotencyKey,
    RequestHash,
    GroupId,
    Seq,
    Epoch,
    CreatedAtMs,
}

/// Groups hosted here (the hub role): their public MLS state, one ordered log each,
/// one commit per epoch, members with their cursors, per-device inboxes, and the
/// idempotency record of every submission.
struct CreateGroupsAndDelivery;

impl MigrationName for CreateGroupsAndDelivery {
    fn name(&self) -> &str {
        "m0002_create_groups_and_delivery"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateGroupsAndDelivery {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Groups::Table)
                    .col(big_pk_auto(Groups::Id))
                    .col(blob(Groups::MlsGroupId).unique_key())
                    .col(big_integer(Groups::Epoch))
                    .col(big_integer(Groups::LastSeq))
                    .col(blob(Groups::State))
                    .col(string(Groups::CreatedBy))
                    .col(big_integer(Groups::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GroupEvents::Table)
                    .col(big_integer(GroupEvents::GroupId))
                    .col(big_integer(GroupEvents::Seq))
                    .col(small_integer(GroupEvents::Kind))
                    .col(big_integer(GroupEvents::Epoch))
                    .col(string(GroupEvents::SenderIdentity))
                    .col(blob(GroupEvents::Message))
                    .col(big_integer(GroupEvents::CreatedAtMs))
                    .primary_key(
                        Index::create()
                            .col(GroupEvents::GroupId)
                            .col(GroupEvents::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(GroupEvents::Table, GroupEvents::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The primary key (group, epoch) is what makes "exactly one commit per
        // epoch" hold across replicas, whatever the application code does.
        manager
            .create_table(
                Table::create()
                    .table(GroupCommits::Table)
                    .col(big_integer(GroupCommits::GroupId))
                    .col(big_integer(GroupCommits::Epoch))
                    .col(big_integer(GroupCommits::Seq))
                    .primary_key(
                        Index::create()
                            .col(GroupCommits::GroupId)
                            .col(GroupCommits::Epoch),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(GroupCommits::Table, GroupCommits::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GroupMembers::Table)
                    .col(big_integer(GroupMembers::GroupId))
                    .col(string(GroupMembers::Identity))
                    .col(string(GroupMembers::UserId))
                    .col(string(GroupMembers::DeviceId))
                    .col(big_integer(GroupMembers::JoinedAfterSeq))
                    .col(big_integer_null(GroupMembers::RemovedAtSeq))
                    .col(big_integer(GroupMembers::AckedSeq))
                    .primary_key(
                        Index::create()
                            .col(GroupMembers::GroupId)
                            .col(GroupMembers::Identity),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(GroupMembers::Table, GroupMembers::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("group_members_by_device")
                    .table(GroupMembers::Table)
                    .col(GroupMembers::DeviceId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Inboxes::Table)
                    .col(string(Inboxes::DeviceId).primary_key())
                    .col(big_integer(Inboxes::LastSeq))
                    .col(big_integer(Inboxes::AckedSeq))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Inboxes::Table, Inboxes::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InboxEvents::Table)
                    .col(string(InboxEvents::DeviceId))
                    .col(big_integer(InboxEvents::Seq))
                    .col(big_integer(InboxEvents::GroupId))
                    .col(big_integer(InboxEvents::CommitSeq))
                    .col(blob(InboxEvents::Welcome))
                    .col(blob(InboxEvents::RatchetTree))
                    .col(big_integer(InboxEvents::CreatedAtMs))
                    .primary_key(
                        Index::create()
                            .col(InboxEvents::DeviceId)
                            .col(InboxEvents::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(InboxEvents::Table, InboxEvents::DeviceId)
                            .to(Devices::Table, Devices::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(InboxEvents::Table, InboxEvents::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Submissions::Table)
                    .col(string(Submissions::Identity))
                    .col(blob(Submissions::IdempotencyKey))
                    .col(blob(Submissions::RequestHash))
                    .col(big_integer(Submissions::GroupId))
                    .col(big_integer(Submissions::Seq))
                    .col(big_integer(Submissions::Epoch))
                    .col(big_integer(Submissions::CreatedAtMs))
                    .primary_key(
                        Index::create()
                            .col(Submissions::Identity)
                            .col(Submissions::IdempotencyKey),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum FederationPeerGroups {
    Table,
    GroupId,
    PeerDomain,
    JoinedAfterSeq,
    DeliveredSeq,
    UntilSeq,
}

#[derive(DeriveIden)]
enum RemoteMembershipChanges {
    Table,
    GroupId,
    Seq,
    Identity,
    Domain,
    Added,
}

#[derive(DeriveIden)]
enum RemoteWelcomes {
    Table,
    GroupId,
    Seq,
    Welcome,
    RatchetTree,
}

#[derive(DeriveIden)]
enum FederationPeers {
    Table,
    Domain,
    LastSuccessAtMs,
    LastError,
    LastErrorAtMs,
    ConsecutiveFailures,
}

#[derive(DeriveIden)]
enum GroupsFederation {
    #[sea_orm(iden = "groups")]
    Table,
    HubDomain,
    HubMemberCount,
}

#[derive(DeriveIden)]
enum GroupEventsFederation {
    #[sea_orm(iden = "group_events")]
    Table,
    TraceParent,
}

#[derive(DeriveIden)]
enum GroupMembersFederation {
    #[sea_orm(iden = "group_members")]
    Table,
    RemoteDomain,
}

/// Groups that span domains. At the hub: which domain each member device is on,
/// the trace each event was submitted in (its delivery to followers continues
/// it),
/// each follower domain's outbox cursor per group (the log itself is the outbox,
/// so a message costs no extra write per peer), the membership changes and
/// Welcomes followers need, stored once per commit, and each peer's delivery
/// status. At a follower: groups hosted elsewhere (`hub_domain`), whose log is
/// the copy the hub delivered.
struct AddFederatedGroups;

impl MigrationName for AddFederatedGroups {
    fn name(&self) -> &str {
        "m0003_add_federated_groups"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddFederatedGroups {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(GroupsFederation::Table)
                    .add_column(string_null(GroupsFederation::HubDomain))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(GroupsFederation::Table)
                    .add_column(big_integer_null(GroupsFederation::HubMemberCount))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(GroupEventsFederation::Table)
                    .add_column(string_null(GroupEventsFederation::TraceParent))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(GroupMembersFederation::Table)
                    .add_column(string_null(GroupMembersFederation::RemoteDomain))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FederationPeerGroups::Table)
                    .col(big_integer(FederationPeerGroups::GroupId))
                    .col(string(FederationPeerGroups::PeerDomain))
                    .col(big_integer(FederationPeerGroups::JoinedAfterSeq))
                    .col(big_integer(FederationPeerGroups::DeliveredSeq))
                    .col(big_integer_null(FederationPeerGroups::UntilSeq))
                    .primary_key(
                        Index::create()
                            .col(FederationPeerGroups::GroupId)
                            .col(FederationPeerGroups::PeerDomain),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(FederationPeerGroups::Table, FederationPeerGroups::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("federation_peer_groups_by_peer")
                    .table(FederationPeerGroups::Table)
                    .col(FederationPeerGroups::PeerDomain)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RemoteMembershipChanges::Table)
                    .col(big_integer(RemoteMembershipChanges::GroupId))
                    .col(big_integer(RemoteMembershipChanges::Seq))
                    .col(string(RemoteMembershipChanges::Identity))
                    .col(string(RemoteMembershipChanges::Domain))
                    .col(boolean(RemoteMembershipChanges::Added))
                    .primary_key(
                        Index::create()
                            .col(RemoteMembershipChanges::GroupId)
                            .col(RemoteMembershipChanges::Seq)
                            .col(RemoteMembershipChanges::Identity),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                RemoteMembershipChanges::Table,
                                RemoteMembershipChanges::GroupId,
                            )
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RemoteWelcomes::Table)
                    .col(big_integer(RemoteWelcomes::GroupId))
                    .col(big_integer(RemoteWelcomes::Seq))
                    .col(blob(RemoteWelcomes::Welcome))
                    .col(blob(RemoteWelcomes::RatchetTree))
                    .primary_key(
                        Index::create()
                            .col(RemoteWelcomes::GroupId)
                            .col(RemoteWelcomes::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RemoteWelcomes::Table, RemoteWelcomes::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FederationPeers::Table)
                    .col(string(FederationPeers::Domain).primary_key())
                    .col(big_integer_null(FederationPeers::LastSuccessAtMs))
                    .col(string_null(FederationPeers::LastError))
                    .col(big_integer_null(FederationPeers::LastErrorAtMs))
                    .col(big_integer(FederationPeers::ConsecutiveFailures))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum GroupEventsDigest {
    #[sea_orm(iden = "group_events")]
    Table,
    GroupId,
    MessageDigest,
}

/// Replay protection at the hub: the SHA-256 of every message the hub accepts
/// into a group's log, unique per group, so the same bytes cannot be stored
/// twice (a member resubmitting another's ciphertext as its own), whichever
/// replica receives them. A column of the log entry and one index, so a
/// message still costs one log row. Rows from before this migration, and a
/// follower's copies of a hub's events, have no digest (NULL): both databases
/// let any number of NULLs share a unique index. A pruned entry takes its
/// digest with it; by then its epoch is far outside the window a message may
/// be sent in.
struct AddMessageDigests;

impl MigrationName for AddMessageDigests {
    fn name(&self) -> &str {
        "m0004_add_message_digests"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddMessageDigests {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(GroupEventsDigest::Table)
                    .add_column(blob_null(GroupEventsDigest::MessageDigest))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("group_events_by_message_digest")
                    .table(GroupEventsDigest::Table)
                    .col(GroupEventsDigest::GroupId)
                    .col(GroupEventsDigest::MessageDigest)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ServerSecrets {
    Table,
    Name,
    Secret,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum UsedEnrolmentChallenges {
    Table,
    ChallengeDigest,
    ExpiresAtMs,
}

/// Proof of possession at enrolment. `server_secrets` holds secrets of the whole
/// domain, made by the first replica that needs one and read by the others (the
/// key of the enrolment challenges' MAC); `used_enrolment_challenges` makes each
/// challenge good for one enrolment (its digest is the primary key) until it
/// expires, when the janitor deletes it (by the index on the expiry).
struct AddEnrolmentChallenges;

impl MigrationName for AddEnrolmentChallenges {
    fn name(&self) -> &str {
        "m0005_add_enrolment_challenges"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddEnrolmentChallenges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ServerSecrets::Table)
                    .col(string(ServerSecrets::Name).primary_key())
                    .col(blob(ServerSecrets::Secret))
                    .col(big_integer(ServerSecrets::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsedEnrolmentChallenges::Table)
                    .col(blob(UsedEnrolmentChallenges::ChallengeDigest).primary_key())
                    .col(big_integer(UsedEnrolmentChallenges::ExpiresAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("used_enrolment_challenges_by_expiry")
                    .table(UsedEnrolmentChallenges::Table)
                    .col(UsedEnrolmentChallenges::ExpiresAtMs)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum KeyPackageClaims {
    Table,
    HashRef,
    ClaimerDomain,
    DeviceId,
    NotAfterMs,
}

/// Which domains the directory handed each key package to, so a follower can
/// check that a Welcome its hub delivers for a device here is addressed to a
/// package the hub's side claimed. A row per package and claiming domain (a
/// last-resort package is handed out again and again, but recorded once per
/// domain), keyed so the check is one lookup; the janitor deletes rows with
/// their package's lifetime. Packages claimed before this migration are
/// recorded from `key_packages.claimed_by` (for a last-resort package, its last
/// claimer).
struct AddKeyPackageClaims;

impl MigrationName for AddKeyPackageClaims {
    fn name(&self) -> &str {
        "m0006_add_key_package_claims"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddKeyPackageClaims {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyPackageClaims::Table)
                    .col(blob(KeyPackageClaims::HashRef))
                    .col(string(KeyPackageClaims::ClaimerDomain))
                    .col(string(KeyPackageClaims::DeviceId))
                    .col(big_integer(KeyPackageClaims::NotAfterMs))
                    .primary_key(
                        Index::create()
                            .col(KeyPackageClaims::HashRef)
                            .col(KeyPackageClaims::ClaimerDomain),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("key_package_claims_by_expiry")
                    .table(KeyPackageClaims::Table)
                    .col(KeyPackageClaims::NotAfterMs)
                    .to_owned(),
            )
            .await?;
        let connection = manager.get_connection();
        let claimed = Query::select()
            .columns([
                KeyPackages::HashRef,
                KeyPackages::DeviceId,
                KeyPackages::NotAfterMs,
                KeyPackages::ClaimedBy,
            ])
            .from(KeyPackages::Table)
            .and_where(Expr::col(KeyPackages::ClaimedBy).is_not_null())
            .to_owned();
        for row in connection.query_all(&claimed).await? {
            let hash_ref: Vec<u8> = row.try_get("", "hash_ref")?;
            let device_id: String = row.try_get("", "device_id")?;
            let not_after_ms: i64 = row.try_get("", "not_after_ms")?;
            let claimed_by: String = row.try_get("", "claimed_by")?;
            // `name@domain/device_id`, written by this server.
            let Some(domain) = claimed_by
                .split_once('@')
                .and_then(|(_, rest)| rest.split_once('/'))
                .map(|(domain, _)| domain.to_owned())
            else {
                continue;
            };
            let insert = Query::insert()
                .into_table(KeyPackageClaims::Table)
                .columns([
                    KeyPackageClaims::HashRef,
                    KeyPackageClaims::ClaimerDomain,
                    KeyPackageClaims::DeviceId,
                    KeyPackageClaims::NotAfterMs,
                ])
                .values_panic([
                    hash_ref.into(),
                    domain.into(),
                    device_id.into(),
                    not_after_ms.into(),
                ])
                .to_owned();
            connection.execute(&insert).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum BackgroundLeases {
    Table,
    Name,
    Owner,
    ExpiresAtMs,
}

/// Leases on the background work that must run on one replica at a time (a
/// peer's outbox, the janitor): a row per job naming the replica that holds it
/// and until when. No row, or an expired one, means the job is free.
struct AddBackgroundLeases;

impl MigrationName for AddBackgroundLeases {
    fn name(&self) -> &str {
        "m0007_add_background_leases"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddBackgroundLeases {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BackgroundLeases::Table)
                    .col(string(BackgroundLeases::Name).primary_key())
                    .col(string(BackgroundLeases::Owner))
                    .col(big_integer(BackgroundLeases::ExpiresAtMs))
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum PendingDepartures {
    Table,
    GroupId,
    Identity,
    HubDomain,
    Reason,
    CreatedAtMs,
}

/// Departures of this domain's devices that the hubs of other domains' groups
/// have yet to hear of (AnnounceDeparture): a row per group and departed
/// device, kept until the hub answered, so a hub that is down hears of it later.
struct DepartureAddPendingDepartures;

impl MigrationName for DepartureAddPendingDepartures {
    fn name(&self) -> &str {
        "m0008_departure_add_pending_departures"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DepartureAddPendingDepartures {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PendingDepartures::Table)
                    .col(big_integer(PendingDepartures::GroupId))
                    .col(string(PendingDepartures::Identity))
                    .col(string(PendingDepartures::HubDomain))
                    .col(string(PendingDepartures::Reason))
                    .col(big_integer(PendingDepartures::CreatedAtMs))
                    .primary_key(
                        Index::create()
                            .col(PendingDepartures::GroupId)
                            .col(PendingDepartures::Identity),
                    )
                    .to_owned(),
            )
            .await?;
        // The outbox task of each peer reads the departures for that hub.
        manager
            .create_index(
                Index::create()
                    .name("pending_departures_by_hub")
                    .table(PendingDepartures::Table)
                    .col(PendingDepartures::HubDomain)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UsersState {
    #[sea_orm(iden = "users")]
    Table,
    SuspendedAtMs,
    DeactivatedAtMs,
    StateReason,
}

/// Where an account stands (the admin API's users slice): suspended while
/// `suspended_at_ms` is set, deactivated for good once `deactivated_at_ms` is,
/// with the administrator's reason. Nullable columns, so existing accounts
/// are active. A deactivated account keeps its row: its username stays taken.
/// (Devices' `last_seen_at_ms` exists since m0001.)
struct AdminUsersAddAccountState;

impl MigrationName for AdminUsersAddAccountState {
    fn name(&self) -> &str {
        "m0008_admin_users_add_account_state"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AdminUsersAddAccountState {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in [
            big_integer_null(UsersState::SuspendedAtMs),
            big_integer_null(UsersState::DeactivatedAtMs),
            text_null(UsersState::StateReason),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(UsersState::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    AtMs,
    Actor,
    Action,
    Target,
    Address,
    Succeeded,
    Detail,
}

/// The audit log of administration: a row per admin action or refusal, from
/// the admin API, the web console or `conclave-homeserver admin`. Appended
/// to, never changed or deleted by the server; the id orders the entries
/// (newest first when listed) and is the paging key. The index on the actor
/// serves the console's "what did this admin do" filter; the time is the id's
/// order, so it needs no index of its own.
struct AdminCoreAuditLog;

impl MigrationName for AdminCoreAuditLog {
    fn name(&self) -> &str {
        "m0008_admin_core_audit_log"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AdminCoreAuditLog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_pk_auto(AuditLog::Id))
                    .col(big_integer(AuditLog::AtMs))
                    .col(string(AuditLog::Actor))
                    .col(string(AuditLog::Action))
                    .col(string(AuditLog::Target))
                    .col(string(AuditLog::Address))
                    .col(boolean(AuditLog::Succeeded))
                    .col(text(AuditLog::Detail))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_by_actor")
                    .table(AuditLog::Table)
                    .col(AuditLog::Actor)
                    .col(AuditLog::Id)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UsersAdminRole {
    #[sea_orm(iden = "users")]
    Table,
    IsAdmin,
}

/// The admin role: a flag on the account, false for every existing account;
/// granted and revoked on the server's host (`conclave-homeserver admin grant`
/// and `revoke`), never through an API.
struct AdminCoreAdminRole;

impl MigrationName for AdminCoreAdminRole {
    fn name(&self) -> &str {
        "m0008_admin_core_admin_role"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AdminCoreAdminRole {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UsersAdminRole::Table)
                    .add_column(boolean(UsersAdminRole::IsAdmin).default(false))
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum AdminSessions {
    Table,
    TokenHash,
    UserId,
    CreatedAtMs,
    LastUsedAtMs,
    ExpiresAtMs,
    Address,
}

#[derive(DeriveIden)]
enum UsersOfAdminSessions {
    #[sea_orm(iden = "users")]
    Table,
    Id,
}

/// Admin sessions: a row per login to the admin API or the console, keyed by
/// the SHA-256 of its bearer token (the token itself is never stored). It
/// ends when idle for `[admin] session_idle_minutes` (by `last_used_at_ms`),
/// at `expires_at_ms` (login plus `[admin] session_max_hours`), on logout,
/// and with its account's admin role; the janitor deletes the ended ones it
/// finds by the index on the expiry.
struct AdminCoreAdminSessions;

impl MigrationName for AdminCoreAdminSessions {
    fn name(&self) -> &str {
        "m0008_admin_core_admin_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AdminCoreAdminSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AdminSessions::Table)
                    .col(blob(AdminSessions::TokenHash).primary_key())
                    .col(big_integer(AdminSessions::UserId))
                    .col(big_integer(AdminSessions::CreatedAtMs))
                    .col(big_integer(AdminSessions::LastUsedAtMs))
                    .col(big_integer(AdminSessions::ExpiresAtMs))
                    .col(string(AdminSessions::Address))
                    .foreign_key(
                        ForeignKey::create()
                            .from(AdminSessions::Table, AdminSessions::UserId)
                            .to(UsersOfAdminSessions::Table, UsersOfAdminSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("admin_sessions_by_user")
                    .table(AdminSessions::Table)
                    .col(AdminSessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("admin_sessions_by_expiry")
                    .table(AdminSessions::Table)
                    .col(AdminSessions::ExpiresAtMs)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum GroupsActivity {
    #[sea_orm(iden = "groups")]
    Table,
    LastActivityAtMs,
    LastCommitAtMs,
}

/// When a group last grew and last changed epoch, for the admin API (groups
/// listed most recently active first; the inspector's last commit). Kept on the
/// group's row by the UPDATE that already moves `last_seq` (the new event's
/// own time, read back in that statement), because the log cannot tell: the
/// janitor prunes it, often whole. No index on the activity: a message's
/// UPDATE of the row stays as cheap as before (on PostgreSQL, a heap-only
/// update), and listing groups, rare, sorts them. Existing groups start from
/// their newest event still in the log, else their creation.
struct AdminGroupsAddGroupActivity;

impl MigrationName for AdminGroupsAddGroupActivity {
    fn name(&self) -> &str {
        "m0008_admin_groups_add_group_activity"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AdminGroupsAddGroupActivity {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(GroupsActivity::Table)
                    .add_column(big_integer(GroupsActivity::LastActivityAtMs).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(GroupsActivity::Table)
                    .add_column(big_integer_null(GroupsActivity::LastCommitAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE groups SET \
                   last_activity_at_ms = COALESCE((SELECT MAX(e.created_at_ms) FROM group_events e WHERE e.group_id = groups.id), created_at_ms), \
                   last_commit_at_ms = (SELECT MAX(e.created_at_ms) FROM group_events e WHERE e.group_id = groups.id AND e.kind = 1)",
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum RegistrationTokensRevocation {
    #[sea_orm(iden = "registration_tokens")]
    Table,
    RevokedAtMs,
    CreatedBy,
}

/// Administrators revoke registration tokens (a revoked token registers no
/// one), and each token records who made it: an administrator's user id, or
/// `operator` for the command line, which made every token before this.
struct AdminGroupsAddTokenRevocation;

impl MigrationName for AdminGroupsAddTokenRevocation {
    fn name(&self) -> &str {
        "m0008_admin_groups_add_token_revocation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AdminGroupsAddTokenRevocation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RegistrationTokensRevocation::Table)
                    .add_column(big_integer_null(RegistrationTokensRevocation::RevokedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RegistrationTokensRevocation::Table)
                    .add_column(string(RegistrationTokensRevocation::CreatedBy).default("operator"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum CommitWelcomes {
    Table,
    GroupId,
    CommitSeq,
    Welcome,
    RatchetTree,
}

#[derive(DeriveIden)]
enum InboxEventsShared {
    #[sea_orm(iden = "inbox_events")]
    Table,
    GroupId,
    CommitSeq,
    SharedWelcome,
}

/// A commit's Welcome and ratchet tree stored once for all the devices of this
/// domain it adds, instead of once per device's inbox entry: a commit adding
/// 1,000 devices to a group of 10,000 wrote 1,000 copies of a 2 MB tree. Inbox
/// entries marked `shared_welcome` take them from `commit_welcomes`; the index
/// finds the entries still pointing at one.
struct HubcommitSharedWelcomes;

impl MigrationName for HubcommitSharedWelcomes {
    fn name(&self) -> &str {
        "m0009_hubcommit_shared_welcomes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HubcommitSharedWelcomes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CommitWelcomes::Table)
                    .col(big_integer(CommitWelcomes::GroupId))
                    .col(big_integer(CommitWelcomes::CommitSeq))
                    .col(blob(CommitWelcomes::Welcome))
                    .col(blob(CommitWelcomes::RatchetTree))
                    .primary_key(
                        Index::create()
                            .col(CommitWelcomes::GroupId)
                            .col(CommitWelcomes::CommitSeq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(InboxEventsShared::Table)
                    .add_column(boolean(InboxEventsShared::SharedWelcome).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("inbox_events_by_commit")
                    .table(InboxEventsShared::Table)
                    .col(InboxEventsShared::GroupId)
                    .col(InboxEventsShared::CommitSeq)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum KeyPackagesSuite {
    #[sea_orm(iden = "key_packages")]
    Table,
    CipherSuite,
}

/// Key packages of more than one MLS cipher suite: each row records its suite
/// (its RFC 9420 number; every package stored before is of suite 1), and claims
/// and stock counts go by it. A device has one last-resort package per suite.
struct PqKeyPackageSuites;

impl MigrationName for PqKeyPackageSuites {
    fn name(&self) -> &str {
        "m0009_pq_key_package_suites"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PqKeyPackageSuites {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(KeyPackagesSuite::Table)
                    .add_column(integer(KeyPackagesSuite::CipherSuite).default(1))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

/// No change to the schema: from here on the hub writes group states in
/// format 2 (`rules::hub::state`: openmls's parts in postcard, not JSON),
/// which earlier releases cannot read. Recorded as a migration so that an
/// earlier release refuses to start on such a database (as on any schema a
/// newer release migrated) instead of failing on each group it cannot read.
/// Format 1 states are converted as they are next written, not here: replicas
/// of the earlier release still running during a rolling update keep reading
/// the groups nobody committed to since.
struct HubStateFormat2;

impl MigrationName for HubStateFormat2 {
    fn name(&self) -> &str {
        "m0010_hub_state_format_2"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for HubStateFormat2 {
    async fn up(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

/// On PostgreSQL, the hub's group states and the Welcomes and ratchet trees
/// of commits (shared by this domain's devices, queued for follower domains,
/// and a follower's copies in its devices' inboxes) are stored out of line
/// without compression (`STORAGE EXTERNAL`). They are keys, signatures and
/// ciphertext: PostgreSQL's default compression (pglz) worked through each
/// value on every commit only to store it as it was (a 1,000-member group's
/// 210 KB state: 4.5 ms per UPDATE with pglz, 1.7 ms without), about a
/// quarter of the hub's time per commit. Only the columns' setting changes;
/// rows written before stay as they are. SQLite does not compress.
///
/// `ALTER TABLE` takes each table's exclusive lock: waiting behind a long
/// transaction of a replica still serving, it would hold up every call that
/// touches the table after it. So it gives up after a few seconds instead,
/// and the homeserver's start fails with the reason, to be started again.
struct HubUncompressedBlobs;

impl MigrationName for HubUncompressedBlobs {
    fn name(&self) -> &str {
        "m0011_hub_uncompressed_blobs"
    }
}

/// The columns m0011 stores without compression.
pub(crate) const UNCOMPRESSED_BLOBS: [(&str, &str); 7] = [
    ("commit_welcomes", "ratchet_tree"),
    ("commit_welcomes", "welcome"),
    ("groups", "state"),
    ("inbox_events", "ratchet_tree"),
    ("inbox_events", "welcome"),
    ("remote_welcomes", "ratchet_tree"),
    ("remote_welcomes", "welcome"),
];

#[async_trait::async_trait]
impl MigrationTrait for HubUncompressedBlobs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        let connection = manager.get_connection();
        // The migrations run in one transaction (`schema::migrate`).
        connection
            .execute_unprepared("SET LOCAL lock_timeout = '5s'")
            .await?;
        for (table, column) in UNCOMPRESSED_BLOBS {
            connection
                .execute_unprepared(&format!(
                    "ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL"
                ))
                .await?;
        }
        connection
            .execute_unprepared("SET LOCAL lock_timeout TO DEFAULT")
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum WelcomeStates {
    Table,
    GroupId,
    CommitSeq,
    Welcome,
    State,
}

#[derive(DeriveIden)]
enum GroupsStateWelcome {
    #[sea_orm(iden = "groups")]
    Table,
    StateWelcomeSeq,
}

/// A commit that adds devices of this domain stores its Welcome once for them
/// with the group's new state (`welcome_states`), and the group's row names
/// that commit (`groups.state_welcome_seq`) instead of holding a second copy
/// of the state; the Welcome's ratchet tree is exported from the state when
/// it is read, instead of being written beside it. At 1,000 members the state
/// and the tree are about 210 KB each, so an add commit writes one of them
/// instead of both.
///
/// A new table rather than a column of `commit_welcomes`, for an earlier
/// release still running during a rolling update: it never sees these rows,
/// so it cannot delete one that holds a group's state, nor hand out a Welcome
/// without its tree. It answers INTERNAL instead (a device's inbox names a
/// Welcome it cannot find; a group whose row holds no state), until it is
/// replaced; and, as any newer schema, it refuses to start. The rows it
/// writes to `commit_welcomes` meanwhile are read by this release.
struct HubStateBesideWelcome;

impl MigrationName for HubStateBesideWelcome {
    fn name(&self) -> &str {
        "m0012_hub_state_beside_welcome"
    }
}

/// The columns m0012 stores without compression, as m0011 its columns.
pub(crate) const UNCOMPRESSED_BLOBS_M0012: [(&str, &str); 2] =
    [("welcome_states", "state"), ("welcome_states", "welcome")];

#[async_trait::async_trait]
impl MigrationTrait for HubStateBesideWelcome {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        let connection = manager.get_connection();
        // As in m0011: altering `groups` takes its exclusive lock; give up
        // rather than hold up every call behind it.
        if postgres {
            connection
                .execute_unprepared("SET LOCAL lock_timeout = '5s'")
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(WelcomeStates::Table)
                    .col(big_integer(WelcomeStates::GroupId))
                    .col(big_integer(WelcomeStates::CommitSeq))
                    .col(blob(WelcomeStates::Welcome))
                    .col(blob(WelcomeStates::State))
                    .primary_key(
                        Index::create()
                            .col(WelcomeStates::GroupId)
                            .col(WelcomeStates::CommitSeq),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(GroupsStateWelcome::Table)
                    .add_column(big_integer_null(GroupsStateWelcome::StateWelcomeSeq))
                    .to_owned(),
            )
            .await?;
        if !postgres {
            return Ok(());
        }
        for (table, column) in UNCOMPRESSED_BLOBS_M0012 {
            connection
                .execute_unprepared(&format!(
                    "ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL"
                ))
                .await?;
        }
        connection
            .execute_unprepared("SET LOCAL lock_timeout TO DEFAULT")
            .await?;
        Ok(())
    }
}
