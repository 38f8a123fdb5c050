//! The flow file format as written in YAML: what serde reads and what the
//! JSON Schema (`flows/schema.json`) describes.
//!
//! These types only mirror the text. Cross-references (targets, queues,
//! schedules, lists, prompts) are checked and resolved by `compile` into the
//! runtime graph in `graph.rs`. Every struct refuses unknown fields, so a typo
//! in a flow file is an error with a position, not a silently ignored line.

use std::fmt;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::duration::FlowDuration;

/// One call flow: a named graph of nodes with an explicit start.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    /// The flow's name, unique across the loaded flows; `goto` and the
    /// server's DID routing refer to it.
    pub flow: Option<String>,
    /// Free text for people reading the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The node where calls begin.
    pub start: Option<String>,
    /// The key (0-9, *, #) that from any menu or digit collection goes
    /// straight to the `agent` node: the way to a person is always one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<String>,
    /// The node the agent key leads to (usually a transfer to a queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Variables every call starts with (values may use `${caller}` etc.).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, String>,
    /// ACD queues by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub queues: IndexMap<String, QueueDef>,
    /// Opening-hour schedules by name, for `open:` conditions.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub schedules: IndexMap<String, ScheduleDef>,
    /// Number lists by name: a CSV file (path relative to this flow file)
    /// whose first column holds phone numbers.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub lists: IndexMap<String, String>,
    /// The nodes, by name.
    pub nodes: Option<IndexMap<String, NodeDef>>,
}

/// An ACD queue that calls are transferred to.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueDef {
    /// The queue's SIP URI: the REFER target, or where a bridged call is
    /// placed.
    pub uri: String,
    /// How calls reach the queue: `refer` (the default: SIP transfer, the
    /// trunk places the call), `bridge` (callflow places the call itself
    /// and relays the audio) or `refer_then_bridge` (REFER first; if the
    /// trunk refuses it, bridge).
    #[serde(default, skip_serializing_if = "Handoff::is_refer")]
    pub handoff: Handoff,
    /// Also send the flow's context as User-to-User (RFC 7433, hex), for
    /// ACDs that read UUI rather than `X-` headers: on a bridged call's
    /// INVITE, and with a REFER's other context (see `refer_context`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_to_user: bool,
    /// Where a REFER carries the context: `uri` (the default: as headers
    /// of the Refer-To URI, which the trunk copies into its INVITE to the
    /// queue), `request` (as headers on the REFER itself, for trunks and
    /// ACDs that read it there) or `both`.
    #[serde(default, skip_serializing_if = "ReferContext::is_uri")]
    pub refer_context: ReferContext,
    /// For a bridged call: SRTP only (RFC 3711, keys by SDES, RFC 4568),
    /// an `RTP/SAVP` offer, and an agent answering in the clear is hung up
    /// on. The URI must be reached over TLS (`sips:` or
    /// `;transport=tls`), since the keys travel in the SDP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub srtp: bool,
    /// For a bridged call: how long the queue may ring before the
    /// transfer counts as failed (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_timeout: Option<FlowDuration>,
    /// The priority sent with transfers to this queue (higher is sooner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Offer a callback when the expected wait is longer than this: the
    /// threshold that `{ long_wait: QUEUE }` conditions compare the
    /// server's `wait_QUEUE` with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_offer_after: Option<FlowDuration>,
    /// The schedule (from `schedules`) when agents answer: a callback
    /// booked while it is closed is dialled from the next opening on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// Free text for people reading the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Where a REFER carries the flow's context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferContext {
    /// As headers of the Refer-To URI (RFC 3261 19.1.1).
    #[default]
    Uri,
    /// As headers on the REFER request.
    Request,
    /// Both.
    Both,
}

impl ReferContext {
    /// Whether this is the default, `uri`.
    pub fn is_uri(&self) -> bool {
        *self == ReferContext::Uri
    }

    /// Whether the Refer-To URI carries the context.
    pub fn in_uri(self) -> bool {
        self != ReferContext::Request
    }

    /// Whether the REFER request carries the context.
    pub fn in_request(self) -> bool {
        self != ReferContext::Uri
    }
}

