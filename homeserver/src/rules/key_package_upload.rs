//! Whether a batch of KeyPackages may be stored: all of it, or none of it.

use conclave_core::key_package::{
    ExpectedOwner, KeyPackageError, KeyPackagePolicy, VerifiedKeyPackage, verify_key_package,
};
use std::collections::HashSet;

/// A batch that passed every check.
#[derive(Debug)]
pub(crate) struct VerifiedUpload {
    pub(crate) ordinary: Vec<VerifiedKeyPackage>,
    pub(crate) last_resort: Option<VerifiedKeyPackage>,
}

/// Where in the request a bad package sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackagePosition {
    /// `key_packages[i]`.
    Ordinary(usize),
    /// `last_resort_key_package`.
    LastResort,
}

impl std::fmt::Display for PackagePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackagePosition::Ordinary(index) => write!(f, "key_packages[{index}]"),
            PackagePosition::LastResort => f.write_str("last_resort_key_package"),
        }
    }
}

/// Why a batch was refused. Nothing of a refused batch is stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadRejection {
    /// The request carries no package at all.
    #[error("the upload contains no key packages")]
    Empty,
    /// More packages than one upload may carry.
    #[error("the upload contains {count} key packages, more than the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    /// One package failed verification.
    #[error("{position} was rejected: {reason}")]
    Invalid {
        position: PackagePosition,
        reason: KeyPackageError,
    },
    /// The package given as last resort lacks the last_resort extension.
    #[error("{0} lacks the last_resort extension (RFC 9420 §17.3) that a last-resort key package must carry")]
    NotLastResort(PackagePosition),
    /// The same package appears twice in the request, or is stored already.
    #[error("{0} was already uploaded")]
    Duplicate(PackagePosition),
}

/// Verifies every package of an upload. `already_stored` tells whether a hash ref
/// is in the directory already (the caller looks them up in one query after this
/// function's first pass; see [`check_not_stored`]).
pub(crate) fn verify_upload(
    ordinary: &[Vec<u8>],
    last_resort: Option<&[u8]>,
    owner: &ExpectedOwner<'_>,
    policy: &KeyPackagePolicy,
    max_per_upload: usize,
) -> Result<VerifiedUpload, UploadRejection> {
    if ordinary.is_empty() && last_resort.is_none() {
        return Err(UploadRejection::Empty);
    }
    if ordinary.len() > max_per_upload {
        return Err(UploadRejection::TooMany {
            count: ordinary.len(),
            limit: max_per_upload,
        });
    }
    let verify = |position, bytes: &[u8]| {
        verify_key_package(bytes, owner, policy)
            .map_err(|reason| UploadRejection::Invalid { position, reason })
    };
    let mut seen = HashSet::new();
    let mut verified_ordinary = Vec::with_capacity(ordinary.len());
    for (index, bytes) in ordinary.iter().enumerate() {
        let position = PackagePosition::Ordinary(index);
        let verified = verify(position, bytes)?;
        if !seen.insert(verified.hash_ref.clone()) {
            return Err(UploadRejection::Duplicate(position));
        }
        verified_ordinary.push(verified);
    }
    let verified_last_resort = match last_resort {
        None => None,
        Some(bytes) => {
            let position = PackagePosition::LastResort;
            let verified = verify(position, bytes)?;
            if !verified.last_resort {
                return Err(UploadRejection::NotLastResort(position));
            }
            if !seen.insert(verified.hash_ref.clone()) {
                return Err(UploadRejection::Duplicate(position));
            }
            Some(verified)
        }
    };
    Ok(VerifiedUpload {
        ordinary: verified_ordinary,
        last_resort: verified_last_resort,
    })
}

/// Refuses the upload if any of its packages is stored already.
pub(crate) fn check_not_stored(
    upload: &VerifiedUpload,
    stored_hash_refs: &[Vec<u8>],
) -> Result<(), UploadRejection> {
    let stored: HashSet<&[u8]> = stored_hash_refs.iter().map(Vec::as_slice).collect();
    let positions = upload
        .ordinary
        .iter()
        .enumerate()
        .map(|(index, package)| (PackagePosition::Ordinary(index), package))
        .chain(
            upload
                .last_resort
                .iter()
                .map(|package| (PackagePosition::LastResort, package)),
        );
    for (position, package) in positions {
        if stored.contains(package.hash_ref.as_slice()) {
            return Err(UploadRejection::Duplicate(position));
        }
    }
    Ok(())
}

impl VerifiedUpload {
    /// Hash refs of every package in the upload.
    pub(crate) fn hash_refs(&self) -> Vec<Vec<u8>> {
        self.ordinary
            .iter()
            .chain(&self.last_resort)
            .map(|package| package.hash_ref.clone())
            .collect()
    }
}
