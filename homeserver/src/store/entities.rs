//! sea-orm entities, one module per table (see `migrations.rs` for the schema).
//! Times are stored as milliseconds since the Unix epoch (`*_at_ms`), which both
//! databases compare and index the same way.
//!
//! The entity macros need `pub` items inside these crate-private modules.
#![allow(unreachable_pub)]

pub(crate) mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The local part of the user id; the domain is the homeserver's own.
        #[sea_orm(unique)]
        pub username: String,
        /// Argon2id hash in PHC string format.
        pub password_hash: String,
        pub created_at_ms: i64,
        /// Set while an administrator has the account suspended.
        pub suspended_at_ms: Option<i64>,
        /// Set when an administrator deactivated the account (for good).
        pub deactivated_at_ms: Option<i64>,
        /// Why it was suspended or deactivated, as the administrator said.
        pub state_reason: Option<String>,
        /// The admin role (`conclave-homeserver admin grant`).
        pub is_admin: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod device {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        /// 16 lowercase hex digits.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: i64,
        pub display_name: String,
        /// The Ed25519 key bound to the device's credential; unique across devices.
        #[sea_orm(unique)]
        pub signature_public_key: Vec<u8>,
        /// SHA-256 of the device's bearer token. One token per device: logging out
        /// removes the device, and with it the token.
        #[sea_orm(unique)]
        pub access_token_hash: Vec<u8>,
        pub created_at_ms: i64,
        pub last_seen_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// The device's account: authentication reads both in one statement.
        #[sea_orm(
            belongs_to = "super::user::Entity",
            from = "Column::UserId",
            to = "super::user::Column::Id"
        )]
        User,
    }

    impl Related<super::user::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::User.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod registration_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "registration_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// SHA-256 of the token; the token itself is shown once, when created.
        #[sea_orm(unique)]
        pub token_hash: Vec<u8>,
        pub uses_allowed: i32,
        pub uses_count: i32,
        pub expires_at_ms: Option<i64>,
        pub created_at_ms: i64,
        /// When an administrator revoked it; a revoked token registers no one.
        pub revoked_at_ms: Option<i64>,
        /// An administrator's user id, or `operator` (the command line).
        pub created_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod key_package {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_packages")]
    pub struct Model {
        /// Upload order; claims hand out the oldest package first.
        #[sea_orm(primary_key)]
        pub id: i64,
        pub device_id: String,
        /// The KeyPackageRef (RFC 9420 §5.2); unique, so a package is stored once.
        #[sea_orm(unique)]
        pub hash_ref: Vec<u8>,
        /// The TLS-serialised KeyPackage exactly as uploaded.
        pub data: Vec<u8>,
        /// A last-resort package is handed out when the stock (of its suite) is
        /// empty and never consumed; a device has at most one per suite.
        pub last_resort: bool,
        /// The package's MLS cipher suite, its RFC 9420 number (1 or 0x4f).
        pub cipher_suite: i32,
        pub not_after_ms: i64,
        /// Set when an ordinary package is claimed; it is then never handed out again.
        pub claimed_at_ms: Option<i64>,
        /// Who claimed it, as `name@domain/device_id`; for a last-resort package,
        /// who was handed it last (it stays available).
        pub claimed_by: Option<String>,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod group {
    use sea_orm::entity::prelude::*;

    /// A group this homeserver is the hub of, or (with `hub_domain`) a follower's
    /// copy of a group hosted by another domain.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "groups")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The MLS group id (opaque bytes chosen by the creator).
        #[sea_orm(unique)]
        pub mls_group_id: Vec<u8>,
        pub epoch: i64,
        /// Sequence number of the newest event in the group's log (0: none yet).
        pub last_seq: i64,
        /// The serialised public group state (`rules::hub::HubGroup::to_state`);
        /// empty for a follower's copy, and while `state_welcome_seq` says
        /// where it is.
        pub state: Vec<u8>,
        /// Set when the commit at this sequence number added devices of this
        /// domain and no submission changed the state since: the state is then
        /// that commit's `welcome_states.state`, written once for the group
        /// and for its Welcome's ratchet tree.
        pub state_welcome_seq: Option<i64>,
        /// Credential identity of the creating device (at a follower: the sender
        /// of the first event it received).
        pub created_by: String,
        pub created_at_ms: i64,
        /// The hub's domain, for a group hosted elsewhere; `None` if hosted here.
        pub hub_domain: Option<String>,
        /// At a follower: the group's member count as the hub last reported it.
        pub hub_member_count: Option<i64>,
        /// When the newest event was stored (the creation, before any).
        pub last_activity_at_ms: i64,
        /// When the newest commit was stored; `None` before the first.
        pub last_commit_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod group_event {
    use sea_orm::entity::prelude::*;

    /// One entry of a group's ordered log.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "group_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        /// Dense per group, from 1.
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        /// `store::EventKind` as a number.
        pub kind: i16,
        /// The epoch the message was sent in.
        pub epoch: i64,
        /// Credential identity of the submitting device, as authenticated.
        pub sender_identity: String,
        /// The MLSMessage as submitted.
        pub message: Vec<u8>,
        pub created_at_ms: i64,
        /// W3C `traceparent` of the request that submitted it (on a
        /// follower, of the delivery that brought it), if traced: the
        /// outbox's delivery of it to other domains and its delivery to
        /// Subscribe streams continue that trace.
        pub trace_parent: Option<String>,
        /// SHA-256 of `message`, unique per group, for entries the hub accepted
        /// (replay protection); NULL for older entries and a follower's copies.
        pub message_digest: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod group_commit {
    use sea_orm::entity::prelude::*;

    /// The one accepted commit of an epoch (the primary key forbids a second).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "group_commits")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        /// The epoch the commit ended.
        #[sea_orm(primary_key, auto_increment = false)]
        pub epoch: i64,
        pub seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod group_member {
    use sea_orm::entity::prelude::*;

    /// A device in a group's tree, with its delivery cursor.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "group_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        /// `name@domain/device_id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub identity: String,
        /// `name@domain`, to let other devices of a member user rejoin.
        pub user_id: String,
        pub device_id: String,
        /// The device receives events with a larger sequence number (the commit
        /// that added it, or 0 for the creator).
        pub joined_after_seq: i64,
        /// The commit that removed it: the last event it receives.
        pub removed_at_seq: Option<i64>,
        /// Everything up to here has been acknowledged.
        pub acked_seq: i64,
        /// At the hub, the domain of a device of another domain (its homeserver
        /// delivers to it and keeps its cursor); `None` for a local device.
        pub remote_domain: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod inbox {
    use sea_orm::entity::prelude::*;

    /// A device's inbox counters.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inboxes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
        pub last_seq: i64,
        pub acked_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod inbox_event {
    use sea_orm::entity::prelude::*;

    /// A Welcome addressed to one device.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub device_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub group_id: i64,
        pub commit_seq: i64,
        /// Empty when `shared_welcome`.
        pub welcome: Vec<u8>,
        /// Empty when `shared_welcome`.
        pub ratchet_tree: Vec<u8>,
        pub created_at_ms: i64,
        /// The Welcome is the commit's, stored once for every device it added
        /// here: in `welcome_states` (or, written before m0012 or by an earlier
        /// release during a rolling update, with its ratchet tree in
        /// `commit_welcomes`).
        pub shared_welcome: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod commit_welcome {
    use sea_orm::entity::prelude::*;

    /// At the hub, before m0012: the Welcome of a commit and the new epoch's
    /// ratchet tree, once for all the devices of this domain it added (their
    /// inbox entries say `shared_welcome`); deleted with the last such entry.
    /// Since m0012 such Welcomes go to `welcome_states`; rows written before,
    /// or by an earlier release still running during a rolling update, are
    /// read here.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "commit_welcomes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub commit_seq: i64,
        pub welcome: Vec<u8>,
        pub ratchet_tree: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod welcome_state {
    use sea_orm::entity::prelude::*;

    /// At the hub: the Welcome of a commit, once for all the devices of this
    /// domain it added (their inbox entries say `shared_welcome`), with the
    /// group's public state after the commit, which their ratchet tree is
    /// exported from when they read it. The state is also the group's own
    /// while `groups.state_welcome_seq` names the commit. Deleted once no
    /// inbox entry points at it and it is not the group's state.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "welcome_states")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub commit_seq: i64,
        pub welcome: Vec<u8>,
        pub state: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod submission {
    use sea_orm::entity::prelude::*;

    /// The result of an accepted submission, by the submitter's idempotency key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "submissions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub identity: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idempotency_key: Vec<u8>,
        /// SHA-256 of the request body, to refuse a reused key with another body.
        pub request_hash: Vec<u8>,
        pub group_id: i64,
        pub seq: i64,
        pub epoch: i64,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod federation_peer_group {
    use sea_orm::entity::prelude::*;

    /// At the hub: a follower domain's outbox cursor in one group's log.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "federation_peer_groups")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub peer_domain: String,
        /// The domain receives events after this one: the commit that (last)
        /// added its first device comes next.
        pub joined_after_seq: i64,
        /// The follower has every event up to here.
        pub delivered_seq: i64,
        /// The commit that removed the domain's last device: its last event. `None`
        /// while the domain has members.
        pub until_seq: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod key_package_claim {
    use sea_orm::entity::prelude::*;

    /// The directory handed key package `hash_ref` of `device_id` to a device of
    /// `claimer_domain` (this domain's own, or a peer's).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_package_claims")]
    pub struct Model {
        /// The KeyPackageRef (RFC 9420 §5.2), as `key_packages.hash_ref`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash_ref: Vec<u8>,
        #[sea_orm(primary_key, auto_increment = false)]
        pub claimer_domain: String,
        pub device_id: String,
        /// The package's end of life: the record goes with it.
        pub not_after_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod remote_membership_change {
    use sea_orm::entity::prelude::*;

    /// At the hub: a device of another domain added (or joined) or removed by the
    /// commit at `seq`, for that domain's homeserver.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "remote_membership_changes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub identity: String,
        pub domain: String,
        /// True for added, false for removed.
        pub added: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod remote_welcome {
    use sea_orm::entity::prelude::*;

    /// At the hub: the Welcome of a commit that added devices of other domains,
    /// with the new epoch's ratchet tree, stored once for all of them.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "remote_welcomes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub welcome: Vec<u8>,
        pub ratchet_tree: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod federation_peer {
    use sea_orm::entity::prelude::*;

    /// How delivery to a peer domain went, for operators.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "federation_peers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub domain: String,
        pub last_success_at_ms: Option<i64>,
        pub last_error: Option<String>,
        pub last_error_at_ms: Option<i64>,
        /// Failed attempts since the last success.
        pub consecutive_failures: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod server_secret {
    use sea_orm::entity::prelude::*;

    /// A secret of the whole domain, shared by its replicas.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "server_secrets")]
    pub struct Model {
        /// What the secret is for, e.g. `enrolment_challenge`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub secret: Vec<u8>,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod used_enrolment_challenge {
    use sea_orm::entity::prelude::*;

    /// An enrolment challenge that an enrolment used, kept until it expires.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "used_enrolment_challenges")]
    pub struct Model {
        /// SHA-256 of the challenge.
        #[sea_orm(primary_key, auto_increment = false)]
        pub challenge_digest: Vec<u8>,
        pub expires_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod background_lease {
    use sea_orm::entity::prelude::*;

    /// Who runs a background job (see `store::leases`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "background_leases")]
    pub struct Model {
        /// The job, e.g. `janitor` or `outbox:b.example`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// The replica id of the holder.
        pub owner: String,
        /// The holder's clock when it took or last renewed the lease, plus the
        /// lease's time to live.
        pub expires_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
pub(crate) mod pending_departure {
    use sea_orm::entity::prelude::*;

    /// A departure of a device of this domain that the hub of a followed group
    /// has yet to hear of (see `service::departures`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pending_departures")]
    pub struct Model {
        /// This homeserver's copy of the group (`groups.id`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: i64,
        /// `name@domain/device_id` of the departed device.
        #[sea_orm(primary_key, auto_increment = false)]
        pub identity: String,
        /// The group's hub, to be told.
        pub hub_domain: String,
        /// Why, as the notice will carry it.
        pub reason: String,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod audit_entry {
    use sea_orm::entity::prelude::*;

    /// One admin action or refusal (see `store::audit`). Never updated or
    /// deleted.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at_ms: i64,
        /// `name@domain` of an administrator (or of who tried without the
        /// role), or `operator`.
        pub actor: String,
        /// `area.verb`, e.g. `user.suspend`.
        pub action: String,
        /// What the action was on; empty if nothing.
        pub target: String,
        /// The caller's IP address; empty for the command line.
        pub address: String,
        pub succeeded: bool,
        #[sea_orm(column_type = "Text")]
        pub detail: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod admin_session {
    use sea_orm::entity::prelude::*;

    /// An administrator's session (see `store::admin_sessions`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "admin_sessions")]
    pub struct Model {
        /// SHA-256 of the session's bearer token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: Vec<u8>,
        /// The administrator's `users.id`.
        pub user_id: i64,
        pub created_at_ms: i64,
        /// Renewed by calls, at most once a minute.
        pub last_used_at_ms: i64,
        /// The absolute end: login plus `[admin] session_max_hours`.
        pub expires_at_ms: i64,
        /// The IP address the login came from.
        pub address: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
