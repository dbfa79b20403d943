//! Local PostgreSQL servers as child processes: what `ferry demo` sets up,
//! and what the integration tests start. Finds the server binaries, runs
//! them as the `postgres` user when Ferry runs as root (PostgreSQL refuses
//! root), and stops them again.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use thiserror::Error;

/// Why a local server could not be managed.
#[derive(Debug, Error)]
pub enum LocalPgError {
    #[error("PostgreSQL server binaries not found: install PostgreSQL (Debian: apt-get install postgresql) or set FERRY_PG_BINDIR")]
    NoBinaries,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LocalPgError + '_ {
    move |source| LocalPgError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where `initdb`, `pg_ctl` and `postgres` live.
#[derive(Clone, Debug)]
pub struct PgBinaries {
    pub bindir: PathBuf,
}

impl PgBinaries {
    /// `FERRY_PG_BINDIR`, then `pg_config --bindir`, then `initdb` on PATH,
    /// then the newest `/usr/lib/postgresql/*/bin`.
    pub fn find() -> Result<Self, LocalPgError> {
        let ok = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
        if let Some(d) = std::env::var_os("FERRY_PG_BINDIR").map(PathBuf::from) {
            if ok(&d) {
                return Ok(Self { bindir: d });
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && ok(&d) {
                return Ok(Self { bindir: d });
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if let Ok(real) = std::fs::canonicalize(dir.join("initdb")) {
                    if let Some(d) = real.parent() {
                        if ok(d) {
                            return Ok(Self {
                                bindir: d.to_path_buf(),
                            });
                        }
                    }
                }
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                let d = e.path().join("bin");
                ok(&d).then_some((v, d))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, bindir)| Self { bindir })
            .ok_or(LocalPgError::NoBinaries)
    }

    /// Path of a binary in the directory.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// Whether this process runs as root (servers then run as `postgres`).
pub fn running_as_root() -> bool {
    // `id -u` rather than a libc call: no unsafe code and no extra crate.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Debian's libfaketime (in the multiarch library directory).
fn faketime_library() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain(std::iter::once(PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )))
        .find(|p| p.exists())
}

/// Runs a command, as `postgres` when we are root.
fn run(program: &Path, args: &[&str], as_postgres: bool) -> Result<Output, LocalPgError> {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    let out = cmd.output().map_err(io_err(program))?;
    if !out.status.success() {
        return Err(LocalPgError::Command {
            what: format!("{} {}", program.display(), args.join(" ")),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(out)
}

/// A free TCP port on 127.0.0.1 for a server or a proxy to listen on.
///
/// Ports come from a per-process counter in 20000–32767, below the
/// kernel's ephemeral range: asking the kernel for port 0 and releasing it
/// races with parallel tests (another server can take the port before
/// ours binds it), and ephemeral ports are also what outgoing connections
/// use. Each candidate is checked by binding it.
pub fn free_port() -> Option<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (n - 20_000) % 12_768;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Some(port as u16);
        }
    }
    None
}

/// Settings for a new data directory.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Password for the `postgres` superuser; `None`: trust on loopback.
    pub password: Option<String>,
    /// fsync off and small WAL: for tests and demos only.
    pub fast: bool,
}

/// One local server.
#[derive(Clone, Debug)]
pub struct LocalServer {
    pub datadir: PathBuf,
    pub port: u16,
    bins: PgBinaries,
    as_postgres: bool,
}

impl LocalServer {
    /// Describes a server in `datadir` listening on `port` (nothing runs yet).
    pub fn new(bins: &PgBinaries, datadir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            datadir: datadir.into(),
            port,
            bins: bins.clone(),
            as_postgres: running_as_root(),
        }
    }

    fn chown(&self, path: &Path) -> Result<(), LocalPgError> {
        if self.as_postgres {
            run(
                Path::new("chown"),
                &["-R", "postgres:postgres", &path.display().to_string()],
                false,
            )?;
        }
        Ok(())
    }

    /// Creates the data directory with initdb.
    pub fn init(&self, opts: &InitOptions) -> Result<(), LocalPgError> {
        std::fs::create_dir_all(&self.datadir).map_err(io_err(&self.datadir))?;
        self.chown(&self.datadir)?;
        let dir = self.datadir.display().to_string();
        let mut args = vec![
            "-D",
            dir.as_str(),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ];
        let pwfile = self.datadir.with_extension("pw");
        let pwfile_s = pwfile.display().to_string();
        if let Some(pw) = &opts.password {
            std::fs::write(&pwfile, pw).map_err(io_err(&pwfile))?;
            self.chown(&pwfile)?;
            args.extend([
                "--pwfile",
                pwfile_s.as_str(),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ]);
        } else {
            args.extend(["--auth=trust"]);
        }
        let result = run(&self.bins.bin("initdb"), &args, self.as_postgres);
        let _ = std::fs::remove_file(&pwfile);
        result?;
        self.configure(opts.fast)
    }

