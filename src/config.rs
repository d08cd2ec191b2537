//! The configuration file: TOML, one key per mount option by its long name
//! (`cache-size = "20GiB"`, `gateway = ["http://127.0.0.1:8080"]`, `offline = true`,
//! `verbose = 1`, `mountpoint = "/mnt/ipfs"`). `--config FILE` names it; by default it is
//! `$XDG_CONFIG_HOME/ipfs-mount/config.toml` (else `~/.config/ipfs-mount/config.toml`), and a
//! default file that does not exist is no error.
//!
//! The file becomes command-line arguments placed before the real ones, for each option the
//! command line (or its environment variable) does not set already: so flags override the
//! file, and a value is checked by exactly the parser the flag has. With a command
//! (`ipfs-mount stats`), only the options every command takes (`store`, `cache-size`,
//! `verbose`) are applied. Errors name the file, the line and the key.
//!
//! Part of the command-line layer (it reads [`crate::cli`]'s definitions); nothing below
//! `cmd` uses it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::CommandFactory;
use toml::Spanned;

use crate::cli::Cli;

/// Options that are not settings of a mount, so not taken from a file.
const NOT_IN_FILE: &[&str] = &["help", "version", "config", "ready-fd"];

/// `$XDG_CONFIG_HOME/ipfs-mount/config.toml`, else `~/.config/ipfs-mount/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ipfs-mount").join("config.toml"))
}

/// `args` (a whole command line, program name first) with the config file's settings put in
/// front of the user's arguments. A command line clap cannot parse is returned as it is, so
/// that clap reports its error.
pub fn apply(args: Vec<OsString>) -> Result<Vec<OsString>> {
    // The mount point may come from the file: not required yet.
    let mut command = Cli::command().mut_arg("mountpoint", |a| a.required(false));
    let Ok(matches) = command.try_get_matches_from_mut(args.clone()) else {
        return Ok(args);
    };
    let (path, named) = match matches.get_one::<PathBuf>("config") {
        Some(p) => (p.clone(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(args),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => return Ok(args),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let has_command = matches.subcommand_name().is_some();
    let set_by_user = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        )
    };
    let extra = file_args(&path, &text, &command, has_command, &set_by_user)?;
    let mut out = Vec::with_capacity(args.len() + extra.len());
    let mut it = args.into_iter();
    out.extend(it.next());
    out.extend(extra);
    out.extend(it);
    Ok(out)
}

/// The arguments the file stands for, each checked by clap on its own (so that an error
/// names its line and key). Options `set_by_user` are left out (flags override the file);
/// with a command, only global options are applied.
fn file_args(
    path: &Path,
    text: &str,
    command: &clap::Command,
    has_command: bool,
    set_by_user: &dyn Fn(&str) -> bool,
) -> Result<Vec<OsString>> {
    let at = |span: std::ops::Range<usize>| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("{}:{line}", path.display())
    };
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(&at)
                .unwrap_or_else(|| path.display().to_string());
            anyhow!("{place}: {}", e.message().trim())
        })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let name = key.get_ref().as_str();
        let place = format!("{}: key `{name}`", at(key.span()));
        let arg = if name == "mountpoint" {
            command.get_arguments().find(|a| a.get_id() == "mountpoint")
        } else {
            command
                .get_arguments()
                .find(|a| a.get_long() == Some(name) && !NOT_IN_FILE.contains(&name))
        };
        let Some(arg) = arg else {
            bail!("{place}: not an option of ipfs-mount (keys are the long names of the mount's options, e.g. cache-size)");
        };
        let id = arg.get_id().as_str();
        if set_by_user(id) || (has_command && !arg.is_global_set()) {
            continue;
        }
        let words = to_words(arg, value.get_ref()).map_err(|e| anyhow!("{place}: {e}"))?;
        // Check the value with the flag's own parser; a dummy mount point satisfies the
        // required positional.
        let mut check: Vec<OsString> = vec!["ipfs-mount".into()];
        if id != "mountpoint" {
            check.push("/".into());
        }
        check.extend(words.iter().cloned());
        if let Err(e) = command.clone().try_get_matches_from(check) {
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            bail!("{place}: {first}");
        }
        out.extend(words);
    }
    Ok(out)
}

/// The command-line words for one key: `--long value` (once per element of an array),
/// `--long` for `true`, nothing for `false`, `--long` N times for a count.
fn to_words(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    // None: the positional mount point.
    let flag = arg.get_long().map(|l| format!("--{l}"));
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            other => Err(format!(
                "expected a string or a number, found {}",
                other.type_str()
            )),
        }
    };
    let with_flag = |v: String| -> Vec<OsString> {
        match &flag {
            Some(f) => vec![f.into(), v.into()],
            None => vec![v.into()],
        }
    };
    match arg.get_action() {
        clap::ArgAction::SetTrue => match value {
            toml::Value::Boolean(true) => Ok(flag.into_iter().map(OsString::from).collect()),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        },
        clap::ArgAction::Count => match value {
            toml::Value::Integer(n) if (0..=10).contains(n) => Ok((0..*n)
                .filter_map(|_| flag.clone().map(OsString::from))
                .collect()),
            other => Err(format!("expected a number from 0 to 10, found {other}")),
        },
        clap::ArgAction::Append => match value {
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for v in items {
                    out.extend(with_flag(scalar(v)?));
                }
                Ok(out)
            }
            v => Ok(with_flag(scalar(v)?)),
        },
        _ => Ok(with_flag(scalar(value)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(text: &str, command_line: &[&str]) -> Result<Vec<String>> {
        let command = Cli::command();
        let matches = command
            .clone()
            .try_get_matches_from(command_line)
            .expect("a valid command line");
        let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let has_command = matches.subcommand_name().is_some();
        Ok(
            file_args(Path::new("c.toml"), text, &command, has_command, &given)?
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect(),
        )
    }

    #[test]
    fn keys_become_arguments_and_flags_win() {
        let text = "offline = true\ngateway = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\ncache-size = \"1GiB\"\nverbose = 2\nno-p2p = false\n";
        let a = args_of(text, &["ipfs-mount", "/m"]).unwrap();
        assert_eq!(
            a,
            [
                "--cache-size",
                "1GiB",
                "--gateway",
                "http://127.0.0.1:1",
                "--gateway",
                "http://127.0.0.1:2",
                "--offline",
                "--verbose",
                "--verbose"
            ]
        );
        let a = args_of(text, &["ipfs-mount", "/m", "--cache-size", "5MiB", "-v"]).unwrap();
        assert!(
            !a.iter().any(|x| x == "--cache-size" || x == "--verbose"),
            "{a:?}"
        );
        // A command takes only the options every command has.
        let a = args_of(text, &["ipfs-mount", "stats"]).unwrap();
        assert_eq!(a, ["--cache-size", "1GiB", "--verbose", "--verbose"]);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = args_of(
            "offline = true\n\ncache-size = \"lots\"\n",
            &["ipfs-mount", "/m"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.toml:3: key `cache-size`: "), "{e}");
        assert!(e.contains("lots"), "{e}");
        let e = args_of("\ncolour = 1\n", &["ipfs-mount", "/m"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.toml:2: key `colour`: not an option"),
            "{e}"
        );
        let e = args_of("offline = \"yes\"\n", &["ipfs-mount", "/m"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.toml:1: key `offline`: expected true or false"),
            "{e}"
        );
        let e = args_of("a = 1\nb = [\n", &["ipfs-mount", "/m"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:"), "{e}");
        let e = args_of("ready-fd = 3\n", &["ipfs-mount", "/m"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an option"), "{e}");
    }
}
