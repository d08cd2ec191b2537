//! Standard output of the commands. A reader that goes away (`ipfs-mount dataset log x | head -1`)
//! is no error of ours: writes that meet a closed pipe turn into [`OutputClosed`], and
//! [`super::main`] then exits quietly with status 141 (128 + SIGPIPE, what a shell reports for
//! a program killed by SIGPIPE). SIGPIPE itself stays ignored (Rust's default), so that a mount
//! or a request to one never dies of it on a socket.

use std::fmt;
use std::io::{self, Write};

/// The reader of standard output closed it.
#[derive(Debug)]
pub struct OutputClosed;

impl fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for OutputClosed {}

/// Exit status when standard output was closed under us.
pub const CLOSED_STATUS: u8 = 141;

/// True when `e` (or anything it wraps) is [`OutputClosed`].
pub fn is_output_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<OutputClosed>()
            || c.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<OutputClosed>())
    })
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, OutputClosed)
    } else {
        e
    }
}

/// Standard output, with a broken pipe reported as [`OutputClosed`].
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    pub fn lock() -> Self {
        Stdout(io::stdout().lock())
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

/// Writes `text` to standard output and flushes it (`print!` panics on a closed pipe).
pub fn print(text: &str) -> io::Result<()> {
    let mut out = Stdout::lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// `print` with a newline.
pub fn println(line: &str) -> io::Result<()> {
    let mut out = Stdout::lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let e = anyhow::Error::from(mark(io::Error::from(io::ErrorKind::BrokenPipe)))
            .context("writing the CAR");
        assert!(is_output_closed(&e));
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(
            !is_output_closed(&other),
            "a socket's broken pipe is an error"
        );
        assert!(!is_output_closed(&anyhow::anyhow!("no such dataset")));
    }
}
