//! Log output: human-readable lines on a terminal or in a file, and journald's native form when
//! stderr is the journal (observer run as a systemd service): no timestamp (the journal adds
//! its own) and the level as a syslog priority prefix (`<4>` is a warning), which journald
//! stores as the entry's priority, so `journalctl -p warning -u observer` works.
//!
//! Colour only on a terminal, and never with `NO_COLOR` set (<https://no-color.org>); clap's
//! own help and errors follow the same rule.

use std::{fmt, io::IsTerminal as _, os::fd::AsRawFd as _};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Sets up logging to stderr at `default` level unless `RUST_LOG` says otherwise.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    // Colour codes only for a terminal, not in a file or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !stderr_is_journal() && colour_allowed());
    if stderr_is_journal() {
        builder.event_format(Journald).init();
    } else {
        builder.init();
    }
}

/// Whether the user allows colour: `NO_COLOR` unset or empty (set to anything else, it turns
/// colour off, whatever its value).
pub fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, and a child whose stderr was redirected elsewhere inherits the variable, so
/// the two are compared (the rule sd_journal_stream_fd(3) gives).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into the buffer it is given, and stderr is an open fd.
    if unsafe { libc::fstat(std::io::stderr().as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    st.st_dev == dev && st.st_ino == ino
}

/// `<priority>message fields`, one line per event.
struct Journald;

/// The syslog priority journald gives a line with this level.
const fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(
            writer,
            "<{}>{}: ",
            priority(event.metadata().level()),
            event.metadata().target()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
