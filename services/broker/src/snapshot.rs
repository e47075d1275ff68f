//! The `/services` view: the broker loop builds a JSON snapshot of its
//! services and workers every 250 ms and publishes it here; the ops HTTP
//! server reads the latest one. The loop never waits for a reader: it only
//! swaps a pointer under a lock nobody holds for longer than a clone.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::{json, Value};

use crate::{
    router::{hex, Router},
    services::ServiceId,
};

/// The latest snapshot, shared between the broker loop and the ops server.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCell(Arc<Mutex<Arc<str>>>);

impl SnapshotCell {
    /// Replaces the snapshot.
    pub fn publish(&self, json: String) {
        if let Ok(mut cell) = self.0.lock() {
            *cell = json.into();
        }
    }

    /// The latest snapshot (`{}` before the first).
    pub fn read(&self) -> Arc<str> {
        match self.0.lock() {
            Ok(cell) if !cell.is_empty() => cell.clone(),
            _ => "{}".into(),
        }
    }
}

/// Builds the snapshot: per service its queue, worker counts and totals;
/// per worker its identity, instance, protocol, credit, load and the time
/// since it was last heard from.
pub fn build(router: &Router, now: Instant) -> String {
    let mut by_service: HashMap<ServiceId, Vec<Value>> = HashMap::new();
    for w in router.workers.iter() {
        by_service.entry(w.service).or_default().push(json!({
                        "identity": hex(&w.identity),
                        "instance": w.instance,
                        "protocol": String::from_utf8_lossy(w.version.worker_protocol()),
                        "credit": w.credit,
                        "in_flight": w.held.len(),
                        "full": w.full,
                        "served": w.served,
                        "last_heartbeat_ms_ago": now.saturating_duration_since(w.last_heard).as_millis() as u64,
        }));
    }
    let mut services: Vec<Value> = router
        .services
        .ids()
        .into_iter()
        .map(|id| {
            let s = router.services.get(id);
            let workers = by_service.remove(&id).unwrap_or_default();
            json!({
                "name": s.name.as_str(),
                "queue_depth": s.waiting,
                "workers_idle": s.workers - s.busy,
                "workers_busy": s.busy,
                "requests": s.requests,
                "errors": s.errors.get(),
                "expired_in_queue": s.expired,
                "workers_lost": s.lost,
                "workers": workers,
            })
        })
        .collect();
    services.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "default_service": router.settings.default_service.as_str(),
        "rep_backend_peers": router.rep_peers(),
        "services": services,
    })
    .to_string()
}
