//! `amqp man DIR`: the man pages, rendered from the same clap definitions as `--help`, so
//! that they never disagree: `amqp.1` and one page per subcommand (`amqp-consume.1`,
//! `amqp-declare-queue.1`, ...).

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// Writes a page for `cmd` and each of its visible subcommands into `dir` (created if
/// missing), and returns the files written.
///
/// # Errors
/// [`CliError::Write`] naming the directory or page that could not be written.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| CliError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    // Building names each subcommand for its page (`amqp-consume`) as `--help` shows it.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let mut pending = vec![cmd];
    while let Some(cmd) = pending.pop() {
        pending.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let man = clap_mangen::Man::new(cmd);
        let path = man.generate_to(dir).map_err(failed(dir))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}
