//! The real `formpush` binary as a child process, for what only a process can show: a
//! SIGKILL, a SIGTERM, its log output.

use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::{database_url, eventually, free_port, ADMIN_TOKEN};

/// `formpush serve` on the test's database; killed (SIGKILL) when dropped, pass or fail.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub address: String,
}

impl Serve {
    /// Starts `formpush serve` on the database of `db`, on a free port, with the test admin
    /// token and `RUST_LOG=warn`; `env` on top. Its output is dropped unless
    /// `FORMPUSH_CHILD_LOGS` is set.
    pub fn start(db: &PgConnectOptions, env: &[(&str, &str)]) -> Self {
        Self::start_with(db, env, |_| {})
    }

    /// `start`, with a last say on the command (e.g. to read its output).
    pub fn start_with(
        db: &PgConnectOptions,
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let port = free_port();
        let logs = || {
            if std::env::var_os("FORMPUSH_CHILD_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_formpush"));
        command
            .arg("serve")
            // Not the checkout: a developer's .env there must not leak in.
            .current_dir(std::env::temp_dir())
            .env("DATABASE_URL", database_url(db))
            .env("FORMPUSH_BIND", format!("127.0.0.1:{port}"))
            .env("FORMPUSH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(logs())
            .stderr(logs());
        configure(&mut command);
        Serve {
            child: command.spawn().expect("start formpush serve"),
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Its standard output, when `start_with` asked for a pipe.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout piped")
    }

    /// Waits until it answers `/healthz` (it migrates the database first); fails the test
    /// if the process exits first or takes over a minute.
    pub async fn wait_healthy(&mut self) {
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.address);
        eventually(
            Duration::from_secs(60),
            "formpush serve answering /healthz",
            async || {
                if let Some(status) = self.child.try_wait().expect("child status") {
                    panic!("formpush exited at start: {status} (FORMPUSH_CHILD_LOGS=1 shows why)");
                }
                let resp = http.get(&url).send().await.ok()?;
                (resp.status() == 200).then_some(())
            },
        )
        .await;
    }

    /// SIGKILL, then reap: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful shutdown an orchestrator asks for.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", self.child.id());
    }

    /// Waits for the process to exit, for at most `within`.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        eventually(within, "formpush serve exiting", async || {
            self.child.try_wait().expect("child status")
        })
        .await
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}
