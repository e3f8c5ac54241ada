//! The runtimes connections are served on: one current-thread tokio runtime per worker thread,
//! nginx's and Envoy's worker model. A connection lives on the worker that accepted it, with its
//! timers, its upstream connections and its tasks, so serving it needs no cross-thread hand-off
//! (a multi-thread runtime wakes tasks across threads and steals work between them, which cost
//! 30 % more CPU per request at two workers, see BENCHMARKS.md).
//!
//! Every worker accepts on each listener ([`spawn_accept_loops`]), from a socket of its own in the
//! port's `SO_REUSEPORT` group: the kernel spreads new connections over the workers by their
//! addresses, as nginx's `reuseport` and Envoy's listeners do.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// This thread's worker number; 0 outside worker threads.
    static INDEX: Cell<usize> = const { Cell::new(0) };
    /// The workers this thread is one of; `None` outside worker threads.
    static CURRENT: RefCell<Option<Workers>> = const { RefCell::new(None) };
}

/// Handles of the worker runtimes; worker 0 is the one the process runs its main work on.
#[derive(Debug, Clone)]
pub struct Workers {
    handles: Arc<[Handle]>,
}

impl Workers {
    /// Workers with these runtimes; worker `i` is `handles[i]`.
    ///
    /// # Panics
    /// When `handles` is empty.
    pub fn new(handles: Vec<Handle>) -> Self {
        assert!(!handles.is_empty(), "at least one worker");
        Self {
            handles: handles.into(),
        }
    }

    /// Workers made of `runtimes`, worker `i` being `runtimes[i]`.
    ///
    /// # Panics
    /// When `runtimes` is empty.
    pub fn of(runtimes: &[Runtime]) -> Self {
        Self::new(runtimes.iter().map(|rt| rt.handle().clone()).collect())
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never true: there is always at least one worker.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The runtimes, worker 0 first.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// `n` current-thread runtimes, with IO and timers: one per worker. Each refreshes the worker's
/// [`clock`](crate::clock) when it wakes from waiting for events.
///
/// # Errors
/// When a runtime cannot start.
pub fn runtimes(n: usize) -> io::Result<Vec<Runtime>> {
    (0..n)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_unpark(crate::clock::refresh)
                .build()
        })
        .collect()
}

/// Worker threads, each running its runtime until this is dropped (which waits for them).
#[derive(Debug)]
pub struct WorkerThreads {
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WorkerThreads {
    /// Runs each `(i, runtime)` on a thread of its own, named `{name}-{i}`, as worker `i` of
    /// `workers`.
    ///
    /// # Errors
    /// When a thread cannot start; those already started stop when the error is dropped.
    pub fn start(
        name: &str,
        workers: &Workers,
        runtimes: impl IntoIterator<Item = (usize, Runtime)>,
    ) -> io::Result<Self> {
        let mut started = Self {
            stop: CancellationToken::new(),
            threads: Vec::new(),
        };
        for (i, runtime) in runtimes {
            let (stop, workers) = (started.stop.clone(), workers.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    enter(&workers, i);
                    runtime.block_on(stop.cancelled());
                })?;
            started.threads.push(thread);
        }
        Ok(started)
    }
}

impl Drop for WorkerThreads {
    fn drop(&mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// Starts `n` workers (at least one): returns worker 0's runtime, for the caller to run on its
/// own thread after [`enter`]ing it as worker 0, the workers, and the others' threads (named
/// `{name}-1`, `{name}-2`, …), which run until dropped.
///
/// # Errors
/// When a runtime or a thread cannot start.
pub fn start(name: &str, n: usize) -> io::Result<(Runtime, Workers, WorkerThreads)> {
    let mut all = runtimes(n.max(1))?;
    let workers = Workers::of(&all);
    let others = all.split_off(1);
    let first = all.pop().ok_or_else(|| io::Error::other("no runtime"))?;
    let threads = WorkerThreads::start(name, &workers, (1..).zip(others))?;
    Ok((first, workers, threads))
}

/// Marks the calling thread as worker `index` of `workers` (see [`current`] and [`index`]);
/// called once by each worker thread, before it runs its runtime.
pub fn enter(workers: &Workers, index: usize) {
    INDEX.with(|c| c.set(index));
    CURRENT.with(|c| *c.borrow_mut() = Some(workers.clone()));
}

/// The workers the calling thread is one of, or else the current runtime alone (tests, a runtime
/// of its own such as each router's in `standalone`, and processes that run one worker).
///
/// # Panics
/// Outside a tokio runtime on a thread that is not a worker.
pub fn current() -> Workers {
    CURRENT
        .with(|c| c.borrow().clone())
        .unwrap_or_else(|| Workers::new(vec![Handle::current()]))
}

/// Whether the calling thread is one of several workers, each accepting from the same listeners.
pub fn shared_listeners() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|w| w.len() > 1))
}

