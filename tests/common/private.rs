//! Servers of one test's own, for faults that would disturb the other tests
//! if done to the shared ones: stopping PostgreSQL, pausing the broker.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the postgres user when we are root
/// (initdb and postgres refuse root).
fn pg(bin: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &format!("{PG_BIN}/{bin}")]);
        c
    } else {
        Command::new(format!("{PG_BIN}/{bin}"))
    }
}

/// A PostgreSQL cluster in a temporary directory, on a port of its own.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivatePg {
    /// `initdb` and start it.
    pub fn start() -> PrivatePg {
        let dir = tempfile::Builder::new()
            .prefix("timesink-pg")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown the private cluster's directory");
        }
        let status = pg("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-D",
            ])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb");
        let pg = PrivatePg {
            dir,
            port: free_port(),
        };
        pg.up();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let status = pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "start the private PostgreSQL");
    }

    /// Freezes the server and every backend (SIGSTOP to its process
    /// group): connections stay open and nothing answers, as a hung host.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pid =
            std::fs::read_to_string(self.data().join("postmaster.pid")).expect("postmaster.pid");
        let pid = pid
            .lines()
            .next()
            .expect("the postmaster's pid")
            .trim()
            .to_owned();
        // Every backend and auxiliary process runs in a session of its
        // own: each child of the postmaster is signalled, then the postmaster.
        let children = Command::new("pkill")
            .arg(format!("-{signal}"))
            .args(["-P", &pid])
            .status()
            .expect("pkill");
        assert!(children.code() == Some(0), "pkill -{signal} -P {pid}");
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} the private PostgreSQL");
    }

    /// Stops the server (fast: connections are closed).
    pub fn down(&self) {
        let status = pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl stop");
        assert!(status.success(), "stop the private PostgreSQL");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A nisshi broker of this test's own (memory storage), which it may pause.
pub struct PrivateBroker {
    child: Child,
    pub port: u16,
    /// The secure broker's storage (SQLite: its SCRAM users live there).
    _dir: Option<tempfile::TempDir>,
}

/// Waits until something listens on 127.0.0.1:`port`.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nisshi did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nisshi() -> PathBuf {
    if let Ok(bin) = std::env::var("NISSHI_BIN") {
        return bin.into();
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin/nisshi")
}

impl PrivateBroker {
    pub fn start() -> PrivateBroker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(nisshi())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://nisshi/"])
            .args(["--group-initial-rebalance-delay", "0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nisshi (scripts/services.sh install)");
        wait_listening(port);
        PrivateBroker {
            child,
            port,
            _dir: None,
        }
    }

    /// A broker that serves only TLS (`cert` and `key`, for "localhost")
    /// and requires a SCRAM-SHA-512 login as `user` with `password`. The
    /// user is created first on the same storage, served in plaintext
    /// without authentication, which `nisshi user create` needs.
    pub fn start_secure(cert: &Path, key: &Path, user: &str, password: &str) -> PrivateBroker {
        let dir = tempfile::Builder::new()
            .prefix("timesink-nisshi")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let plain = format!("tcp://127.0.0.1:{port}");
        let storage = ["--storage-engine", "sqlite://nisshi.db"];
        let mut setup = Command::new(nisshi())
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &plain,
                "--advertised-listener-url",
                &plain,
            ])
            .args(storage)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nisshi");
        wait_listening(port);
        let created = Command::new(nisshi())
            .args([
                "user",
                "create",
                "--broker",
                &plain,
                "--mechanism",
                "scram512",
                user,
                password,
            ])
            .status()
            .expect("nisshi user create");
        let _ = setup.kill();
        let _ = setup.wait();
        assert!(created.success(), "nisshi user create");
        let child = Command::new(nisshi())
            .current_dir(dir.path())
            .args(["broker", "--listener-url", &plain])
            .args([
                "--advertised-listener-url",
                &format!("tcp://localhost:{port}"),
            ])
            .args(storage)
            .args(["--group-initial-rebalance-delay", "0s", "--authentication"])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nisshi with TLS");
        wait_listening(port);
        PrivateBroker {
            child,
            port,
            _dir: Some(dir),
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} nisshi");
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
