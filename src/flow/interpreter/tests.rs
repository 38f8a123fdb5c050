//! The interpreter driven through every node kind on a fake clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::flow::{load_sources, FlowSet, LoadOptions};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Loads flows from YAML texts (as if they were files in `flows/`).
fn load(texts: &[&str]) -> (Arc<FlowSet>, Vec<String>) {
    let sources: Vec<(PathBuf, String)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (repo(&format!("flows/test{i}.yaml")), t.to_string()))
        .collect();
    let loaded = load_sources(
        &sources,
        &LoadOptions {
            prompts_dir: repo("prompts"),
        },
    );
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    (Arc::new(loaded.set.unwrap()), errors)
}

fn load_ok(texts: &[&str]) -> Arc<FlowSet> {
    let (set, errors) = load(texts);
    assert!(errors.is_empty(), "{errors:#?}");
    set
}

/// A call on a fake clock that records what the interpreter asked for.
struct Call {
    interp: Interpreter,
    set: Arc<FlowSet>,
    now: Instant,
    log: Vec<Action>,
    playing: Option<PlaybackId>,
    timer: Option<(TimerId, Instant)>,
}

/// Wednesday 2026-11-25 10:00 in Riga (08:00 UTC): the office is open.
fn office_hours() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap()
}

impl Call {
    fn start(set: &Arc<FlowSet>, caller: &str, at: DateTime<Utc>) -> Self {
        Self::start_with(set, caller, at, &[])
    }

    /// A call with variables from the server (e.g. `wait_general`).
    fn start_with(
        set: &Arc<FlowSet>,
        caller: &str,
        at: DateTime<Utc>,
        vars: &[(&str, &str)],
    ) -> Self {
        let mut call = Self::unstarted(set, caller, at, vars);
        call.feed(Event::Start);
        call
    }

    /// A call whose flow has not started yet (no ACK so far).
    fn unstarted(
        set: &Arc<FlowSet>,
        caller: &str,
        at: DateTime<Utc>,
        vars: &[(&str, &str)],
    ) -> Self {
        #[allow(clippy::disallowed_methods)] // a fake clock needs a base
        let now = Instant::now();
        let entry = NodeRef {
            flow: 0,
            node: set.flow(0).start,
        };
        let interp = Interpreter::new(
            Arc::clone(set),
            entry,
            CallInfo {
                caller: caller.into(),
                called: "8000".into(),
                call_id: "test-call".into(),
                started: now,
                started_wall: at,
                dialling: Default::default(),
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        Self {
            interp,
            set: Arc::clone(set),
            now,
            log: Vec::new(),
            playing: None,
            timer: None,
        }
    }

    /// A call whose caller pressed `keys` before the flow started (their
    /// RTP overtook the ACK).
    fn start_after_keys(set: &Arc<FlowSet>, keys: &str, at: DateTime<Utc>) -> Self {
        let mut call = Self::unstarted(set, "+37120000001", at, &[]);
        call.press(keys);
        call.feed(Event::Start);
        call
    }

    fn feed(&mut self, event: Event) {
        let mut out = Vec::new();
        self.interp.handle(self.now, event, &mut out);
        for a in &out {
            match a {
                Action::Play { id, .. } => self.playing = Some(*id),
                Action::StopPlayback => self.playing = None,
                Action::SetTimer { id, at } => self.timer = Some((*id, *at)),
                Action::CancelTimer(id) if self.timer.map(|t| t.0) == Some(*id) => {
                    self.timer = None
                }
                _ => {}
            }
        }
        self.log.extend(out);
    }

    fn press(&mut self, keys: &str) {
        for k in keys.chars() {
            self.feed(Event::Digit(k));
        }
    }

    fn prompt_ends(&mut self) {
        let id = self.playing.take().expect("a prompt is playing");
        self.feed(Event::PromptFinished(id));
    }

    /// Advances the clock to the pending timer and fires it.
    fn timeout(&mut self) -> Duration {
        let (id, at) = self.timer.take().expect("a timer is set");
        let waited = at - self.now;
        self.now = at;
        self.feed(Event::Timer(id));
        waited
    }

    fn node(&self) -> &str {
        &self.set.node(self.interp.current()).name
    }

    /// Prompt names of every Play so far, each playback joined with `+`.
    fn played(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Play { prompts, .. } => Some(
                    prompts
                        .iter()
                        .map(|p| self.set.prompt_name(*p))
                        .collect::<Vec<_>>()
                        .join("+"),
                ),
                _ => None,
            })
            .collect()
    }

