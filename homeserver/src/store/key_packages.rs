//! Queries for the key-package directory.

use super::convert::{to_i64, to_u64};
use super::entities::{key_package, key_package_claim};
use super::{Connection, StoreError};
use crate::rules::key_package_stock::{ClaimRecord, KindCount, was_handed_out};
use conclave_core::ids::{CredentialIdentity, DeviceId};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect, Set, Statement, Value,
};
use std::collections::HashSet;

/// A verified KeyPackage ready to be stored.
pub(crate) struct NewKeyPackage {
    pub(crate) hash_ref: Vec<u8>,
    /// Its cipher suite's RFC 9420 number.
    pub(crate) cipher_suite: u16,
    pub(crate) data: Vec<u8>,
    pub(crate) not_after_ms: i64,
}

/// Which of these hash refs are stored already (for any device).
pub(crate) async fn existing_hash_refs(
    db: &impl Connection,
    hash_refs: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let rows = key_package::Entity::find()
        .select_only()
        .column(key_package::Column::HashRef)
        .filter(key_package::Column::HashRef.is_in(hash_refs))
        .into_tuple::<Vec<u8>>()
        .all(db.database())
        .await?;
    Ok(rows)
}

/// Stores ordinary packages, and replaces the device's last-resort package of
/// the same suite if one is given. Run it in the transaction that checked the
/// batch.
pub(crate) async fn insert_key_packages(
    db: &impl Connection,
    device_id: &DeviceId,
    ordinary: Vec<NewKeyPackage>,
    last_resort: Option<NewKeyPackage>,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(last_resort) = &last_resort {
        key_package::Entity::delete_many()
            .filter(key_package::Column::DeviceId.eq(device_id.as_str()))
            .filter(key_package::Column::CipherSuite.eq(i32::from(last_resort.cipher_suite)))
            .filter(key_package::Column::LastResort.eq(true))
            .exec(db.database())
            .await?;
    }
    let rows = ordinary
        .into_iter()
        .map(|package| (package, false))
        .chain(last_resort.map(|package| (package, true)))
        .map(|(package, last_resort)| key_package::ActiveModel {
            device_id: Set(device_id.as_str().to_owned()),
            hash_ref: Set(package.hash_ref),
            data: Set(package.data),
            last_resort: Set(last_resort),
            cipher_suite: Set(i32::from(package.cipher_suite)),
            not_after_ms: Set(package.not_after_ms),
            claimed_at_ms: Set(None),
            claimed_by: Set(None),
            created_at_ms: Set(now_ms),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    if !rows.is_empty() {
        key_package::Entity::insert_many(rows)
            .exec_without_returning(db.database())
            .await?;
    }
    Ok(())
}

/// A device's packages that a claim could still take, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClaimableCounts {
    pub(crate) ordinary: KindCount,
    pub(crate) last_resort: KindCount,
}

#[derive(FromQueryResult)]
struct CountRow {
    last_resort: bool,
    count: i64,
    earliest: Option<i64>,
}

/// Counts the device's unclaimed, unexpired packages of `cipher_suite` (its
/// RFC 9420 number) of each kind, in one query.
pub(crate) async fn claimable_counts(
    db: &impl Connection,
    device_id: &DeviceId,
    cipher_suite: u16,
    now_ms: i64,
) -> Result<ClaimableCounts, StoreError> {
    let rows = key_package::Entity::find()
        .select_only()
        .column(key_package::Column::LastResort)
        .column_as(Expr::col(key_package::Column::Id).count(), "count")
        .column_as(Expr::col(key_package::Column::NotAfterMs).min(), "earliest")
        .filter(key_package::Column::DeviceId.eq(device_id.as_str()))
        .filter(key_package::Column::CipherSuite.eq(i32::from(cipher_suite)))
        .filter(key_package::Column::ClaimedAtMs.is_null())
        .filter(key_package::Column::NotAfterMs.gt(now_ms))
        .group_by(key_package::Column::LastResort)
        .into_model::<CountRow>()
        .all(db.database())
        .await?;
    let mut counts = ClaimableCounts::default();
    for row in rows {
        let (kind, name) = if row.last_resort {
            (&mut counts.last_resort, "last-resort")
        } else {
            (&mut counts.ordinary, "ordinary")
        };
        let rows = format!("{name} key packages of device {device_id}");
        *kind = KindCount {
            count: to_u64(row.count, rows, "count")?,
            earliest_expiry_ms: row.earliest,
        };
    }
    Ok(counts)
}

#[derive(FromQueryResult)]
struct DeviceCountRow {
    devices: i64,
}

/// The devices low on key packages, as one FROM and WHERE clause that the
/// count (the metric, the overview) and the admin listing share, written
/// with PostgreSQL's placeholders: `$1` now, `$2` the threshold, `$3` seen
/// since. One grouped count of usable ordinary packages per device, joined
/// to the devices, rather than a count per device. `usable` is the device's
/// stock.
const LOW_STOCK_DEVICES: &str = "FROM devices \
     LEFT JOIN (SELECT device_id, COUNT(*) AS usable FROM key_packages \
                WHERE last_resort = FALSE AND claimed_at_ms IS NULL AND not_after_ms > $1 \
                GROUP BY device_id) AS stock ON stock.device_id = devices.id \
     WHERE devices.last_seen_at_ms >= $3 AND COALESCE(stock.usable, 0) < $2";

/// How many of this homeserver's devices seen since `active_since_ms` have
/// fewer than `threshold` unclaimed, unexpired ordinary packages, in one
/// statement (for the metric; the last-resort package does not count: it keeps
/// a device addable, but every claim of it reuses the same keys). Devices not
/// seen since are left out: a lost or long-offline device's packages expire
/// and it would stay low forever.
pub(crate) async fn count_devices_low_on_key_packages(
    db: &impl Connection,
    threshold: u32,
    now_ms: i64,
    active_since_ms: i64,
) -> Result<u64, StoreError> {
    let sql = format!("SELECT COUNT(*) AS devices {LOW_STOCK_DEVICES}");
    let values = vec![
        now_ms.into(),
        i64::from(threshold).into(),
        active_since_ms.into(),
    ];
    let row = DeviceCountRow::find_by_statement(statement(db, &sql, values))
        .one(db.database())
        .await?;
    let devices = row.map_or(0, |row| row.devices);
    to_u64(
        devices,
        "the count of devices low on key packages",
        "devices",
    )
}

/// A device low on key packages: its id and its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LowStockDevice {
    pub(crate) device_id: String,
    /// Its usable ordinary packages.
    pub(crate) usable: u64,
}

