//! A PgBouncer of a test's own (Debian's `pgbouncer`).

use std::time::Duration;

use super::{path, postgres::run_as_postgres, with_free_port};

/// A PgBouncer of the test's own (Debian's `pgbouncer`) in transaction
/// pooling mode in front of `server` (host, port), with few server
/// connections, so consecutive transactions of one client land on
/// different server connections.
pub struct PgBouncer {
    dir: std::path::PathBuf,
    pub port: u16,
}

impl PgBouncer {
    pub fn start(server: (&str, u16), server_connections: u32) -> Self {
        assert!(
            std::process::Command::new("sh")
                .args(["-c", "command -v pgbouncer"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "pgbouncer is not installed: apt-get install pgbouncer (.ci/run does)"
        );
        let dir =
            std::env::temp_dir().join(format!("auth-pgbouncer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let (host, server_port) = server;
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
        let port = with_free_port(|port| {
            let config = format!(
                "[databases]\n* = host={host} port={server_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
                 default_pool_size = {server_connections}\nmax_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = path(&dir),
            );
            std::fs::write(dir.join("pgbouncer.ini"), config).expect("pgbouncer.ini");
            let _ =
                std::process::Command::new("chown").args(["-R", "postgres:", &path(&dir)]).status();
            // -d: it daemonises once listening; stopped through its pidfile.
            let out = run_as_postgres("pgbouncer", &["-d", &path(&dir.join("pgbouncer.ini"))]);
            if out.status.success() {
                return Ok(port);
            }
            let log = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
            let failure = format!("{}\n{log}", String::from_utf8_lossy(&out.stderr));
            assert!(failure.contains("already in use"), "pgbouncer: {failure}");
            Err(failure)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { dir, port }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