    fn transfers(&self) -> Vec<&TransferRequest> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Transfer(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn outcome(&self) -> Option<&Outcome> {
        self.interp.outcome()
    }
}

const MENU_FLOW: &str = r#"
flow: t
start: hello
agent_key: "0"
agent: agent
queues: { general: { uri: "sip:general@acd.example.net", priority: 3 } }
nodes:
  hello: { play: welcome, next: menu }
  menu:
    menu: { prompt: main-menu, options: { "1": one, "2": two }, timeout: 4s, retries: 2,
            invalid: invalid-choice, no_input: no-input }
    on_fail: bye
  one: { play: connecting, barge_in: false, next: bye }
  two:
    collect: { prompt: enter-account, into: account, min: 3, max: 5, pattern: "[1-9][0-9]*",
               invalid: invalid-account, no_input: no-input, inter_digit_timeout: 2s }
    next: done
    on_fail: bye
  done: { transfer: { queue: general, context: { account: "${account}", path: "${path}" } }, on_fail: bye }
  agent: { transfer: { queue: general }, on_fail: bye }
  bye: { hangup: { prompt: goodbye } }
"#;

#[test]
fn play_then_menu_key_goes_to_option() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    assert_eq!(call.played(), ["welcome"]);
    call.prompt_ends();
    assert_eq!(call.node(), "menu");
    call.prompt_ends();
    assert!(
        call.timer.is_some(),
        "menu waits for a key after its prompt"
    );
    call.press("1");
    assert_eq!(call.node(), "one");
    assert_eq!(call.played().last().unwrap(), "connecting");
}

#[test]
fn barge_in_stops_prompt_and_key_is_kept_for_the_menu() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("1");
    assert!(call.log.contains(&Action::StopPlayback));
    assert_eq!(
        call.node(),
        "one",
        "the key typed during welcome chose option 1"
    );
    assert_eq!(
        call.played(),
        ["welcome", "connecting"],
        "the menu prompt was skipped"
    );
}

#[test]
fn keys_are_ignored_while_a_prompt_without_barge_in_plays() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("1");
    call.press("2");
    assert_eq!(call.node(), "one");
    call.prompt_ends();
    assert_eq!(call.node(), "bye");
}

#[test]
fn invalid_key_and_no_input_reprompt_then_fail_branch() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.prompt_ends();
    call.press("7");
    assert_eq!(call.played().last().unwrap(), "invalid-choice+main-menu");
    call.prompt_ends();
    assert_eq!(call.timeout(), Duration::from_secs(4));
    assert_eq!(call.played().last().unwrap(), "no-input+main-menu");
    call.prompt_ends();
    call.timeout();
    assert_eq!(call.node(), "bye", "three tries (retries: 2) then on_fail");
    call.prompt_ends();
    assert!(call.log.contains(&Action::Hangup));
    assert_eq!(
        call.outcome(),
        Some(&Outcome::Completed {
            node: "t.bye".into()
        })
    );
}

#[test]
fn a_key_pressed_before_the_flow_starts_reaches_the_first_menu() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start_after_keys(&set, "0", office_hours());
    if call.playing.is_some() {
        call.prompt_ends();
    }
    assert_eq!(call.node(), "agent", "the early agent key is kept");
}

#[test]
fn agent_key_works_from_menu_and_as_first_key_of_collect() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.press("0");
    assert_eq!(call.node(), "agent");
    assert_eq!(call.transfers()[0].uri, "sip:general@acd.example.net");

    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.press("2");
    assert_eq!(call.node(), "two");
    call.press("0");
    assert_eq!(call.node(), "agent", "0 as the first key of a collect");

    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.press("2");
    call.press("105#");
    assert_eq!(call.node(), "done", "0 inside an entry is a digit");
    assert_eq!(call.interp.var("account"), Some("105"));
}

#[test]
fn collect_ends_on_terminator_max_length_or_inter_digit_timeout() {
    let set = load_ok(&[MENU_FLOW]);
    let enter = |keys: &str| {
        let mut call = Call::start(&set, "+37120000001", office_hours());
        call.prompt_ends();
        call.press("2");
        call.press(keys);
        call
    };
    let call = enter("123#");
    assert_eq!(call.interp.var("account"), Some("123"));
    let call = enter("12345");
    assert_eq!(call.node(), "done", "max length ends the entry");
    let t = &call.transfers()[0];
    assert_eq!(t.context[0], ("account".into(), "12345".into()));
    assert_eq!(t.context[1], ("path".into(), "hello>menu>two>done".into()));
    assert_eq!(t.priority, Some(3));
    let mut call = enter("1234");
    assert_eq!(call.timeout(), Duration::from_secs(2));
    assert_eq!(call.interp.var("account"), Some("1234"));
}

