//! `/health/live`, `/health/ready`, `/health/actors`.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use actix::{Actor, Handler, dev::ToEnvelope};

use crate::{
    actors::{
        ActorClient, CheckHealth, Traced,
        health::ServiceHealth,
        metrics::{GetActorReport, MetricsSampler},
        session_store::SessionStore,
        store::first_failure,
        user_store::UserStore,
    },
    config::StorageBackend,
};

/// How long a readiness probe waits for each store. Kubernetes' default
/// probe timeout is 1 s; answer within it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
pub struct OpsState {
    pub users: ActorClient<UserStore>,
    pub sessions: ActorClient<SessionStore>,
    pub sampler: ActorClient<MetricsSampler>,
    pub health: ServiceHealth,
    pub storage: StorageBackend,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(live).service(ready).service(actors);
}

#[get("/health/live")]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// 200 when both stores' backends (Postgres and Redis, or the embedded
/// ones) answer through their actors; otherwise 503 naming each that did
/// not. 503 as soon as shutdown begins. Either way the body names the
/// storage backend.
#[get("/health/ready")]
async fn ready(state: web::Data<OpsState>) -> HttpResponse {
    let backend = state.storage;
    if state.health.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "shutting down", "backend": backend }));
    }
    let (users, sessions) = tokio::join!(probe(&state.users), probe(&state.sessions));
    let mut failed = serde_json::Map::new();
    for (dependency, error) in backend.dependencies().into_iter().zip([users, sessions]) {
        if let Some(e) = error {
            failed.insert(dependency.to_string(), e.into());
        }
    }
    if failed.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready", "backend": backend }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not ready", "backend": backend, "down": failed }))
    }
}

#[get("/health/actors")]
async fn actors(state: web::Data<OpsState>) -> HttpResponse {
    match state.sampler.call(GetActorReport).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() })),
    }
}

/// `None` when the store's dependency answered, else why not.
async fn probe<A>(client: &ActorClient<A>) -> Option<String>
where
    A: Actor + Handler<Traced<CheckHealth>>,
    A::Context: ToEnvelope<A, Traced<CheckHealth>>,
{
    // Every instance: a request may land on any of them.
    match tokio::time::timeout(PROBE_TIMEOUT, client.call_each(CheckHealth)).await {
        Ok(answers) => first_failure(answers),
        Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}
