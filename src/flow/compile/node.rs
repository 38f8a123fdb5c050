//! Compiles one node by its kind, checking its settings and successors.

use std::sync::Arc;

use regex::Regex;

use super::condition::compile_condition;
use super::*;
use crate::flow::speak;

pub(super) fn compile_node(cx: &mut Ctx<'_>, path: &str, name: &str, node: &NodeDef) -> NodeKind {
    let present: Vec<&str> = [
        ("play", node.play.is_some()),
        ("menu", node.menu.is_some()),
        ("collect", node.collect.is_some()),
        ("switch", node.switch.is_some()),
        ("set", node.set.is_some()),
        ("goto", node.goto.is_some()),
        ("transfer", node.transfer.is_some()),
        ("callback", node.callback.is_some()),
        ("hangup", node.hangup.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.then_some(k))
    .collect();
    let hangup_default = || NodeKind::Hangup {
        prompts: seq(Vec::new()),
    };
    let kind = match present.as_slice() {
        [] => {
            cx.error_at_key(
                path,
                format!("node `{name}` has no kind; write one of {KINDS}"),
            );
            return hangup_default();
        }
        [one] => *one,
        [first, second, ..] => {
            cx.error_at_key(
                &join(path, second),
                format!("node `{name}` has both `{first}` and `{second}`; a node does one thing, so split it in two"),
            );
            *first
        }
    };

    // Successor fields each kind uses; any other is a mistake worth naming.
    let allowed: &[&str] = match kind {
        "play" => &["next", "barge_in"],
        "menu" => &["on_fail"],
        "collect" => &["next", "on_fail"],
        "switch" => &["default"],
        "set" => &["next"],
        "goto" => &[],
        "transfer" => &["on_fail"],
        "callback" => &["on_accept", "on_decline", "on_fail"],
        _ => &[],
    };
    for (field, set) in [
        ("next", node.next.is_some()),
        ("on_fail", node.on_fail.is_some()),
        ("on_accept", node.on_accept.is_some()),
        ("on_decline", node.on_decline.is_some()),
        ("default", node.default.is_some()),
        ("barge_in", node.barge_in.is_some()),
    ] {
        if set && !allowed.contains(&field) {
            cx.error_at_key(
                &join(path, field),
                format!("`{field}` is not used by a {kind} node"),
            );
        }
    }

    let agent_fallback = cx.agent.map(|(_, r)| r);
    let fail_why = "where to go when this step fails (the flow has no `agent` to fall back to)";
    match kind {
        "play" => {
            let prompts = node
                .play
                .as_ref()
                .map(|p| cx.prompt_seq(&join(path, "play"), p))
                .unwrap_or_default();
            let next = cx.successor(path, "next", &node.next, None, "the node that follows");
            NodeKind::Play {
                prompts: seq(prompts),
                barge_in: node.barge_in.unwrap_or(true),
                next,
            }
        }
        "menu" => {
            let Some(m) = &node.menu else {
                return hangup_default();
            };
            let mp = join(path, "menu");
            let prompt = cx.prompt_seq(&join(&mp, "prompt"), &m.prompt);
            let invalid = cx.opt_prompts(&join(&mp, "invalid"), &m.invalid);
            let no_input = cx.opt_prompts(&join(&mp, "no_input"), &m.no_input);
            let mut options = Vec::new();
            if m.options.is_empty() {
                cx.error(&join(&mp, "options"), "a menu needs at least one option");
            }
            for (key, target) in &m.options {
                let op = join(&join(&mp, "options"), key);
                let Some(k) = cx.key(&op, key, "menu key") else {
                    continue;
                };
                if let Some((agent_key, _)) = cx.agent.filter(|(k, _)| *k != '\0') {
                    if agent_key == k {
                        cx.error_at_key(
                            &op,
                            format!("key `{k}` is the flow's agent key; it always leads to the agent, so pick another key for this option"),
                        );
                    }
                }
                if options.iter().any(|(o, _)| *o == k) {
                    cx.error_at_key(&op, format!("key `{k}` is used twice in this menu"));
                }
                let t = cx.target(&op, target);
                options.push((k, t));
            }
            let timeout = cx.duration(&join(&mp, "timeout"), m.timeout, DEFAULT_TIMEOUT);
            let retries = cx.retries(&join(&mp, "retries"), m.retries);
            let on_fail = cx.successor(path, "on_fail", &node.on_fail, agent_fallback, fail_why);
            let prompt_seq = seq(prompt.clone());
            NodeKind::Menu(Menu {
                reprompt_invalid: concat(&invalid, &prompt),
                reprompt_no_input: concat(&no_input, &prompt),
                prompt: prompt_seq,
                options,
                timeout,
                retries,
                on_fail,
            })
        }
        "collect" => {
            let Some(c) = &node.collect else {
                return hangup_default();
            };
            let cp = join(path, "collect");
            let prompt = cx.prompt_seq(&join(&cp, "prompt"), &c.prompt);
            let invalid = cx.opt_prompts(&join(&cp, "invalid"), &c.invalid);
            let no_input = cx.opt_prompts(&join(&cp, "no_input"), &c.no_input);
            if !is_var_name(&c.into) {
                cx.error(
                    &join(&cp, "into"),
                    format!(
                        "`{}` is not a variable name; use letters, digits and _",
                        c.into
                    ),
                );
            }
            let min = c.min.unwrap_or(1);
            let max = c.max.unwrap_or(20);
            if min == 0 {
                cx.error(&join(&cp, "min"), "`min` must be at least 1");
            }
            if max > MAX_DIGITS {
                cx.error(
                    &join(&cp, "max"),
                    format!("`max` must be at most {MAX_DIGITS}"),
                );
            }
            if max < min {
                cx.error(
                    &join(&cp, "max"),
                    format!("`max` ({max}) is less than `min` ({min})"),
                );
            }
            let terminator = match c.terminator.as_deref() {
                None => Some('#'),
                Some("none") => None,
                Some(t) => cx.key(&join(&cp, "terminator"), t, "terminator key"),
            };
            let pattern =
                c.pattern
                    .as_ref()
                    .and_then(|p| match Regex::new(&format!("^(?:{p})$")) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            let msg = format!(
                                "`{p}` is not a valid pattern: {}",
                                first_line(&e.to_string())
                            );
                            cx.error(&join(&cp, "pattern"), msg);
                            None
                        }
                    });
            let first_digit_timeout = cx.duration(
                &join(&cp, "first_digit_timeout"),
                c.first_digit_timeout,
                DEFAULT_TIMEOUT,
            );
            let inter_digit_timeout = cx.duration(
                &join(&cp, "inter_digit_timeout"),
                c.inter_digit_timeout,
                DEFAULT_INTER_DIGIT,
            );
            let retries = cx.retries(&join(&cp, "retries"), c.retries);
            let next = cx.successor(
                path,
                "next",
                &node.next,
                None,
                "the node that follows a good entry",
            );
            let on_fail = cx.successor(path, "on_fail", &node.on_fail, agent_fallback, fail_why);
            NodeKind::Collect(Collect {
                reprompt_invalid: concat(&invalid, &prompt),
                reprompt_no_input: concat(&no_input, &prompt),
                prompt: seq(prompt),
                into: c.into.clone(),
                min,
                max,
                terminator,
                first_digit_timeout,
                inter_digit_timeout,
                retries,
                pattern,
                next,
                on_fail,
            })
        }
        "switch" => {
            let sp = join(path, "switch");
            let mut cases = Vec::new();
            let defs = node.switch.as_deref().unwrap_or_default();
            if defs.is_empty() {
                cx.error(&sp, "a switch needs at least one `when` case");
            }
            for (i, case) in defs.iter().enumerate() {
                let cp = join(&sp, &i.to_string());
                let cond = compile_condition(cx, &join(&cp, "when"), &case.when);
                let target = cx.target(&join(&cp, "goto"), &case.goto);
                cases.push((cond, target));
            }
            let default = cx.successor(
                path,
                "default",
                &node.default,
                None,
                "where to go when no case holds",
            );
            NodeKind::Switch { cases, default }
        }
        "set" => {
            let sp = join(path, "set");
            let mut assignments = Vec::new();
            for (var, value) in node.set.iter().flatten() {
                let vp = join(&sp, var);
                if !is_var_name(var) {
                    cx.error_at_key(
                        &vp,
                        format!("`{var}` is not a variable name; use letters, digits and _"),
                    );
                }
                let t = cx.template(&vp, value);
                assignments.push((var.clone(), t));
            }
            if assignments.is_empty() {
                cx.error(&sp, "`set` needs at least one variable");
            }
            let next = cx.successor(path, "next", &node.next, None, "the node that follows");
            NodeKind::Set { assignments, next }
        }
        "goto" => {
            let Some(g) = &node.goto else {
                return hangup_default();
            };
            let gp = join(path, "goto");
            let target = match cx.names.flows.get(&g.flow) {
                None => {
                    cx.error(
                        &join(&gp, "flow"),
                        format!("`{}` is not a loaded flow", g.flow),
                    );
                    cx.placeholder()
                }
                Some(&f) => match &g.node {
                    None => NodeRef {
                        flow: f,
                        node: u32::MAX,
                    },
                    Some(n) => match cx.names.nodes[f as usize].get(n) {
                        Some(&node) => NodeRef { flow: f, node },
                        None => {
                            cx.error(
                                &join(&gp, "node"),
                                format!("`{n}` is not a node of flow `{}`", g.flow),
                            );
                            cx.placeholder()
                        }
                    },
                },
            };
            NodeKind::Goto { target }
        }
        "transfer" => {
            let Some(t) = &node.transfer else {
                return hangup_default();
            };
            compile_transfer(cx, path, name, node, t)
        }
        "callback" => {
            let Some(c) = &node.callback else {
                return hangup_default();
            };
            compile_callback(cx, path, node, c)
        }
        _ => {
            let prompts = node
                .hangup
                .as_ref()
                .map(|h| cx.opt_prompts(&join(&join(path, "hangup"), "prompt"), &h.prompt))
                .unwrap_or_default();
            NodeKind::Hangup {
                prompts: seq(prompts),
            }
        }
    }
}

