//! Secrets: bearer tokens from the OS random number generator, stored only as
//! SHA-256 hashes, and passwords stored only as Argon2id hashes, computed by a
//! [`PasswordHasher`] that bounds how many run at once and reuses their memory.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// A fresh 256-bit secret from the OS RNG, as unpadded base64url (43
/// characters), never beginning with `-`.
pub(crate) fn new_token() -> String {
    token_from_draws(random_bytes::<32>)
}

/// The first draw whose base64url text does not begin with `-`. Tokens are
/// typed after options (`conclave register USER --registration-token TOKEN`),
/// where a leading `-` would read as another option. One draw in 64 is
/// redrawn, which leaves more than 255.97 bits of entropy.
fn token_from_draws(mut draw: impl FnMut() -> [u8; 32]) -> String {
    loop {
        let token = URL_SAFE_NO_PAD.encode(draw());
        if !token.starts_with('-') {
            return token;
        }
    }
}

/// Eight random bytes from the OS RNG (for device ids).
pub(crate) fn random_bytes_8() -> [u8; 8] {
    random_bytes()
}

/// `N` random bytes from the OS RNG (device ids, challenges, secrets).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// What the database keeps of a token. Tokens carry 256 bits of entropy, so a
/// plain hash (no salt, no stretching) is enough and allows lookup by hash.
pub(crate) fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordHashError {
    /// Every hashing slot stayed busy for as long as a request may wait: the
    /// server is overloaded with registrations and logins; retry later.
    #[error(
        "the server is busy hashing other passwords and none of its {slots} slots came free within {waited_seconds} s; retry later"
    )]
    Busy { slots: usize, waited_seconds: u64 },
    /// The operating system's random number generator gave no salt.
    #[error("no random salt for a password hash: {0}")]
    Salt(getrandom::Error),
    /// Argon2 refused the parameters, the salt or the password.
    #[error("argon2 could not hash a password: {0}")]
    Hash(argon2::Error),
    /// The PHC string could not be written or read.
    #[error("a password hash could not be encoded: {0}")]
    Encoding(argon2::password_hash::Error),
    /// A stored hash is not a PHC string that Argon2 can read.
    #[error("a stored password hash is unreadable: {0}")]
    UnreadableHash(argon2::password_hash::Error),
    /// The blocking task that hashes panicked or was cancelled.
    #[error("the password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How long a request waits for a hashing slot before it is answered
/// [`PasswordHashError::Busy`]. A request whose gRPC deadline is shorter is
/// dropped by the transport at its deadline, which gives up its place in the
/// queue.
const MAX_SLOT_WAIT: Duration = Duration::from_secs(30);

/// Argon2id with its default parameters (m = 19 MiB, t = 2, p = 1), which every
/// new hash uses.
fn default_argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes and checks passwords, at most one per core at a time.
///
/// Each Argon2id hash needs 19 MiB of working memory. Allocated afresh per hash,
/// by many requests at once, glibc's allocator kept it (RSS reached about 1.65 GB
/// after 1,000 registrations). So the number of hashes in flight is bounded by a
/// semaphore sized to the cores, and each slot keeps its working memory while it
/// is in use: a hash takes a buffer from the pool and puts it back, and the pool
/// never holds more buffers than there are slots. A buffer idle for
/// [`IDLE_BUFFER_LIFETIME`] is freed, allocated so that glibc gives it back to
/// the system ([`BUFFER_CAPACITY_BLOCKS`]), so a burst of registrations or
/// logins reuses the slots' memory, and a quiet server holds none. Clones
/// share the slots and buffers.
#[derive(Clone)]
pub(crate) struct PasswordHasher {
    slots: Arc<Semaphore>,
    /// Number of slots (the semaphore's initial permits), for messages.
    slot_count: usize,
    /// Working memory of idle slots.
    idle: Arc<Mutex<IdleBuffers>>,
    /// [`IDLE_BUFFER_LIFETIME`], shorter in tests.
    idle_lifetime: Duration,
}

/// How long an idle slot keeps its working memory: through the gaps of a burst
/// of registrations or logins (each hash takes tens of milliseconds), not for
/// good. Allocating it again costs a few milliseconds of page faults.
const IDLE_BUFFER_LIFETIME: Duration = Duration::from_secs(10);