/// The worker number of the calling thread: `i` on worker `i`'s thread, 0 anywhere else. State
/// kept per worker (upstream connection pools) is indexed by it.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Spawns `serve(listener)` on every worker of `workers`, `serve` being the listener's accept
/// loop; returns the tasks' handles, worker 0's first. Worker 0 accepts from `listener` itself.
/// Each other worker gets a socket of its own, registered with its own event loop: when `listener`
/// has `SO_REUSEPORT` ([`bind_for_workers`](crate::bind_for_workers)), a socket bound beside it on
/// the same address, the kernel spreading new connections over the group by their addresses;
/// otherwise a duplicate of the same socket, taken from by whichever worker is free first. A worker
/// whose socket cannot be made (out of file descriptors) is left out with a warning: worker 0
/// always accepts.
pub fn spawn_accept_loops<S, F>(
    workers: &Workers,
    listener: TcpListener,
    serve: S,
) -> Vec<JoinHandle<()>>
where
    S: Fn(TcpListener) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let reuse_port = socket2::SockRef::from(&listener)
        .reuse_port()
        .unwrap_or(false);
    let sibling = |handle: &Handle| -> io::Result<TcpListener> {
        let socket = if reuse_port {
            crate::bind_std(listener.local_addr()?, true)?
        } else {
            std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?)
        };
        let _context = handle.enter();
        TcpListener::from_std(socket)
    };
    let (first, others) = workers
        .handles()
        .split_first()
        .expect("at least one worker");
    let mut siblings = Vec::with_capacity(others.len());
    for (i, handle) in others.iter().enumerate() {
        match sibling(handle) {
            Ok(l) => siblings.push((handle, l)),
            Err(e) => {
                tracing::warn!(worker = i + 1, error = %e, "a worker cannot get a socket of the listener; the others accept for it");
            }
        }
    }
    let mut tasks = vec![first.spawn(serve(listener))];
    tasks.extend(
        siblings
            .into_iter()
            .map(|(handle, l)| handle.spawn(serve(l))),
    );
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `n` workers, each on a thread of its own.
    fn worker_threads(n: usize) -> (Workers, WorkerThreads) {
        let runtimes = runtimes(n).expect("runtimes");
        let workers = Workers::of(&runtimes);
        let threads = WorkerThreads::start("worker", &workers, runtimes.into_iter().enumerate())
            .expect("threads");
        (workers, threads)
    }

    /// An accept loop answering each connection with the number of the worker that accepted it.
    async fn answer_with_worker(listener: TcpListener, accepted: Arc<AtomicUsize>) {
        while let Ok((mut conn, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let worker = index();
            tokio::spawn(async move {
                let _ = conn
                    .write_all(&[u8::try_from(worker).unwrap_or(u8::MAX)])
                    .await;
            });
        }
    }

    async fn served_by(addr: std::net::SocketAddr) -> u8 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut worker = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut worker))
            .await
            .expect("answered in time")
            .expect("answer");
        worker[0]
    }

    /// Blocks worker `handle`'s thread (a task that never yields) until the returned sender is
    /// dropped; returns once the block has begun.
    fn stick(handle: &Handle) -> std::sync::mpsc::Sender<()> {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (began_tx, began_rx) = std::sync::mpsc::channel::<()>();
        handle.spawn(async move {
            let _ = began_tx.send(());
            let _ = release_rx.recv();
        });
        began_rx.recv().expect("the worker ran the blocking task");
        release_tx
    }

    /// Without `SO_REUSEPORT` (a listener bound by [`crate::bind`]), the workers share one socket.
    #[tokio::test]
    async fn on_a_shared_socket_a_busy_worker_does_not_hold_back_accepts_the_others_can_take() {
        let (workers, threads) = worker_threads(2);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let listener = {
            let _context = workers.handles()[0].enter();
            TcpListener::from_std(std_listener).expect("register")
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        spawn_accept_loops(&workers, listener, |l| {
            answer_with_worker(l, Arc::clone(&accepted))
        });
        // Worker 0 stuck: every connection is worker 1's.
        let stuck = stick(&workers.handles()[0]);
        for _ in 0..5 {
            assert_eq!(served_by(addr).await, 1, "served by the free worker");
        }
        // Worker 1 stuck instead: worker 0 takes them all.
        drop(stuck);
        let stuck = stick(&workers.handles()[1]);
        for _ in 0..5 {
            assert_eq!(served_by(addr).await, 0, "served by the free worker");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
        drop(stuck);
        drop(threads);
    }

    #[tokio::test]
    async fn with_reuse_port_the_kernel_spreads_connections_over_the_workers() {
        let (workers, threads) = worker_threads(2);
        // Bound as the edge and the router bind, on worker 0's thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        workers.handles()[0].spawn(async move {
            let _ = tx.send(crate::bind_for_workers("127.0.0.1:0".parse().expect("addr")).await);
        });
        let listener = rx.await.expect("bound").expect("bind");
        assert!(socket2::SockRef::from(&listener)
            .reuse_port()
            .expect("option"));
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        spawn_accept_loops(&workers, listener, |l| {
            answer_with_worker(l, Arc::clone(&accepted))
        });
        let mut per_worker = [0usize; 2];
        for _ in 0..40 {
            per_worker[usize::from(served_by(addr).await)] += 1;
        }
        // 40 connections from distinct source ports: all on one worker has odds of 2^-39.
        assert!(per_worker.iter().all(|n| *n > 0), "{per_worker:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 40);
        drop(threads);
    }

    #[test]
    fn outside_worker_threads_the_index_is_zero_and_the_workers_are_the_current_runtime() {
        assert_eq!(std::thread::spawn(index).join().expect("thread"), 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert_eq!(rt.block_on(async { current().len() }), 1);
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let two = Workers::new(vec![rt.handle().clone(), other.handle().clone()]);
        enter(&two, 1);
        assert_eq!(index(), 1);
        assert_eq!(current().len(), 2);
    }
}