    /// Makes this data directory a copy of `template` (much faster than initdb).
    pub fn init_from(&self, template: &Path, fast: bool) -> Result<(), LocalPgError> {
        if let Some(parent) = self.datadir.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        run(
            Path::new("cp"),
            &[
                "-a",
                &template.display().to_string(),
                &self.datadir.display().to_string(),
            ],
            false,
        )?;
        self.chown(&self.datadir)?;
        self.configure(fast)
    }

    /// Turns TLS on in a running server, with this certificate and key
    /// (PEM), copied into the data directory as the server wants them
    /// (owned by it, the key private).
    pub fn enable_ssl(&self, cert: &Path, key: &Path) -> Result<(), LocalPgError> {
        use std::os::unix::fs::PermissionsExt;
        for (from, name, mode) in [(cert, "server.crt", 0o644), (key, "server.key", 0o600)] {
            let to = self.datadir.join(name);
            std::fs::copy(from, &to).map_err(io_err(&to))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&to))?;
            self.chown(&to)?;
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    fn configure(&self, fast: bool) -> Result<(), LocalPgError> {
        let mut conf = format!(
            "\n# written by ferry\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nmax_connections = 200\n",
            self.port,
            self.socket_dir()
        );
        if fast {
            conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 64MB\nmax_wal_size = 1GB\n";
        }
        let path = self.datadir.join("postgresql.auto.conf");
        std::fs::write(&path, conf).map_err(io_err(&path))?;
        self.chown(&path)
    }

    /// Where the server's Unix socket lives: the data directory, unless its
    /// path is too long for a socket name (about 100 bytes), then /tmp.
    pub fn socket_dir(&self) -> String {
        let dir = self.datadir.display().to_string();
        if dir.len() > 80 {
            "/tmp".into()
        } else {
            dir
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), LocalPgError> {
        let dir = self.datadir.display().to_string();
        let log = self.datadir.join("server.log").display().to_string();
        run(
            &self.bins.bin("pg_ctl"),
            &["-D", &dir, "-l", &log, "-w", "-t", "60", "start"],
            self.as_postgres,
        )?;
        Ok(())
    }

    /// Starts the server with its wall clock moved by `offset` (a
    /// libfaketime offset such as `"-1d"`; monotonic clocks are left
    /// alone), for tests showing that no decision depends on clocks. Needs
    /// Debian's `libfaketime`.
    pub fn start_skewed(&self, offset: &str) -> Result<(), LocalPgError> {
        let lib = faketime_library().ok_or_else(|| LocalPgError::Command {
            what: "libfaketime".into(),
            detail: "not found: install the libfaketime package".into(),
        })?;
        let dir = self.datadir.display().to_string();
        let log = self.datadir.join("server.log").display().to_string();
        let pg_ctl = self.bins.bin("pg_ctl").display().to_string();
        run(
            Path::new("env"),
            &[
                &format!("LD_PRELOAD={}", lib.display()),
                &format!("FAKETIME={offset}"),
                "DONT_FAKE_MONOTONIC=1",
                &pg_ctl,
                "-D",
                &dir,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
            self.as_postgres,
        )?;
        Ok(())
    }

    /// Stops the server (fast shutdown) if it runs.
    pub fn stop(&self) -> Result<(), LocalPgError> {
        if !self.datadir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let dir = self.datadir.display().to_string();
        run(
            &self.bins.bin("pg_ctl"),
            &["-D", &dir, "-w", "-t", "60", "-m", "fast", "stop"],
            self.as_postgres,
        )?;
        Ok(())
    }

    /// The postmaster's pid, if it runs.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.datadir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`) to the postmaster.
    pub fn signal(&self, signal: &str) -> Result<(), LocalPgError> {
        let pid = self.pid().ok_or_else(|| LocalPgError::Command {
            what: format!("kill -{signal}"),
            detail: "server is not running".into(),
        })?;
        run(
            Path::new("kill"),
            &[&format!("-{signal}"), &pid.to_string()],
            false,
        )?;
        Ok(())
    }

    /// A DSN for a database on this server.
    pub fn dsn(&self, db: &str, password: Option<&str>) -> String {
        match password {
            Some(pw) => format!("postgresql://postgres:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Runs SQL with psql against a database (for set-up steps), over the
    /// server's Unix socket, where local connections are trusted.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, LocalPgError> {
        self.psql_as("postgres", db, sql)
    }

    /// Runs SQL with psql as `user` (the server trusts local logins).
    pub fn psql_as(&self, user: &str, db: &str, sql: &str) -> Result<String, LocalPgError> {
        let psql = self.bins.bin("psql");
        let port = self.port.to_string();
        let socket_dir = self.socket_dir();
        let out = run(
            &psql,
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &socket_dir,
                "-p",
                &port,
                "-U",
                user,
                "-d",
                db,
                "-At",
                "-c",
                sql,
            ],
            false,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