/// The regex crate's errors span several lines with a caret diagram; the
/// last line says what is wrong.
fn first_line(s: &str) -> &str {
    let last = s.lines().last().unwrap_or(s).trim();
    last.strip_prefix("error: ").unwrap_or(last)
}

fn compile_transfer(
    cx: &mut Ctx<'_>,
    path: &str,
    name: &str,
    node: &NodeDef,
    t: &TransferDef,
) -> NodeKind {
    let tp = join(path, "transfer");
    let target = match (&t.queue, &t.uri) {
        (Some(q), None) => TransferTarget::Queue(cx.queue(&join(&tp, "queue"), q)),
        (None, Some(uri)) => {
            let up = join(&tp, "uri");
            let after_user = uri.split_once('@').map_or(uri.as_str(), |(_, host)| host);
            if after_user.contains("${") {
                cx.error(&up, format!("`{uri}`: only the user part of a transfer URI may use a template; write the host out, so callers cannot send calls anywhere"));
                return NodeKind::Hangup {
                    prompts: Arc::from(Vec::new()),
                };
            }
            match split_sip_uri(uri) {
                Err(msg) => {
                    cx.error(&up, msg);
                    TransferTarget::Queue(0)
                }
                Ok((scheme, user, rest)) => {
                    if rest.contains("${") {
                        cx.error(&up, format!("`{uri}`: only the user part of a transfer URI may use a template; the host must be written out, so callers cannot send calls anywhere"));
                    }
                    let user_t = cx.template(&up, user);
                    if !user_t.is_literal() && !t.allow_digits_in_user {
                        cx.error(&up, format!("`{uri}` takes its user part from variables; add `allow_digits_in_user: true` to allow it (only digits will be accepted at run time)"));
                    }
                    TransferTarget::Uri {
                        scheme: scheme.to_string(),
                        user: user_t,
                        rest: rest.to_string(),
                    }
                }
            }
        }
        (Some(_), Some(_)) => {
            cx.error_at_key(
                &join(&tp, "uri"),
                "a transfer goes to a `queue` or a `uri`, not both",
            );
            TransferTarget::Queue(0)
        }
        (None, None) => {
            cx.error(
                &tp,
                "a transfer needs a `queue` (from the flow's queues) or a `uri`",
            );
            TransferTarget::Queue(0)
        }
    };
    let mut context = Vec::new();
    for (key, value) in &t.context {
        let kp = join(&join(&tp, "context"), key);
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            cx.error_at_key(
                &kp,
                format!(
                    "`{key}` cannot be sent as a SIP header name; use letters, digits, - and _"
                ),
            );
        }
        let v = cx.template(&kp, value);
        context.push((key.clone(), v));
    }
    let hold = cx.opt_prompts(&join(&tp, "hold"), &t.hold);
    let is_agent = cx.agent_name.as_deref() == Some(name);
    let fallback = if is_agent {
        None
    } else {
        cx.agent.map(|(_, r)| r)
    };
    let why = if is_agent {
        "this is the flow's agent node, so it cannot fall back to itself; name where callers go when no agent can be reached (e.g. a callback offer)"
    } else {
        "where to go when the transfer fails (the flow has no `agent` to fall back to)"
    };
    let on_fail = cx.successor(path, "on_fail", &node.on_fail, fallback, why);
    NodeKind::Transfer(Transfer {
        target,
        priority: t.priority,
        context,
        hold: seq(hold),
        on_fail,
    })
}

