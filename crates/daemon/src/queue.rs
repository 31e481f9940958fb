//! The queue in front of the workers: bounded, and fair. Each class of peer
//! ([`Class`]) and, within it, each uid has its own lane; workers take from the lanes in
//! turn, so that no local user, however many requests they send, can starve the mail
//! server's logins: a user's lane holds at most a few requests, all users together at
//! most half the queue, and the system class is served three times for each time the
//! users are while both wait.
//!
//! Changes (adds, revokes, listings, backups) may wait on the store's write lock or take
//! long; at most `max_changes` of them run at once (one worker fewer than there are,
//! when there are several), so that a worker is always left for logins.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::thread::Thread;
use std::time::Instant;

use crate::peer::Class;

/// How many requests may wait, and how many changes may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All together (`queue_max`).
    pub total: usize,
    /// All of the [`Class::User`] class together.
    pub users: usize,
    /// One uid of the [`Class::User`] class.
    pub per_user: usize,
    /// Changes running at once.
    pub max_changes: usize,
}

impl Limits {
    /// The limits for a queue of `total` served by `workers`.
    pub fn new(total: usize, workers: usize) -> Limits {
        let total = total.max(1);
        Limits {
            total,
            users: (total / 2).max(1),
            per_user: total.clamp(1, 8),
            max_changes: workers.saturating_sub(1).max(1),
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The whole queue is full.
    Queue,
    /// The users' share is full.
    Users,
    /// This uid's share is full.
    Share,
    /// apppassd is shutting down.
    Closed,
}

/// What a queued job is, for the turn rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A login: one lookup, one verification, one record.
    Login,
    /// Anything else: it may wait on the store or take long.
    Change,
}

/// Something queued: its lane, its kind and its deadline.
pub trait Queued {
    fn lane(&self) -> (Class, u32);
    fn kind(&self) -> Kind;
    fn deadline(&self) -> Instant;
}

type Lane = (Class, u32, Kind);

struct Inner<J> {
    lanes: HashMap<Lane, VecDeque<J>>,
    /// Lanes with something queued, per class, in the order they are served.
    rotation: [VecDeque<(u32, Kind)>; 2],
    /// Queued jobs per class: logins, changes.
    class_len: [[usize; 2]; 2],
    len: usize,
    changes_running: usize,
    turn: u32,
    closed: bool,
    /// Workers waiting for a job, the one that waited least last. A login wakes that one:
    /// its argon2 arena is still in the caches. (Waking the one that waited longest, as a
    /// condition variable does, made every login run in a cold arena: 2 ms more per
    /// login with two workers, measured.)
    idle: Vec<Thread>,
}

/// The queue.
pub struct Queue<J> {
    inner: Mutex<Inner<J>>,
    limits: Limits,
}

fn index(class: Class) -> usize {
    match class {
        Class::System => 0,
        Class::User => 1,
    }
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Login => 0,
        Kind::Change => 1,
    }
}

/// Of four turns while both classes wait, the system class gets this many.
const SYSTEM_TURNS: u32 = 3;

