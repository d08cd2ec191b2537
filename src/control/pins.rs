//! The control socket's pin and gc requests: `pin add` and `gc` report progress while they
//! work, as `progress\t<blocks>\t<bytes>\t<fetched>` lines before the final `ok` (then the
//! command's text) or `error\t<message>`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{connect, hex_decode, hex_encode, Context, Request};
use crate::pins::{self, Progress};

/// A pin command, as the socket carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCommand {
    Add {
        target: String,
        name: Option<String>,
    },
    Ls {
        json: bool,
    },
    Rm {
        what: String,
    },
}

/// Progress lines are sent at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub(super) fn encode(request: &Request) -> Option<String> {
    Some(match request {
        Request::Pin(PinCommand::Add { target, name }) => format!(
            "pin\tadd\t{}\t{}",
            hex_encode(target.as_bytes()),
            name.as_deref().unwrap_or("")
        ),
        Request::Pin(PinCommand::Ls { json }) => {
            format!("pin\tls\t{}", if *json { "json" } else { "text" })
        }
        Request::Pin(PinCommand::Rm { what }) => format!("pin\trm\t{what}"),
        Request::Gc { dry_run } => format!("gc\t{}", if *dry_run { "dry-run" } else { "run" }),
        _ => return None,
    })
}

pub(super) fn parse(parts: &[&str]) -> Option<Request> {
    Some(match parts {
        ["pin", "add", target, name] => Request::Pin(PinCommand::Add {
            target: String::from_utf8(hex_decode(target)?).ok()?,
            name: (!name.is_empty()).then(|| name.to_string()),
        }),
        ["pin", "ls", f] => Request::Pin(PinCommand::Ls { json: *f == "json" }),
        ["pin", "rm", what] => Request::Pin(PinCommand::Rm {
            what: what.to_string(),
        }),
        ["gc", "dry-run"] => Request::Gc { dry_run: true },
        ["gc", "run"] => Request::Gc { dry_run: false },
        _ => return None,
    })
}

/// Answers a pin or gc request inside the mount.
pub(super) fn handle(out: &mut UnixStream, request: Request, ctx: &Context) -> Result<()> {
    let blocks = ctx.blocks;
    let answer: Result<String> = match request {
        Request::Pin(PinCommand::Add { target, name }) => {
            let mut progress_out = out.try_clone()?;
            let mut last = Instant::now();
            let mut report = move |p: Progress| {
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    let _ = writeln!(
                        progress_out,
                        "progress\t{}\t{}\t{}",
                        p.blocks, p.bytes, p.fetched
                    );
                }
            };
            let lookup = ctx.names.map(|n| n as &dyn pins::NameLookup);
            ctx.rt
                .block_on(pins::add(
                    blocks,
                    lookup,
                    &target,
                    name.as_deref(),
                    &mut report,
                ))
                .map(|a| pins::added_text(&a))
        }
        Request::Pin(PinCommand::Ls { json }) => pins::list_text(blocks, json),
        Request::Pin(PinCommand::Rm { what }) => ctx
            .rt
            .block_on(pins::remove(blocks, &what))
            .map(|r| pins::removed_text(&what, r)),
        Request::Gc { dry_run } => blocks
            .collect_garbage(dry_run)
            .map(|f| pins::gc_text(&f, dry_run))
            .map_err(Into::into),
        _ => bail!("not a pin request"),
    };
    match answer {
        Ok(text) => write!(out, "ok\n{text}")?,
        Err(e) => writeln!(out, "error\t{}", format!("{e:#}").replace('\n', " "))?,
    }
    Ok(())
}

/// Sends a pin or gc request to the mount that holds the store; `on_progress` sees its
/// progress lines. Returns the text after `ok`.
pub fn remote(
    store_dir: &Path,
    request: &Request,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<String> {
    let mut conn = connect(store_dir)?;
    writeln!(conn, "{}", request.encode())?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the mount closed the control connection early");
        }
        let line = line.trim_end_matches('\n');
        let parts: Vec<&str> = line.split('\t').collect();
        match parts.as_slice() {
            ["progress", blocks, bytes, fetched] => on_progress(Progress {
                blocks: blocks.parse().unwrap_or(0),
                bytes: bytes.parse().unwrap_or(0),
                fetched: fetched.parse().unwrap_or(0),
            }),
            ["ok"] => {
                let mut text = String::new();
                reader.read_to_string(&mut text)?;
                return Ok(text);
            }
            ["error", ..] => bail!("{}", line.strip_prefix("error\t").unwrap_or(line)),
            _ => bail!("unexpected answer from the mount: {line:?}"),
        }
    }
}