#[derive(FromQueryResult)]
struct LowStockRow {
    device_id: String,
    usable: i64,
}

/// The devices [`count_devices_low_on_key_packages`] counts, emptiest first
/// (then by device id), after the position `after` (a stock and a device
/// id, from the previous page), at most `limit`.
pub(crate) async fn list_devices_low_on_key_packages(
    db: &impl Connection,
    threshold: u32,
    now_ms: i64,
    active_since_ms: i64,
    after: Option<(u64, &str)>,
    limit: u64,
) -> Result<Vec<LowStockDevice>, StoreError> {
    let sql = format!(
        "SELECT devices.id AS device_id, COALESCE(stock.usable, 0) AS usable {LOW_STOCK_DEVICES} \
         AND (COALESCE(stock.usable, 0) > $4 OR (COALESCE(stock.usable, 0) = $4 AND devices.id > $5)) \
         ORDER BY usable, devices.id LIMIT $6"
    );
    // Before every position: a stock of -1.
    let (after_usable, after_device) = match after {
        Some((usable, device_id)) => (to_i64(usable, "the page's stock")?, device_id),
        None => (-1, ""),
    };
    let values = vec![
        now_ms.into(),
        i64::from(threshold).into(),
        active_since_ms.into(),
        after_usable.into(),
        after_device.into(),
        to_i64(limit, "the page size")?.into(),
    ];
    LowStockRow::find_by_statement(statement(db, &sql, values))
        .all(db.database())
        .await?
        .into_iter()
        .map(|row| {
            Ok(LowStockDevice {
                usable: to_u64(
                    row.usable,
                    format!("stock of device {}", row.device_id),
                    "usable",
                )?,
                device_id: row.device_id,
            })
        })
        .collect()
}

