//! The queue in front of the workers: bounded, and fair. Each class of peer
//! ([`Class`]) and, within it, each uid has its own lane; workers take from the lanes in
//! turn, so that no local user, however many requests they send, can starve the mail
//! server's logins: a user's lane holds at most a few requests, all users together at
//! most half the queue, and the system class is served three times for each time the
//! users are while both wait.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::peer::Class;

/// How many requests may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All together (`queue_max`).
    pub total: usize,
    /// All of the [`Class::User`] class together.
    pub users: usize,
    /// One uid of the [`Class::User`] class.
    pub per_user: usize,
}

impl Limits {
    /// The limits for a queue of `total`.
    pub fn for_total(total: usize) -> Limits {
        let total = total.max(1);
        Limits {
            total,
            users: (total / 2).max(1),
            per_user: total.clamp(1, 8),
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

/// Something queued: its lane and its deadline, and what to do.
pub trait Queued {
    fn lane(&self) -> (Class, u32);
    fn deadline(&self) -> Instant;
}

struct Inner<J> {
    lanes: HashMap<(Class, u32), VecDeque<J>>,
    /// Uids with something queued, per class, in the order they are served.
    rotation: [VecDeque<u32>; 2],
    class_len: [usize; 2],
    len: usize,
    turn: u32,
    closed: bool,
}

/// The queue.
pub struct Queue<J> {
    inner: Mutex<Inner<J>>,
    ready: Condvar,
    limits: Limits,
}

fn index(class: Class) -> usize {
    match class {
        Class::System => 0,
        Class::User => 1,
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
                class_len: [0, 0],
                len: 0,
                turn: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<J>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, or gives it back with the reason it does not fit.
    pub fn push(&self, job: J) -> Result<(), (J, Full)> {
        let (class, uid) = job.lane();
        let mut inner = self.lock();
        let lane_len = inner.lanes.get(&(class, uid)).map_or(0, VecDeque::len);
        let full = if inner.closed {
            Some(Full::Closed)
        } else if inner.len >= self.limits.total {
            Some(Full::Queue)
        } else if class == Class::User && inner.class_len[1] >= self.limits.users {
            Some(Full::Users)
        } else if class == Class::User && lane_len >= self.limits.per_user {
            Some(Full::Share)
        } else {
            None
        };
        if let Some(why) = full {
            return Err((job, why));
        }
        let c = index(class);
        if lane_len == 0 {
            inner.rotation[c].push_back(uid);
        }
        inner.lanes.entry((class, uid)).or_default().push_back(job);
        inner.class_len[c] += 1;
        inner.len += 1;
        drop(inner);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<J> {
        let mut inner = self.lock();
        loop {
            if inner.len > 0 {
                if let Some(job) = take(&mut inner) {
                    return Some(job);
                }
                // The lanes and the counts disagree: a bug, but never a stuck worker.
                repair(&mut inner);
                continue;
            }
            if inner.closed {
                return None;
            }
            inner = self.ready.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Refuses further jobs; workers finish what is queued, then [`Queue::pop`] says none.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
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

/// Rebuilds the counts and the rotation from the lanes.
fn repair<J>(inner: &mut Inner<J>) {
    inner.lanes.retain(|_, lane| !lane.is_empty());
    inner.rotation = [VecDeque::new(), VecDeque::new()];
    inner.class_len = [0, 0];
    for ((class, uid), lane) in &inner.lanes {
        let c = index(*class);
        inner.rotation[c].push_back(*uid);
        inner.class_len[c] += lane.len();
    }
    inner.len = inner.class_len[0] + inner.class_len[1];
}

/// Takes the next job by the turn rules (the caller checked that one waits).
fn take<J: Queued>(inner: &mut Inner<J>) -> Option<J> {
    let both = inner.class_len[0] > 0 && inner.class_len[1] > 0;
    let c = if both {
        let system = inner.turn % (SYSTEM_TURNS + 1) < SYSTEM_TURNS;
        inner.turn = inner.turn.wrapping_add(1);
        if system { 0 } else { 1 }
    } else if inner.class_len[0] > 0 {
        0
    } else {
        1
    };
    let class = if c == 0 { Class::System } else { Class::User };
    // Every uid in the rotation has a non-empty lane (kept so below).
    let uid = inner.rotation[c].pop_front()?;
    let lane = inner.lanes.get_mut(&(class, uid))?;
    let job = lane.pop_front();
    if lane.is_empty() {
        inner.lanes.remove(&(class, uid));
    } else {
        inner.rotation[c].push_back(uid);
    }
    inner.class_len[c] -= 1;
    inner.len -= 1;
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct J(Class, u32, usize);

    impl Queued for J {
        fn lane(&self) -> (Class, u32) {
            (self.0, self.1)
        }
        fn deadline(&self) -> Instant {
            Instant::now()
        }
    }

    #[test]
    fn a_user_cannot_fill_the_queue() {
        let q = Queue::new(Limits {
            total: 20,
            users: 10,
            per_user: 4,
        });
        for i in 0..4 {
            q.push(J(Class::User, 1000, i)).unwrap();
        }
        assert_eq!(q.push(J(Class::User, 1000, 9)).unwrap_err().1, Full::Share);
        for uid in 1001..1004 {
            for i in 0..2 {
                q.push(J(Class::User, uid, i)).unwrap();
            }
        }
        assert_eq!(q.push(J(Class::User, 2000, 0)).unwrap_err().1, Full::Users);
        // The system class still has room.
        for i in 0..10 {
            q.push(J(Class::System, 0, i)).unwrap();
        }
        assert_eq!(q.push(J(Class::System, 0, 99)).unwrap_err().1, Full::Queue);
    }

    #[test]
    fn turns_favour_logins_and_rotate_users() {
        let q = Queue::new(Limits::for_total(100));
        for i in 0..3 {
            q.push(J(Class::User, 1000, i)).unwrap();
            q.push(J(Class::User, 1001, i)).unwrap();
        }
        for i in 0..6 {
            q.push(J(Class::System, 0, i)).unwrap();
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
    fn closing_drains_then_stops() {
        let q = Queue::new(Limits::for_total(4));
        q.push(J(Class::System, 0, 1)).unwrap();
        q.close();
        assert_eq!(q.push(J(Class::System, 0, 2)).unwrap_err().1, Full::Closed);
        assert_eq!(q.pop(), Some(J(Class::System, 0, 1)));
        assert_eq!(q.pop(), None);
    }
}
