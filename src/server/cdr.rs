//! The call-record writer: JSON lines appended from a thread of its own, so
//! a slow disk never stalls the media of calls in progress.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;

use crate::call::record::CallRecord;

/// Sends records to the writer thread.
#[derive(Clone)]
pub struct RecordSink {
    tx: mpsc::Sender<Box<CallRecord>>,
}

impl RecordSink {
    /// Starts the writer thread appending to `path`.
    pub fn start(path: PathBuf) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (tx, rx) = mpsc::channel::<Box<CallRecord>>();
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
        Ok((Self { tx }, handle))
    }

    /// Queues a record.
    pub fn write(&self, record: Box<CallRecord>) {
        let _ = self.tx.send(record);
    }
}
