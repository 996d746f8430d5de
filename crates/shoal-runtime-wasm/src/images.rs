//! The node-local image store: Wasm components by content digest, and the names that point at
//! them. `shoal image import` writes here; the runtime resolves pulls here first.
//!
//! Layout: `<dir>/blobs/sha256/<hex>` and `<dir>/index.json` (`{"name:tag": "sha256:<hex>"}`),
//! replaced atomically on every change.

use shoal_runtime::ImageRef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{name:?} is not a valid image reference: {why}")]
    BadName { name: String, why: &'static str },
    #[error("not a WebAssembly component or module (bad magic number)")]
    NotWasm,
    #[error("image store at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image index {path} is corrupt")]
    Index {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// `name[:tag]` → `name:tag` (`latest` when no tag or digest is given), as the kubelet does.
pub fn normalize(name: &str) -> Result<String, ImageError> {
    let bad = |why| ImageError::BadName {
        name: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace"));
    }
    if name.contains('@') {
        return Ok(name.to_owned());
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    Ok(if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    })
}

/// Checks the Wasm magic number (`\0asm`).
pub fn check_wasm(bytes: &[u8]) -> Result<(), ImageError> {
    if bytes.len() >= 8 && &bytes[..4] == b"\0asm" {
        Ok(())
    } else {
        Err(ImageError::NotWasm)
    }
}

/// `sha256:<hex>` of `bytes` (see [`shoal_wasm::digest`]).
pub fn sha256_digest(bytes: &[u8]) -> String {
    shoal_wasm::digest(bytes)
}

/// See the module documentation.
pub struct ImageStore {
    dir: PathBuf,
    /// Serialises index rewrites within this process.
    lock: Mutex<()>,
}

impl ImageStore {
    pub fn open(dir: &Path) -> Result<Self, ImageError> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(|source| ImageError::Io {
            path: blobs,
            source,
        })?;
        Ok(ImageStore {
            dir: dir.to_owned(),
            lock: Mutex::new(()),
        })
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn read_index(&self) -> Result<BTreeMap<String, String>, ImageError> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| ImageError::Index { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    /// Replaces the index with `index` (write and rename: never half written).
    fn write_index(&self, index: &BTreeMap<String, String>) -> Result<(), ImageError> {
        let path = self.index_path();
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let body = serde_json::to_vec_pretty(index).expect("a string map serialises");
        std::fs::write(&tmp, body).map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))
    }

    /// Path of the blob with `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Stores `bytes` (checked to be Wasm) under `name`, replacing what the name pointed at.
    pub fn import(&self, name: &str, bytes: &[u8]) -> Result<ImageRef, ImageError> {
        let name = normalize(name)?;
        check_wasm(bytes)?;
        let digest = sha256_digest(bytes);
        let blob = self.blob_path(&digest);
        if !blob.exists() {
            let tmp = blob.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(Self::io(&tmp))?;
            std::fs::rename(&tmp, &blob).map_err(Self::io(&blob))?;
        }
        let _guard = self
            .lock
            .lock()
            .expect("image index lock is never poisoned");
        let mut index = self.read_index()?;
        index.insert(name.clone(), digest.clone());
        self.write_index(&index)?;
        Ok(ImageRef {
            names: vec![name],
            digest,
            size: bytes.len() as u64,
        })
    }

    /// The image a name (or a `sha256:` digest) refers to, if present.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRef>, ImageError> {
        let index = self.read_index()?;
        let digest = if name.starts_with("sha256:") {
            Some(name.to_owned())
        } else if let Some((_, d)) = name.split_once('@') {
            Some(d.to_owned())
        } else {
            index.get(&normalize(name)?).cloned()
        };
        let Some(digest) = digest else {
            return Ok(None);
        };
        let Ok(meta) = std::fs::metadata(self.blob_path(&digest)) else {
            return Ok(None);
        };
        let names = index
            .iter()
            .filter(|(_, d)| **d == digest)
            .map(|(n, _)| n.clone())
            .collect();
        Ok(Some(ImageRef {
            names,
            digest,
            size: meta.len(),
        }))
    }

    /// Removes the image `name` (or a `sha256:` digest) refers to, with all its names and
    /// its blob; `false` if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, ImageError> {
        let Some(image) = self.resolve(name)? else {
            return Ok(false);
        };
        let _guard = self
            .lock
            .lock()
            .expect("image index lock is never poisoned");
        let mut index = self.read_index()?;
        index.retain(|_, d| *d != image.digest);
        self.write_index(&index)?;
        let blob = self.blob_path(&image.digest);
        match std::fs::remove_file(&blob) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Self::io(&blob)(e)),
        }
    }

    /// Every stored image with its names.
    pub fn list(&self) -> Result<Vec<ImageRef>, ImageError> {
        let index = self.read_index()?;
        let mut by_digest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (n, d) in index {
            by_digest.entry(d).or_default().push(n);
        }
        Ok(by_digest
            .into_iter()
            .map(|(digest, names)| {
                let size = std::fs::metadata(self.blob_path(&digest))
                    .map(|m| m.len())
                    .unwrap_or(0);
                ImageRef {
                    names,
                    digest,
                    size,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_latest() {
        assert_eq!(normalize("hello").unwrap(), "hello:latest");
        assert_eq!(normalize("shoal.local/a:v1").unwrap(), "shoal.local/a:v1");
        assert_eq!(
            normalize("localhost:5000/a").unwrap(),
            "localhost:5000/a:latest"
        );
        assert!(normalize("").is_err());
        assert!(normalize("a b").is_err());
    }

    #[test]
    fn import_resolve_list_and_retag() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let wasm = b"\0asm\x0d\0\x01\0rest";
        assert!(matches!(
            store.import("x", b"not wasm"),
            Err(ImageError::NotWasm)
        ));
        let a = store.import("shoal.local/a", wasm).unwrap();
        assert_eq!(a.names, ["shoal.local/a:latest"]);
        let b = store.import("shoal.local/b:v2", wasm).unwrap();
        assert_eq!(a.digest, b.digest);
        let got = store.resolve("shoal.local/a:latest").unwrap().unwrap();
        assert_eq!(got.names, ["shoal.local/a:latest", "shoal.local/b:v2"]);
        assert_eq!(store.resolve(&a.digest).unwrap().unwrap().digest, a.digest);
        assert!(store.resolve("shoal.local/c").unwrap().is_none());
        assert_eq!(store.list().unwrap().len(), 1);
        // Reopening sees the same images.
        let again = ImageStore::open(dir.path()).unwrap();
        assert!(again.resolve("shoal.local/b:v2").unwrap().is_some());
    }
}