/// Room allocated for each working-memory buffer, in blocks: just over 32 MiB,
/// of which a hash with the default parameters uses (and so touches, and counts
/// in RSS) its 19 MiB. When glibc has no free room that large in its heap, it
/// serves an allocation above 32 MiB (its `DEFAULT_MMAP_THRESHOLD_MAX` on
/// 64-bit systems) with a mapping of its own and unmaps it when it is freed. A
/// smaller one, once a mapped block of its size was freed, comes from its heap
/// and may stay there when freed (mallopt(3), `M_MMAP_THRESHOLD`: the threshold
/// rises to the size of each freed mapped block up to that maximum). Measured:
/// BENCHMARKS.md, "Argon2id memory given back when idle".
const BUFFER_CAPACITY_BLOCKS: usize = (32 << 20) / Block::SIZE + 1;

#[derive(Default)]
struct IdleBuffers {
    /// Each with when it was put back.
    buffers: Vec<(Vec<Block>, tokio::time::Instant)>,
    /// A task will free the buffers that stay idle ([`free_idle_later`]).
    sweeping: bool,
}

fn lock(idle: &Mutex<IdleBuffers>) -> std::sync::MutexGuard<'_, IdleBuffers> {
    // Every change leaves the list whole.
    idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PasswordHasher {
    /// One slot per core the process may use.
    pub(crate) fn new() -> PasswordHasher {
        let slot_count = std::thread::available_parallelism().map_or(1, usize::from);
        PasswordHasher::with_slots(slot_count)
    }

    pub(crate) fn with_slots(slot_count: usize) -> PasswordHasher {
        PasswordHasher {
            slots: Arc::new(Semaphore::new(slot_count)),
            slot_count,
            idle: Arc::default(),
            idle_lifetime: IDLE_BUFFER_LIFETIME,
        }
    }

    /// Runs `work` on a blocking thread with a slot and a working-memory buffer of
    /// at least `blocks` blocks.
    async fn with_slot<T: Send + 'static>(
        &self,
        blocks: usize,
        work: impl FnOnce(&mut [Block]) -> Result<T, PasswordHashError> + Send + 'static,
    ) -> Result<T, PasswordHashError> {
        let permit = tokio::time::timeout(MAX_SLOT_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PasswordHashError::Busy {
                slots: self.slot_count,
                waited_seconds: MAX_SLOT_WAIT.as_secs(),
            })?
            .expect("the hashing semaphore is never closed");
        let (idle, lifetime) = (self.idle.clone(), self.idle_lifetime);
        // The buffer is put back, and its release arranged, by the blocking
        // task itself: it runs to its end even if this call is cancelled.
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || {
            let pooled = lock(&idle).buffers.pop().map(|(buffer, _)| buffer);
            let mut buffer =
                pooled.unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY_BLOCKS.max(blocks)));
            if buffer.len() < blocks {
                buffer.resize(blocks, Block::default());
            }
            let result = work(&mut buffer[..blocks]);
            // Only buffers of the default size go back: a stored hash with larger
            // parameters must not grow the pool for good.
            if buffer.len() == Params::DEFAULT_M_COST as usize {
                let now = tokio::time::Instant::now();
                lock(&idle).buffers.push((buffer, now));
                free_idle_later(&idle, lifetime, &runtime);
            }
            drop(permit);
            result
        })
        .await?
    }

    /// Hashes a password with Argon2id (default parameters, random salt) into a
    /// PHC string.
    pub(crate) async fn hash_password(
        &self,
        password: String,
    ) -> Result<String, PasswordHashError> {
        let blocks = Params::default().block_count();
        self.with_slot(blocks, move |memory| {
            let mut salt_bytes = [0u8; 16];
            getrandom::fill(&mut salt_bytes).map_err(PasswordHashError::Salt)?;
            let salt = SaltString::encode_b64(&salt_bytes).map_err(PasswordHashError::Encoding)?;
            let argon2 = default_argon2();
            let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
            argon2
                .hash_password_into_with_memory(
                    password.as_bytes(),
                    &salt_bytes,
                    &mut output,
                    memory,
                )
                .map_err(PasswordHashError::Hash)?;
            let hash = PasswordHash {
                algorithm: argon2::ARGON2ID_IDENT,
                version: Some(Version::V0x13.into()),
                params: Params::default()
                    .try_into()
                    .map_err(PasswordHashError::Encoding)?,
                salt: Some(salt.as_salt()),
                hash: Some(Output::new(&output).map_err(PasswordHashError::Encoding)?),
            };
            Ok(hash.to_string())
        })
        .await
    }

    /// Checks a password against a stored hash. With no stored hash (unknown user)
    /// it still does the work of a check against a dummy hash, so response times
    /// do not tell which usernames exist.
    pub(crate) async fn verify_password(
        &self,
        password: String,
        stored_hash: Option<String>,
    ) -> Result<bool, PasswordHashError> {
        let known_user = stored_hash.is_some();
        let hash_text = stored_hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let (params, algorithm, version) = {
            let hash = PasswordHash::new(&hash_text).map_err(PasswordHashError::UnreadableHash)?;
            let params = Params::try_from(&hash).map_err(PasswordHashError::UnreadableHash)?;
            let algorithm =
                Algorithm::try_from(hash.algorithm).map_err(PasswordHashError::UnreadableHash)?;
            let version = hash
                .version
                .map(Version::try_from)
                .transpose()
                .map_err(|error| PasswordHashError::UnreadableHash(error.into()))?
                .unwrap_or_default();
            (params, algorithm, version)
        };
        let blocks = params.block_count();
        let matches = self
            .with_slot(blocks, move |memory| {
                let hash =
                    PasswordHash::new(&hash_text).map_err(PasswordHashError::UnreadableHash)?;
                let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
                    return Err(PasswordHashError::UnreadableHash(
                        argon2::password_hash::Error::PhcStringField,
                    ));
                };
                let mut salt_bytes = [0u8; 64];
                let salt_bytes = salt
                    .decode_b64(&mut salt_bytes)
                    .map_err(PasswordHashError::UnreadableHash)?;
                let mut output = vec![0u8; expected.len()];
                let argon2 = Argon2::new(algorithm, version, params);
                argon2
                    .hash_password_into_with_memory(
                        password.as_bytes(),
                        salt_bytes,
                        &mut output,
                        memory,
                    )
                    .map_err(PasswordHashError::Hash)?;
                // `Output`'s equality is constant-time.
                Ok(Output::new(&output).is_ok_and(|computed| computed == expected))
            })
            .await?;
        Ok(known_user && matches)
    }
}