/// `sql`, written with PostgreSQL's `$n` placeholders, as a statement for the
/// connection's database (SQLite numbers them `?n`).
fn statement(db: &impl Connection, sql: &str, values: Vec<Value>) -> Statement {
    match db.database().get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values)
        }
        _ => Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            sql.replace('$', "?"),
            values,
        ),
    }
}

/// A package handed out by a claim.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedKeyPackage {
    /// The TLS-serialised KeyPackage exactly as uploaded.
    pub(crate) data: Vec<u8>,
    /// True for the device's last-resort package, which the claim did not consume.
    pub(crate) last_resort: bool,
}

#[derive(FromQueryResult)]
struct ClaimedRow {
    data: Vec<u8>,
    last_resort: bool,
    hash_ref: Vec<u8>,
    not_after_ms: i64,
}

impl From<ClaimedRow> for ClaimedKeyPackage {
    fn from(row: ClaimedRow) -> ClaimedKeyPackage {
        ClaimedKeyPackage {
            data: row.data,
            last_resort: row.last_resort,
        }
    }
}

/// Hands out the device's oldest unclaimed, unexpired ordinary package of
/// `cipher_suite` (its RFC 9420 number) and marks it claimed, in one statement, so each package goes to exactly one claimer. On
/// PostgreSQL `FOR UPDATE SKIP LOCKED` lets concurrent claims take different rows
/// instead of queueing on the same one and then finding it gone; SQLite runs one
/// writer at a time, so the plain subquery is already atomic there. When the stock
/// is empty, the device's last-resort package of the suite is returned without
/// being consumed.
pub(crate) async fn claim_key_package(
    db: &impl Connection,
    device_id: &DeviceId,
    claimed_by: &CredentialIdentity,
    cipher_suite: u16,
    now_ms: i64,
) -> Result<Option<ClaimedKeyPackage>, StoreError> {
    let suite = i32::from(cipher_suite);
    let device_id = device_id.as_str();
    let claimer_domain = claimed_by.user_id().domain().as_str();
    let claimed_by = claimed_by.to_string();
    let backend = db.database().get_database_backend();
    let (backend, sql) = match backend {
        sea_orm::DbBackend::Postgres => (
            sea_orm::DbBackend::Postgres,
            "UPDATE key_packages SET claimed_at_ms = $1, claimed_by = $2 \
             WHERE id = (SELECT id FROM key_packages \
                         WHERE device_id = $3 AND cipher_suite = $4 AND last_resort = FALSE \
                           AND claimed_at_ms IS NULL AND not_after_ms > $1 \
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING data, last_resort, hash_ref, not_after_ms",
        ),
        _ => (
            sea_orm::DbBackend::Sqlite,
            "UPDATE key_packages SET claimed_at_ms = ?1, claimed_by = ?2 \
             WHERE id = (SELECT id FROM key_packages \
                         WHERE device_id = ?3 AND cipher_suite = ?4 AND last_resort = FALSE \
                           AND claimed_at_ms IS NULL AND not_after_ms > ?1 \
                         ORDER BY id LIMIT 1) \
             RETURNING data, last_resort, hash_ref, not_after_ms",
        ),
    };
    let values: [Value; 4] = [
        now_ms.into(),
        claimed_by.as_str().into(),
        device_id.into(),
        suite.into(),
    ];
    let statement = Statement::from_sql_and_values(backend, sql, values);
    if let Some(claimed) = ClaimedRow::find_by_statement(statement)
        .one(db.database())
        .await?
    {
        record_claim(db, &claimed, claimer_domain, device_id).await?;
        return Ok(Some(claimed.into()));
    }
    // The last-resort package stays available; `claimed_by` records that the
    // directory handed it out, which is what lets an Add use it.
    key_package::Entity::update_many()
        .col_expr(key_package::Column::ClaimedBy, Expr::value(claimed_by))
        .filter(key_package::Column::DeviceId.eq(device_id))
        .filter(key_package::Column::CipherSuite.eq(suite))
        .filter(key_package::Column::LastResort.eq(true))
        .filter(key_package::Column::NotAfterMs.gt(now_ms))
        .exec(db.database())
        .await?;
    let last_resort = key_package::Entity::find()
        .select_only()
        .column(key_package::Column::Data)
        .column(key_package::Column::LastResort)
        .column(key_package::Column::HashRef)
        .column(key_package::Column::NotAfterMs)
        .filter(key_package::Column::DeviceId.eq(device_id))
        .filter(key_package::Column::CipherSuite.eq(suite))
        .filter(key_package::Column::LastResort.eq(true))
        .filter(key_package::Column::NotAfterMs.gt(now_ms))
        .into_model::<ClaimedRow>()
        .one(db.database())
        .await?;
    if let Some(claimed) = &last_resort {
        record_claim(db, claimed, claimer_domain, device_id).await?;
    }
    Ok(last_resort.map(ClaimedKeyPackage::from))
}

