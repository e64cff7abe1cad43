//! A TCP proxy in front of a dependency, to cut or stall it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};

use super::{host_port, postgres_server, redis_url};

/// A TCP proxy in front of a dependency. `cut()` closes every connection and
/// refuses new ones (accepts and closes them at once), as a crashed server
/// would; `stall()` keeps every connection open but forwards nothing, as a
/// partitioned network that drops packets silently would; `restore()` lets
/// traffic through again (connections held by a stall are closed then).
/// Bound to 127.0.0.1 only.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    /// Connections copying bytes now (counted from their accept).
    forwarding: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Forward,
    Stall,
    Cut,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, _) = tokio::sync::watch::channel(ProxyMode::Forward);
        let modes = mode.clone();
        let forwarding = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&forwarding);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut changes = modes.subscribe();
                let current = *changes.borrow_and_update();
                match current {
                    ProxyMode::Cut => drop(inbound),
                    ProxyMode::Stall => {
                        tokio::spawn(async move {
                            let _ = changes.changed().await;
                            drop(inbound);
                        });
                    }
                    ProxyMode::Forward => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(forward(inbound, target, changes, Arc::clone(&counted)));
                    }
                }
            }
        });
        Self { addr, mode, forwarding, task }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.set(ProxyMode::Cut).await;
    }

    /// Keeps connections open but forwards nothing, on old and new ones.
    pub async fn stall(&self) {
        self.set(ProxyMode::Stall).await;
    }

    pub fn restore(&self) {
        self.mode.send_replace(ProxyMode::Forward);
    }

    /// Switches mode; past a cut or a stall, returns once no connection
    /// copies bytes any more.
    async fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.forwarding.load(Ordering::SeqCst) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "proxy connections kept forwarding");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Copies both ways until the mode changes; a stall then holds both sockets
/// open, silent, until the next change.
async fn forward(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut changes: tokio::sync::watch::Receiver<ProxyMode>,
    forwarding: Arc<AtomicUsize>,
) {
    if let Ok(mut outbound) = TcpStream::connect(target).await {
        tokio::select! {
            biased;
            _ = changes.changed() => {}
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        }
    }
    forwarding.fetch_sub(1, Ordering::SeqCst);
    if *changes.borrow_and_update() == ProxyMode::Stall {
        // Held open, silent, until the next change.
        let _ = changes.changed().await;
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn postgres_addr() -> SocketAddr {
    host_port(&postgres_server(), 5432).parse().expect("postgres address")
}

pub fn redis_addr() -> SocketAddr {
    host_port(&redis_url(), 6379).parse().expect("redis address")
}

/// `url` with its host and port replaced by `addr` (to go through a proxy).
pub fn reroute(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    format!("{scheme}://{userinfo}{addr}{path}")
}
