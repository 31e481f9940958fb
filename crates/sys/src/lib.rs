//! What apppassd needs from the kernel that std and the crates it uses have no safe form
//! of, kept here so that the daemon itself forbids `unsafe`:
//!
//! - [`listen_fds`]: the listening socket systemd (or `systemd-socket-activate`) passed,
//!   by the `LISTEN_FDS` protocol;
//! - [`peer_groups`]: the supplementary groups of the process at the other end of a
//!   Unix socket (`SO_PEERGROUPS`), from the same kernel credentials as `SO_PEERCRED`,
//!   so that nothing can change between reading the uid and reading the groups.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: libc::c_int = 3;

/// The listening Unix socket systemd passed, if it passed one to this process.
///
/// Follows sd_listen_fds(3): only when `LISTEN_PID` is this process (a variable
/// inherited by a child is not the child's socket) and `LISTEN_FDS` is at least 1; the
/// first descriptor must be a listening Unix stream socket. The variables are left as
/// they are: apppassd starts no other program.
pub fn listen_fds() -> io::Result<Option<UnixListener>> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if !ours || count == 0 {
        return Ok(None);
    }
    if count > 1 {
        return Err(io::Error::other(format!(
            "systemd passed {count} sockets; apppassd takes exactly one (ListenStream= once)"
        )));
    }
    let fd = LISTEN_FDS_START;
    // SAFETY: fstat only reads the descriptor's metadata into a local, zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer; a bad descriptor gives EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other(
            "LISTEN_FDS names descriptor 3, but it is not a socket",
        ));
    }
    for (option, want, what) in [
        (libc::SO_DOMAIN, libc::AF_UNIX, "a Unix socket"),
        (libc::SO_TYPE, libc::SOCK_STREAM, "a stream socket"),
        (libc::SO_ACCEPTCONN, 1, "listening"),
    ] {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if value != want {
            return Err(io::Error::other(format!(
                "the socket systemd passed is not {what}"
            )));
        }
    }
    // SAFETY: LISTEN_PID says descriptor 3 was passed to this very process, which
    // nothing else in it has taken: apppassd calls this once, first thing. It is open
    // (fstat succeeded) and a listening Unix stream socket (checked above), so owning it
    // as a UnixListener is what it is.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Not inherited by anything apppassd might start.
    set_cloexec(&owned)?;
    Ok(Some(UnixListener::from(owned)))
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The supplementary groups of the peer of a connected Unix socket, as the kernel
/// recorded them when it connected (Linux 4.13+).
pub fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` writable bytes; the kernel writes at most that
        // many and says how many it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // Too small: the kernel said how large it must be (a process has at most
        // NGROUPS_MAX, 65536, groups).
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_groups_are_our_own() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).unwrap();
        // SAFETY: getgroups with size 0 only counts.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut want = vec![0; n as usize];
        // SAFETY: the buffer holds n gids.
        let n = unsafe { libc::getgroups(n, want.as_mut_ptr()) };
        want.truncate(n as usize);
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn no_listen_fds_without_our_pid() {
        // The test runner is not socket-activated: LISTEN_PID is unset or not ours.
        assert!(listen_fds().unwrap().is_none());
    }
}
