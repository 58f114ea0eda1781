//! Key files: reading and writing the file that holds the pre-shared key
//! (`bark.key-file`, `key-file`, `--key-file`). The key's text format and
//! its parsing are bark-core's ([`Key::parse`], [`Key::to_file_text`]);
//! this is the file I/O around them, with the checks OpenSSH makes of a
//! private key file.

use bark_core::auth::{Key, KeyError};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// Largest key file accepted, bytes: a key and a few comment lines.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Why a key file was refused. The message names the file and the fix,
/// never the key's bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Could not open or read it.
    #[error("key file {}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// Not a regular file, or too large to be a key file.
    #[error("key file {}: not a key file (a regular file of at most {MAX_KEY_FILE_LEN} bytes)", path.display())]
    NotAKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read or write it.
    #[error("key file {}: mode {mode:04o} lets other users read or change it; run `chmod 600 {}`", path.display(), path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by someone other than this user (or root).
    #[error("key file {}: owned by uid {owner}, not by this user (uid {me}) or root; run `chown {me} {}` or use your own key file", path.display(), path.display())]
    Owner {
        /// The file.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The contents are not a key.
    #[error("key file {}: {err}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        err: KeyError,
    },
}

/// Loads a key file (the one format every Bark program reads; see
/// [`Key::parse`]). Refuses a file that is not a regular file, that group
/// or others can read or write (mode & 0o077 ≠ 0), or that is owned by
/// neither this user nor root, as OpenSSH does for private keys. Adapters
/// call it once at setup; the text read is wiped before returning.
///
/// # Errors
/// [`KeyFileError`], naming the file and the fix.
pub fn load_key_file(path: &Path) -> Result<Key, KeyFileError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let io = |err| KeyFileError::Io {
        path: path.to_owned(),
        err,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    // The opened file's metadata, so that the checks and the read see the
    // same file even if the path is swapped in between.
    let md = f.metadata().map_err(io)?;
    if !md.is_file() || md.len() > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::NotAKeyFile {
            path: path.to_owned(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me && md.uid() != 0 {
        return Err(KeyFileError::Owner {
            path: path.to_owned(),
            owner: md.uid(),
            me,
        });
    }
    if md.mode() & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode: md.mode() & 0o7777,
        });
    }
    let mut text = String::new();
    f.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(io)?;
    let r = Key::parse(&text).map_err(|err| KeyFileError::Format {
        path: path.to_owned(),
        err,
    });
    text.zeroize();
    r
}

/// Writes a new key file at `path` with mode 0600 ([`Key::to_file_text`]);
/// refuses to overwrite an existing file. The text is wiped after writing.
///
/// # Errors
/// The OS error (e.g. `AlreadyExists`).
pub fn write_key_file(path: &Path, key: &Key) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut text = key.to_file_text();
    let r = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    text.zeroize();
    r
}

/// How a node's datagrams are protected, for its start-up log line:
/// "authenticated and encrypted, key id …", "authenticated, key id …",
/// or "open (no SETTING)", `setting` naming where the user sets a key.
pub fn describe(key: Option<&Key>, encrypt: bool, setting: &str) -> String {
    match key {
        Some(k) if encrypt => format!("authenticated and encrypted, key id {}", k.id()),
        Some(k) => format!("authenticated, key id {}", k.id()),
        None => format!("open (no {setting})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let path = dir.join("key");
        let k = Key::generate().unwrap();
        write_key_file(&path, &k).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_key_file(&path).unwrap().id(), k.id());
        assert!(write_key_file(&path, &k).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_key_file(&path).unwrap_err();
        assert!(
            matches!(e, KeyFileError::Permissions { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"));
        let e = load_key_file(&dir.join("missing")).unwrap_err();
        assert!(matches!(e, KeyFileError::Io { .. }));
        let e = load_key_file(dir).unwrap_err();
        assert!(matches!(e, KeyFileError::NotAKeyFile { .. }), "{e}");
        let short = dir.join("short");
        std::fs::write(&short, "abcd\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_key_file(&short).unwrap_err();
        assert!(
            e.to_string().contains("short") && e.to_string().contains("64 hex"),
            "{e}"
        );
    }
}
