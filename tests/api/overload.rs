//! Overload is not an outage: driven far past its capacity while Postgres and
//! Redis are healthy, the service refuses the excess with RESOURCE_EXHAUSTED
//! and `retry-after`, and never answers UNAVAILABLE, opens a circuit,
//! restarts a store or reports not-ready. (How fast a refusal comes is a
//! figure of `scripts/benchmarks.sh`, not of this test.)

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_service::grpc::proto::{FindByEmailRequest, GetMeRequest};
use tonic::{Code, transport::Channel};

use crate::support::{Backend, Client, TestApp, signed_in, unique_email, with_session};

/// Answers by code, and how many refusals lacked `retry-after`.
#[derive(Default)]
struct Tally {
    codes: BTreeMap<String, u64>,
    refusals_without_retry_after: u64,
}

impl Tally {
    fn record(&mut self, result: Result<(), tonic::Status>) {
        let code = match &result {
            Ok(()) => Code::Ok,
            Err(status) => status.code(),
        };
        if let Err(status) = &result
            && code == Code::ResourceExhausted
            && status.metadata().get("retry-after").is_none()
        {
            self.refusals_without_retry_after += 1;
        }
        *self.codes.entry(format!("{code:?}")).or_default() += 1;
    }

    fn count(&self, code: Code) -> u64 {
        self.codes.get(&format!("{code:?}")).copied().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn far_past_capacity_the_service_refuses_the_excess_and_reports_no_outage() {
    let app = TestApp::spawn_with(Backend::External, |s| {
        // Small enough that the flood below overruns every bound: the
        // store mailboxes, and the Postgres pool (one connection per
        // worker, a 100 ms wait for it).
        s.actors.mailbox_capacity = 64;
        s.postgres.pool_max_size = 2;
        s.postgres.connect_timeout_ms = 100;
        // One misread outage would be enough to open a circuit and restart.
        s.actors.failure_threshold = 2;
    })
    .await;
    let (_, session) = signed_in(&mut app.client()).await;

    // 400 callers on 8 connections for 3 s, alternating GetMe (Redis) and
    // FindByEmail of unknown addresses (a Postgres query every time).
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut callers = Vec::new();
    for _ in 0..8 {
        let channel = Channel::from_shared(format!("http://{}", app.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connects");
        for caller in 0..50 {
            let mut client = Client::new(channel.clone());
            let session = session.clone();
            let tally = Arc::clone(&tally);
            callers.push(tokio::spawn(async move {
                let mut n = caller;
                while tokio::time::Instant::now() < until {
                    n += 1;
                    let result = if n % 2 == 0 {
                        client.get_me(with_session(GetMeRequest {}, &session)).await.map(drop)
                    } else {
                        let request = FindByEmailRequest { email: unique_email() };
                        match client.find_by_email(with_session(request, &session)).await {
                            Err(status) if status.code() == Code::NotFound => Ok(()),
                            other => other.map(drop),
                        }
                    };
                    tally.lock().expect("lock").record(result);
                }
            }));
        }
    }

    // Ready throughout.
    let mut not_ready = Vec::new();
    while tokio::time::Instant::now() < until {
        let (status, body) = app.get("/health/ready").await;
        if status != 200 {
            not_ready.push(body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for caller in callers {
        caller.await.expect("caller");
    }
    let tally = std::mem::take(&mut *tally.lock().expect("lock"));
    let answered: u64 = tally.codes.values().sum();

    assert!(not_ready.is_empty(), "not ready under load: {not_ready:?}");
    assert_eq!(tally.count(Code::Unavailable), 0, "overload read as an outage: {:?}", tally.codes);
    assert_eq!(tally.count(Code::Internal), 0, "{:?}", tally.codes);
    assert!(tally.count(Code::ResourceExhausted) > 0, "the flood was refused: {:?}", tally.codes);
    assert!(tally.count(Code::Ok) > 0, "and served: {:?}", tally.codes);
    assert_eq!(
        tally.count(Code::Ok) + tally.count(Code::ResourceExhausted),
        answered,
        "only served or refused: {:?}",
        tally.codes
    );
    assert_eq!(tally.refusals_without_retry_after, 0, "every refusal says when to retry");

    let (status, body) = app.get("/health/actors").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    for actor in report["actors"].as_array().expect("actors") {
        assert_eq!(actor["restarts"], 0, "no restart: {actor}");
        assert_eq!(actor["state"], "running", "{actor}");
    }
    for dependency in ["postgres", "redis"] {
        assert_eq!(report["dependencies"][dependency]["up"], true, "{report}");
    }
    // And the service is itself again at once.
    let (status, body) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    app.client().get_me(with_session(GetMeRequest {}, &session)).await.expect("served");
}
