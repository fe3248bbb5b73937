//! A small QMP client: enough to hand QEMU a D-Bus socket (`getfd` +
//! `add_client`) and, for tests, to `stop` and `screendump`.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP sent something that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("QMP closed the connection")]
    Closed,
    #[error("QMP sent a line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("QMP {command} failed: {message}")]
    Command { command: String, message: String },
}

/// The longest QMP message taken (QEMU's replies to our commands are a few
/// hundred bytes; a `query-*` of a large VM a few hundred KiB).
pub const MAX_LINE: usize = 1 << 20;

/// What one QMP message says about the command in flight: its result, its
/// error, or nothing (`None`: an asynchronous event, not ours).
pub fn reply(message: Value, command: &str) -> Option<Result<Value, QmpError>> {
    if let Some(ret) = message.get("return") {
        return Some(Ok(ret.clone()));
    }
    let err = message.get("error")?;
    Some(Err(QmpError::Command {
        command: command.to_owned(),
        message: err["desc"].as_str().unwrap_or("unknown error").to_owned(),
    }))
}

/// One QMP session, past the capabilities handshake.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    pub fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut qmp = Qmp { stream, reader };
        qmp.read_message()?; // the greeting
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        read_line_bounded(&mut self.reader)
    }

    fn send(
        &mut self,
        command: &str,
        arguments: Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), QmpError> {
        let mut text = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments }))?;
        text.push(b'\n');
        match fd {
            None => self.stream.write_all(&text)?,
            Some(fd) => {
                // The fd rides on the command's first byte (QEMU takes it with the message).
                let fds = [fd.as_raw_fd()];
                let sent = sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &[IoSlice::new(&text)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)?;
                self.stream.write_all(&text[sent..])?;
            }
        }
        Ok(())
    }

    fn response(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            if let Some(reply) = reply(self.read_message()?, command) {
                return reply;
            }
        }
    }

    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.send(command, arguments, None)?;
        self.response(command)
    }

    /// Runs `command` with `fd` passed alongside (as `getfd` needs).
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        self.send(command, arguments, Some(fd))?;
        self.response(command)
    }

    /// Gives QEMU one end of a socket to serve `-display dbus,p2p=on` on.
    pub fn add_dbus_client(&mut self, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        const NAME: &str = "qemu-sink-dbus";
        self.execute_with_fd("getfd", json!({ "fdname": NAME }), fd)?;
        self.execute(
            "add_client",
            json!({ "protocol": "@dbus-display", "fdname": NAME }),
        )?;
        Ok(())
    }
}

/// One newline-terminated JSON message, at most [`MAX_LINE`] bytes: a peer
/// that never ends its line gets an error, not all of our memory.
fn read_line_bounded(reader: &mut impl BufRead) -> Result<Value, QmpError> {
    let mut line = Vec::new();
    let limit = MAX_LINE as u64 + 1;
    if reader.take(limit).read_until(b'\n', &mut line)? == 0 {
        return Err(QmpError::Closed);
    }
    if line.len() > MAX_LINE {
        return Err(QmpError::TooLong);
    }
    Ok(serde_json::from_slice(&line)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_at_the_limit_is_read_one_past_it_is_refused() {
        let mut fits = vec![b' '; MAX_LINE - 3];
        fits.extend_from_slice(b"{}\n");
        assert!(read_line_bounded(&mut &fits[..]).is_ok());
        let mut long = vec![b' '; MAX_LINE];
        long.extend_from_slice(b"{}\n");
        assert!(matches!(
            read_line_bounded(&mut &long[..]),
            Err(QmpError::TooLong)
        ));
    }
}
