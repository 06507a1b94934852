//! Durable local state: one SQLite file, `<state_dir>/state.sqlite`, holding the
//! client's own tables (remembered settings, the device's session) and openmls's
//! storage (signature key, key-package private keys, groups), and the group
//! bookkeeping in [`groups`].
//!
//! One file means one transaction can cover an openmls operation and the client's
//! own bookkeeping, so a crash never leaves the two disagreeing.

pub(crate) mod groups;
mod provider;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use conclave_core::ids::{CredentialIdentity, DeviceId, UserId};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::SqliteStorageProvider;
use rusqlite::{Connection, OptionalExtension, params};

use crate::server_url::ServerUrl;
use crate::session::{AccessToken, Session};

pub use groups::GroupStatus;
pub(crate) use provider::MlsProvider;

/// Name of the database file inside the state directory.
pub const STATE_FILE_NAME: &str = "state.sqlite";

/// How long a write waits for another process (say, a second `conclave` command on
/// the same state) to finish its transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings key of the remembered homeserver URL.
const SERVER_URL_SETTING: &str = "server_url";

/// Settings key of whether messages are kept once shown: `on` (the default)
/// or `off`.
const HISTORY_SETTING: &str = "history";

/// What went wrong with the local state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database file could not be created or restricted to its owner.
    #[error("cannot prepare state file {}: {source}", path.display())]
    PrepareFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused to open the file.
    #[error("cannot open state database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// openmls's tables could not be created or migrated.
    #[error("cannot prepare the MLS storage in the state database: {0}")]
    MlsMigration(String),
    /// The file was written by a newer version of this client.
    #[error(
        "state database has schema version {found}, but this conclave knows only up to {known}; use a newer conclave"
    )]
    TooNew { found: usize, known: usize },
    /// A query failed.
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not parse; someone edited the file or it is damaged.
    #[error("state database is damaged: {0}")]
    Corrupt(String),
    /// The session exists but the signature key it names is not in the MLS storage.
    #[error("the state has a session but not its signature key; log out and log in again")]
    MissingSigner,
}

/// The open state of one device.
pub(crate) struct State {
    connection: Connection,
    crypto: RustCrypto,
}

impl State {
    /// Opens (creating if needed) the state in `state_dir` and brings both the
    /// client's and openmls's tables up to date.
    pub(crate) fn open(state_dir: &Path) -> Result<State, StateError> {
        create_private_directory(state_dir)?;
        let path = state_dir.join(STATE_FILE_NAME);
        create_private_file(&path)?;
        let connection = Connection::open(&path).map_err(|source| StateError::Open {
            path: path.clone(),
            source,
        })?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        State::prepare(connection)
    }

    /// A state in memory, gone when dropped (the fuzzing fixture's).
    pub(crate) fn in_memory() -> Result<State, StateError> {
        State::prepare(Connection::open_in_memory()?)
    }

    /// Brings both the client's and openmls's tables up to date.
    fn prepare(mut connection: Connection) -> Result<State, StateError> {
        // secure_delete overwrites deleted rows, so a logout or a used key package
        // does not leave private keys behind in free pages of the file.
        connection.execute_batch("PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON;")?;
        schema::migrate(&mut connection)?;
        SqliteStorageProvider::<provider::JsonCodec, &mut Connection>::new(&mut connection)
            .run_migrations()
            .map_err(|error| StateError::MlsMigration(error.to_string()))?;
        Ok(State {
            connection,
            crypto: RustCrypto::default(),
        })
    }

