//! `redis.mode` = cluster and sentinel against real topologies of the
//! test's own (`support::redis`): every session-store path on a 3-master
//! Cluster, where keys written together land on different nodes; and a
//! Sentinel failover under load, where the service answers UNAVAILABLE only
//! for the failover window and the sessions written before it still work.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use auth_service::{
    cli::{AccountArgs, admin_account},
    config::{RedisMode, SecretUrl},
    grpc::proto::{
        ChangePasswordRequest, FindByEmailRequest, FindByIdRequest, GetMeRequest,
        ListSessionsRequest, LoginRequest, LogoutAllRequest, LogoutRequest, RevokeSessionRequest,
    },
    service::AccountAction,
};
use tonic::Code;

use crate::{
    support::redis::{RedisCluster, RedisSentinels, SENTINEL_MASTER, SENTINEL_SET_PASSWORD},
    support::{
        Backend, Client, PASSWORD, TestApp, blocking, login, register, unique_email, with_session,
    },
};

async fn live(client: &mut Client, session: &str) -> bool {
    match client.get_me(with_session(GetMeRequest {}, session)).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::Unauthenticated => false,
        Err(status) => panic!("get me: {status:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_session_path_works_on_a_redis_cluster() {
    let cluster = blocking(RedisCluster::start);
    let seeds = cluster.seed_urls();
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.redis.mode = RedisMode::Cluster;
        s.redis.urls = SecretUrl::new(seeds);
        s.login.max_failures_per_address = 8;
    })
    .await;
    let mut client = app.client();

    // Sessions, lookups, the user cache.
    let email = unique_email();
    let user = register(&mut client, &email, PASSWORD).await;
    let sessions: Vec<String> = {
        let mut sessions = Vec::new();
        for _ in 0..6 {
            sessions.push(login(&mut client, &email, PASSWORD).await.1);
        }
        sessions
    };
    for session in &sessions {
        assert!(live(&mut client, session).await);
    }
    for _ in 0..2 {
        // Twice: a miss that fills the cache, then a hit.
        let by_id = FindByIdRequest { uuid: user.uuid.clone() };
        let found = client.find_by_id(with_session(by_id, &sessions[0])).await.expect("by id");
        assert_eq!(found.into_inner().user.expect("user").email, email);
        let by_email = FindByEmailRequest { email: email.clone() };
        let found = client.find_by_email(with_session(by_email, &sessions[0])).await;
        assert_eq!(found.expect("by email").into_inner().user.expect("user").uuid, user.uuid);
    }

    // Six sessions, their index and two cache entries: on several nodes
    // (all on one would happen about once in 7 000 runs).
    let spread = cluster.keys_per_node();
    eprintln!("keys per cluster node: {spread:?}");
    assert!(spread.iter().filter(|&&n| n > 0).count() >= 2, "keys on several nodes: {spread:?}");

    // Session management reads and ends sessions spread over the nodes.
    let listed = client
        .list_sessions(with_session(ListSessionsRequest {}, &sessions[0]))
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), sessions.len(), "{listed:?}");
    let other = listed.iter().find(|s| !s.current).expect("another session").handle.clone();
    client
        .revoke_session(with_session(RevokeSessionRequest { handle: other }, &sessions[0]))
        .await
        .expect("revoke");
    let live_now = {
        let mut n = 0;
        for session in &sessions {
            n += usize::from(live(&mut client, session).await);
        }
        n
    };
    assert_eq!(live_now, sessions.len() - 1, "exactly the revoked session ended");

    // ChangePassword drops every cached copy of the user and ends the
    // other sessions; LogoutAll then ends what remains but the caller's.
    let change = ChangePasswordRequest {
        old_password: PASSWORD.into(),
        new_password: "a brand new passphrase".into(),
    };
    client.change_password(with_session(change, &sessions[0])).await.expect("change password");
    assert!(live(&mut client, &sessions[0]).await, "the caller's session stays");
    for session in &sessions[1..] {
        assert!(!live(&mut client, session).await, "other sessions end with a new password");
    }
    let (_, second) = login(&mut client, &email, "a brand new passphrase").await;
    let ended = client
        .logout_all(with_session(LogoutAllRequest { keep_current: true }, &sessions[0]))
        .await
        .expect("logout all")
        .into_inner();
    assert!(ended.ended >= 1, "{ended:?}");
    assert!(!live(&mut client, &second).await);
    client.logout(with_session(LogoutRequest {}, &sessions[0])).await.expect("logout");
    assert!(!live(&mut client, &sessions[0]).await);

    // The admin paths: disabling ends the account's sessions (spread over
    // the nodes) and drops its cached copies; enabling lets it log in.
    let admin = unique_email();
    register(&mut client, &admin, PASSWORD).await;
    let (_, held) = login(&mut client, &admin, PASSWORD).await;
    let settings = app.settings.clone();
    let args = AccountArgs::local(admin.clone());
    let disabled = blocking(move || admin_account(&settings, AccountAction::Disable, &args))
        .expect("admin disable");
    assert!(disabled.contains("1 session(s) ended"), "{disabled}");
    assert!(!live(&mut client, &held).await, "its session ended");
    let by_email = FindByEmailRequest { email: admin.clone() };
    let (_, watcher) = login(&mut client, &email, "a brand new passphrase").await;
    let hidden = client.find_by_email(with_session(by_email, &watcher)).await;
    assert_eq!(hidden.expect_err("disabled").code(), Code::NotFound);
    let settings = app.settings.clone();
    let args = AccountArgs::local(admin.clone());
    blocking(move || admin_account(&settings, AccountAction::Enable, &args)).expect("enable");
    login(&mut client, &admin, PASSWORD).await;

    // The login throttle's counters (address, account, pair) hash to
    // different slots: failures still add up to the pair's budget.
    let victim = unique_email();
    register(&mut client, &victim, PASSWORD).await;
    let mut refused = None;
    for attempt in 0..8 {
        let request = LoginRequest { email: victim.clone(), password: "wrong guess".into() };
        match client.login(request).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            Err(status) if status.code() == Code::ResourceExhausted => {
                refused = Some(attempt);
                break;
            }
            other => panic!("wrong password answered {other:?}"),
        }
    }
    assert_eq!(refused, Some(5), "the sixth guess from one address is throttled");

    // The address's own budget across accounts (8): three more failures on
    // other accounts, then every account is refused to this address.
    for attempt in 0..4 {
        let request = LoginRequest { email: unique_email(), password: "wrong guess".into() };
        let status = client.login(request).await.expect_err("a guess");
        let expected = if attempt < 3 { Code::Unauthenticated } else { Code::ResourceExhausted };
        assert_eq!(status.code(), expected, "guess {attempt} on another account: {status:?}");
    }

    blocking(move || drop(cluster));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_costs_only_its_window_and_keeps_sessions() {
    let mut set = blocking(RedisSentinels::start);
    let sentinels = set.sentinel_urls();
    let app = TestApp::spawn_with(Backend::External, |s| {
        s.redis.mode = RedisMode::Sentinel;
        s.redis.urls = SecretUrl::new(sentinels);
        s.redis.sentinel_master = SENTINEL_MASTER.into();
        // The master's password (and database) come from `redis.url`; its
        // host is what the sentinels name.
        s.redis.url = SecretUrl::new(format!("redis://:{SENTINEL_SET_PASSWORD}@unused:6379/0"));
    })
    .await;
    let mut client = app.client();
    let email = unique_email();
    register(&mut client, &email, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(login(&mut client, &email, PASSWORD).await.1);
    }
    // Replicated before the master goes: WAIT for the replica's ack.
    let acked =
        set.master.cli(&["-a", SENTINEL_SET_PASSWORD, "--no-auth-warning", "wait", "1", "2000"]);
    assert_eq!(acked.trim(), "1", "the replica acknowledged the writes");

    // GetMe in a loop from 8 callers while the master is killed; each
    // counts itself recovered at its first answer after the promotion.
    const CALLERS: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let promoted_ms = Arc::new(AtomicU64::new(u64::MAX));
    let recovered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let mut client = app.client();
            let session = sessions[i % sessions.len()].clone();
            let (stop, promoted_ms, recovered) =
                (Arc::clone(&stop), Arc::clone(&promoted_ms), Arc::clone(&recovered));
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut back = false;
                while !stop.load(Ordering::Relaxed) {
                    let asked = started.elapsed();
                    let answer = client.get_me(with_session(GetMeRequest {}, &session)).await;
                    let after_promotion =
                        asked.as_millis() as u64 >= promoted_ms.load(Ordering::Relaxed);
                    if answer.is_ok() && after_promotion && !back {
                        back = true;
                        recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes.push((asked, answer.map(drop).map_err(|s| s.code())));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old_master = set.master.port;
    let killed_at = started.elapsed();
    set.master.kill();
    // Until a sentinel names the replica, then a little more.
    let promoted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let port = blocking({
                let probe = set.sentinels[0].url();
                move || {
                    let reply = std::process::Command::new("redis-cli")
                        .args([
                            "-u",
                            &probe,
                            "sentinel",
                            "get-master-addr-by-name",
                            SENTINEL_MASTER,
                        ])
                        .output()
                        .expect("redis-cli");
                    String::from_utf8_lossy(&reply.stdout).lines().nth(1).map(str::to_owned)
                }
            });
            if port.is_some_and(|p| p.trim() != old_master.to_string()) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the sentinels promote the replica");
    promoted_ms.store(promoted.as_millis() as u64, Ordering::Relaxed);
    // Every caller served again, then a while longer to see it stays so.
    let all_back = tokio::time::timeout(Duration::from_secs(30), async {
        while recovered.load(Ordering::Relaxed) < CALLERS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        all_back.is_ok(),
        "{} of {CALLERS} callers served again",
        recovered.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for caller in callers {
        let answers = caller.await.expect("caller");
        // Once served after the promotion, a caller is served from then on.
        let back = answers.iter().position(|(at, r)| *at >= promoted && r.is_ok());
        let relapse = back.and_then(|b| answers[b..].iter().find(|(_, r)| r.is_err()));
        assert!(relapse.is_none(), "failed again after recovering: {relapse:?}");
        outcomes.extend(answers);
    }
    assert_eq!(set.master_port(), Some(set.replica.port));

    let failures: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    for (at, result) in &failures {
        assert_eq!(result, &Err(Code::Unavailable), "at {at:?}: only UNAVAILABLE");
    }
    let last_failure = failures.iter().map(|(at, _)| *at).max();
    let window = last_failure.map_or(Duration::ZERO, |at| at.saturating_sub(killed_at));
    eprintln!(
        "sentinel failover: master killed at {killed_at:?}, replica promoted at {promoted:?}; \
         {} of {} GetMe answered UNAVAILABLE, the last {window:?} after the kill",
        failures.len(),
        outcomes.len()
    );

    // Sessions written before the failover still work, and new logins go
    // to the promoted master.
    for session in &sessions {
        assert!(live(&mut client, session).await, "a session from before the failover");
    }
    let (_, fresh) = login(&mut client, &email, PASSWORD).await;
    assert!(live(&mut client, &fresh).await);
    blocking(move || drop(set));
}
