//! Where local clients connect: a TCP listener, a Unix-domain socket, or both, behind one
//! [`Listener::accept`] that [`super::Proxy::serve`] drives.
//!
//! This module owns the Unix socket's life on disk. [`UnixSocket::bind`] makes it reachable only
//! with mode 0600, with no moment at which it is connectable with looser permissions: it binds
//! inside a fresh private directory (mode 0700) next to the target, tightens the socket to 0600,
//! renames it into place and removes the directory. A stale socket left by a killed proxy is
//! replaced; a socket something still answers on, and any path that is not a socket (a regular
//! file, a symlink, a directory), is refused and never deleted. Dropping the listener removes the
//! socket file, but only while it is still the one this process created.
//!
//! TCP binding (and the loopback rule) stays with the caller; this module only accepts on it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::io::{BoxStream, set_keepalive};

/// The longest socket path the kernel takes (`sun_path` is 108 bytes with the final NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// What the staging name adds to the directory: `/.rip-XXXXXXXX/s`.
const STAGING_SUFFIX_LEN: usize = 16;

/// The permissions of the socket file: read and write (connect) for the owner only.
pub const SOCKET_MODE: u32 = 0o600;

/// Why the Unix socket could not be set up; every message names the path and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path exists and is not a socket.
    #[error(
        "--unix-socket {}: the path exists and is not a socket ({kind}); refusing to replace it. \
         Choose another path or remove it yourself",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there instead.
        kind: &'static str,
    },
    /// Something still accepts connections on the socket.
    #[error(
        "--unix-socket {}: another process is listening on this socket (another rds-iam-proxy \
         or a MySQL server?); stop it or choose another path",
        path.display()
    )]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// An existing socket could not be probed (for example another user's socket).
    #[error(
        "--unix-socket {}: cannot tell whether the existing socket is still in use; remove it \
         or choose another path",
        path.display()
    )]
    Probe {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path (or its staging name, 16 bytes longer than the directory) is longer than a
    /// socket address can hold.
    #[error(
        "--unix-socket {}: the socket needs a {len}-byte address, more than the \
         {MAX_SOCKET_PATH} bytes a Unix socket address holds; choose a shorter path",
        path.display()
    )]
    TooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The directory the socket should live in does not exist.
    #[error(
        "--unix-socket {}: the directory {} does not exist; create it first (mode 0700 keeps \
         other users out) or choose another path",
        path.display(),
        dir.display()
    )]
    NoDirectory {
        /// The path.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// Creating, binding, tightening or renaming failed.
    #[error("--unix-socket {}: cannot {step}", path.display())]
    Create {
        /// The path.
        path: PathBuf,
        /// Which step failed, worded for the message.
        step: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A Unix-domain socket listener whose file is removed when it is dropped.
#[derive(Debug)]
pub struct UnixSocket {
    /// The listening socket.
    listener: UnixListener,
    /// Where its file lives.
    path: PathBuf,
    /// (device, inode) of the file this process created, so drop never removes a replacement.
    identity: (u64, u64),
}

impl UnixSocket {
    /// Creates the socket at `path` with mode 0600 (see the module docs). Needs a Tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, Error> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // The socket is first bound at `<dir>/.rip-XXXXXXXX/s`, which must fit too.
        let len = path
            .as_os_str()
            .len()
            .max(dir.as_os_str().len() + STAGING_SUFFIX_LEN);
        if len > MAX_SOCKET_PATH {
            return Err(Error::TooLong {
                path: path.to_owned(),
                len,
            });
        }
        clear_stale(path)?;
        let create = |step: &'static str| {
            let path = path.to_owned();
            move |source| Error::Create { path, step, source }
        };
        let private = private_dir(dir).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::NoDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
            },
            _ => create("create a private staging directory next to it")(source),
        })?;
        let staged = private.join("s");
        let result = (|| {
            let std_listener =
                std::os::unix::net::UnixListener::bind(&staged).map_err(create("bind"))?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(SOCKET_MODE))
                .map_err(create("set its mode to 0600"))?;
            let meta = std::fs::symlink_metadata(&staged).map_err(create("inspect it"))?;
            std_listener
                .set_nonblocking(true)
                .map_err(create("make it non-blocking"))?;
            let listener = UnixListener::from_std(std_listener).map_err(create("register it"))?;
            std::fs::rename(&staged, path).map_err(create("move it into place"))?;
            Ok(UnixSocket {
                listener,
                path: path.to_owned(),
                identity: (meta.dev(), meta.ino()),
            })
        })();
        // On success the socket has left the directory; on failure it is removed with it.
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&private);
        result
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A fresh directory in `dir` that only this user can enter: while the socket sits there with
/// default permissions, no other user can reach it.
fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    let mut last = None;
    for _ in 0..16 {
        let name = format!(".rip-{:08x}", rand::random::<u32>());
        let candidate = dir.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free private directory name")))
}

