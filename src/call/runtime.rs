//! What calls run on: the checked flows and their prompts, loaded together
//! and swapped whole on reload, so a broken edit never reaches a call.

use std::path::Path;
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::flow::graph::{NodeKind, TransferTarget};
use crate::flow::schedule::Schedule;
use crate::flow::{load_paths, FlowSet, LoadOptions, NodeRef};
use crate::media::prompts::PromptCache;

/// A flow set with its encoded prompts.
pub struct Runtime {
    /// The flows.
    pub flows: Arc<FlowSet>,
    /// Their prompts, indexed like `flows.prompt_names`.
    pub prompts: Arc<PromptCache>,
}

/// Why flows could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The flows have errors.
    #[error("the flows have {} error(s):\n{}", .0.len(), .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Flows(Vec<Diagnostic>),
    /// A prompt could not be decoded.
    #[error("{0}")]
    Prompts(String),
}

impl Runtime {
    /// Where bridged queues are called: the addresses whose answers (and
    /// in-dialog requests) a call we place to them brings back.
    pub fn bridge_destinations(&self) -> Vec<std::net::IpAddr> {
        let mut ips: Vec<std::net::IpAddr> = self
            .bridge_targets()
            .into_iter()
            .filter_map(|t| t.fixed())
            .map(|p| p.addr.ip())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// The bridged queues called by host name: DNS must place them.
    pub fn bridge_names(&self) -> Vec<crate::sip::locate::SipTarget> {
        let mut names: Vec<_> = self
            .bridge_targets()
            .into_iter()
            .filter(|t| t.fixed().is_none())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn bridge_targets(&self) -> Vec<crate::sip::locate::SipTarget> {
        self.flows
            .flows
            .iter()
            .flat_map(|f| f.queues.iter())
            .filter(|q| q.handoff != crate::flow::model::Handoff::Refer)
            .filter_map(|q| crate::flow::compile::bridge_target(&q.uri).ok())
            .collect()
    }

    /// The transports bridged queues are called over.
    pub fn bridge_transports(&self) -> Vec<crate::sip::transport::Transport> {
        let mut transports: Vec<_> = self
            .flows
            .flows
            .iter()
            .flat_map(|f| f.queues.iter())
            .filter(|q| q.handoff != crate::flow::model::Handoff::Refer)
            .filter_map(|q| crate::sip::transport::Transport::of_uri(&q.uri))
            .collect();
        transports.sort();
        transports.dedup();
        transports
    }

    /// Loads and checks the flows in `flows`, then decodes their prompts.
    pub fn load(flows: &Path, prompts: &Path) -> Result<Self, LoadError> {
        let loaded = load_paths(
            &[flows.to_path_buf()],
            &LoadOptions {
                prompts_dir: prompts.to_path_buf(),
            },
        );
        let (set, warnings) = loaded
            .into_result()
            .map_err(|d| LoadError::Flows(d.into_iter().filter(Diagnostic::is_error).collect()))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let cache =
            PromptCache::load(&set.prompt_files).map_err(|e| LoadError::Prompts(e.to_string()))?;
        Ok(Self {
            flows: Arc::new(set),
            prompts: Arc::new(cache),
        })
    }

    /// The opening hours of `queue`: from the flow `prefer` (the queue's
    /// callback flow) if it gives them, else from the first flow that does.
    pub fn queue_hours(&self, queue: &str, prefer: &str) -> Option<&Schedule> {
        let preferred = self.flows.flow_index(prefer).map(|i| self.flows.flow(i));
        preferred
            .into_iter()
            .chain(self.flows.flows.iter())
            .find_map(|flow| {
                let q = flow.queues.iter().find(|q| q.name == queue)?;
                let (_, hours) = flow.schedules.get(q.hours? as usize)?;
                Some(hours)
            })
    }

    /// Whether the flow `flow` has a transfer to the queue `queue` (a
    /// callback flow must hand the callee to the queue they asked for).
    pub fn transfers_to(&self, flow: &str, queue: &str) -> bool {
        let Some(index) = self.flows.flow_index(flow) else {
            return false;
        };
        let f = self.flows.flow(index);
        f.nodes.iter().any(|n| match &n.kind {
            NodeKind::Transfer(t) => match t.target {
                TransferTarget::Queue(q) => {
                    f.queues.get(q as usize).is_some_and(|d| d.name == queue)
                }
                TransferTarget::Uri { .. } => false,
            },
            _ => false,
        })
    }

    /// Whether some flow defines a queue called `name`.
    pub fn has_queue(&self, name: &str) -> bool {
        self.flows
            .flows
            .iter()
            .any(|f| f.queues.iter().any(|q| q.name == name))
    }

    /// The start of the flow called `name`.
    pub fn entry(&self, name: &str) -> Option<NodeRef> {
        self.flows.start_of(name)
    }
}