/// Makes sure a task frees each pooled buffer once it has been idle for
/// `lifetime`: one task at a time, while the pool holds any.
fn free_idle_later(idle: &Arc<Mutex<IdleBuffers>>, lifetime: Duration, runtime: &Handle) {
    {
        let mut idle = lock(idle);
        if idle.sweeping || idle.buffers.is_empty() {
            return;
        }
        idle.sweeping = true;
    }
    let idle = idle.clone();
    runtime.spawn(async move {
        loop {
            let wake_at = {
                let mut idle = lock(&idle);
                let oldest = idle.buffers.iter().map(|(_, put_back)| *put_back).min();
                let Some(oldest) = oldest else {
                    idle.sweeping = false;
                    return;
                };
                oldest + lifetime
            };
            tokio::time::sleep_until(wake_at).await;
            let now = tokio::time::Instant::now();
            let expired: Vec<_> = {
                let mut idle = lock(&idle);
                let (expired, kept) = std::mem::take(&mut idle.buffers)
                    .into_iter()
                    .partition(|(_, put_back)| now >= *put_back + lifetime);
                idle.buffers = kept;
                expired
            };
            // Freed outside the lock.
            drop(expired);
        }
    });
}

/// An Argon2id hash (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zq+rCl3Eyb2hM7V/9XNq6J1y2pVXuL3Zx5j5qUJbZ8E";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let first = new_token();
        let second = new_token();
        assert_eq!(first.len(), 43);
        assert_ne!(first, second);
        assert_eq!(hash_token(&first), hash_token(&first));
        assert_ne!(hash_token(&first), hash_token(&second));
        assert_eq!(hash_token(&first).len(), 32);
    }

    #[test]
    fn tokens_never_begin_with_a_dash() {
        // 0xf8 begins with the six bits 111110, base64url's `-`.
        let mut draws = [[0xf8; 32], [0xf8; 32], [0x00; 32]].into_iter();
        let token = token_from_draws(|| draws.next().unwrap());
        assert!(URL_SAFE_NO_PAD.encode([0xf8; 32]).starts_with('-'));
        assert_eq!(token, URL_SAFE_NO_PAD.encode([0x00; 32]));
        assert_eq!(
            draws.next(),
            None,
            "each refused draw is replaced by one more"
        );
        // Without the redraw, one token in 64 began with `-`.
        for _ in 0..2000 {
            assert!(!new_token().starts_with('-'));
        }
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hasher = PasswordHasher::with_slots(1);
        let hash = hasher
            .hash_password("correct horse".to_owned())
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify_password("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify_password("wrong horse".to_owned(), Some(hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify_password("correct horse".to_owned(), None)
                .await
                .unwrap()
        );
    }

    /// Hashes made before the pool (by `argon2`'s `PasswordHasher`) still verify,
    /// including ones with other parameters.
    #[tokio::test]
    async fn hashes_of_the_plain_argon2_api_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let hasher = PasswordHasher::with_slots(2);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        for argon2 in [
            Argon2::default(),
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(8 * 1024, 3, 1, None).unwrap(),
            ),
        ] {
            let hash = argon2
                .hash_password(b"old password", &salt)
                .unwrap()
                .to_string();
            assert!(
                hasher
                    .verify_password("old password".to_owned(), Some(hash.clone()))
                    .await
                    .unwrap(),
                "{hash}"
            );
            assert!(
                !hasher
                    .verify_password("other password".to_owned(), Some(hash))
                    .await
                    .unwrap()
            );
        }
        assert!(lock(&hasher.idle).buffers.len() <= 2);
    }

    /// More hashes than slots, all at once: each waits its turn and succeeds, and
    /// the pool holds no more buffers than slots.
    #[tokio::test]
    async fn concurrent_hashes_share_the_slots() {
        // Idle buffers are kept through the test, however slow the machine.
        let hasher = PasswordHasher {
            idle_lifetime: Duration::from_secs(3600),
            ..PasswordHasher::with_slots(2)
        };
        let hashes = futures::future::join_all(
            (0..6).map(|index| hasher.hash_password(format!("password {index}"))),
        )
        .await;
        for (index, hash) in hashes.into_iter().enumerate() {
            let hash = hash.unwrap();
            assert!(
                hasher
                    .verify_password(format!("password {index}"), Some(hash))
                    .await
                    .unwrap()
            );
        }
        assert_eq!(lock(&hasher.idle).buffers.len(), 2);
        assert_eq!(hasher.slots.available_permits(), 2);
    }

    /// An idle slot's working memory is freed after its lifetime (shortened
    /// here), allocated above glibc's largest mapping threshold. (That glibc
    /// then unmaps it is measured in BENCHMARKS.md, not here.)
    #[tokio::test]
    async fn idle_slots_give_their_working_memory_back() {
        let lifetime = Duration::from_secs(2);
        let hasher = PasswordHasher {
            idle_lifetime: lifetime,
            ..PasswordHasher::with_slots(1)
        };
        let started = tokio::time::Instant::now();
        hasher.hash_password("password".to_owned()).await.unwrap();
        {
            let idle = lock(&hasher.idle);
            assert_eq!((idle.buffers.len(), idle.sweeping), (1, true));
            let capacity_bytes = idle.buffers[0].0.capacity() * Block::SIZE;
            assert!(
                capacity_bytes > 32 << 20,
                "{capacity_bytes} bytes: glibc may keep an allocation of 32 MiB or less"
            );
        }
        let deadline = started + Duration::from_secs(30);
        while !lock(&hasher.idle).buffers.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(started.elapsed() >= lifetime, "freed before its lifetime");
        while lock(&hasher.idle).sweeping {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the task never ended"
            );
            tokio::task::yield_now().await;
        }
    }

    /// A call cancelled while its hash runs (a client gone, a deadline): the
    /// hash finishes, and its buffer is still freed once idle.
    #[tokio::test]
    async fn a_cancelled_hash_s_working_memory_is_freed_too() {
        let hasher = PasswordHasher {
            idle_lifetime: Duration::from_secs(5),
            ..PasswordHasher::with_slots(1)
        };
        let hashing = hasher.hash_password("password".to_owned());
        let cancelled = tokio::time::timeout(Duration::from_millis(1), hashing).await;
        assert!(
            cancelled.is_err(),
            "the call was cancelled before its hash ended"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let idle = hasher.idle.clone();
        let wait_until = |done: fn(&IdleBuffers) -> bool, what: &'static str| {
            let idle = idle.clone();
            async move {
                while !done(&lock(&idle)) {
                    assert!(tokio::time::Instant::now() < deadline, "{what}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        wait_until(|idle| idle.buffers.len() == 1, "the hash never ended").await;
        wait_until(
            |idle| idle.buffers.is_empty() && !idle.sweeping,
            "the buffer was never freed",
        )
        .await;
    }
}
