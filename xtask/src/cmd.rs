//! Running external commands: steps are printed before they run and fail naming the command;
//! queries run silently and hand back their standard output.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A command together with the shell-like text it is shown as (`KEY=value program args`).
pub struct Cmd {
    command: Command,
    shown: String,
}

impl Cmd {
    pub fn new(program: &str, args: &[&str]) -> Self {
        let mut command = Command::new(program);
        command.args(args);
        let shown = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        Self { command, shown }
    }

    /// The cargo proxy from PATH, so `+toolchain` and rust-toolchain.toml are honoured.
    pub fn cargo(args: &[&str]) -> Self {
        Self::new("cargo", args)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.shown = format!("{key}={} {}", value.as_ref().to_string_lossy(), self.shown);
        self.command.env(key, value);
        self
    }

    /// Removes an inherited variable from the child's environment (not shown).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Prints `==> command`, runs it with inherited stdio and fails naming it.
    pub fn run(mut self) -> Result<()> {
        println!("==> {}", self.shown);
        let status = self
            .command
            .status()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown);
        }
        Ok(())
    }

    /// Like [`Cmd::run`], but also hands each line of standard output to `on_line` as it is
    /// echoed (standard error stays inherited).
    pub fn run_teeing(mut self, mut on_line: impl FnMut(&str)) -> Result<()> {
        println!("==> {}", self.shown);
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut echo = std::io::stdout().lock();
        let mut line = Vec::new();
        // Byte lines: test output need not be UTF-8, and must be echoed as it was printed.
        while stdout
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading the output of `{}`", self.shown))?
            > 0
        {
            echo.write_all(&line)?;
            on_line(String::from_utf8_lossy(&line).trim_end());
            line.clear();
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown);
        }
        Ok(())
    }

    /// Runs the command silently and returns its standard output; fails with its standard error.
    pub fn query(mut self) -> Result<String> {
        let output = self
            .command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.shown,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{}` printed something that is not UTF-8", self.shown))
    }
}

/// Whether this process runs as root (effective uid 0), read from /proc so no libc is needed.
pub fn is_root() -> Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(effective == "0")
}
