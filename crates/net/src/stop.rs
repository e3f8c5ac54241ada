//! Connection tasks that a hard stop ends at once.
//!
//! A draining process stops accepting, waits for its connections to end and, past a deadline, ends
//! the rest. Had each connection's task waited on a shared `CancellationToken` for that, every
//! connection would pay a registration in the token's waiter list (one mutex for all workers) and
//! its removal, about 1,000 instructions, for an event that comes once in a process's life.
//! Instead each accept loop keeps the abort handles of the tasks it spawned in a table of its own
//! ([`StopGroup`]), and [`HardStop::stop`] aborts them all: their futures are dropped, so what
//! they count when dropped is counted.

use slab::Slab;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

/// The abort handles of one group's live tasks.
type Table = Arc<Mutex<Slab<AbortHandle>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hard stop shared by a process's accept loops (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct HardStop {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    tables: Mutex<Vec<Table>>,
}

impl HardStop {
    /// A stop that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// A group for the tasks of one accept loop.
    pub fn group(&self) -> StopGroup {
        let table = Table::default();
        lock(&self.inner.tables).push(Arc::clone(&table));
        StopGroup {
            table,
            stop: self.clone(),
        }
    }

    /// Aborts every task spawned in a group of this stop, and from now on each one spawned at
    /// once.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        let tables = lock(&self.inner.tables).clone();
        for table in tables {
            // Taken out first: an aborted task removes itself from the table when dropped.
            let handles: Vec<AbortHandle> = lock(&table).drain().collect();
            for handle in handles {
                handle.abort();
            }
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }
}

/// The live tasks of one accept loop, which its [`HardStop`] can abort.
#[derive(Debug)]
pub struct StopGroup {
    table: Table,
    stop: HardStop,
}

impl StopGroup {
    /// Spawns `task` on `tracker` (on the current runtime), to run until it ends or the hard stop
    /// aborts it.
    pub fn spawn<F>(&self, tracker: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut table = lock(&self.table);
        let entry = table.vacant_entry();
        let listed = Listed {
            table: Arc::clone(&self.table),
            key: entry.key(),
        };
        let handle = tracker.spawn(async move {
            let _listed = listed;
            task.await;
        });
        entry.insert(handle.abort_handle());
        drop(table);
        if self.stop.is_stopped() {
            handle.abort();
        }
    }
}

/// Removes its task's entry when the task ends or is dropped.
struct Listed {
    table: Table,
    key: usize,
}

impl Drop for Listed {
    fn drop(&mut self) {
        lock(&self.table).try_remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts drops of the future that holds it.
    struct Dropped(Arc<AtomicUsize>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_stop_ends_the_tasks_still_running_and_later_ones_at_once() {
        let (stop, tracker) = (HardStop::new(), TaskTracker::new());
        let (first, second) = (stop.group(), stop.group());
        let dropped = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        for group in [&first, &second, &first] {
            let dropped = Dropped(Arc::clone(&dropped));
            group.spawn(&tracker, async move {
                let _dropped = dropped;
                std::future::pending::<()>().await;
            });
        }
        let done = Arc::clone(&finished);
        first.spawn(&tracker, async move {
            done.fetch_add(1, Ordering::SeqCst);
        });
        tokio::task::yield_now().await;
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(tracker.len(), 3, "the finished task left");
        assert_eq!(lock(&first.table).len(), 2, "and its entry with it");

        stop.stop();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("every task ended");
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
        assert!(lock(&first.table).is_empty() && lock(&second.table).is_empty());

        let late = TaskTracker::new();
        let guard = Dropped(Arc::clone(&dropped));
        second.spawn(&late, async move {
            let _dropped = guard;
            std::future::pending::<()>().await;
        });
        late.close();
        tokio::time::timeout(Duration::from_secs(5), late.wait())
            .await
            .expect("a task spawned after the stop ended at once");
        assert_eq!(dropped.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn tasks_that_end_leave_no_entry_behind() {
        let (stop, tracker) = (HardStop::new(), TaskTracker::new());
        let group = stop.group();
        for _ in 0..100 {
            group.spawn(&tracker, async {});
        }
        tracker.close();
        tracker.wait().await;
        assert!(lock(&group.table).is_empty());
        assert!(!stop.is_stopped());
    }
}
