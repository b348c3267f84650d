//! `replication.resync.command`: the program that copies the donor's data
//! to the origin once the cut is reached (rsync, `pg_dump | pg_restore`
//! wrapped in a script). Run without a shell, with `HOTHOT_DONOR`,
//! `HOTHOT_DONOR_ADDRESS`, `HOTHOT_ORIGIN`, `HOTHOT_ORIGIN_ADDRESS` and
//! `HOTHOT_SEQ` in its environment; exit 0 completes the resync, anything
//! else (or `resync.timeout`) aborts it, logged with the exit status and
//! the last lines of its standard error. Its standard output is discarded.

use crate::pool::Origin;
use crate::replication::Replicator;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::AbortHandle;

/// Lines of standard error kept for the log.
const STDERR_LINES: usize = 10;

impl Replicator {
    /// Runs `program` for the resync of `origin` from `donor` at `seq`; the
    /// handle stops it (the child is killed with it).
    pub(super) fn run_command(
        self: &Arc<Self>,
        program: Vec<String>,
        origin: &Arc<Origin>,
        donor: &Arc<Origin>,
        seq: u64,
    ) -> AbortHandle {
        let replicator = self.clone();
        let (origin, donor) = (origin.clone(), donor.clone());
        let task = tokio::spawn(async move {
            let timeout = replicator.config().retention.resync_timeout;
            let shown = program.join(" ");
            let mut command = tokio::process::Command::new(&program[0]);
            command
                .args(&program[1..])
                .env("HOTHOT_DONOR", &donor.name)
                .env("HOTHOT_DONOR_ADDRESS", donor.address().to_string())
                .env("HOTHOT_ORIGIN", &origin.name)
                .env("HOTHOT_ORIGIN_ADDRESS", origin.address().to_string())
                .env("HOTHOT_SEQ", seq.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let why = format!("replication.resync.command ({shown}) could not start: {e}");
                    let _ = replicator.end_resync(&origin, "failed", &why);
                    return;
                }
            };
            log::info!("resync of {}: running {shown}", origin.name);
            let stderr = child.stderr.take();
            let tail = async move {
                let mut kept = VecDeque::new();
                if let Some(stderr) = stderr {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if kept.len() == STDERR_LINES {
                            kept.pop_front();
                        }
                        kept.push_back(line);
                    }
                }
                kept
            };
            let waited = tokio::time::timeout(timeout, async {
                let (status, kept) = tokio::join!(child.wait(), tail);
                (status, kept)
            })
            .await;
            match waited {
                Ok((Ok(status), _)) if status.success() => {
                    log::info!("resync of {}: {shown} finished", origin.name);
                    let _ = replicator.resync_done(&origin.name);
                }
                Ok((status, kept)) => {
                    let status = match status {
                        Ok(status) => status.to_string(),
                        Err(e) => format!("cannot wait for it: {e}"),
                    };
                    let kept: Vec<String> = kept.into_iter().collect();
                    let why = format!(
                        "replication.resync.command ({shown}) failed: {status}; its last \
                         standard error lines: {:?}",
                        kept.join(" | ")
                    );
                    let _ = replicator.end_resync(&origin, "failed", &why);
                }
                Err(_) => {
                    let _ = child.start_kill();
                    let why = format!(
                        "replication.resync.command ({shown}) ran longer than \
                         replication.resync.timeout ({timeout:?}) and was killed"
                    );
                    let _ = replicator.end_resync(&origin, "timed_out", &why);
                }
            }
        });
        task.abort_handle()
    }
}
