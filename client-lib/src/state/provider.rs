//! The `OpenMlsProvider` that makes openmls persist into the client's SQLite file.
//!
//! openmls has no SQLite-backed provider of its own, so this pairs RustCrypto with
//! `openmls_sqlite_storage::SqliteStorageProvider`. The storage provider borrows a
//! connection rather than owning one, so the same provider can run over a
//! `rusqlite::Transaction` (which derefs to a `Connection`) and an openmls operation
//! plus the client's own bookkeeping commit or roll back together.

use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

/// How openmls values are encoded into the storage provider's BLOB columns.
///
/// JSON is what the openmls test suite itself uses with this provider; the values
/// are small and the encoding never leaves this machine.
#[derive(Debug, Default)]
pub(crate) struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// The storage provider type openmls sees: SQLite through a borrowed connection.
pub(crate) type MlsStorage<'connection> = SqliteStorageProvider<JsonCodec, &'connection Connection>;

/// RustCrypto for cryptography and randomness, SQLite for storage.
pub(crate) struct MlsProvider<'connection> {
    crypto: &'connection RustCrypto,
    storage: MlsStorage<'connection>,
}

impl<'connection> MlsProvider<'connection> {
    /// A provider writing through `connection`, which may be a transaction.
    pub(crate) fn new(
        crypto: &'connection RustCrypto,
        connection: &'connection Connection,
    ) -> Self {
        MlsProvider {
            crypto,
            storage: SqliteStorageProvider::new(connection),
        }
    }
}

impl<'connection> OpenMlsProvider for MlsProvider<'connection> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MlsStorage<'connection>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}
