//! The workers: `workers` threads, each with its own [`Service`] (store connection and
//! argon2 memory), taking jobs from the [`Queue`] until it closes. A job whose deadline
//! has passed is dropped before anything is hashed for it: its client has given up.

use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use apppass_proto::{ErrorKind, Request, Response};
use tokio::sync::oneshot;

use crate::peer::{Class, Peer};
use crate::queue::{Kind, Queue, Queued};
use crate::service::{After, Reply, Service};
use crate::state::{Shared, count};

/// A request waiting for a worker.
pub struct Job {
    pub peer: Arc<Peer>,
    pub request: Request,
    pub deadline: Instant,
    /// Until when the connection waits for the reply (then it answers "timeout" itself).
    pub connection_waits: Instant,
    pub reply: oneshot::Sender<Reply>,
    /// The client's socket (a duplicate), for a login's answer to be written at once.
    pub direct: Option<OwnedFd>,
}

impl Queued for Job {
    fn lane(&self) -> (Class, u32) {
        (self.peer.class, self.peer.uid)
    }

    fn kind(&self) -> Kind {
        match self.request {
            Request::Authenticate(_) => Kind::Login,
            _ => Kind::Change,
        }
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Starts `n` workers.
pub fn spawn(n: u32, shared: &Arc<Shared>, queue: &Arc<Queue<Job>>) -> Vec<JoinHandle<()>> {
    (0..n)
        .filter_map(|i| {
            let shared = Arc::clone(shared);
            let queue = Arc::clone(queue);
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || run(&shared, &queue))
                // Fewer workers is slower, not broken (run() reports how many started).
                .ok()
        })
        .collect()
}

fn run(shared: &Arc<Shared>, queue: &Queue<Job>) {
    let mut service = Service::new(Arc::clone(shared));
    while let Some(job) = queue.pop() {
        let kind = job.kind();
        serve(shared, &mut service, job);
        queue.done(kind);
    }
}

/// One job: dropped if its client left or its deadline passed, else handled and
/// answered.
fn serve(shared: &Arc<Shared>, service: &mut Service, job: Job) {
    if job.reply.is_closed() {
        // Its client hung up while it waited.
        shared.health.count(count::EXPIRED);
        return;
    }
    if Instant::now() >= job.deadline {
        shared.health.count(count::EXPIRED);
        let _ = job.reply.send(Reply::Answer(Response::error(
            ErrorKind::Timeout,
            "the request waited past its deadline in apppassd's queue",
        )));
        return;
    }
    shared.health.busy.fetch_add(1, Ordering::Relaxed);
    let peer = job.peer;
    let request = job.request;
    let answered = std::panic::catch_unwind(AssertUnwindSafe(|| service.handle(&peer, request)));
    let (reply, after) = match answered {
        Ok(answered) => answered,
        Err(payload) => {
            forget_panic(payload);
            // The panic hook logged where; the service may hold a half-done
            // transaction: start over with a new one.
            *service = Service::new(Arc::clone(shared));
            (
                Reply::Answer(Response::error(
                    ErrorKind::Internal,
                    "internal error in apppassd (logged)",
                )),
                None,
            )
        }
    };
    // The answer goes first; a login's record and log line follow. The user's gate is
    // closed before the answer leaves and opened again whatever happens to the record.
    let gated = after
        .as_ref()
        .and_then(After::records_for)
        .map(str::to_string);
    if let Some(user) = &gated {
        shared.recording.enter(user);
    }
    let reply = match (reply, &job.direct) {
        // Written here, while the connection still waits for it (well before it gives up
        // and answers "timeout" itself), a login's answer reaches its client without a
        // detour through the connections' thread.
        (Reply::Answer(response), Some(fd))
            if Instant::now() + Duration::from_millis(500) < job.connection_waits =>
        {
            write_direct(fd, &response)
        }
        (reply, _) => reply,
    };
    let _ = job.reply.send(reply);
    if std::panic::catch_unwind(AssertUnwindSafe(|| service.finish(after))).is_err() {
        *service = Service::new(Arc::clone(shared));
    }
    if let Some(user) = &gated {
        shared.recording.leave(user);
    }
    shared.health.busy.fetch_sub(1, Ordering::Relaxed);
}

/// Writes `response`'s frame without waiting: it is small and the client's socket holds
/// nothing of ours (one request at a time), so it goes whole; whatever does not is left
/// to the connection, as is the whole answer if the write fails.
fn write_direct(fd: &OwnedFd, response: &Response) -> Reply {
    let body = response.encode();
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(4 + body.len()));
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&body);
    let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
    match rustix::net::send(fd, &frame, flags) {
        Ok(n) if n == frame.len() => Reply::Written,
        Ok(n) => Reply::Rest(frame[n..].to_vec()),
        Err(_) => Reply::Answer(Response::error(
            ErrorKind::Internal,
            "could not write the answer",
        )),
    }
}

/// Drops a panic's payload, which can itself panic: contained too.
fn forget_panic(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
        std::mem::forget(again);
    }
}