/// How a call is handed to a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// SIP REFER: the trunk places the call to the queue.
    #[default]
    Refer,
    /// callflow places the call to the queue (B2BUA) and relays the audio
    /// both ways, for trunks and ACDs that do not take REFER.
    Bridge,
    /// REFER first; when the trunk refuses it or the transfer fails,
    /// bridge.
    ReferThenBridge,
}

impl Handoff {
    /// Whether this is the default, REFER.
    pub fn is_refer(&self) -> bool {
        *self == Handoff::Refer
    }

    /// The name written in flows and call records.
    pub fn as_str(self) -> &'static str {
        match self {
            Handoff::Refer => "refer",
            Handoff::Bridge => "bridge",
            Handoff::ReferThenBridge => "refer_then_bridge",
        }
    }
}

/// Weekly opening hours in a time zone, with holidays and special days.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// An IANA time zone name, e.g. `Europe/Riga`.
    pub timezone: String,
    /// Opening hours by day: keys are days (`mon`), ranges (`mon-fri`) or
    /// lists (`sat,sun`); values are `HH:MM-HH:MM` ranges separated by
    /// commas, or `closed`. A range that ends before it starts runs past
    /// midnight.
    #[serde(default)]
    pub open: IndexMap<String, String>,
    /// Dates (`YYYY-MM-DD`) when it is closed all day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed_dates: Vec<String>,
    /// Dates with other hours than usual, e.g. `2026-12-24: "08:00-12:00"`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub special_dates: IndexMap<String, String>,
}

/// One node: exactly one kind (`play`, `menu`, ...) plus its successors.
///
/// Settings go inside the kind's block; the successors `next`, `on_fail`,
/// `on_accept`, `on_decline` and `default` are written beside it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDef {
    /// Play one or more prompts, then go to `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play: Option<PromptList>,
    /// For `play`: whether a key press stops the prompt (default true). The
    /// key is kept as input for the next menu or collect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_in: Option<bool>,
    /// Offer options by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu: Option<MenuDef>,
    /// Collect digits into a variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<CollectDef>,
    /// Ordered conditions; the first that holds decides, else `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<Vec<CaseDef>>,
    /// Assign variables (values are templates), then go to `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<IndexMap<String, String>>,
    /// Continue in another flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goto: Option<GotoDef>,
    /// Hand the call to a queue or SIP URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferDef>,
    /// Offer a callback instead of waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackDef>,
    /// End the call, optionally after a goodbye prompt. `hangup:` with no
    /// value is a plain hangup.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub hangup: Option<HangupDef>,
    /// The node that follows (`play`, `collect`, `set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Where to go when the step fails (`menu` and `collect` out of tries,
    /// `transfer` refused, `callback` not recorded). Defaults to the flow's
    /// agent node where one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<String>,
    /// For `callback`: after the request is recorded and confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_accept: Option<String>,
    /// For `callback`: when the caller does not want one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_decline: Option<String>,
    /// For `switch`: where to go when no condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Free text for people reading the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A menu: a prompt, then one key picks the next node.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuDef {
    /// What the caller hears (always interruptible by a key).
    pub prompt: PromptList,
    /// Key (0-9, *, #) to node.
    pub options: IndexMap<String, String>,
    /// How long to wait for a key after the prompt (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<FlowDuration>,
    /// Tries after the first before `on_fail` (default 2, so 3 tries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Played before the menu again after a key that is not an option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<PromptList>,
    /// Played before the menu again when no key came in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_input: Option<PromptList>,
}

/// Digit collection into a variable.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectDef {
    /// What the caller hears (always interruptible by a key).
    pub prompt: PromptList,
    /// The variable that receives the digits.
    pub into: String,
    /// Fewest digits accepted (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// Most digits; collection ends when reached (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// The key that ends the entry (default `#`; `none` for no terminator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminator: Option<String>,
    /// How long to wait for the first digit after the prompt (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_digit_timeout: Option<FlowDuration>,
    /// How long to wait between digits (default 3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_digit_timeout: Option<FlowDuration>,
    /// Tries after the first before `on_fail` (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// A regular expression the whole entry must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Played before the prompt again after an entry that is too short or
    /// does not match the pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<PromptList>,
    /// Played before the prompt again when no digit came in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_input: Option<PromptList>,
}

