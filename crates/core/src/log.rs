//! The log of apppassd and apppass-web: one line per event to syslog's authpriv facility, as pam_unix and
//! sshd write theirs, so that what sysadmins and fail2ban already read keeps working.
//! Written straight to `/dev/log` (a datagram per line, RFC 3164's `<PRI>TAG[PID]:`
//! shape, which rsyslog and journald both read); also to stderr with `--stderr`.

use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

/// Syslog priorities apppassd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Err => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// `LOG_AUTHPRIV`, as a facility number.
const AUTHPRIV: u8 = 10;
const SYSLOG_SOCKET: &str = "/dev/log";

/// The log. Lines never carry a secret: callers pass values a client controls
/// through [`field`] or [`quoted`].
pub struct Log {
    /// The program's name on each line (apppassd, apppass-web).
    tag: &'static str,
    socket: Mutex<Option<UnixDatagram>>,
    pid: u32,
    stderr: bool,
    debug: bool,
}

impl Log {
    /// A log to syslog, and to stderr as well if `stderr`; `debug` lines only if `debug`.
    pub fn new(stderr: bool, debug: bool) -> Log {
        Log::tagged("apppassd", stderr, debug)
    }

    /// The same log for another of apppass's programs (the portal), under its own name.
    pub fn tagged(tag: &'static str, stderr: bool, debug: bool) -> Log {
        Log {
            tag,
            socket: Mutex::new(None),
            pid: std::process::id(),
            stderr,
            debug,
        }
    }

    /// One line at `level`.
    pub fn line(&self, level: Level, message: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        // One line per event, whatever the message holds.
        let message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if self.stderr {
            eprintln!("{}: {}: {message}", self.tag, level.name());
        }
        let datagram = format!(
            "<{}>{}[{}]: {message}",
            AUTHPRIV * 8 + level as u8,
            self.tag,
            self.pid
        );
        let mut socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        // A syslog daemon that restarted has a new socket: connect again once.
        for _ in 0..2 {
            if socket.is_none() {
                *socket = UnixDatagram::unbound()
                    .and_then(|s| s.connect(SYSLOG_SOCKET).map(|()| s))
                    .ok();
            }
            match socket.as_ref().map(|s| s.send(datagram.as_bytes())) {
                Some(Ok(_)) => return,
                _ => *socket = None,
            }
        }
    }

    pub fn err(&self, message: &str) {
        self.line(Level::Err, message);
    }

    pub fn warning(&self, message: &str) {
        self.line(Level::Warning, message);
    }

    pub fn info(&self, message: &str) {
        self.line(Level::Info, message);
    }
}

/// A value for a `key=value` log field: client-supplied text (user names, host names)
/// must not be able to add fields or lines, so anything but printable ASCII is escaped.
pub fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_graphic() && b != b'\\' && b != b'"' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A free-text value (a label) in double quotes, escaped like [`field`] but keeping spaces.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", field(value).replace("\\x20", " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_cannot_be_forged() {
        assert_eq!(field("alice"), "alice");
        assert_eq!(field("a rhost=1.2.3.4"), "a\\x20rhost=1.2.3.4");
        assert_eq!(field("x\ny"), "x\\x0ay");
        assert_eq!(field("é"), "\\xc3\\xa9");
        assert_eq!(quoted("my \"phone\""), "\"my \\x22phone\\x22\"");
    }
}