fn compile_callback(cx: &mut Ctx<'_>, path: &str, node: &NodeDef, c: &CallbackDef) -> NodeKind {
    let cp = join(path, "callback");
    let queue = cx.queue(&join(&cp, "queue"), &c.queue);
    let default_list = |name: &str| Some(PromptList(vec![name.to_string()]));
    let offer_list = c.offer.clone().or_else(|| default_list("callback-offer"));
    let offer = cx.opt_prompts(&join(&cp, "offer"), &offer_list);
    let named = |cx: &mut Ctx<'_>, name: &str| {
        let id = cx.builtin_prompt(&cp, name);
        seq(vec![id])
    };
    let confirm = named(cx, "callback-confirm");
    let enter_number = named(cx, "callback-enter-number");
    let confirmed = named(cx, "callback-confirmed");
    let failed = named(cx, "callback-failed");
    let already_booked = named(cx, "callback-already-booked");
    let refused = named(cx, "callback-number-refused");
    let number_is = cx.builtin_prompt(&cp, "callback-number-is");
    let mut digits = [PromptId(0); 10];
    for (d, slot) in digits.iter_mut().enumerate() {
        *slot = cx.builtin_prompt(&cp, &format!("digit-{d}"));
    }
    let say_wait = c
        .say_wait
        .then(|| wait_sentence(cx, &join(&cp, "say_wait"), &c.queue));
    let min_digits = c.min_digits.unwrap_or(6);
    let max_digits = c.max_digits.unwrap_or(15);
    if min_digits == 0 || max_digits < min_digits || max_digits > 20 {
        cx.error(&join(&cp, "max_digits"), format!("the number length {min_digits}..{max_digits} is not usable; use 1 <= min_digits <= max_digits <= 20"));
    }
    let timeout = cx.duration(&join(&cp, "timeout"), c.timeout, DEFAULT_TIMEOUT);
    let retries = cx.retries(&join(&cp, "retries"), c.retries);
    let agent = cx.agent.map(|(_, r)| r);
    let on_accept = cx.successor(
        path,
        "on_accept",
        &node.on_accept,
        None,
        "where to go once the callback is booked (e.g. a goodbye)",
    );
    let on_decline = cx.successor(
        path,
        "on_decline",
        &node.on_decline,
        agent,
        "where to go when the caller declines (the flow has no `agent` to fall back to)",
    );
    let on_fail = match &node.on_fail {
        Some(n) => cx.target(&join(path, "on_fail"), n),
        None => on_decline,
    };
    NodeKind::Callback(Callback {
        queue,
        confirm_number: c.confirm_number,
        say_wait,
        min_digits,
        max_digits,
        timeout,
        retries,
        prompts: CallbackPrompts {
            offer: seq(offer),
            number_is,
            confirm,
            enter_number,
            confirmed,
            failed,
            already_booked,
            refused,
            digits,
        },
        on_accept,
        on_decline,
        on_fail,
    })
}

/// Resolves every piece the wait sentence may use. Which pieces a call needs
/// depends on the wait at run time, so all of them must have files now; the
/// missing ones are reported together, as one fix (add the recordings).
fn wait_sentence(cx: &mut Ctx<'_>, path: &str, queue: &str) -> WaitSentence {
    let mut pieces = HashMap::new();
    let mut missing = Vec::new();
    for name in speak::wait_pieces() {
        match cx.prompts.intern(name) {
            Ok(id) => {
                pieces.insert(name, id);
            }
            Err(msg) => missing.push((name, msg)),
        }
    }
    match missing.as_slice() {
        [] => {}
        [(_, msg)] => cx.error(path, format!("{msg} (`say_wait` needs it)")),
        [(_, first), ..] => {
            let names: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
            cx.error(
                path,
                format!(
                    "`say_wait` needs {} prompts that cannot be played: {} (the first: {first})",
                    names.len(),
                    names.join(", ")
                ),
            );
        }
    }
    WaitSentence {
        var: format!("wait_{queue}"),
        pieces,
    }
}
