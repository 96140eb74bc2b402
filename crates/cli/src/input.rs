//! The files commands read: a path, or `-` for standard input (`cat contacts.csv |
//! nurture contacts import - --input-format csv`).

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use nurture_engine::input::{self, ContactRow, IncomingEvent, InputFormat, Rejected};

/// The format of a contacts input, when its name cannot tell (`-`, or an odd extension).
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub(crate) enum InputFormatArg {
    /// CSV with a header row.
    Csv,
    /// JSON Lines: one object per line.
    Jsonl,
}

impl From<InputFormatArg> for InputFormat {
    fn from(f: InputFormatArg) -> Self {
        match f {
            InputFormatArg::Csv => InputFormat::Csv,
            InputFormatArg::Jsonl => InputFormat::Jsonl,
        }
    }
}

/// Whether `path` means standard input.
pub(crate) fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How `path` is named in messages (`FILE:LINE: ...`).
pub(crate) fn shown(path: &Path) -> String {
    if is_stdin(path) {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

/// The whole text of `path`, or of standard input for `-`.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    if is_stdin(path) {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// The text of `path` (or stdin) when it is at most `max` bytes; `None` when longer.
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Option<String>> {
    let mut text = String::new();
    let read = if is_stdin(path) {
        std::io::stdin()
            .lock()
            .take(max + 1)
            .read_to_string(&mut text)
            .context("cannot read standard input")
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(max + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read {}", path.display()))
    };
    read?;
    Ok((text.len() as u64 <= max).then_some(text))
}

/// Contacts from `path` (or stdin): the format given, else the extension's, else (stdin)
/// what the first line looks like.
pub(crate) fn contacts(
    path: &Path,
    format: Option<InputFormatArg>,
) -> Result<(Vec<ContactRow>, Vec<Rejected>)> {
    let text = read_text(path)?;
    let format = match format {
        Some(f) => f.into(),
        None if is_stdin(path) => InputFormat::sniff(&text),
        None => InputFormat::of_path(path),
    };
    Ok(input::parse_contacts(&text, format))
}

/// Events (JSON Lines) from `path` or stdin.
pub(crate) fn events(path: &Path) -> Result<(Vec<IncomingEvent>, Vec<Rejected>)> {
    Ok(input::parse_events(&read_text(path)?))
}
