//! `GET /v1/jobs/{id}`: a job's state and timeline, as `conveyor job` shows
//! it (`Found::describe`), to a caller whose token's scope covers the job's
//! type and queue. A job out of scope is answered exactly as one not found,
//! so a token learns nothing of jobs it may not send.
//!
//! A lookup reads Redis (the registry's deployment, in each queue the
//! registry names) and may scan waiting jobs, so the gate runs at most
//! [`MAX_LOOKUPS`] at once, scans less than the CLI, and answers 503 past
//! that: enqueues never wait behind lookups.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::requests::{json_body, Refusal};
use super::Gate;
use crate::error::{Error, Result};
use crate::id::JobId;
use crate::store::history::History;
use crate::store::keys::QueueKeys;
use crate::store::RedisStore;

/// Lookups the gate runs at once.
pub(super) const MAX_LOOKUPS: usize = 2;

/// Waiting jobs scanned per list or set (the CLI scans 100,000).
const GATE_SCAN: usize = 10_000;

pub(super) async fn lookup_job(
    State(gate): State<Arc<Gate>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let outcome = async {
        let granted = gate.authorize(&headers)?;
        let job_id = JobId::parse(&id).map_err(Refusal::from)?;
        let Some(url) = gate.config.registry_url.clone() else {
            return Err(Refusal::not_found(
                "this gate reads no Redis (--no-registry): no job lookup",
            ));
        };
        let Ok(_permit) = gate.lookups.try_acquire() else {
            return Err(Refusal::from(Error::Timeout(
                "too many job lookups at once; try again".to_owned(),
            )));
        };
        let mut queues: Vec<String> = super::read(&gate.registry).values().cloned().collect();
        queues.sort();
        queues.dedup();
        let namespace = gate.config.namespace.clone();
        let found = tokio::task::spawn_blocking(move || find(&url, &namespace, &queues, &job_id))
            .await
            .map_err(|e| Refusal::from(Error::Internal(format!("lookup task: {e}"))))?
            .map_err(Refusal::from)?;
        let Some(job) = found else {
            return Err(Refusal::not_found("no such job here now"));
        };
        let in_scope = granted.is_none_or(|g| {
            let (kind, queue) = (job["type"].as_str(), job["queue"].as_str());
            kind.is_some_and(|t| g.grant.allows_type(t)) && g.grant.allows_queue(queue)
        });
        if !in_scope {
            return Err(Refusal::not_found("no such job here now"));
        }
        Ok(job)
    }
    .await;
    match outcome {
        Ok(job) => (StatusCode::OK, json_body(&job)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The first queue that knows `id`, described.
fn find(url: &str, namespace: &str, queues: &[String], id: &JobId) -> Result<Option<Value>> {
    let mut store = RedisStore::connect(url, Duration::from_secs(2))?;
    for queue in queues {
        let keys = QueueKeys::new(namespace, queue)?;
        if let Some(found) = store.lookup(&keys, &id.0, &History::default(), GATE_SCAN)? {
            return Ok(Some(found.describe(queue)?));
        }
    }
    Ok(None)
}
