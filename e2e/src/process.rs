//! A child process in a process group of its own, stopped with its whole
//! group when dropped (also while a panicking test unwinds), so that no
//! etcd, kube-apiserver or controller outlives the test that started it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::HarnessError;

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// A running child; its stdout and stderr go to one log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    started: SystemTime,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `program` with `args` in a new process group, output to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self, HarnessError> {
        Self::spawn_with(name, program, args, &[], log)
    }

    /// [`Self::spawn`] with `env` added to the environment it inherits.
    pub fn spawn_with(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Self, HarnessError> {
        let out = File::create(log).map_err(|e| HarnessError::io(log, e))?;
        let err = out.try_clone().map_err(|e| HarnessError::io(log, e))?;
        let started = SystemTime::now();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::Spawn {
                name: name.to_owned(),
                program: program.to_owned(),
                source: e,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            started,
            status: None,
        })
    }

    /// What this process is (`etcd`, `kube-apiserver management`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// When it was started, by the wall clock.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The exit status if it has exited (without blocking).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        if self.status.is_some() {
            return;
        }
        let pgid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        // ESRCH: already gone, which is what we want.
        let _ = killpg(pgid, signal);
    }

    /// Waits until it has exited or `deadline` passes; true if it exited.
    pub fn wait_until(&mut self, deadline: Instant) -> bool {
        loop {
            if self.exited().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to [`GRACE`] to exit, then SIGKILL; always reaps it.
    /// Returns how it exited (a signal status if it had to be killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if !self.wait_until(Instant::now() + GRACE) {
            self.kill();
        }
        self.status
    }

    /// SIGKILL to the group, then reap.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.stop();
        }
    }
}

/// Stops several processes at once: SIGTERM to all, one shared grace period,
/// SIGKILL to whatever is left. Faster than stopping them one by one.
pub fn stop_all(processes: &mut [Process]) {
    for p in processes.iter() {
        p.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    for p in processes.iter_mut() {
        if !p.wait_until(deadline) {
            p.kill();
        }
    }
}