/// Leaves `path` free or holding only a dead socket (which the rename replaces); refuses
/// anything else.
fn clear_stale(path: &Path) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Create {
                path: path.to_owned(),
                step: "inspect the existing path",
                source,
            });
        }
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let kind = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_symlink() {
            "a symbolic link"
        } else {
            "a special file"
        };
        return Err(Error::NotASocket {
            path: path.to_owned(),
            kind,
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::InUse {
            path: path.to_owned(),
        }),
        // Nobody listens: a leftover of a process that did not clean up. The rename replaces it.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Probe {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Who connected, for the connection's log span.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A client on the Unix socket, with its credentials when the kernel reports them.
    Unix {
        /// The client's user id.
        uid: Option<u32>,
        /// The client's process id.
        pid: Option<i32>,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix { uid, pid } => {
                f.write_str("unix")?;
                if let Some(uid) = uid {
                    write!(f, " uid={uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
        }
    }
}

/// The proxy's listening sockets: TCP, a Unix socket, or both.
#[derive(Debug, Default)]
pub struct Listener {
    /// The TCP listener.
    tcp: Option<TcpListener>,
    /// The Unix-domain socket.
    unix: Option<UnixSocket>,
}

impl Listener {
    /// Listens on whichever of the two is given. With neither, [`Listener::accept`] never returns.
    pub fn new(tcp: Option<TcpListener>, unix: Option<UnixSocket>) -> Self {
        Listener { tcp, unix }
    }

    /// The TCP address, if there is a TCP listener.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The Unix socket's path, if there is one.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(UnixSocket::path)
    }

    /// The next client on either socket. Cancel-safe: no connection is lost when another branch
    /// of a `select!` wins.
    pub async fn accept(&self) -> io::Result<(BoxStream, Peer)> {
        match (&self.tcp, &self.unix) {
            (Some(t), Some(u)) => tokio::select! {
                r = t.accept() => tcp_accepted(r),
                r = u.listener.accept() => unix_accepted(r),
            },
            (Some(t), None) => tcp_accepted(t.accept().await),
            (None, Some(u)) => unix_accepted(u.listener.accept().await),
            (None, None) => std::future::pending().await,
        }
    }
}

fn tcp_accepted(
    r: io::Result<(tokio::net::TcpStream, SocketAddr)>,
) -> io::Result<(BoxStream, Peer)> {
    let (stream, addr) = r?;
    // Login packets are small and latency-bound.
    let _ = stream.set_nodelay(true);
    set_keepalive(&stream);
    Ok((Box::new(stream), Peer::Tcp(addr)))
}

fn unix_accepted(
    r: io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)>,
) -> io::Result<(BoxStream, Peer)> {
    let (stream, _) = r?;
    let cred = stream.peer_cred().ok();
    let peer = Peer::Unix {
        uid: cred.map(|c| c.uid()),
        pid: cred.and_then(|c| c.pid()),
    };
    Ok((Box::new(stream), peer))
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::new(Some(l), None)
    }
}

impl From<UnixSocket> for Listener {
    fn from(u: UnixSocket) -> Self {
        Listener::new(None, Some(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rip-listener-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// Accepted TCP clients get keepalive (reproduces L11: none was set). The accepted socket is
    /// boxed, so the kernel's view is read: `/proc/net/tcp` shows timer 2 (keepalive) on it.
    #[tokio::test]
    async fn accepted_tcp_clients_have_keepalive() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = Listener::new(Some(tcp), None);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_stream, _peer) = listener.accept().await.unwrap();
        let (local, remote) = (
            format!(":{:04X}", addr.port()),
            format!(":{:04X}", client.local_addr().unwrap().port()),
        );
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let row = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[1].ends_with(&local) && f[2].ends_with(&remote))
            .expect("the accepted socket in /proc/net/tcp");
        assert!(row[5].starts_with("02:"), "no keepalive timer: {row:?}");
    }

    #[tokio::test]
    async fn socket_is_0600_accepts_and_is_removed_on_drop() {
        let dir = scratch("mode");
        let path = dir.join("p.sock");
        let sock = UnixSocket::bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Nothing else is left in the directory (the private staging directory is gone).
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let listener = Listener::from(sock);
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (_stream, peer) = listener.accept().await.unwrap();
        let me = client.peer_cred().unwrap();
        assert!(
            peer.to_string().contains(&format!("uid={}", me.uid())),
            "{peer}"
        );
        drop(listener);
        assert!(!path.exists(), "socket file left behind");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_and_non_sockets_are_refused() {
        let dir = scratch("stale");
        let path = dir.join("p.sock");
        // A socket nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let sock = UnixSocket::bind(&path).unwrap();
        // A second proxy on the same path is refused while the first is alive.
        let err = UnixSocket::bind(&path).unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err}");
        drop(sock);

        std::fs::write(&path, b"precious").unwrap();
        let err = UnixSocket::bind(&path).unwrap_err();
        assert!(err.to_string().contains("regular file"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();

        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        let err = UnixSocket::bind(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn drop_leaves_a_replacement_alone() {
        let dir = scratch("replaced");
        let path = dir.join("p.sock");
        let sock = UnixSocket::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(sock);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn overlong_paths_are_refused_before_touching_the_disk() {
        let path = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
        let err = UnixSocket::bind(&path).unwrap_err();
        assert!(matches!(err, Error::TooLong { len: 205, .. }), "{err}");
    }
}
