//! Who is asking: the kernel's credentials of the process at the other end of the
//! socket, never anything the client says. [`Access`] holds the configuration's answer
//! to "who may do what", resolved to numbers once at start.

use std::collections::HashSet;
use std::os::fd::AsFd;

use apppass_core::config::Config;
use apppass_proto::Identity;
use nix::unistd::{Gid, Group, Uid, User};

/// The classes of peers, each with its own share of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Root, and the users and groups of `auth_trusted`: the services people log in
    /// through. They may check anyone's password.
    System,
    /// Everyone else: people managing their own app passwords, or checking their own
    /// password (a screen locker).
    User,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Supplementary groups, from the same credentials (`SO_PEERGROUPS`).
    pub groups: Vec<u32>,
    pub class: Class,
    /// May manage everyone's app passwords.
    pub admin: bool,
    /// The portal (`portal_user`): a class of its own, which may only sign people in
    /// and then act for them.
    pub portal: bool,
}

impl Peer {
    /// The peer of `stream`, classified by `access`.
    pub fn of(stream: &tokio::net::UnixStream, access: &Access) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let groups = apppass_sys::peer_groups(stream.as_fd())?;
        Ok(access.classify(cred.uid(), cred.gid(), cred.pid().unwrap_or(0), groups))
    }

    /// Whether the peer is in group `gid`, primary or supplementary.
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Who apppassd takes this peer to be (its name needs NSS: call off the async
    /// thread).
    pub fn identity(&self) -> Identity {
        Identity {
            uid: self.uid,
            user: user_name(self.uid),
            admin: self.admin,
            authenticates_anyone: self.class == Class::System,
        }
    }
}

/// The configuration's trust, as uids and gids.
#[derive(Debug, Clone, Default)]
pub struct Access {
    trusted_uids: HashSet<u32>,
    trusted_gids: HashSet<u32>,
    admin_gid: Option<u32>,
    portal_uid: Option<u32>,
}

impl Access {
    /// Resolves `auth_trusted` and `admin_group`; names that do not exist are returned
    /// for the log (and trust nobody).
    pub fn resolve(config: &Config) -> (Access, Vec<String>) {
        let mut access = Access::default();
        let mut unknown = Vec::new();
        for name in &config.auth_trusted {
            match name.strip_prefix('%') {
                Some(group) => match Group::from_name(group) {
                    Ok(Some(g)) => {
                        access.trusted_gids.insert(g.gid.as_raw());
                    }
                    _ => unknown.push(format!("auth_trusted: no group {group}")),
                },
                None => match User::from_name(name) {
                    Ok(Some(u)) => {
                        access.trusted_uids.insert(u.uid.as_raw());
                    }
                    _ => unknown.push(format!("auth_trusted: no user {name}")),
                },
            }
        }
        if let Some(group) = &config.admin_group {
            match Group::from_name(group) {
                Ok(Some(g)) => access.admin_gid = Some(g.gid.as_raw()),
                _ => unknown.push(format!("admin_group: no group {group}")),
            }
        }
        if let Some(name) = &config.portal_user {
            match User::from_name(name) {
                Ok(Some(u)) if u.uid.as_raw() != 0 => access.portal_uid = Some(u.uid.as_raw()),
                Ok(Some(_)) => unknown.push("portal_user: root cannot be the portal".into()),
                // The default names the portal package's user: no portal, nothing to say.
                _ if name == apppass_core::config::DEFAULT_PORTAL_USER => {}
                _ => unknown.push(format!("portal_user: no user {name}")),
            }
        }
        (access, unknown)
    }

    /// Whether the account `name` (with `uid`) is root or in `admin_group`.
    pub fn is_admin_account(&self, name: &str, uid: u32) -> bool {
        uid == 0 || self.admin_gid.is_some_and(|g| groups_of(name).contains(&g))
    }

    /// A peer with these credentials.
    pub fn classify(&self, uid: u32, gid: u32, pid: i32, groups: Vec<u32>) -> Peer {
        let mut peer = Peer {
            uid,
            gid,
            pid,
            groups,
            class: Class::User,
            admin: uid == 0,
            portal: false,
        };
        if self.portal_uid == Some(uid) {
            // Nothing else: the portal is trusted with no one's passwords and no one's
            // app passwords but through a session.
            peer.portal = true;
            return peer;
        }
        if uid == 0
            || self.trusted_uids.contains(&uid)
            || self.trusted_gids.iter().any(|g| peer.in_group(*g))
        {
            peer.class = Class::System;
        }
        if self.admin_gid.is_some_and(|g| peer.in_group(g)) {
            peer.admin = true;
        }
        peer
    }
}

/// The groups of user `name` (primary and supplementary), from NSS.
fn groups_of(name: &str) -> Vec<u32> {
    let Ok(Some(user)) = User::from_name(name) else {
        return Vec::new();
    };
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&cname, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()])
}

/// The peer that the person `name`'s own processes would be, for the portal to act
/// as: never of the system class, whatever `auth_trusted` says of them.
pub fn person(access: &Access, name: &str) -> Option<Peer> {
    let user = User::from_name(name).ok().flatten()?;
    let mut peer = access.classify(user.uid.as_raw(), user.gid.as_raw(), 0, groups_of(name));
    peer.class = Class::User;
    peer.portal = false;
    Some(peer)
}

/// The login name of `uid`, from NSS.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The uid of the user `name`, from NSS.
pub fn user_uid(name: &str) -> Option<u32> {
    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
}

/// The gid of the group `name`, from NSS.
pub fn group_gid(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// This process's effective uid and gid.
pub fn own_ids() -> (u32, u32) {
    (Uid::effective().as_raw(), Gid::effective().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let access = Access {
            trusted_uids: [101].into(),
            trusted_gids: [202].into(),
            admin_gid: Some(303),
            portal_uid: Some(404),
        };
        let p = |uid, gid, groups: &[u32]| access.classify(uid, gid, 1, groups.to_vec());
        assert_eq!(
            (p(0, 0, &[]).class, p(0, 0, &[]).admin),
            (Class::System, true)
        );
        assert_eq!(p(101, 5, &[]).class, Class::System);
        assert_eq!(p(1000, 202, &[]).class, Class::System, "primary group");
        assert_eq!(p(1000, 5, &[7, 202]).class, Class::System, "supplementary");
        let alice = p(1000, 1000, &[1000]);
        assert_eq!((alice.class, alice.admin), (Class::User, false));
        let admin = p(1001, 1001, &[303]);
        assert_eq!((admin.class, admin.admin), (Class::User, true));
        let portal = p(404, 404, &[202, 303]);
        assert!(portal.portal && !portal.admin && portal.class == Class::User);
    }
}
