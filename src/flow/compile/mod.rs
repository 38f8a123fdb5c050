//! Compiles one parsed flow file into the runtime graph, checking every
//! reference on the way. Problems are reported, not returned: compilation
//! carries on with a placeholder so that one pass finds them all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::flow::condition::{Condition, Test};
use crate::flow::duration::FlowDuration;
use crate::flow::graph::*;
use crate::flow::load::Parsed;

use crate::diagnostic::{Diagnostic, Position};
use crate::flow::model::*;
use crate::flow::numbers::NumberList;
use crate::flow::position::{join, PositionIndex};
use crate::flow::schedule::Schedule;
use crate::flow::template::{is_var_name, Template};
use crate::sip::transport::Transport;

mod condition;
mod node;

use node::compile_node;

/// Names known before compiling: flows and the nodes of each.
#[derive(Default)]
pub(crate) struct FlowNames {
    pub flows: HashMap<String, u32>,
    pub nodes: Vec<HashMap<String, u32>>,
}

/// A variable read somewhere; checked once all assignments are known.
pub(crate) struct VarRef {
    pub file: PathBuf,
    pub position: Position,
    pub name: String,
}

/// Interns prompt names and checks each file once.
pub(crate) struct Prompts {
    dir: PathBuf,
    ids: HashMap<String, Result<PromptId, String>>,
    names: Vec<String>,
    files: Vec<PathBuf>,
}

/// Menus and digit prompts default to what callers are used to: 5 s to
/// answer, three tries in all.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_INTER_DIGIT: Duration = Duration::from_secs(3);
const MAX_RETRIES: u32 = 10;
const MAX_DIGITS: u32 = 64;

/// The node kinds as written in YAML, for messages.
const KINDS: &str = "play, menu, collect, switch, set, goto, transfer, callback or hangup";

impl Prompts {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ids: HashMap::new(),
            names: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The id of prompt `name`, or why it cannot be played.
    pub fn intern(&mut self, name: &str) -> Result<PromptId, String> {
        if let Some(r) = self.ids.get(name) {
            return r.clone();
        }
        let result = self.check(name);
        self.ids.insert(name.to_string(), result.clone());
        result
    }

    fn check(&mut self, name: &str) -> Result<PromptId, String> {
        let valid = !name.is_empty()
            && !name.starts_with('/')
            && !name
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c));
        if !valid {
            return Err(format!(
                "`{name}` is not a prompt name; use letters, digits, - and _ (a file prompts/NAME.wav)"
            ));
        }
        let file = self.dir.join(format!("{name}.wav"));
        match hound::WavReader::open(&file) {
            Ok(reader) => {
                let spec = reader.spec();
                if spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
                    return Err(format!(
                        "prompt file {} is not 16-bit PCM (it is {}-bit {:?})",
                        file.display(),
                        spec.bits_per_sample,
                        spec.sample_format
                    ));
                }
                if spec.channels > 2 {
                    return Err(format!(
                        "prompt file {} has {} channels; use mono or stereo",
                        file.display(),
                        spec.channels
                    ));
                }
            }
            Err(hound::Error::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("prompt `{name}` has no file {}", file.display()))
            }
            Err(e) => {
                return Err(format!(
                    "prompt file {} is not a readable WAV file: {e}",
                    file.display()
                ))
            }
        }
        let id = PromptId(self.names.len() as u32);
        self.names.push(name.to_string());
        self.files.push(file);
        Ok(id)
    }

    pub fn into_parts(self) -> (Vec<String>, Vec<PathBuf>) {
        (self.names, self.files)
    }
}

struct Ctx<'a> {
    flow: u32,
    flow_name: &'a str,
    file: &'a Path,
    index: &'a PositionIndex,
    names: &'a FlowNames,
    prompts: &'a mut Prompts,
    refs: &'a mut Vec<VarRef>,
    diags: &'a mut Vec<Diagnostic>,
    agent: Option<(char, NodeRef)>,
    agent_name: Option<String>,
    queues: HashMap<String, u32>,
    /// Each queue's `callback_offer_after`, for `long_wait` conditions.
    offer_after: HashMap<String, Duration>,
    schedules: HashMap<String, u32>,
    lists: HashMap<String, u32>,
}