impl<J: Queued> Queue<J> {
    pub fn new(limits: Limits) -> Queue<J> {
        Queue {
            inner: Mutex::new(Inner {
                lanes: HashMap::new(),
                rotation: [VecDeque::new(), VecDeque::new()],
                class_len: [[0; 2]; 2],
                len: 0,
                changes_running: 0,
                turn: 0,
                closed: false,
                idle: Vec::new(),
            }),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<J>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, or gives it back with the reason it does not fit.
    pub fn push(&self, job: J) -> Result<(), (J, Full)> {
        let (class, uid) = job.lane();
        let kind = job.kind();
        let mut inner = self.lock();
        let c = index(class);
        let uid_len: usize = [Kind::Login, Kind::Change]
            .iter()
            .map(|k| inner.lanes.get(&(class, uid, *k)).map_or(0, VecDeque::len))
            .sum();
        let full = if inner.closed {
            Some(Full::Closed)
        } else if inner.len >= self.limits.total {
            Some(Full::Queue)
        } else if class == Class::User
            && inner.class_len[1].iter().sum::<usize>() >= self.limits.users
        {
            Some(Full::Users)
        } else if class == Class::User && uid_len >= self.limits.per_user {
            Some(Full::Share)
        } else {
            None
        };
        if let Some(why) = full {
            return Err((job, why));
        }
        let lane = inner.lanes.entry((class, uid, kind)).or_default();
        let was_empty = lane.is_empty();
        lane.push_back(job);
        if was_empty {
            inner.rotation[c].push_back((uid, kind));
        }
        inner.class_len[c][kind_index(kind)] += 1;
        inner.len += 1;
        // Any worker takes a login: wake the warmest. A change may be more than a waiting
        // worker may take now: wake them all, the one that may will.
        let wake: Vec<Thread> = match kind {
            Kind::Login => inner.idle.pop().into_iter().collect(),
            Kind::Change => std::mem::take(&mut inner.idle),
        };
        drop(inner);
        wake.iter().for_each(Thread::unpark);
        Ok(())
    }

    /// The next job a worker may take, waiting for one; `None` once the queue is closed
    /// and empty. A change it returns must be reported with [`Queue::done`].
    pub fn pop(&self) -> Option<J> {
        let me = std::thread::current();
        loop {
            let mut inner = self.lock();
            // Woken or not, this worker is not waiting any more.
            inner.idle.retain(|t| t.id() != me.id());
            let changes = inner.changes_running < self.limits.max_changes;
            if let Some(job) = take(&mut inner, changes) {
                if job.kind() == Kind::Change {
                    inner.changes_running += 1;
                }
                return Some(job);
            }
            if inner.closed && inner.len == 0 {
                return None;
            }
            inner.idle.push(me.clone());
            drop(inner);
            // An unpark between the unlock and here is not lost: park returns at once.
            std::thread::park();
        }
    }

    /// A change taken with [`Queue::pop`] is finished.
    pub fn done(&self, kind: Kind) {
        if kind == Kind::Change {
            let mut inner = self.lock();
            inner.changes_running = inner.changes_running.saturating_sub(1);
            let wake = std::mem::take(&mut inner.idle);
            drop(inner);
            wake.iter().for_each(Thread::unpark);
        }
    }

    /// Refuses further jobs; workers finish what is queued, then [`Queue::pop`] says none.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let wake = std::mem::take(&mut inner.idle);
        drop(inner);
        wake.iter().for_each(Thread::unpark);
    }

    /// How many wait now.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Takes the next job by the turn rules, changes only if `changes` allows them.
fn take<J: Queued>(inner: &mut Inner<J>, changes: bool) -> Option<J> {
    let eligible = |inner: &Inner<J>, c: usize| {
        inner.class_len[c][0] > 0 || (changes && inner.class_len[c][1] > 0)
    };
    let (system, users) = (eligible(inner, 0), eligible(inner, 1));
    let c = match (system, users) {
        (false, false) => return None,
        (true, true) => {
            let system_turn = inner.turn % (SYSTEM_TURNS + 1) < SYSTEM_TURNS;
            inner.turn = inner.turn.wrapping_add(1);
            if system_turn { 0 } else { 1 }
        }
        (true, false) => 0,
        (false, true) => 1,
    };
    let class = if c == 0 { Class::System } else { Class::User };
    // The first lane in the rotation this worker may serve.
    let at = inner.rotation[c]
        .iter()
        .position(|(_, kind)| changes || *kind == Kind::Login)?;
    let (uid, kind) = inner.rotation[c].remove(at)?;
    let lane = inner.lanes.get_mut(&(class, uid, kind))?;
    let job = lane.pop_front();
    if lane.is_empty() {
        inner.lanes.remove(&(class, uid, kind));
    } else {
        inner.rotation[c].push_back((uid, kind));
    }
    if job.is_some() {
        inner.class_len[c][kind_index(kind)] -= 1;
        inner.len -= 1;
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct J(Class, u32, usize, Kind);

    impl Queued for J {
        fn lane(&self) -> (Class, u32) {
            (self.0, self.1)
        }
        fn kind(&self) -> Kind {
            self.3
        }
        fn deadline(&self) -> Instant {
            Instant::now()
        }
    }

    fn login(class: Class, uid: u32, i: usize) -> J {
        J(class, uid, i, Kind::Login)
    }

    #[test]
    fn a_user_cannot_fill_the_queue() {
        let q = Queue::new(Limits {
            total: 20,
            users: 10,
            per_user: 4,
            max_changes: 1,
        });
        for i in 0..4 {
            q.push(login(Class::User, 1000, i)).unwrap();
        }
        let refused = q.push(J(Class::User, 1000, 9, Kind::Change)).unwrap_err();
        assert_eq!(
            refused.1,
            Full::Share,
            "logins and changes share a uid's lane"
        );
        for uid in 1001..1004 {
            for i in 0..2 {
                q.push(login(Class::User, uid, i)).unwrap();
            }
        }
        assert_eq!(
            q.push(login(Class::User, 2000, 0)).unwrap_err().1,
            Full::Users
        );
        // The system class still has room.
        for i in 0..10 {
            q.push(login(Class::System, 0, i)).unwrap();
        }
        assert_eq!(
            q.push(login(Class::System, 0, 99)).unwrap_err().1,
            Full::Queue
        );
    }

    #[test]
    fn turns_favour_logins_and_rotate_users() {
        let q = Queue::new(Limits::new(100, 2));
        for i in 0..3 {
            q.push(login(Class::User, 1000, i)).unwrap();
            q.push(login(Class::User, 1001, i)).unwrap();
        }
        for i in 0..6 {
            q.push(login(Class::System, 0, i)).unwrap();
        }
        let order: Vec<(Class, u32)> = std::iter::from_fn(|| {
            (!q.is_empty())
                .then(|| q.pop().unwrap())
                .map(|j| (j.0, j.1))
        })
        .collect();
        let s = (Class::System, 0);
        assert_eq!(
            order,
            [
                s,
                s,
                s,
                (Class::User, 1000),
                s,
                s,
                s,
                (Class::User, 1001),
                (Class::User, 1000),
                (Class::User, 1001),
                (Class::User, 1000),
                (Class::User, 1001),
            ]
        );
    }

    #[test]
    fn changes_never_take_the_last_worker() {
        // Two workers: one change at a time; logins behind it are served meanwhile.
        let q = Queue::new(Limits::new(100, 2));
        q.push(J(Class::System, 0, 1, Kind::Change)).unwrap();
        q.push(J(Class::System, 0, 2, Kind::Change)).unwrap();
        q.push(login(Class::System, 0, 3)).unwrap();
        let first = q.pop().unwrap();
        assert_eq!(first.3, Kind::Change);
        // The second change waits for the first; the login does not.
        assert_eq!(q.pop().unwrap(), login(Class::System, 0, 3));
        q.done(Kind::Change);
        assert_eq!(q.pop().unwrap().2, 2);
        q.done(Kind::Change);
        assert!(q.is_empty());
    }

    #[test]
    fn closing_drains_then_stops() {
        let q = Queue::new(Limits::new(4, 1));
        q.push(login(Class::System, 0, 1)).unwrap();
        q.close();
        assert_eq!(
            q.push(login(Class::System, 0, 2)).unwrap_err().1,
            Full::Closed
        );
        assert_eq!(q.pop(), Some(login(Class::System, 0, 1)));
        assert_eq!(q.pop(), None);
    }
}