#[test]
fn collect_rejects_short_or_mismatching_entries_then_fails() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.press("2");
    call.press("12#");
    assert_eq!(
        call.played().last().unwrap(),
        "invalid-account+enter-account"
    );
    call.press("0123#");
    assert_eq!(
        call.node(),
        "agent",
        "0 first is the agent key even on a retry"
    );

    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.press("2");
    call.prompt_ends();
    call.timeout();
    assert_eq!(call.played().last().unwrap(), "no-input+enter-account");
    call.press("99*");
    call.press("1#");
    assert_eq!(call.node(), "bye", "three bad tries then on_fail");
}

#[test]
fn transfer_success_ends_the_call_and_failure_takes_on_fail() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("0");
    call.feed(Event::TransferSucceeded);
    assert_eq!(
        call.outcome(),
        Some(&Outcome::Transferred {
            target: "general".into()
        })
    );

    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("0");
    call.feed(Event::TransferFailed("486 Busy Here".into()));
    assert_eq!(call.node(), "bye");
}

#[test]
fn caller_hanging_up_mid_prompt_records_the_node() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.prompt_ends();
    call.feed(Event::HungUp);
    assert_eq!(
        call.outcome(),
        Some(&Outcome::CallerHungUp {
            node: "t.menu".into()
        })
    );
    let before = call.log.len();
    call.press("1");
    assert_eq!(call.log.len(), before, "nothing happens after the end");
}

