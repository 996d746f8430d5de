//! Local storage as the kubelet measures it: free space of the node's file system, and what a
//! pod's logs and emptyDir volumes take on disk.

use std::path::Path;

/// Capacity and free space (for unprivileged users) of the file system holding `path`.
pub fn filesystem(path: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize.max(1);
    Ok((st.f_blocks * block, st.f_bavail * block))
}

/// What the files under `path` take on disk (allocated blocks, as `du` counts them); 0 if it
/// does not exist. Symbolic links are not followed.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            total += disk_usage(&e.path());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files_below_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let empty = disk_usage(dir.path());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![7u8; 1 << 20]).unwrap();
        assert!(disk_usage(dir.path()) >= empty + (1 << 20));
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
        let (capacity, free) = filesystem(dir.path()).unwrap();
        assert!(capacity >= free && capacity > 0);
    }
}