/// Whether the device has any package a claim could take, in any suite: a
/// device with none is left out of a claim, one with packages of other suites
/// only is named in its refusal.
pub(crate) async fn has_claimable_key_package(
    db: &impl Connection,
    device_id: &DeviceId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let found = key_package::Entity::find()
        .select_only()
        .column(key_package::Column::Id)
        .filter(key_package::Column::DeviceId.eq(device_id.as_str()))
        .filter(key_package::Column::ClaimedAtMs.is_null())
        .filter(key_package::Column::NotAfterMs.gt(now_ms))
        .into_tuple::<i64>()
        .one(db.database())
        .await?;
    Ok(found.is_some())
}

/// Records that the directory handed a package to a device of
/// `claimer_domain`: once per package and domain, however often a last-resort
/// package goes to the same domain.
async fn record_claim(
    db: &impl Connection,
    claimed: &ClaimedRow,
    claimer_domain: &str,
    device_id: &str,
) -> Result<(), StoreError> {
    let model = key_package_claim::ActiveModel {
        hash_ref: Set(claimed.hash_ref.clone()),
        claimer_domain: Set(claimer_domain.to_owned()),
        device_id: Set(device_id.to_owned()),
        not_after_ms: Set(claimed.not_after_ms),
    };
    key_package_claim::Entity::insert(model)
        .on_conflict(
            OnConflict::columns([
                key_package_claim::Column::HashRef,
                key_package_claim::Column::ClaimerDomain,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db.database())
        .await?;
    Ok(())
}

/// Of the key packages `hash_refs`, those the directory handed to a device of
/// one of `claimer_domains`, as (hash_ref, device_id) pairs: one lookup by the
/// claims' primary key.
pub(crate) async fn packages_claimed_by(
    db: &impl Connection,
    hash_refs: &[Vec<u8>],
    claimer_domains: &[&str],
) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
    if hash_refs.is_empty() || claimer_domains.is_empty() {
        return Ok(Vec::new());
    }
    let rows = key_package_claim::Entity::find()
        .select_only()
        .column(key_package_claim::Column::HashRef)
        .column(key_package_claim::Column::DeviceId)
        .filter(key_package_claim::Column::HashRef.is_in(hash_refs.iter().cloned()))
        .filter(key_package_claim::Column::ClaimerDomain.is_in(claimer_domains.iter().copied()))
        .distinct()
        .into_tuple::<(Vec<u8>, String)>()
        .all(db.database())
        .await?;
    Ok(rows)
}

/// Deletes packages that expired before `cutoff_ms`, and the records of who
/// claimed them (a Welcome for an expired package is refused by its device
/// anyway); returns how many packages went.
pub(crate) async fn delete_expired_key_packages(
    db: &impl Connection,
    cutoff_ms: i64,
) -> Result<u64, StoreError> {
    let result = key_package::Entity::delete_many()
        .filter(key_package::Column::NotAfterMs.lt(cutoff_ms))
        .exec(db.database())
        .await?;
    key_package_claim::Entity::delete_many()
        .filter(key_package_claim::Column::NotAfterMs.lt(cutoff_ms))
        .exec(db.database())
        .await?;
    Ok(result.rows_affected)
}

/// What the directory recorded of the claims of this key package of `device_id`;
/// `None` if the device has no such package.
async fn find_claim_record(
    db: &impl Connection,
    hash_ref: &[u8],
    device_id: &str,
) -> Result<Option<ClaimRecord>, StoreError> {
    let package = key_package::Entity::find()
        .filter(key_package::Column::HashRef.eq(hash_ref.to_vec()))
        .filter(key_package::Column::DeviceId.eq(device_id))
        .one(db.database())
        .await?;
    Ok(package.map(|package| ClaimRecord {
        last_resort: package.last_resort,
        taken: package.claimed_at_ms.is_some(),
        claimer_recorded: package.claimed_by.is_some(),
    }))
}

/// True if the directory handed this key package of `device_id` out (see
/// [`was_handed_out`]).
pub(crate) async fn key_package_was_claimed(
    db: &impl Connection,
    hash_ref: &[u8],
    device_id: &str,
) -> Result<bool, StoreError> {
    Ok(find_claim_record(db, hash_ref, device_id)
        .await?
        .is_some_and(was_handed_out))
}

/// Most key packages per statement of [`handed_out_key_packages`].
const REFS_PER_STATEMENT: usize = 500;

/// Which of these key packages, each named by its hash ref and its device, the
/// directory handed out (see [`was_handed_out`]): one statement per 500, so
/// that a commit adding a thousand devices checks their packages in two.
pub(crate) async fn handed_out_key_packages(
    db: &impl Connection,
    packages: &[(&[u8], &str)],
) -> Result<HashSet<(Vec<u8>, String)>, StoreError> {
    let wanted: HashSet<(&[u8], &str)> = packages.iter().copied().collect();
    let mut handed_out = HashSet::with_capacity(packages.len());
    for chunk in packages.chunks(REFS_PER_STATEMENT) {
        let rows = key_package::Entity::find()
            .filter(
                key_package::Column::HashRef
                    .is_in(chunk.iter().map(|(hash_ref, _)| hash_ref.to_vec())),
            )
            .all(db.database())
            .await?;
        for package in rows {
            let record = ClaimRecord {
                last_resort: package.last_resort,
                taken: package.claimed_at_ms.is_some(),
                claimer_recorded: package.claimed_by.is_some(),
            };
            // A hash ref is unique, but the Add must name the package's own device.
            if wanted.contains(&(package.hash_ref.as_slice(), package.device_id.as_str()))
                && was_handed_out(record)
            {
                handed_out.insert((package.hash_ref, package.device_id));
            }
        }
    }
    Ok(handed_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        NewDevice, Store, UserKey, device_keys, insert_device, insert_user, touch_device,
    };
    use conclave_core::ids::Username;
    use conclave_test_support::{DatabaseChoice, TestDatabase};

    const ORDINARY: &[u8] = b"ordinary ref";
    const LAST_RESORT: &[u8] = b"last-resort ref";
    const ORDINARY_EXPIRES_MS: i64 = 10_000;
    const LAST_RESORT_EXPIRES_MS: i64 = 20_000;

    /// A migrated store on a fresh database, and its user `bob`.
    async fn store_with_bob(choice: DatabaseChoice) -> (TestDatabase, Store, UserKey) {
        let database = TestDatabase::create(choice).await;
        let store = Store::connect(database.url(), 2).await.unwrap();
        store.migrate().await.unwrap();
        let user = insert_user(&store, &"bob".parse::<Username>().unwrap(), "hash", 0)
            .await
            .unwrap()
            .unwrap();
        (database, store, user.key)
    }

    /// Adds a device of `user`, last seen at time 0.
    async fn add_device(store: &Store, user: UserKey, device_id: &DeviceId, key: &[u8]) {
        let new_device = NewDevice {
            device_id,
            user,
            display_name: "phone",
            signature_public_key: key,
            access_token_hash: key,
            now_ms: 0,
        };
        assert!(insert_device(store, new_device).await.unwrap());
    }

    const CLASSIC: u16 = 0x0001;
    const POST_QUANTUM: u16 = 0x004f;

    fn package(hash_ref: &[u8], not_after_ms: i64) -> NewKeyPackage {
        suite_package(hash_ref, not_after_ms, CLASSIC)
    }

    fn suite_package(hash_ref: &[u8], not_after_ms: i64, cipher_suite: u16) -> NewKeyPackage {
        NewKeyPackage {
            hash_ref: hash_ref.to_vec(),
            cipher_suite,
            data: hash_ref.to_vec(),
            not_after_ms,
        }
    }

    #[tokio::test]
    async fn claims_and_stock_go_by_cipher_suite() {
        for choice in DatabaseChoice::ALL {
            check_suites(choice).await;
        }
    }

    async fn check_suites(choice: DatabaseChoice) {
        let (_database, store, user) = store_with_bob(choice).await;
        let device_id: DeviceId = "00000000000000b1".parse().unwrap();
        add_device(&store, user, &device_id, b"key").await;
        insert_key_packages(
            &store,
            &device_id,
            vec![package(b"c1", 10_000)],
            Some(package(b"c-last", 10_000)),
            0,
        )
        .await
        .unwrap();
        insert_key_packages(
            &store,
            &device_id,
            vec![
                suite_package(b"pq1", 10_000, POST_QUANTUM),
                suite_package(b"pq2", 10_000, POST_QUANTUM),
            ],
            Some(suite_package(b"pq-last", 10_000, POST_QUANTUM)),
            0,
        )
        .await
        .unwrap();
        // A new last-resort package replaces only its own suite's.
        insert_key_packages(
            &store,
            &device_id,
            Vec::new(),
            Some(suite_package(b"pq-last2", 10_000, POST_QUANTUM)),
            0,
        )
        .await
        .unwrap();
        let counts = |suite| {
            let store = &store;
            let device_id = &device_id;
            async move { claimable_counts(store, device_id, suite, 1).await.unwrap() }
        };
        assert_eq!(counts(CLASSIC).await.ordinary.count, 1, "{choice:?}");
        assert_eq!(counts(CLASSIC).await.last_resort.count, 1, "{choice:?}");
        assert_eq!(counts(POST_QUANTUM).await.ordinary.count, 2, "{choice:?}");
        assert_eq!(
            counts(POST_QUANTUM).await.last_resort.count,
            1,
            "{choice:?}"
        );

        let claimer: CredentialIdentity = "alice@a.example/00000000000000a1".parse().unwrap();
        let claim = |suite| {
            let store = &store;
            let device_id = &device_id;
            let claimer = &claimer;
            async move {
                claim_key_package(store, device_id, claimer, suite, 1)
                    .await
                    .unwrap()
                    .unwrap()
                    .data
            }
        };
        assert_eq!(claim(POST_QUANTUM).await, b"pq1", "{choice:?}");
        assert_eq!(claim(POST_QUANTUM).await, b"pq2", "{choice:?}");
        assert_eq!(claim(POST_QUANTUM).await, b"pq-last2", "{choice:?}");
        assert_eq!(claim(CLASSIC).await, b"c1", "{choice:?}");
        assert_eq!(claim(CLASSIC).await, b"c-last", "{choice:?}");
        assert!(
            has_claimable_key_package(&store, &device_id, 1)
                .await
                .unwrap()
        );
        assert!(
            !has_claimable_key_package(&store, &device_id, 10_000)
                .await
                .unwrap(),
            "{choice:?}: all expired"
        );
    }

    /// What the hub checks of a commit's new leaves, in two statements: each
    /// device's user and key, and which of the named packages were handed out
    /// to be used by an Add of their own device.
    #[tokio::test]
    async fn a_commit_s_devices_and_packages_are_checked_together() {
        for choice in DatabaseChoice::ALL {
            check_devices_and_packages(choice).await;
        }
    }

    async fn check_devices_and_packages(choice: DatabaseChoice) {
        let (_database, store, user) = store_with_bob(choice).await;
        let phone: DeviceId = "00000000000000b1".parse().unwrap();
        let laptop: DeviceId = "00000000000000b2".parse().unwrap();
        add_device(&store, user, &phone, b"phone key").await;
        add_device(&store, user, &laptop, b"laptop key").await;
        for device_id in [&phone, &laptop] {
            let refs = [b"1".as_slice(), b"2".as_slice()].map(|n| {
                let mut hash_ref = device_id.as_str().as_bytes().to_vec();
                hash_ref.extend_from_slice(n);
                hash_ref
            });
            insert_key_packages(
                &store,
                device_id,
                refs.iter()
                    .map(|hash_ref| package(hash_ref, 10_000))
                    .collect(),
                None,
                0,
            )
            .await
            .unwrap();
        }
        let claimer: CredentialIdentity = "alice@a.example/00000000000000a1".parse().unwrap();
        for device_id in [&phone, &laptop] {
            claim_key_package(&store, device_id, &claimer, CLASSIC, 1)
                .await
                .unwrap()
                .unwrap();
        }

        let keys = device_keys(
            &store,
            &[phone.as_str(), laptop.as_str(), "00000000000000b9"],
        )
        .await
        .unwrap();
        assert_eq!(keys.len(), 2, "{choice:?}: an unknown device has no key");
        assert_eq!(keys[phone.as_str()].username, "bob", "{choice:?}");
        assert_eq!(
            keys[laptop.as_str()].signature_public_key,
            b"laptop key",
            "{choice:?}"
        );

        let phone_1 = [phone.as_str().as_bytes(), b"1"].concat();
        let phone_2 = [phone.as_str().as_bytes(), b"2"].concat();
        let laptop_1 = [laptop.as_str().as_bytes(), b"1"].concat();
        let handed_out = handed_out_key_packages(
            &store,
            &[
                (&phone_1, phone.as_str()),
                (&phone_2, phone.as_str()),
                (&laptop_1, phone.as_str()),
                (b"unknown", laptop.as_str()),
            ],
        )
        .await
        .unwrap();
        // The first package of each device was claimed; the laptop's is named
        // here with the phone, which an Add must not do.
        let expected: HashSet<(Vec<u8>, String)> =
            HashSet::from([(phone_1.clone(), phone.as_str().to_owned())]);
        assert_eq!(handed_out, expected, "{choice:?}");
    }

    #[tokio::test]
    async fn devices_low_on_key_packages_count_unclaimed_unexpired_ordinary_packages() {
        for choice in DatabaseChoice::ALL {
            check_low_stock_count(choice).await;
        }
    }

    async fn check_low_stock_count(choice: DatabaseChoice) {
        let (_database, store, user) = store_with_bob(choice).await;
        let stocked: DeviceId = "00000000000000b1".parse().unwrap();
        let empty: DeviceId = "00000000000000b2".parse().unwrap();
        add_device(&store, user, &stocked, b"key1").await;
        add_device(&store, user, &empty, b"key2").await;
        // Two live ordinary packages, one expired at time 5; the last-resort
        // packages never count.
        insert_key_packages(
            &store,
            &stocked,
            vec![
                package(b"one", 10_000),
                package(b"two", 10_000),
                package(b"old", 5),
            ],
            Some(package(b"last", 10_000)),
            0,
        )
        .await
        .unwrap();
        insert_key_packages(
            &store,
            &empty,
            Vec::new(),
            Some(package(b"last2", 10_000)),
            0,
        )
        .await
        .unwrap();
        let low = |threshold| {
            let store = &store;
            async move {
                count_devices_low_on_key_packages(store, threshold, 5, 0)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(low(2).await, 1, "{choice:?}: only the empty device");
        assert_eq!(
            low(3).await,
            2,
            "{choice:?}: the expired package does not count"
        );
        assert_eq!(low(0).await, 0, "{choice:?}");
        let claimer: CredentialIdentity = "alice@a.example/00000000000000a1".parse().unwrap();
        claim_key_package(&store, &stocked, &claimer, CLASSIC, 5)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(low(2).await, 2, "{choice:?}: a claim drained the stock");
        assert_eq!(low(1).await, 1, "{choice:?}");
        // Both devices were last seen at 0. An empty device not seen since
        // the window's start is not counted; once seen again, it is.
        let low_among_seen_since = |active_since_ms| {
            let store = &store;
            async move {
                count_devices_low_on_key_packages(store, 1, 5, active_since_ms)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(low_among_seen_since(0).await, 1, "{choice:?}");
        assert_eq!(
            low_among_seen_since(1).await,
            0,
            "{choice:?}: the inactive empty device is not low"
        );
        touch_device(&store, &empty, 3, 0).await.unwrap();
        assert_eq!(
            low_among_seen_since(1).await,
            1,
            "{choice:?}: the empty device, active again, is low"
        );
    }

    #[tokio::test]
    async fn claims_are_recorded_per_domain_and_expire_with_their_package() {
        for choice in DatabaseChoice::ALL {
            check_claim_records(choice).await;
        }
    }

    async fn check_claim_records(choice: DatabaseChoice) {
        let (_database, store, user) = store_with_bob(choice).await;
        let device_id: DeviceId = "00000000000000b1".parse().unwrap();
        add_device(&store, user, &device_id, b"key").await;
        insert_key_packages(
            &store,
            &device_id,
            vec![package(ORDINARY, ORDINARY_EXPIRES_MS)],
            Some(package(LAST_RESORT, LAST_RESORT_EXPIRES_MS)),
            0,
        )
        .await
        .unwrap();

        // a.example takes the ordinary package, then the last-resort one,
        // twice; c.example the last-resort one.
        let claimer = |text: &str| text.parse::<CredentialIdentity>().unwrap();
        let alice = claimer("alice@a.example/00000000000000a1");
        let carol = claimer("carol@c.example/00000000000000c1");
        for (claimed_by, expected) in [
            (&alice, ORDINARY),
            (&alice, LAST_RESORT),
            (&alice, LAST_RESORT),
            (&carol, LAST_RESORT),
        ] {
            let claimed = claim_key_package(&store, &device_id, claimed_by, CLASSIC, 1)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claimed.data, expected, "{choice:?}");
        }

        let refs = [ORDINARY.to_vec(), LAST_RESORT.to_vec(), b"unknown".to_vec()];
        let claimed_by = |domains: &'static [&'static str]| {
            let store = &store;
            let refs = &refs;
            async move {
                let mut found = packages_claimed_by(store, refs, domains).await.unwrap();
                found.sort();
                found
                    .into_iter()
                    .map(|(hash_ref, device)| {
                        assert_eq!(device, "00000000000000b1");
                        hash_ref
                    })
                    .collect::<Vec<_>>()
            }
        };
        let (ordinary, last_resort) = (ORDINARY.to_vec(), LAST_RESORT.to_vec());
        assert_eq!(
            claimed_by(&["a.example"]).await,
            vec![last_resort.clone(), ordinary.clone()],
            "{choice:?}"
        );
        assert_eq!(claimed_by(&["c.example"]).await, vec![last_resort.clone()]);
        assert_eq!(
            claimed_by(&["a.example", "c.example"]).await,
            vec![last_resort.clone(), ordinary.clone()]
        );
        assert!(claimed_by(&["b.example"]).await.is_empty());
        assert!(claimed_by(&[]).await.is_empty());

        // The records go with their packages.
        delete_expired_key_packages(&store, ORDINARY_EXPIRES_MS + 1)
            .await
            .unwrap();
        assert_eq!(claimed_by(&["a.example"]).await, vec![last_resort.clone()]);
        delete_expired_key_packages(&store, LAST_RESORT_EXPIRES_MS + 1)
            .await
            .unwrap();
        assert!(claimed_by(&["a.example", "c.example"]).await.is_empty());
    }
}