    /// A provider writing straight to the database (each write its own transaction).
    pub(crate) fn provider(&self) -> MlsProvider<'_> {
        MlsProvider::new(&self.crypto, &self.connection)
    }

    /// Runs `operation` on the connection outside any transaction: for reads
    /// (each statement is its own snapshot).
    pub(crate) fn read<T, E>(
        &self,
        operation: impl FnOnce(&MlsProvider<'_>, &Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        operation(&self.provider(), &self.connection)
    }

    /// Runs `operation` in one transaction, committed only if it returns `Ok`.
    /// Use it for anything that writes more than once: besides atomicity it turns
    /// many small commits (each a disk sync) into one.
    pub(crate) fn transaction<T, E>(
        &mut self,
        operation: impl FnOnce(&MlsProvider<'_>, &Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        // IMMEDIATE takes the write lock up front: a deferred transaction that
        // reads and then writes fails at once (SQLITE_BUSY, no waiting) if another
        // process wrote in between, such as a second `conclave` on the same state.
        let transaction = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = operation(&MlsProvider::new(&self.crypto, &transaction), &transaction)?;
        transaction.commit()?;
        Ok(value)
    }

    /// Runs `operation` in one transaction that is always rolled back: the
    /// fuzzing fixture judges each input from the same state.
    pub(crate) fn rolled_back<T>(
        &mut self,
        operation: impl FnOnce(&MlsProvider<'_>, &Connection) -> T,
    ) -> Result<T, rusqlite::Error> {
        let transaction = self.connection.transaction()?;
        let value = operation(&MlsProvider::new(&self.crypto, &transaction), &transaction);
        transaction.rollback()?;
        Ok(value)
    }

    /// The homeserver URL remembered from the last register or login.
    pub(crate) fn server_url(&self) -> Result<Option<ServerUrl>, StateError> {
        let text: Option<String> = self
            .connection
            .query_row(
                "SELECT value FROM client_settings WHERE key = ?1",
                [SERVER_URL_SETTING],
                |row| row.get(0),
            )
            .optional()?;
        text.map(|text| {
            text.parse()
                .map_err(|error| StateError::Corrupt(format!("remembered server URL: {error}")))
        })
        .transpose()
    }

    /// Whether shown messages are kept as history (the default) or deleted.
    pub(crate) fn keeps_history(&self) -> Result<bool, StateError> {
        keeps_history(&self.connection)
    }

    /// Keeps history from now on, or stops keeping it and deletes what is kept
    /// (messages not shown yet stay until a listener shows them). Returns how
    /// many stored entries were deleted.
    pub(crate) fn set_keeps_history(&mut self, keep: bool) -> Result<usize, StateError> {
        self.transaction(|_, connection| {
            connection.execute(
                "INSERT INTO client_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![HISTORY_SETTING, if keep { "on" } else { "off" }],
            )?;
            if keep {
                Ok(0)
            } else {
                groups::forget_read_entries(connection)
            }
        })
    }

    /// The device's session, if it is logged in.
    pub(crate) fn session(&self) -> Result<Option<Session>, StateError> {
        let row = self
            .connection
            .query_row(
                "SELECT server_url, user_id, device_id, credential_identity, access_token,
                        signature_public_key
                 FROM client_session WHERE id = 1",
                [],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((server_url, user_id, device_id, identity, token, public_key)) = row else {
            return Ok(None);
        };
        let corrupt = |what: &str, error: &dyn std::fmt::Display| {
            StateError::Corrupt(format!("session {what}: {error}"))
        };
        let credential_identity: CredentialIdentity = identity
            .parse()
            .map_err(|error| corrupt("credential identity", &error))?;
        let user_id: UserId = user_id
            .parse()
            .map_err(|error| corrupt("user id", &error))?;
        let device_id: DeviceId = device_id
            .parse()
            .map_err(|error| corrupt("device id", &error))?;
        if credential_identity.user_id() != &user_id
            || credential_identity.device_id() != &device_id
        {
            return Err(StateError::Corrupt(format!(
                "session credential identity {credential_identity} does not name user {user_id} and device {device_id}"
            )));
        }
        Ok(Some(Session {
            server_url: server_url
                .parse()
                .map_err(|error| corrupt("server URL", &error))?,
            credential_identity,
            signature_public_key: public_key,
            access_token: AccessToken::new(token),
        }))
    }

    /// Stores a new session with its signature key, and remembers its server as the
    /// default, all in one transaction.
    pub(crate) fn store_session(
        &mut self,
        session: &Session,
        signer: &SignatureKeyPair,
    ) -> Result<(), StateError> {
        self.transaction(|provider, connection| {
            signer.store(provider.storage_provider())?;
            connection.execute(
                "INSERT INTO client_session (id, server_url, user_id, device_id,
                     credential_identity, access_token, signature_public_key)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    session.server_url.to_string(),
                    session.user_id().to_string(),
                    session.device_id().to_string(),
                    session.credential_identity.to_string(),
                    session.access_token.as_str(),
                    session.signature_public_key,
                ],
            )?;
            remember_server_url(connection, &session.server_url)?;
            Ok(())
        })
    }

    /// The session's signature key pair, read back from the openmls storage.
    pub(crate) fn signer(&self, session: &Session) -> Result<SignatureKeyPair, StateError> {
        SignatureKeyPair::read(
            self.provider().storage_provider(),
            &session.signature_public_key,
            conclave_core::mls::CIPHERSUITE.signature_algorithm(),
        )
        .ok_or(StateError::MissingSigner)
    }

    /// Forgets the device: deletes the session and everything openmls stored (keys,
    /// key packages, groups), keeping only the remembered settings. One transaction,
    /// so a crash leaves either the whole device or none of it.
    pub(crate) fn wipe_device(&mut self) -> Result<(), StateError> {
        self.transaction(|_, connection| {
            let tables: Vec<String> = connection
                .prepare(
                    "SELECT name FROM sqlite_master
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                )?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for table in tables {
                if !schema::KEPT_ON_WIPE.contains(&table.as_str()) {
                    // Table names cannot be bound as parameters; quote the name
                    // as an SQL identifier (it comes from sqlite_master anyway).
                    let quoted = table.replace('"', "\"\"");
                    connection.execute(&format!("DELETE FROM \"{quoted}\""), [])?;
                }
            }
            Ok(())
        })
    }
}

impl MlsProvider<'_> {
    /// The storage provider under its concrete type, which `SignatureKeyPair`'s
    /// helpers need.
    pub(crate) fn storage_provider(&self) -> &provider::MlsStorage<'_> {
        openmls_traits::OpenMlsProvider::storage(self)
    }
}

