//! The PEM files of one TLS listener, read together, with a digest of what was
//! read so the reload task can tell changed files from unchanged ones.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// The files one listener's TLS is made of, in a fixed order (certificate,
/// private key, then trust roots where there are any).
#[derive(Debug, Clone)]
pub(crate) struct PemFiles {
    paths: Vec<PathBuf>,
}

/// The contents of [`PemFiles`] as read at one moment.
pub(crate) struct FileContents {
    contents: Vec<Vec<u8>>,
    /// SHA-256 over every file's length and contents, in order.
    digest: [u8; 32],
}

/// A file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {error}")]
pub(crate) struct UnreadableFile {
    pub(crate) path: String,
    pub(crate) error: std::io::Error,
}

impl PemFiles {
    pub(crate) fn new(paths: Vec<PathBuf>) -> PemFiles {
        PemFiles { paths }
    }

    pub(crate) fn path(&self, index: usize) -> &Path {
        &self.paths[index]
    }

    /// The paths, for the logs: `a, b, c`.
    pub(crate) fn describe(&self) -> String {
        self.paths
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads every file. Each file is read whole by one `read` of its path,
    /// which follows symbolic links when it opens it: a Kubernetes Secret
    /// volume swaps its `..data` link atomically, so each file is either all
    /// old or all new (the files together may still be a mix, if the swap
    /// falls between two of them; the reload task reads again to tell).
    pub(crate) async fn read(&self) -> Result<FileContents, UnreadableFile> {
        let mut contents = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            let content = tokio::fs::read(path)
                .await
                .map_err(|error| UnreadableFile {
                    path: path.display().to_string(),
                    error,
                })?;
            contents.push(content);
        }
        Ok(FileContents::new(contents))
    }
}

impl FileContents {
    fn new(contents: Vec<Vec<u8>>) -> FileContents {
        let mut hasher = Sha256::new();
        for content in &contents {
            // The length first, so moving bytes from one file to the next
            // changes the digest (digests are only compared within one
            // process, so the width of usize does not matter).
            hasher.update(content.len().to_be_bytes());
            hasher.update(content);
        }
        FileContents {
            contents,
            digest: hasher.finalize().into(),
        }
    }

    /// The contents of the file at `index` of the [`PemFiles`] read.
    pub(crate) fn get(&self, index: usize) -> &[u8] {
        &self.contents[index]
    }

    pub(crate) fn digest(&self) -> [u8; 32] {
        self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_changes_with_any_byte_and_with_the_split_between_files() {
        let digest = |contents: &[&[u8]]| {
            FileContents::new(contents.iter().map(|content| content.to_vec()).collect()).digest()
        };
        let base = digest(&[b"certificate", b"key"]);
        assert_eq!(base, digest(&[b"certificate", b"key"]));
        assert_ne!(base, digest(&[b"certificatf", b"key"]));
        assert_ne!(base, digest(&[b"certificate", b"kez"]));
        assert_ne!(base, digest(&[b"certificat", b"ekey"]));
        assert_ne!(base, digest(&[b"certificate", b"key", b""]));
    }

    #[tokio::test]
    async fn files_are_read_in_order_and_a_missing_one_is_named() {
        let directory = tempfile::tempdir().unwrap();
        let first = directory.path().join("first.pem");
        let second = directory.path().join("second.pem");
        std::fs::write(&first, "one").unwrap();
        std::fs::write(&second, "two").unwrap();
        let files = PemFiles::new(vec![first.clone(), second.clone()]);
        let contents = files.read().await.unwrap();
        assert_eq!(contents.get(0), b"one");
        assert_eq!(contents.get(1), b"two");
        std::fs::remove_file(&second).unwrap();
        let error = files.read().await.err().unwrap();
        assert_eq!(error.path, second.display().to_string());
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read {}: ", second.display())),
            "{error}"
        );
    }
}