impl Ctx<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index.value(path);
        self.diags.push(Diagnostic::error(self.file, pos, message));
    }

    fn error_at_key(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index.key(path);
        self.diags.push(Diagnostic::error(self.file, pos, message));
    }

    fn placeholder(&self) -> NodeRef {
        NodeRef {
            flow: self.flow,
            node: NodeRef::UNRESOLVED,
        }
    }

    /// A node of this flow by name.
    fn target(&mut self, path: &str, name: &str) -> NodeRef {
        match self.names.nodes[self.flow as usize].get(name) {
            Some(&node) => NodeRef {
                flow: self.flow,
                node,
            },
            None => {
                let msg = format!("`{name}` is not a node of flow `{}`", self.flow_name);
                self.error(path, msg);
                self.placeholder()
            }
        }
    }

    /// A required successor field; `fallback` is used when it is absent
    /// (the flow's agent node for failures), else it is an error.
    fn successor(
        &mut self,
        node_path: &str,
        field: &str,
        value: &Option<String>,
        fallback: Option<NodeRef>,
        why: &str,
    ) -> NodeRef {
        match value {
            Some(name) => self.target(&join(node_path, field), name),
            None => match fallback {
                Some(r) => r,
                None => {
                    self.error_at_key(node_path, format!("this node needs `{field}`: {why}"));
                    self.placeholder()
                }
            },
        }
    }

    fn prompt_seq(&mut self, path: &str, list: &PromptList) -> Vec<PromptId> {
        if list.0.is_empty() {
            self.error(path, "the prompt list is empty; name at least one prompt");
        }
        let mut ids = Vec::with_capacity(list.0.len());
        for (i, name) in list.0.iter().enumerate() {
            let item = if self.index.get(&join(path, "0")).is_some() {
                join(path, &i.to_string())
            } else {
                path.to_string()
            };
            match self.prompts.intern(name) {
                Ok(id) => ids.push(id),
                Err(msg) => self.error(&item, msg),
            }
        }
        ids
    }

    fn opt_prompts(&mut self, path: &str, list: &Option<PromptList>) -> Vec<PromptId> {
        match list {
            Some(l) => self.prompt_seq(path, l),
            None => Vec::new(),
        }
    }

    /// A built-in prompt (e.g. `digit-3`) that a node kind needs.
    fn builtin_prompt(&mut self, path: &str, name: &str) -> PromptId {
        match self.prompts.intern(name) {
            Ok(id) => id,
            Err(msg) => {
                self.error_at_key(path, format!("{msg} (a callback node needs it)"));
                PromptId(0)
            }
        }
    }

    fn template(&mut self, path: &str, text: &str) -> Template {
        match Template::parse(text) {
            Ok(t) => {
                let position = self.index.value(path);
                for v in t.vars() {
                    self.refs.push(VarRef {
                        file: self.file.to_path_buf(),
                        position,
                        name: v.to_string(),
                    });
                }
                t
            }
            Err(e) => {
                self.error(path, e.to_string());
                Template::default()
            }
        }
    }

    fn var_ref(&mut self, path: &str, name: &str) {
        if !is_var_name(name) {
            self.error(
                path,
                format!("`{name}` is not a variable name; use letters, digits and _"),
            );
            return;
        }
        self.refs.push(VarRef {
            file: self.file.to_path_buf(),
            position: self.index.value(path),
            name: name.to_string(),
        });
    }

    fn key(&mut self, path: &str, text: &str, what: &str) -> Option<char> {
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_digit() || c == '*' || c == '#' => Some(c),
            _ => {
                self.error(
                    path,
                    format!("`{text}` is not a {what}; use one key: 0-9, * or #"),
                );
                None
            }
        }
    }

    fn duration(&mut self, path: &str, d: Option<FlowDuration>, default: Duration) -> Duration {
        match d {
            Some(FlowDuration(v)) if v.is_zero() => {
                self.error(
                    path,
                    "a zero duration would never let the caller answer; use at least 1s",
                );
                default
            }
            Some(FlowDuration(v)) => v,
            None => default,
        }
    }

    fn retries(&mut self, path: &str, r: Option<u32>) -> u32 {
        match r {
            Some(n) if n > MAX_RETRIES => {
                self.error(
                    path,
                    format!("{n} retries is too many for a caller; use at most {MAX_RETRIES}"),
                );
                MAX_RETRIES
            }
            Some(n) => n,
            None => DEFAULT_RETRIES,
        }
    }

    fn queue(&mut self, path: &str, name: &str) -> u32 {
        match self.queues.get(name) {
            Some(&q) => q,
            None => {
                let msg = format!(
                    "`{name}` is not a queue of flow `{}`; define it under `queues:`",
                    self.flow_name
                );
                self.error(path, msg);
                0
            }
        }
    }
}

fn seq(ids: Vec<PromptId>) -> PromptSeq {
    Arc::from(ids)
}

fn concat(a: &[PromptId], b: &[PromptId]) -> PromptSeq {
    a.iter().chain(b).copied().collect::<Vec<_>>().into()
}