/// Whether shown messages are kept as history (see [`State::keeps_history`]).
pub(crate) fn keeps_history(connection: &Connection) -> Result<bool, StateError> {
    let value: Option<String> = connection
        .query_row(
            "SELECT value FROM client_settings WHERE key = ?1",
            [HISTORY_SETTING],
            |row| row.get(0),
        )
        .optional()?;
    match value.as_deref() {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(StateError::Corrupt(format!("history setting {other:?}"))),
    }
}

fn remember_server_url(connection: &Connection, server_url: &ServerUrl) -> Result<(), StateError> {
    connection.execute(
        "INSERT INTO client_settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SERVER_URL_SETTING, server_url.to_string()],
    )?;
    Ok(())
}

/// Creates the state directory (and missing parents) readable only by its owner.
/// An existing directory is left as it is: it may be one the user chose to share.
fn create_private_directory(path: &Path) -> Result<(), StateError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|source| StateError::CreateDirectory {
            path: path.to_owned(),
            source,
        })
}

/// Creates the database file with mode 0600 before SQLite opens it (SQLite would
/// use the umask, typically 0644), and restricts an existing one to its owner too.
/// SQLite gives its journal files the database file's mode.
fn create_private_file(path: &Path) -> Result<(), StateError> {
    let error = |source| StateError::PrepareFile {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openmls::prelude::{KeyPackageBundle, KeyPackageRef};
    use openmls_traits::OpenMlsProvider as _;
    use openmls_traits::crypto::OpenMlsCrypto as _;
    use openmls_traits::storage::StorageProvider as _;

    use super::*;
    use crate::mls;

    fn session(signer: &SignatureKeyPair) -> Session {
        Session {
            server_url: "http://127.0.0.1:7400".parse().unwrap(),
            credential_identity: "alice@localhost/00000000000000aa".parse().unwrap(),
            signature_public_key: signer.to_public_vec(),
            access_token: AccessToken::new("secret-token".to_owned()),
        }
    }

    /// Stores a session and a batch of key packages; returns the packages' refs.
    fn enrol(state: &mut State, signer: &SignatureKeyPair) -> Vec<KeyPackageRef> {
        let session = session(signer);
        state.store_session(&session, signer).unwrap();
        state
            .transaction(|provider, _| {
                mls::build_key_packages(
                    provider,
                    signer,
                    &session.credential_identity,
                    conclave_core::mls::CipherSuite::Classic,
                    2,
                    true,
                    mls::KEY_PACKAGE_LIFETIME_SECONDS,
                )
            })
            .unwrap()
            .hash_refs
    }

    fn has_key_package(state: &State, hash_ref: &KeyPackageRef) -> bool {
        state
            .provider()
            .storage()
            .key_package::<_, KeyPackageBundle>(hash_ref)
            .unwrap()
            .is_some()
    }

    #[test]
    fn session_and_keys_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let signer = mls::generate_signer().unwrap();
        let hash_refs = {
            let mut state = State::open(dir.path()).unwrap();
            assert_eq!(state.session().unwrap(), None);
            assert_eq!(state.server_url().unwrap(), None);
            enrol(&mut state, &signer)
        };

        let state = State::open(dir.path()).unwrap();
        let stored = state.session().unwrap().unwrap();
        assert_eq!(stored, session(&signer));
        assert_eq!(stored.access_token.as_str(), "secret-token");
        assert_eq!(
            state.server_url().unwrap().unwrap().to_string(),
            "http://127.0.0.1:7400"
        );
        let read_back = state.signer(&stored).unwrap();
        assert_eq!(read_back.public(), signer.public());
        // The private half survived too: a signature made with it verifies.
        let signature = openmls_traits::signatures::Signer::sign(&read_back, b"hello").unwrap();
        state
            .provider()
            .crypto()
            .verify_signature(
                conclave_core::mls::CIPHERSUITE.signature_algorithm(),
                b"hello",
                signer.public(),
                &signature,
            )
            .unwrap();
        assert!(
            hash_refs
                .iter()
                .all(|hash_ref| has_key_package(&state, hash_ref))
        );
    }

    #[test]
    fn a_second_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let signer = mls::generate_signer().unwrap();
        state.store_session(&session(&signer), &signer).unwrap();
        assert!(state.store_session(&session(&signer), &signer).is_err());
    }

    #[test]
    fn wipe_forgets_the_device_but_not_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let signer = mls::generate_signer().unwrap();
        let mut state = State::open(dir.path()).unwrap();
        let hash_refs = enrol(&mut state, &signer);
        let stored = state.session().unwrap().unwrap();

        state.wipe_device().unwrap();
        drop(state);
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.session().unwrap(), None);
        assert!(matches!(
            state.signer(&stored),
            Err(StateError::MissingSigner)
        ));
        assert!(
            !hash_refs
                .iter()
                .any(|hash_ref| has_key_package(&state, hash_ref))
        );
        assert_eq!(
            state.server_url().unwrap().unwrap().to_string(),
            "http://127.0.0.1:7400"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(State::open(dir.path()).unwrap());
        let connection = Connection::open(dir.path().join(STATE_FILE_NAME)).unwrap();
        connection
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        drop(connection);
        let error = State::open(dir.path()).err().unwrap();
        assert!(
            matches!(error, StateError::TooNew { found: 99, .. }),
            "{error}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn directory_and_file_are_private() {
        use std::os::unix::fs::PermissionsExt;

        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nested/state");
        drop(State::open(&dir).unwrap());
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&parent.path().join("nested")), 0o700);
        assert_eq!(mode(&dir.join(STATE_FILE_NAME)), 0o600);
    }
}
