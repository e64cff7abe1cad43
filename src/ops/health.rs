//! `/health/live`, `/health/ready`, `/health/actors`.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use actix::{Actor, Handler, dev::ToEnvelope};

use crate::{
    actors::{
        ActorClient, CheckHealth, Traced,
        metrics::{GetActorReport, MetricsSampler},
        session_store::SessionStore,
        user_store::UserStore,
    },
    grpc::health::ServingState,
};

/// How long a readiness probe waits for each store. Kubernetes' default
/// probe timeout is 1 s; answer within it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone)]
pub struct OpsState {
    pub users: ActorClient<UserStore>,
    pub sessions: ActorClient<SessionStore>,
    pub sampler: ActorClient<MetricsSampler>,
    pub serving: ServingState,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(live).service(ready).service(actors);
}

#[get("/health/live")]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// 200 when Postgres and Redis both answer through their actors; otherwise
/// 503 naming each dependency that did not. 503 as soon as shutdown begins.
#[get("/health/ready")]
async fn ready(state: web::Data<OpsState>) -> HttpResponse {
    if state.serving.is_draining() {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "shutting down" }));
    }
    let (postgres, redis) = tokio::join!(probe(&state.users), probe(&state.sessions));
    let mut failed = serde_json::Map::new();
    if let Some(e) = postgres {
        failed.insert("postgres".into(), e.into());
    }
    if let Some(e) = redis {
        failed.insert("redis".into(), e.into());
    }
    if failed.is_empty() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not ready", "down": failed }))
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
        Ok(answers) => answers.into_iter().find_map(|answer| match answer {
            Ok((Ok(()), _)) => None,
            Ok((Err(e), _)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        }),
        Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}