/// One branch of a `switch`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseDef {
    /// The condition.
    pub when: ConditionDef,
    /// The node to go to when it holds.
    pub goto: String,
}

/// A condition. Write exactly one of: `open`, `var` with one test,
/// `caller_in`, `long_wait`, `not`, `all`, `any`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionDef {
    /// True while the named schedule is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// The variable to test; `caller` (ANI) and `called` (DNIS) are built in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub var: Option<String>,
    /// Test: the variable equals this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Test: the variable differs from this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<String>,
    /// Test: the variable starts with this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_with: Option<String>,
    /// Test: the variable is a number greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Test: the variable is a number greater than or equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<f64>,
    /// Test: the variable is a number less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Test: the variable is a number less than or equal to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<f64>,
    /// Test: the variable, as a phone number, is in the named list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_list: Option<String>,
    /// Shorthand for `var: caller, in_list: NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_in: Option<String>,
    /// True when the named queue's estimated wait (the variable
    /// `wait_QUEUE`, seconds) is longer than the queue's
    /// `callback_offer_after`, which must be set. An unknown wait is not a
    /// long one: the condition is then false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_wait: Option<String>,
    /// True when the inner condition is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<ConditionDef>>,
    /// True when every inner condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<ConditionDef>>,
    /// True when at least one inner condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<ConditionDef>>,
}

/// A jump into another flow.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GotoDef {
    /// The other flow's name.
    pub flow: String,
    /// The node in that flow (default: its start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A transfer to the ACD (SIP REFER).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferDef {
    /// A queue from the flow's `queues`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A literal SIP URI instead of a queue. Templates are allowed only in
    /// the user part and only with `allow_digits_in_user: true`; the value
    /// must then be digits, so callers cannot steer calls to any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Allows `${var}` in the URI's user part, filled with digits only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_digits_in_user: bool,
    /// Overrides the queue's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Context passed to the agent (values are templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub context: IndexMap<String, String>,
    /// Played (and repeated) while the transfer is in progress, so the
    /// caller never hears dead air.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<PromptList>,
}

/// A callback offer for a queue.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackDef {
    /// The queue whose agent will call back.
    pub queue: String,
    /// The offer: "press 1 for a callback, 2 to keep waiting".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<PromptList>,
    /// Read back the caller's number and ask to confirm it (1) or enter
    /// another (2). Without it, the caller's own number is used.
    #[serde(default = "yes")]
    pub confirm_number: bool,
    /// Before the offer, tell the caller the queue's estimated wait from
    /// the variable `wait_QUEUE` (seconds): "The current wait is about six
    /// minutes", rounded up; under a minute and over an hour are said as
    /// such. When the variable is missing or not a number the offer plays
    /// without it. Needs the prompts `wait-is-about`,
    /// `wait-under-a-minute`, `wait-over-an-hour`, `minute`, `minutes`,
    /// `num-1` .. `num-19` and `num-20` .. `num-60` (by tens).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub say_wait: bool,
    /// Fewest digits of another number (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_digits: Option<u32>,
    /// Most digits of another number (default 15, the E.164 maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_digits: Option<u32>,
    /// How long to wait for a key (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<FlowDuration>,
    /// Tries after the first for each question (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

fn yes() -> bool {
    true
}

/// An explicit `hangup:` (null) means a hangup without prompt, not "absent":
/// `default` covers absence, so reaching this means the key was written.
fn null_as_default<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HangupDef>, D::Error> {
    Ok(Some(
        Option::<HangupDef>::deserialize(d)?.unwrap_or_default(),
    ))
}

/// A hangup, optionally after a goodbye prompt (heard whole).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HangupDef {
    /// The goodbye prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptList>,
}

/// Prompt names (files `prompts/NAME.wav`): one name or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptList(pub Vec<String>);

impl<'de> Deserialize<'de> for PromptList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PromptList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prompt name or a list of prompt names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PromptList, E> {
                Ok(PromptList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptList, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(PromptList(names))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl JsonSchema for PromptList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PromptList".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A prompt name (file prompts/NAME.wav) or a list of them",
            "oneOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}
