//! What every handler process shares: a clean environment, and bounded reads of its output.

use std::collections::BTreeMap;
use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The only variables of the dispatcher's own environment a handler process sees: never the
/// broker URL and its password.
pub(crate) const PASSED_ON: [&str; 4] = ["PATH", "HOME", "LANG", "PYTHONPATH"];

/// A handler process's environment: [`PASSED_ON`] from ours, then the file's `env:` and the
/// consumer's `env:` (the consumer's win).
pub(crate) fn handler_env(
    file: &BTreeMap<String, String>,
    consumer: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = PASSED_ON
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
        .collect();
    env.extend(file.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(consumer.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.into_iter().collect()
}

/// A command with exactly `env` as its environment, killed when dropped.
pub(crate) fn command(
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    command
}

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The pipe failed.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    /// The line (or output) was longer than allowed.
    #[error("more than {0} octets")]
    TooLong(usize),
}

/// The next line (without its newline), `None` at the end of the stream; refuses a line
/// longer than `max` octets without buffering more than that.
pub(crate) async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    max: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (taken, end) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        line.extend_from_slice(&buffer[..taken - usize::from(end)]);
        reader.consume(taken);
        if line.len() > max {
            return Err(ReadError::TooLong(max));
        }
        if end {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut input: &[u8] = b"short\nthis one is too long\nlast";
        assert_eq!(
            read_line(&mut input, 8).await.unwrap(),
            Some(b"short".to_vec())
        );
        assert!(matches!(
            read_line(&mut input, 8).await,
            Err(ReadError::TooLong(8))
        ));
        let mut input: &[u8] = b"a\nlast";
        assert_eq!(read_line(&mut input, 8).await.unwrap(), Some(b"a".to_vec()));
        assert_eq!(
            read_line(&mut input, 8).await.unwrap(),
            Some(b"last".to_vec())
        );
        assert_eq!(read_line(&mut input, 8).await.unwrap(), None);
    }

    #[test]
    fn only_the_allowed_variables_pass() {
        let file = BTreeMap::from([("TZ".to_owned(), "UTC".to_owned())]);
        let consumer = BTreeMap::from([("TZ".to_owned(), "CET".to_owned())]);
        let env = handler_env(&file, &consumer);
        assert!(
            env.iter()
                .all(|(k, _)| PASSED_ON.contains(&k.as_str()) || k == "TZ")
        );
        assert!(env.contains(&("TZ".to_owned(), "CET".to_owned())));
    }
}