#[test]
fn stale_timers_and_playbacks_are_ignored() {
    let set = load_ok(&[MENU_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    let welcome = call.playing.unwrap();
    call.prompt_ends();
    call.prompt_ends();
    let (old_timer, _) = call.timer.unwrap();
    call.press("7"); // reprompt: a new playback, the old timer is cancelled
    call.feed(Event::Timer(old_timer));
    call.feed(Event::PromptFinished(welcome));
    assert_eq!(call.node(), "menu");
    assert!(call.timer.is_none(), "no timer until the reprompt ends");
}

const TOLL_FLOW: &str = r#"
flow: t
start: ext
nodes:
  ext:
    collect: { prompt: enter-account, into: ext, min: 1, max: 6 }
    next: dial
    on_fail: bye
  dial:
    transfer: { uri: "sip:${ext}@pbx.example.net", allow_digits_in_user: true }
    on_fail: bye
  bye: { hangup: {} }
"#;

#[test]
fn caller_digits_fill_only_the_user_part_of_a_transfer() {
    let set = load_ok(&[TOLL_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("204#");
    assert_eq!(call.transfers()[0].uri, "sip:204@pbx.example.net");
    assert_eq!(call.transfers()[0].queue, None);
}

#[test]
fn a_transfer_user_part_that_is_not_digits_is_refused() {
    let yaml = TOLL_FLOW
        .replace(
            "  ext:\n",
            "  pre: { set: { ext: \"1@evil.example.com;x=\" }, next: dial }\n  ext:\n",
        )
        .replace("start: ext", "start: pre");
    let (set, _) = load(&[&yaml]);
    let call = Call::start(&set, "+37120000001", office_hours());
    assert!(call.transfers().is_empty());
    assert_eq!(call.node(), "bye");
    assert!(matches!(call.outcome(), Some(Outcome::Completed { .. })));
}

const SWITCH_FLOW: &str = r#"
flow: t
start: s
lists: { vip: vip.csv }
schedules:
  office:
    timezone: Europe/Riga
    open: { mon-fri: "08:00-20:00" }
    closed_dates: [2026-12-25]
vars: { level: "7", code: "AB12" }
nodes:
  s:
    switch:
      - { when: { not: { open: office } }, goto: closed }
      - { when: { caller_in: vip }, goto: vip }
      - { when: { all: [ { var: level, gt: 5 }, { var: code, starts_with: AB } ] }, goto: high }
    default: normal
  closed: { hangup: {} }
  vip: { hangup: {} }
  high: { hangup: {} }
  normal: { hangup: {} }
"#;

fn switch_result(caller: &str, at: DateTime<Utc>) -> String {
    let set = load_ok(&[SWITCH_FLOW]);
    let call = Call::start(&set, caller, at);
    call.node().to_string()
}

#[test]
fn switch_on_schedule_across_a_time_zone_boundary_and_a_holiday() {
    // 17:59 UTC is 19:59 in Riga (open); 18:00 UTC is 20:00 (closed).
    let open = Utc.with_ymd_and_hms(2026, 11, 25, 17, 59, 0).unwrap();
    let closed = Utc.with_ymd_and_hms(2026, 11, 25, 18, 0, 0).unwrap();
    assert_eq!(switch_result("+37120000001", open), "high");
    assert_eq!(switch_result("+37120000001", closed), "closed");
    // 06:30 UTC is 08:30 in Riga on a Friday, but it is Christmas.
    let christmas = Utc.with_ymd_and_hms(2026, 12, 25, 6, 30, 0).unwrap();
    assert_eq!(switch_result("+37120000001", christmas), "closed");
}

#[test]
fn switch_recognises_vip_callers_in_any_notation() {
    assert_eq!(switch_result("+371 2000 0000", office_hours()), "vip");
    assert_eq!(
        switch_result("sip:0037120000000@trunk", office_hours()),
        "vip"
    );
    assert_eq!(switch_result("+37120000001", office_hours()), "high");
}

#[test]
fn set_renders_templates_and_goto_enters_another_flow() {
    let main = r#"
flow: main
start: s
nodes:
  s: { set: { greeting: "hi ${caller} from ${called}" }, next: g }
  g: { goto: { flow: other } }
"#;
    let other = r#"
flow: other
start: o
nodes:
  o: { hangup: {} }
"#;
    let set = load_ok(&[main, other]);
    let call = Call::start(&set, "123", office_hours());
    assert_eq!(call.interp.var("greeting"), Some("hi 123 from 8000"));
    assert_eq!(
        call.outcome(),
        Some(&Outcome::Completed {
            node: "other.o".into()
        })
    );
}

const CALLBACK_FLOW: &str = r#"
flow: t
start: offer
agent: agent
queues: { general: { uri: "sip:general@acd.example.net" } }
nodes:
  offer:
    callback: { queue: general, offer: callback-offer, min_digits: 4, max_digits: 8 }
    on_accept: bye
    on_decline: agent
  agent: { transfer: { queue: general }, on_fail: bye }
  bye: { hangup: { prompt: goodbye } }
"#;

#[test]
fn callback_confirms_the_callers_number_and_is_booked() {
    let set = load_ok(&[CALLBACK_FLOW]);
    let mut call = Call::start(&set, "+371 2000 0001", office_hours());
    call.prompt_ends();
    call.press("1");
    let readback = call.played().last().unwrap().clone();
    assert!(readback.starts_with("callback-number-is+digit-3+digit-7+digit-1+digit-2"));
    assert!(readback.ends_with("digit-1+callback-confirm"));
    call.press("1");
    let request = call.log.iter().find_map(|a| match a {
        Action::RequestCallback(r) => Some(r.clone()),
        _ => None,
    });
    let request = request.expect("a callback request");
    assert_eq!(request.number, "37120000001");
    assert_eq!(request.queue, "general");
    call.feed(Event::CallbackRecorded(Ok(Booked::New)));
    assert_eq!(call.played().last().unwrap(), "callback-confirmed");
    call.prompt_ends();
    call.prompt_ends();
    assert_eq!(
        call.outcome(),
        Some(&Outcome::CallbackRequested {
            queue: "general".into()
        })
    );
}

#[test]
fn callback_to_another_number_and_declining() {
    let set = load_ok(&[CALLBACK_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("1"); // barge into the offer
    call.press("2");
    assert_eq!(call.played().last().unwrap(), "callback-enter-number");
    call.press("12#");
    assert_eq!(
        call.played().last().unwrap(),
        "callback-enter-number",
        "too short"
    );
    call.press("5550123#");
    assert!(call
        .log
        .iter()
        .any(|a| matches!(a, Action::RequestCallback(r) if r.number == "5550123")));

    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("2");
    assert_eq!(call.node(), "agent");
}

#[test]
fn anonymous_callers_are_asked_for_a_number_and_store_failure_takes_on_fail() {
    let set = load_ok(&[CALLBACK_FLOW]);
    let mut call = Call::start(&set, "anonymous", office_hours());
    call.press("1");
    assert_eq!(call.played().last().unwrap(), "callback-enter-number");
    call.press("55501234");
    call.feed(Event::CallbackRecorded(Err(CallbackError::Failed(
        "disk full".into(),
    ))));
    assert_eq!(call.played().last().unwrap(), "callback-failed");
    call.prompt_ends();
    assert_eq!(call.node(), "agent", "on_fail defaults to on_decline");
}

#[test]
fn a_loop_that_never_waits_is_refused_at_load_and_stopped_at_run_time() {
    let yaml = r#"
flow: t
start: a
nodes:
  a: { set: { x: "1" }, next: b }
  b: { goto: { flow: t, node: a } }
"#;
    let (set, errors) = load(&[yaml]);
    assert!(
        errors.iter().any(|e| e.contains("loop that never waits")),
        "{errors:?}"
    );
    let call = Call::start(&set, "1", office_hours());
    assert!(call
        .log
        .iter()
        .any(|a| matches!(a, Action::Step(s) if s.what == StepKind::StepLimit)));
    assert!(call.log.contains(&Action::Hangup));
    assert!(matches!(call.outcome(), Some(Outcome::Failed { .. })));
}

#[test]
fn a_spoofed_premium_caller_number_is_never_offered_or_requested() {
    let set = load_ok(&[CALLBACK_FLOW]);
    // A From header is only a claim: 0900... would bill the company.
    let mut call = Call::start(&set, "sip:0900123456@evil.example", office_hours());
    call.press("1");
    assert!(call
        .log
        .iter()
        .any(|a| matches!(a, Action::Step(s) if matches!(&s.what, StepKind::CallbackRefused(why) if why.contains("0900")))));
    assert_eq!(
        call.played().last().unwrap(),
        "callback-enter-number",
        "asked for another number, not read back its own"
    );
    assert!(!call
        .log
        .iter()
        .any(|a| matches!(a, Action::RequestCallback(_))));
}

#[test]
fn a_caller_filled_transfer_target_passes_the_transfer_policy() {
    let set = load_ok(&[TOLL_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("00441#");
    assert!(call.transfers().is_empty());
    assert!(call
        .log
        .iter()
        .any(|a| matches!(a, Action::Step(s) if matches!(&s.what, StepKind::TransferRefused(why) if why.contains("00")))));
    assert_eq!(call.node(), "bye");
}

#[test]
fn a_refused_number_is_said_so_and_another_can_be_entered() {
    let set = load_ok(&[CALLBACK_FLOW]);
    let mut call = Call::start(&set, "+37120000001", office_hours());
    call.press("1");
    call.press("2");
    call.press("00441234#");
    let request = call.log.iter().rev().find_map(|a| match a {
        Action::RequestCallback(r) => Some(r.clone()),
        _ => None,
    });
    assert!(request.is_some_and(|r| r.entered && r.number == "00441234"));
    call.feed(Event::CallbackRecorded(Err(CallbackError::Refused(
        "international".into(),
    ))));
    assert_eq!(
        call.played().last().unwrap(),
        "callback-number-refused+callback-enter-number"
    );
    call.press("67000000#");
    call.feed(Event::CallbackRecorded(Ok(Booked::Merged)));
    assert_eq!(call.played().last().unwrap(), "callback-already-booked");
    call.prompt_ends();
    call.prompt_ends();
    assert_eq!(
        call.outcome(),
        Some(&Outcome::CallbackRequested {
            queue: "general".into()
        })
    );
}

#[test]
fn a_callback_booked_while_the_queue_is_closed_waits_for_the_next_opening() {
    let yaml = r#"
flow: t
start: offer
schedules:
  office: { timezone: Europe/Riga, open: { mon-fri: "08:00-20:00" }, closed_dates: [2026-12-25] }
queues: { general: { uri: "sip:general@acd.example.net", hours: office } }
nodes:
  offer:
    callback: { queue: general, offer: callback-offer, confirm_number: false }
    on_accept: bye
    on_decline: bye
  bye: { hangup: {} }
"#;
    let set = load_ok(&[yaml]);
    let not_before = |at: DateTime<Utc>| {
        let mut call = Call::start(&set, "+37120000001", at);
        call.press("1");
        call.log.iter().find_map(|a| match a {
            Action::RequestCallback(r) => Some(r.not_before),
            _ => None,
        })
    };
    // Open now: dialled at once.
    assert_eq!(not_before(office_hours()), Some(None));
    // Christmas Eve 21:00 in Riga: next opening is Monday 28th 08:00 Riga.
    let christmas_eve = Utc.with_ymd_and_hms(2026, 12, 24, 19, 0, 0).unwrap();
    assert_eq!(
        not_before(christmas_eve),
        Some(Some(Utc.with_ymd_and_hms(2026, 12, 28, 6, 0, 0).unwrap()))
    );
}

const WAIT_FLOW: &str = r#"
flow: t
start: offer
queues: { general: { uri: "sip:general@acd.example.net" } }
nodes:
  offer:
    callback: { queue: general, offer: callback-offer, say_wait: true, timeout: 4s }
    on_accept: bye
    on_decline: bye
  bye: { hangup: {} }
"#;

#[test]
fn the_estimated_wait_is_said_before_the_offer_once() {
    let set = load_ok(&[WAIT_FLOW]);
    let mut call = Call::start_with(
        &set,
        "+37120000001",
        office_hours(),
        &[("wait_general", "340")],
    );
    assert_eq!(
        call.played(),
        ["wait-is-about+num-6+minutes+callback-offer"]
    );
    call.prompt_ends();
    call.timeout();
    // The reprompt asks the question again; the wait was already told.
    assert_eq!(call.played().last().unwrap(), "callback-offer");
    call.press("1");
    assert_eq!(call.node(), "offer");
    assert!(call
        .played()
        .last()
        .unwrap()
        .starts_with("callback-number-is"));
}

#[test]
fn the_wait_follows_the_variable_at_the_offer_and_a_bad_value_is_skipped() {
    let set = load_ok(&[WAIT_FLOW]);
    let first = |vars: &[(&str, &str)]| {
        let call = Call::start_with(&set, "+37120000001", office_hours(), vars);
        call.played()[0].clone()
    };
    assert_eq!(first(&[]), "callback-offer");
    assert_eq!(first(&[("wait_general", "unknown")]), "callback-offer");
    assert_eq!(first(&[("wait_general", "-5")]), "callback-offer");
    assert_eq!(first(&[("wait_other", "300")]), "callback-offer");
    assert_eq!(
        first(&[("wait_general", "30")]),
        "wait-under-a-minute+callback-offer"
    );
    assert_eq!(
        first(&[("wait_general", "60")]),
        "wait-is-about+num-1+minute+callback-offer"
    );
    assert_eq!(
        first(&[("wait_general", "2700")]),
        "wait-is-about+num-40+num-5+minutes+callback-offer"
    );
    assert_eq!(
        first(&[("wait_general", "86400")]),
        "wait-over-an-hour+callback-offer"
    );
    // Without `say_wait` the variable is not said.
    let quiet = load_ok(&[&WAIT_FLOW.replace("say_wait: true, ", "")]);
    let call = Call::start_with(&quiet, "1", office_hours(), &[("wait_general", "340")]);
    assert_eq!(call.played(), ["callback-offer"]);
}

#[test]
fn say_wait_needs_every_piece_of_the_sentence_at_load() {
    // A prompts directory with what a callback needs, but no numbers.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo("prompts")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wav") && !name.starts_with("num-") {
            std::fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    let load_in = |yaml: &str| {
        let sources = [(repo("flows/test0.yaml"), yaml.to_string())];
        let loaded = load_sources(
            &sources,
            &LoadOptions {
                prompts_dir: dir.path().to_path_buf(),
            },
        );
        loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    };
    let errors = load_in(WAIT_FLOW);
    assert_eq!(errors.len(), 1, "one error for all the pieces: {errors:#?}");
    assert!(
        errors[0].contains("`say_wait` needs 24 prompts"),
        "{errors:#?}"
    );
    assert!(errors[0].contains("num-1, num-2"), "{errors:#?}");
    assert!(errors[0].contains("num-60"), "{errors:#?}");
    assert!(!errors[0].contains("num-70"), "never said: {errors:#?}");
    // Where: the `say_wait` line (line 7 of the flow text).
    assert!(errors[0].contains("test0.yaml:7:"), "{errors:#?}");
    let errors = load_in(&WAIT_FLOW.replace("say_wait: true, ", ""));
    assert!(
        errors.is_empty(),
        "not needed without say_wait: {errors:#?}"
    );
}
