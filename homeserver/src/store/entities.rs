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
    pub enum Relation {}

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
        /// A last-resort package is handed out when the stock is empty and never
        /// consumed; a device has at most one.
        pub last_resort: bool,
        pub not_after_ms: i64,
        /// Set when an ordinary package is claimed; it is then never handed out again.
        pub claimed_at_ms: Option<i64>,
        /// Who claimed it, as `name@domain/device_id`.
        pub claimed_by: Option<String>,
        pub created_at_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
