//! PostgreSQL servers of a test's own (Debian's binaries), for tests that
//! crash, replicate and promote them.

use super::{path, with_free_port};

/// postgres refuse to run as root).
pub fn run_as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut command = if is_root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        std::process::Command::new(program)
    };
    command.args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A PostgreSQL server of the test's own (Debian's binaries), on a free
/// loopback port, in a temporary directory: it may be crashed and started.
pub struct PrivatePostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    pub port: u16,
    /// More `postgres -c` settings (TLS).
    options: String,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that offers TLS with `pair` as its certificate (plaintext
    /// too: the client's sslmode chooses).
    pub fn tls(pair: &crate::support::certs::Pair) -> Self {
        Self::start_with(Some(pair))
    }

    fn start_with(tls: Option<&crate::support::certs::Pair>) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql package (/usr/lib/postgresql)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = std::env::temp_dir().join(format!("auth-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let _ = std::process::Command::new("chown").args(["postgres:", &path(&dir)]).status();
        let data = path(&dir.join("data"));
        let out = run_as_postgres(
            &path(&bin.join("initdb")),
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut options = String::new();
        if let Some(pair) = tls {
            // Owned by postgres, the key private: the server insists.
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::copy(&pair.cert, &cert).expect("server.crt");
            std::fs::copy(&pair.key, &key).expect("server.key");
            let _ = std::process::Command::new("chown")
                .args(["postgres:", &path(&cert), &path(&key)])
                .status();
            let _ = std::process::Command::new("chmod").args(["600", &path(&key)]).status();
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                path(&cert),
                path(&key)
            );
        }
        let mut server = Self { dir, bin, port: 0, options };
        server.port = with_free_port(|port| server.start_on(port).map(|()| port));
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts again on its port and waits until it accepts connections.
    pub fn resume(&self) {
        self.start_on(self.port).unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
    }

    /// Starts on `port`; `Err` when the port was taken.
    fn start_on(&self, port: u16) -> Result<(), String> {
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}{}",
            path(&self.dir),
            self.options
        );
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &[
                "-D",
                &path(&self.dir.join("data")),
                "-o",
                &options,
                "-l",
                &path(&self.dir.join("log")),
                "-w",
                "start",
            ],
        );
        if out.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let failure = format!("{}\n{log}", String::from_utf8_lossy(&out.stderr));
        assert!(failure.contains("already in use"), "pg_ctl start: {failure}");
        Err(failure)
    }

    /// A streaming replica of this server (pg_basebackup), running on a
    /// port of its own.
    pub fn replica(&self) -> Self {
        let dir = std::env::temp_dir().join(format!("auth-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let _ = std::process::Command::new("chown").args(["postgres:", &path(&dir)]).status();
        let out = run_as_postgres(
            &path(&self.bin.join("pg_basebackup")),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &path(&dir.join("data")),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        let mut replica = Self { dir, bin: self.bin.clone(), port: 0, options: String::new() };
        replica.port = with_free_port(|port| replica.start_on(port).map(|()| port));
        replica
    }

    /// Runs SQL through psql on the `postgres` database; its output.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_as_postgres(
            &path(&self.bin.join("psql")),
            &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-Atc", sql],
        );
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self) {
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-w", "promote"],
        );
        assert!(out.status.success(), "pg_ctl promote: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops it cleanly and starts it again on `port`.
    pub fn move_to(&mut self, port: u16) {
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.port = port;
        self.resume();
    }

    /// Stops it as a crash would: no checkpoint, clients cut off.
    pub fn crash(&self) {
        let out = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = run_as_postgres(
            &path(&self.bin.join("pg_ctl")),
            &["-D", &path(&self.dir.join("data")), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
