//! The call-record writer: JSON lines appended from a thread of its own, so
//! a slow disk never stalls the media of calls in progress.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;

use crate::call::record::CallRecord;

/// Records waiting for the writer thread at most: only a disk that stopped
/// answering fills it, and then records are dropped with an error rather
/// than held in memory without end.
const RECORD_QUEUE: usize = 65_536;

/// Sends records to the writer thread.
#[derive(Clone)]
pub struct RecordSink {
    tx: mpsc::SyncSender<Box<CallRecord>>,
    /// This node's name, written into every record.
    node: std::sync::Arc<str>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RecordSink {
    /// Starts the writer thread appending to `path` the records of node
    /// `node`.
    pub fn start(
        path: PathBuf,
        node: &str,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (tx, rx) = mpsc::sync_channel::<Box<CallRecord>>(RECORD_QUEUE);
        let handle = std::thread::Builder::new()
            .name("call-records".into())
            .spawn(move || {
                for record in rx {
                    let line = record.to_json_line();
                    if let Err(e) = file.write_all(line.as_bytes()).and_then(|_| file.flush()) {
                        tracing::error!(path = %path.display(), "cannot write a call record: {e}");
                    }
                }
            })?;
        Ok((
            Self {
                tx,
                node: std::sync::Arc::from(node),
                dropped: Default::default(),
            },
            handle,
        ))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records lost because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues a record; never waits.
    pub fn write(&self, mut record: Box<CallRecord>) {
        record.node = Some(self.node.to_string());
        if let Err(mpsc::TrySendError::Full(record)) = self.tx.try_send(record) {
            let dropped = 1 + self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                call_id = %record.call_id, dropped,
                "the call-record file is {RECORD_QUEUE} records behind; this record is lost"
            );
        }
    }
}
