//! Single-layer OCI images written from files on this machine, as an OCI archive (`ctr images
//! import` takes it) or as the blobs a registry push needs.
//!
//! The node builds its sandbox ("pause") image this way from Debian's static busybox, so that
//! containerd never needs to pull one; tests build their container images the same way.

use sha2::{Digest, Sha256};
use std::io;
use std::path::Path;

/// Media types of what [`Image`] writes.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of the image's only layer.
#[derive(Debug, Clone)]
enum Entry {
    Dir(String),
    File {
        path: String,
        mode: u32,
        body: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// An image being put together: its files, entrypoint, default arguments and environment.
#[derive(Debug, Clone, Default)]
pub struct Image {
    entries: Vec<Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
}

/// A blob and its digest (`sha256:<hex>`).
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            bytes,
        }
    }
}

/// What [`Image::build`] gives: the manifest, its config and its layer.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Blob,
    pub config: Blob,
    pub layer: Blob,
}

impl Image {
    pub fn new() -> Image {
        Image::default()
    }

    /// A directory (parents are not implied: add them first).
    pub fn dir(mut self, path: &str) -> Image {
        self.entries
            .push(Entry::Dir(path.trim_matches('/').to_owned()));
        self
    }

    /// A file with `body`, executable when `mode` says so.
    pub fn file(mut self, path: &str, mode: u32, body: Vec<u8>) -> Image {
        self.entries.push(Entry::File {
            path: path.trim_matches('/').to_owned(),
            mode,
            body,
        });
        self
    }

    /// A copy of the host file `from`, executable.
    pub fn program(self, path: &str, from: &Path) -> io::Result<Image> {
        let body = std::fs::read(from)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", from.display())))?;
        Ok(self.file(path, 0o755, body))
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Image {
        self.entries.push(Entry::Symlink {
            path: path.trim_matches('/').to_owned(),
            target: target.to_owned(),
        });
        self
    }

    pub fn entrypoint(mut self, argv: &[&str]) -> Image {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn cmd(mut self, argv: &[&str]) -> Image {
        self.cmd = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, var: &str) -> Image {
        self.env.push(var.to_owned());
        self
    }

    /// Busybox (the static build at `busybox`) at `/bin/busybox`, with the usual `/bin` links,
    /// `/tmp`, and `PATH` set: a base for small test and sandbox images.
    pub fn busybox(busybox: &Path) -> io::Result<Image> {
        let mut image = Image::new()
            .dir("bin")
            .dir("tmp")
            .dir("etc")
            .dir("proc")
            .dir("sys")
            .dir("dev")
            .program("bin/busybox", busybox)?
            .env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        for tool in BUSYBOX_TOOLS {
            image = image.symlink(&format!("bin/{tool}"), "busybox");
        }
        Ok(image)
    }

    /// The image's blobs.
    pub fn build(&self) -> Built {
        let layer = Blob::new(self.layer_tar());
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "Env": self.env,
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        });
        let config = Blob::new(config.to_string().into_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config.digest, "size": config.bytes.len()},
            "layers": [{"mediaType": LAYER, "digest": layer.digest, "size": layer.bytes.len()}],
        });
        Built {
            manifest: Blob::new(manifest.to_string().into_bytes()),
            config,
            layer,
        }
    }

    /// The image as an OCI archive (a tar of an OCI layout) naming it `name`.
    pub fn archive(&self, name: &str) -> Vec<u8> {
        let built = self.build();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST,
                "digest": built.manifest.digest,
                "size": built.manifest.bytes.len(),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }],
        });
        let mut tar = Tar::default();
        tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
        tar.file("index.json", 0o644, index.to_string().as_bytes());
        tar.dir("blobs");
        tar.dir("blobs/sha256");
        for blob in [&built.manifest, &built.config, &built.layer] {
            let hex = blob.digest.trim_start_matches("sha256:");
            tar.file(&format!("blobs/sha256/{hex}"), 0o644, &blob.bytes);
        }
        tar.finish()
    }

    fn layer_tar(&self) -> Vec<u8> {
        let mut tar = Tar::default();
        for e in &self.entries {
            match e {
                Entry::Dir(p) => tar.dir(p),
                Entry::File { path, mode, body } => tar.file(path, *mode, body),
                Entry::Symlink { path, target } => tar.symlink(path, target),
            }
        }
        tar.finish()
    }
}

/// The busybox applets linked into `/bin` of [`Image::busybox`].
pub const BUSYBOX_TOOLS: &[&str] = &[
    "sh", "cat", "echo", "env", "ls", "sleep", "httpd", "wget", "nc", "true", "false", "test",
    "mkdir", "rm", "tar", "head", "wc", "id", "hostname", "ps", "kill", "grep", "yes", "tr",
    "timeout",
];

/// A ustar writer: enough for layers and OCI layouts (names up to 100 bytes, owned by root).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, len: usize, s: &[u8]| {
            let n = s.len().min(len);
            h[at..at + n].copy_from_slice(&s[..n]);
        };
        assert!(name.len() <= 100 && link.len() <= 100, "tar name too long");
        put(&mut h, 0, 100, name.as_bytes());
        put(&mut h, 100, 8, format!("{mode:07o}\0").as_bytes());
        put(&mut h, 108, 8, b"0000000\0");
        put(&mut h, 116, 8, b"0000000\0");
        put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
        put(&mut h, 136, 12, b"00000000000\0");
        h[148..156].fill(b' ');
        h[156] = kind;
        put(&mut h, 157, 100, link.as_bytes());
        put(&mut h, 257, 8, b"ustar\x0000");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn file(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.header(name, mode, body.len(), b'0', "");
        self.0.extend_from_slice(body);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
    }

    fn dir(&mut self, name: &str) {
        self.header(&format!("{name}/"), 0o755, 0, b'5', "");
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_has_a_layout_whose_digests_match() {
        let image = Image::new()
            .dir("bin")
            .file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .symlink("bin/hi", "hello")
            .entrypoint(&["/bin/hello"]);
        let built = image.build();
        assert_eq!(built.layer.bytes.len() % 512, 0);
        let manifest: serde_json::Value = serde_json::from_slice(&built.manifest.bytes).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], built.layer.digest.as_str());
        assert_eq!(manifest["config"]["digest"], built.config.digest.as_str());
        let config: serde_json::Value = serde_json::from_slice(&built.config.bytes).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/hello");
        assert_eq!(config["rootfs"]["diff_ids"][0], built.layer.digest.as_str());
        // Checksums as tar readers compute them: the header's bytes with the field as spaces.
        let h = &built.layer.bytes[512..1024];
        assert_eq!(&h[0..9], b"bin/hello");
        let stored =
            u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap().trim(), 8).unwrap();
        let mut blank = h.to_vec();
        blank[148..156].fill(b' ');
        assert_eq!(stored, blank.iter().map(|&b| u32::from(b)).sum::<u32>());
        let archive = image.archive("example.test/hello:1.0");
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("org.opencontainers.image.ref.name"));
        assert!(text.contains(built.manifest.digest.trim_start_matches("sha256:")));
    }
}
