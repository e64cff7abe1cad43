//! Redis servers of a test's own, from Debian's `redis-server` (which also
//! runs as a sentinel): a single durable server, a 3-master Cluster, and a
//! master with a replica watched by 3 sentinels. Every process listens on a free loopback
//! port, lives in a temporary directory, and is killed when its value drops.

use std::{
    ffi::OsString,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{listens, with_free_port};

/// One `redis-server` process with its directory.
pub struct RedisProcess {
    pub port: u16,
    dir: PathBuf,
    /// Everything after `redis-server`, kept for [`RedisProcess::resume`].
    args: Vec<OsString>,
    child: Option<Child>,
}

/// Data servers of the topologies keep nothing on disk.
const EPHEMERAL: [&str; 4] = ["--save", "", "--appendonly", "no"];

impl RedisProcess {
    /// Starts `redis-server <args>` in a new directory and waits until its
    /// port accepts connections. `config` is written to `redis.conf` there
    /// first, when given (sentinels rewrite their configuration file).
    fn start(name: &str, config: Option<String>, args: &[&str]) -> Self {
        Self::start_listening(name, config, args, false)
    }

    /// A single server that speaks only TLS, with `pair` as its certificate
    /// (`ca_file` would verify client certificates; none are asked for).
    pub fn tls(pair: &crate::support::certs::Pair, ca_file: &std::path::Path) -> Self {
        let (cert, key, ca) =
            (pair.cert.to_string_lossy(), pair.key.to_string_lossy(), ca_file.to_string_lossy());
        Self::start_listening(
            "redis-tls",
            None,
            &[
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            true,
        )
    }

    fn start_listening(name: &str, config: Option<String>, args: &[&str], tls: bool) -> Self {
        let dir =
            std::env::temp_dir().join(format!("auth-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        with_free_port(|port| {
            let mut command_line: Vec<OsString> = Vec::new();
            if let Some(config) = &config {
                let file = dir.join("redis.conf");
                std::fs::write(&file, config.replace("{port}", &port.to_string()))
                    .expect("redis.conf");
                command_line.push(file.into());
            }
            let port = port.to_string();
            let listen: &[&str] =
                if tls { &["--port", "0", "--tls-port", &port] } else { &["--port", &port] };
            command_line.extend(listen.iter().map(OsString::from));
            command_line.extend(["--bind", "127.0.0.1", "--dir"].map(OsString::from));
            command_line.push(dir.clone().into());
            command_line.extend(args.iter().map(OsString::from));
            let port: u16 = port.parse().expect("port");
            let child = spawn(&command_line, port)?;
            Ok(Self { port, dir: dir.clone(), args: command_line, child: Some(child) })
        })
    }

    /// A single server whose every write is on disk before it is
    /// acknowledged (AOF, fsync always): what it acknowledged survives a
    /// [`kill`](Self::kill) and a [`resume`](Self::resume).
    pub fn durable() -> Self {
        Self::start(
            "redis",
            None,
            &["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        )
    }

    /// Starts the server again with the same command line and directory.
    pub fn resume(&mut self) {
        let child = spawn(&self.args, self.port)
            .unwrap_or_else(|e| panic!("redis-server on {}: {e}", self.port));
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p <port> <args>`'s output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// SIGKILL: as a crashed host.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `redis-server <args>` and waits until it serves `port`: its own
/// process answers there (another that took the port meanwhile does not
/// count). `Err` when it exited first, as on a port taken.
fn spawn(args: &[OsString], port: u16) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package)");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited ({status}) before serving port {port}"));
        }
        if listens(child.id(), port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("redis-server on {port} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas), slots spread evenly.
pub struct RedisCluster {
    pub nodes: Vec<RedisProcess>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisProcess> = (0..3)
            .map(|_| {
                RedisProcess::start(
                    "redis-cluster",
                    None,
                    &[
                        &EPHEMERAL[..],
                        &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                    ]
                    .concat(),
                )
            })
            .collect();
        let addresses: Vec<String> =
            nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(created.success(), "cluster create failed");
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster
            .nodes
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis.urls` for the service: every node as a seed.
    pub fn seed_urls(&self) -> String {
        self.nodes.iter().map(RedisProcess::url).collect::<Vec<_>>().join(",")
    }

    /// Keys on each node.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.cli(&["dbsize"]).trim().parse().unwrap_or(0)).collect()
    }
}

pub const SENTINEL_MASTER: &str = "authmaster";

/// The data servers' password in the sentinel set.
pub const SENTINEL_SET_PASSWORD: &str = "sentinel-set-secret";

/// A master, one replica (both password-protected), and three sentinels
/// that fail over after the master has been silent for a second.
pub struct RedisSentinels {
    pub master: RedisProcess,
    pub replica: RedisProcess,
    pub sentinels: Vec<RedisProcess>,
}

impl RedisSentinels {
    pub fn start() -> Self {
        let auth = [
            &EPHEMERAL[..],
            &["--requirepass", SENTINEL_SET_PASSWORD, "--masterauth", SENTINEL_SET_PASSWORD],
        ]
        .concat();
        let master = RedisProcess::start("redis-master", None, &auth);
        let master_port = master.port.to_string();
        let replica = RedisProcess::start(
            "redis-replica",
            None,
            &[&auth[..], &["--replicaof", "127.0.0.1", &master_port]].concat(),
        );
        let config = format!(
            "port {{port}}\n\
             sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
             sentinel parallel-syncs {SENTINEL_MASTER} 1\n\
             sentinel auth-pass {SENTINEL_MASTER} {SENTINEL_SET_PASSWORD}\n",
            master.port
        );
        let sentinels: Vec<RedisProcess> = (0..3)
            .map(|_| RedisProcess::start("redis-sentinel", Some(config.clone()), &["--sentinel"]))
            .collect();
        let set = Self { master, replica, sentinels };
        // The replica has synced and every sentinel knows both servers and
        // the other sentinels (they find each other through the master).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = set
                .replica
                .cli(&["-a", SENTINEL_SET_PASSWORD, "--no-auth-warning", "info", "replication"])
                .contains("master_link_status:up");
            let known = set.sentinels.iter().all(|s| {
                let info = s.cli(&["sentinel", "master", SENTINEL_MASTER]);
                field(&info, "num-slaves") == Some("1")
                    && field(&info, "num-other-sentinels") == Some("2")
            });
            if synced && known {
                return set;
            }
            assert!(Instant::now() < deadline, "sentinels did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis.urls` for the service: the sentinels.
    pub fn sentinel_urls(&self) -> String {
        self.sentinels.iter().map(RedisProcess::url).collect::<Vec<_>>().join(",")
    }

    /// The port the sentinels name as the master now.
    pub fn master_port(&self) -> Option<u16> {
        let reply =
            self.sentinels[0].cli(&["sentinel", "get-master-addr-by-name", SENTINEL_MASTER]);
        reply.lines().nth(1)?.trim().parse().ok()
    }
}

/// A field of redis-cli's alternating name/value lines.
fn field<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = reply.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name {
            return lines.next().map(str::trim);
        }
    }
    None
}
