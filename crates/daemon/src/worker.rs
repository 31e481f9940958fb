//! The workers: `workers` threads, each with its own [`Service`] (store connection and
//! argon2 memory), taking jobs from the [`Queue`] until it closes. A job whose deadline
//! has passed is dropped before anything is hashed for it: its client has given up.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use apppass_proto::{ErrorKind, Request, Response};
use tokio::sync::oneshot;

use crate::peer::{Class, Peer};
use crate::queue::{Kind, Queue, Queued};
use crate::service::{Reply, Service};
use crate::state::{Shared, count};

/// A request waiting for a worker.
pub struct Job {
    pub peer: Arc<Peer>,
    pub request: Request,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Reply>,
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
    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| service.handle(&peer, request)));
    shared.health.busy.fetch_sub(1, Ordering::Relaxed);
    let reply = match reply {
        Ok(reply) => reply,
        Err(payload) => {
            // The panic hook logged where; the service may hold a half-done
            // transaction: start over with a new one.
            if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
                std::mem::forget(again);
            }
            *service = Service::new(Arc::clone(shared));
            Reply::Answer(Response::error(
                ErrorKind::Internal,
                "internal error in apppassd (logged)",
            ))
        }
    };
    let _ = job.reply.send(reply);
}
