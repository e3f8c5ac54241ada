//! The snapshot schema, which lives in `bulkhead-snapshot` (no Kubernetes dependency) so that the
//! data plane can use it without linking kube; re-exported here so `bulkhead_crds::snapshot::*`
//! paths keep working.

pub use bulkhead_snapshot::schema::*;
