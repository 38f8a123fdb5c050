//! Compiles `switch` conditions, resolving schedules and lists by name.

use super::*;

pub(super) fn compile_condition(cx: &mut Ctx<'_>, path: &str, c: &ConditionDef) -> Condition {
    let tests: Vec<(&str, Option<Test>)> = vec![
        ("equals", c.equals.clone().map(Test::Equals)),
        ("not_equals", c.not_equals.clone().map(Test::NotEquals)),
        ("starts_with", c.starts_with.clone().map(Test::StartsWith)),
        ("gt", c.gt.map(Test::Gt)),
        ("ge", c.ge.map(Test::Ge)),
        ("lt", c.lt.map(Test::Lt)),
        ("le", c.le.map(Test::Le)),
        ("in_list", c.in_list.clone().map(|l| Test::InList(0, l))),
    ];
    let mut tests: Vec<(&str, Test)> = tests
        .into_iter()
        .filter_map(|(k, t)| t.map(|t| (k, t)))
        .collect();
    let heads: Vec<&str> = [
        ("open", c.open.is_some()),
        ("var", c.var.is_some()),
        ("caller_in", c.caller_in.is_some()),
        ("long_wait", c.long_wait.is_some()),
        ("not", c.not.is_some()),
        ("all", c.all.is_some()),
        ("any", c.any.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.then_some(k))
    .collect();
    let never = Condition::Any(Vec::new());
    let head = match heads.as_slice() {
        [one] => *one,
        [] if !tests.is_empty() => {
            cx.error(
                path,
                format!(
                    "`{}` needs `var:` to say which variable it tests (e.g. var: caller)",
                    tests[0].0
                ),
            );
            return never;
        }
        [] => {
            cx.error(path, "an empty condition; write one of open, var with a test, caller_in, long_wait, not, all or any");
            return never;
        }
        [a, b, ..] => {
            cx.error(
                path,
                format!(
                    "a condition has both `{a}` and `{b}`; combine conditions with `all` or `any`"
                ),
            );
            return never;
        }
    };
    if head != "var" && !tests.is_empty() {
        cx.error(
            &join(path, tests[0].0),
            format!(
                "`{}` tests a variable and goes with `var:`, not with `{head}`",
                tests[0].0
            ),
        );
    }
    match head {
        "open" => {
            let name = c.open.clone().unwrap_or_default();
            match cx.schedules.get(&name) {
                Some(&i) => Condition::Open(i, name),
                None => {
                    cx.error(
                        &join(path, "open"),
                        format!(
                            "`{name}` is not a schedule of flow `{}`; define it under `schedules:`",
                            cx.flow_name
                        ),
                    );
                    never
                }
            }
        }
        "caller_in" => {
            let name = c.caller_in.clone().unwrap_or_default();
            list_test(cx, &join(path, "caller_in"), "caller", name)
        }
        "long_wait" => {
            let name = c.long_wait.clone().unwrap_or_default();
            long_wait(cx, &join(path, "long_wait"), name)
        }
        "var" => {
            let var = c.var.clone().unwrap_or_default();
            cx.var_ref(&join(path, "var"), &var);
            match tests.len() {
                0 => {
                    cx.error(path, format!("`var: {var}` needs a test: equals, not_equals, starts_with, gt, ge, lt, le or in_list"));
                    never
                }
                1 => match tests.remove(0) {
                    ("in_list", Test::InList(_, name)) => {
                        list_test(cx, &join(path, "in_list"), &var, name)
                    }
                    (_, test) => Condition::Var(var, test),
                },
                _ => {
                    cx.error(
                        &join(path, tests[1].0),
                        format!(
                            "a condition has both `{}` and `{}`; combine tests with `all`",
                            tests[0].0, tests[1].0
                        ),
                    );
                    never
                }
            }
        }
        "not" => match &c.not {
            Some(inner) => {
                Condition::Not(Box::new(compile_condition(cx, &join(path, "not"), inner)))
            }
            None => never,
        },
        "all" | "any" => {
            let list = if head == "all" { &c.all } else { &c.any };
            let lp = join(path, head);
            let items: Vec<Condition> = list
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, inner)| compile_condition(cx, &join(&lp, &i.to_string()), inner))
                .collect();
            if items.is_empty() {
                cx.error(&lp, format!("`{head}` needs at least one condition"));
            }
            if head == "all" {
                Condition::All(items)
            } else {
                Condition::Any(items)
            }
        }
        _ => never,
    }
}

fn list_test(cx: &mut Ctx<'_>, path: &str, var: &str, name: String) -> Condition {
    match cx.lists.get(&name) {
        Some(&i) => Condition::Var(var.to_string(), Test::InList(i, name)),
        None => {
            cx.error(path, format!("`{name}` is not a list of flow `{}`; define it under `lists:` (a CSV file of numbers)", cx.flow_name));
            Condition::Any(Vec::new())
        }
    }
}

/// `long_wait: QUEUE` compares the server's `wait_QUEUE` with the queue's
/// `callback_offer_after`, so both must be known at load: a threshold
/// missing at run time would silently never offer anything.
fn long_wait(cx: &mut Ctx<'_>, path: &str, queue: String) -> Condition {
    if !cx.queues.contains_key(&queue) {
        cx.error(
            path,
            format!(
                "`{queue}` is not a queue of flow `{}`; define it under `queues:`",
                cx.flow_name
            ),
        );
        return Condition::Any(Vec::new());
    }
    let Some(&after) = cx.offer_after.get(&queue) else {
        cx.error(
            path,
            format!(
                "`long_wait: {queue}` needs the queue's `callback_offer_after` to know what a long wait is; set it on queue `{queue}` (e.g. callback_offer_after: 90s)"
            ),
        );
        return Condition::Any(Vec::new());
    };
    // No variable reference is recorded: `wait_QUEUE` is built in for every
    // queue, and the queue was just found, so the never-set check has
    // nothing to add (and queue names need not be variable names).
    Condition::LongWait {
        var: format!("wait_{queue}"),
        queue,
        after,
    }
}