/// Compiles flow number `flow` from its parsed file.
pub(crate) fn compile_flow(
    flow: u32,
    parsed: &Parsed,
    names: &FlowNames,
    prompts: &mut Prompts,
    refs: &mut Vec<VarRef>,
    diags: &mut Vec<Diagnostic>,
) -> Flow {
    let def = &parsed.def;
    let flow_name = def.flow.clone().unwrap_or_default();
    let mut cx = Ctx {
        flow,
        flow_name: &flow_name,
        file: &parsed.path,
        index: &parsed.index,
        names,
        prompts,
        refs,
        diags,
        agent: None,
        agent_name: None,
        queues: HashMap::new(),
        offer_after: HashMap::new(),
        schedules: HashMap::new(),
        lists: HashMap::new(),
    };

    // Schedules first: queues name the one they keep hours by.
    let schedules = compile_schedules(&mut cx, def);
    let queues = compile_queues(&mut cx, def);
    let lists = compile_lists(&mut cx, def);

    let node_defs: Vec<(&String, &NodeDef)> = def.nodes.iter().flatten().collect();
    if def.nodes.is_none() {
        cx.error_at_key(
            "",
            "the flow has no `nodes:`; a flow needs at least one node",
        );
    } else if node_defs.is_empty() {
        cx.error("nodes", "`nodes:` is empty; a flow needs at least one node");
    }

    let start = match &def.start {
        Some(name) => cx.target("start", name).node,
        None => {
            cx.error_at_key(
                "",
                "the flow has no `start:`; name the node where calls begin",
            );
            0
        }
    };

    match (&def.agent_key, &def.agent) {
        (Some(key), Some(node)) => {
            let k = cx.key("agent_key", key, "agent key");
            let target = cx.target("agent", node);
            if let Some(k) = k {
                cx.agent = Some((k, target));
                cx.agent_name = Some(node.clone());
            }
        }
        (Some(_), None) => cx.error_at_key(
            "agent_key",
            "`agent_key` needs `agent`: the node the key leads to",
        ),
        (None, Some(node)) => {
            let target = cx.target("agent", node);
            cx.agent_name = Some(node.clone());
            // Without a key the agent node still serves as the default failure route.
            cx.agent = Some(('\0', target));
        }
        (None, None) => {}
    }

    let mut vars = Vec::new();
    for (name, value) in &def.vars {
        let path = join("vars", name);
        if !is_var_name(name) {
            cx.error_at_key(
                &path,
                format!("`{name}` is not a variable name; use letters, digits and _"),
            );
        }
        let t = cx.template(&path, value);
        vars.push((name.clone(), t));
    }

    let mut nodes = Vec::with_capacity(node_defs.len());
    for (name, node) in &node_defs {
        let path = join("nodes", name);
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
        {
            cx.error_at_key(
                &path,
                format!("`{name}` is not a node name; use letters, digits, - and _"),
            );
        }
        let kind = compile_node(&mut cx, &path, name, node);
        nodes.push(Node {
            name: (*name).clone(),
            position: cx.index.key(&path),
            kind,
        });
    }
    if nodes.is_empty() {
        // Keep the graph well-formed for tools even when the flow is broken.
        nodes.push(Node {
            name: "(none)".into(),
            position: Position::default(),
            kind: NodeKind::Hangup {
                prompts: seq(Vec::new()),
            },
        });
    }

    let agent = cx.agent.filter(|(k, _)| *k != '\0');
    Flow {
        name: flow_name.clone(),
        file: parsed.path.clone(),
        description: def.description.clone(),
        start,
        agent,
        vars,
        node_index: names.nodes[flow as usize].clone(),
        nodes,
        queues,
        schedules,
        lists,
    }
}

