//! The control loop driven by fed events instead of watchers: the real store, compiler, snapshot
//! server and status rendering over a cluster built in memory (the control-plane benchmark,
//! tests). Nothing is written to an API server: the Tenants to onboard and the statuses are
//! computed and dropped.

use super::auth::TenantDirectory;
use super::control::{ControlLoop, Statuses};
use super::onboarding::Desired;
use super::store::StoreEvent;
use super::watch::EVENT_QUEUE;
use crate::metrics::OperatorMetrics;
use bulkhead_snapshot_wire::{AckReceiver, Authenticator, SnapshotServer};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A control loop spawned by [`spawn_fed_control_loop`].
pub struct FedControlLoop {
    /// Where the events a watcher would deliver go: for each kind of
    /// [`super::watch::WATCHED_KINDS`], `Init`, its objects as `InitApply`, then `InitDone`;
    /// changes after that as `Apply` and `Delete`. Dropping it ends the loop.
    pub events: mpsc::Sender<StoreEvent>,
    /// `true` once every kind was listed and the first compilation published its snapshots.
    pub ready: watch::Receiver<bool>,
    /// The loop's metrics.
    pub metrics: OperatorMetrics,
    /// Kept open so the loop's sends of Tenants to onboard and statuses to write succeed.
    _outputs: (watch::Receiver<Desired>, watch::Receiver<Statuses>),
}

impl std::fmt::Debug for FedControlLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedControlLoop")
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

/// Spawns the control loop on the current tokio runtime, publishing through `server` (whose
/// acknowledgements arrive on `acks`) until `shutdown` is cancelled or the events sender is
/// dropped.
pub fn spawn_fed_control_loop<A>(
    server: SnapshotServer<A>,
    acks: AckReceiver,
    shutdown: CancellationToken,
) -> FedControlLoop
where
    A: Authenticator + 'static,
{
    let (desired, desired_rx) = watch::channel(Desired::new());
    let (statuses, statuses_rx) = watch::channel(Statuses::default());
    let (ready_tx, ready) = watch::channel(false);
    let control = ControlLoop::new(server, TenantDirectory::new(), desired, statuses, ready_tx);
    let metrics = control.metrics();
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(control.run(events_rx, acks, shutdown));
    FedControlLoop {
        events,
        ready,
        metrics,
        _outputs: (desired_rx, statuses_rx),
    }
}