fn compile_queues(cx: &mut Ctx<'_>, def: &FlowFile) -> Vec<Queue> {
    let mut out = Vec::new();
    for (name, q) in &def.queues {
        let path = join("queues", name);
        if let Err(msg) = check_static_sip_uri(&q.uri) {
            cx.error(&join(&path, "uri"), msg);
        } else if q.handoff != Handoff::Refer {
            match bridge_target(&q.uri) {
                Err(msg) => cx.error(&join(&path, "uri"), msg),
                Ok(target) if q.srtp && target.transport != Some(Transport::Tls) => cx.error(
                    &join(&path, "srtp"),
                    format!(
                        "SRTP keys travel in the SDP, so `srtp: true` needs the queue reached over TLS; write `{}` or add `;transport=tls`",
                        q.uri.replacen("sip:", "sips:", 1)
                    ),
                ),
                Ok(_) => {}
            }
        }
        if q.srtp && q.handoff == Handoff::Refer {
            cx.error(
                &join(&path, "srtp"),
                "`srtp: true` is for calls callflow places to the queue: set `handoff: bridge` or `refer_then_bridge`".to_string(),
            );
        }
        let hours = match &q.hours {
            None => None,
            Some(h) => match cx.schedules.get(h) {
                Some(&i) if i != u32::MAX => Some(i),
                Some(_) => None, // a broken schedule, reported where it is defined
                None => {
                    let msg = format!(
                        "`{h}` is not a schedule of flow `{}`; define it under `schedules:`",
                        cx.flow_name
                    );
                    cx.error(&join(&path, "hours"), msg);
                    None
                }
            },
        };
        cx.queues.insert(name.clone(), out.len() as u32);
        if let Some(after) = q.callback_offer_after {
            cx.offer_after.insert(name.clone(), after.0);
        }
        out.push(Queue {
            name: name.clone(),
            uri: q.uri.clone(),
            priority: q.priority,
            callback_offer_after: q.callback_offer_after.map(|d| d.0),
            hours,
            handoff: q.handoff,
            user_to_user: q.user_to_user,
            refer_context: q.refer_context,
            ring_timeout: q.ring_timeout.map_or(DEFAULT_BRIDGE_RING_TIMEOUT, |d| d.0),
            srtp: q.srtp,
        });
    }
    out
}

fn compile_schedules(cx: &mut Ctx<'_>, def: &FlowFile) -> Vec<(String, Schedule)> {
    let mut out = Vec::new();
    for (name, s) in &def.schedules {
        let path = join("schedules", name);
        match Schedule::compile(s) {
            Ok(schedule) => {
                cx.schedules.insert(name.clone(), out.len() as u32);
                out.push((name.clone(), schedule));
            }
            Err(errors) => {
                // Still register the name, so conditions naming it are not
                // reported a second time as unknown.
                cx.schedules.insert(name.clone(), u32::MAX);
                for e in errors {
                    let p = join(&path, &e.path);
                    if e.path.starts_with("open.") {
                        cx.error_at_key(&p, e.message);
                    } else {
                        cx.error(&p, e.message);
                    }
                }
            }
        }
    }
    out
}

fn compile_lists(cx: &mut Ctx<'_>, def: &FlowFile) -> Vec<(String, NumberList)> {
    let mut out = Vec::new();
    let base = cx.file.parent().unwrap_or(Path::new("."));
    for (name, file) in &def.lists {
        let path = join("lists", name);
        let list = match NumberList::load(&base.join(file)) {
            Ok(list) => list,
            Err(e) => {
                cx.error(&path, e.to_string());
                NumberList::default()
            }
        };
        cx.lists.insert(name.clone(), out.len() as u32);
        out.push((name.clone(), list));
    }
    out
}

/// Checks a URI that must not contain templates (queue URIs).
fn check_static_sip_uri(uri: &str) -> Result<(), String> {
    if uri.contains("${") {
        return Err(format!(
            "`{uri}`: a queue URI cannot use templates; write the URI itself"
        ));
    }
    split_sip_uri(uri)?;
    // rsip's full RFC 3261 URI grammar, once, at load: what our split lets
    // through (a port out of range, a space in the user part) would
    // otherwise surface only as a REFER the ACD refuses mid-call.
    rsip::Uri::try_from(uri)
        .map(|_| ())
        .map_err(|e| format!("`{uri}` is not a valid SIP URI ({e})"))
}

/// How long a bridged call to a queue rings when the queue does not say.
const DEFAULT_BRIDGE_RING_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a bridged call to `uri` is sent: its host, an IP address or a
/// name DNS locates (RFC 3263), with its port and transport if it names
/// them.
pub fn bridge_target(uri: &str) -> Result<crate::sip::locate::SipTarget, String> {
    split_sip_uri(uri)?;
    crate::sip::locate::SipTarget::of_uri(uri)
}

/// Splits `sip:user@host;params` into scheme, user and `@host...`.
fn split_sip_uri(uri: &str) -> Result<(&str, &str, &str), String> {
    let (scheme, rest) = if let Some(r) = uri.strip_prefix("sips:") {
        ("sips:", r)
    } else if let Some(r) = uri.strip_prefix("sip:") {
        ("sip:", r)
    } else {
        return Err(format!(
            "`{uri}` is not a SIP URI; write sip:user@host (e.g. sip:support@acd.example.net)"
        ));
    };
    let (user, host_part) = match rest.find('@') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => ("", rest),
    };
    let host = host_part
        .trim_start_matches('@')
        .split([';', '?', ':'])
        .next()
        .unwrap_or("");
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]".contains(c));
    if !host_ok {
        return Err(format!("`{uri}` has no valid host after `@`"));
    }
    Ok((scheme, user, if user.is_empty() { rest } else { host_part }))
}
