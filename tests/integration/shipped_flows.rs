//! The shipped default flows load cleanly and have what the issue asks for.

use callflow::flow::graph::NodeKind;

use crate::common::shipped;

#[test]
fn shipped_flows_load_without_problems() {
    let set = shipped();
    let support = set.flow_index("support").expect("support flow");
    let closed = set.flow_index("closed").expect("closed flow");
    let flow = set.flow(support);
    assert_eq!(flow.agent.map(|(k, _)| k), Some('0'));
    // The closed flow is reached by goto from the support flow.
    let gotos: Vec<_> = flow
        .nodes
        .iter()
        .filter_map(|n| match n.kind {
            NodeKind::Goto { target } => Some(target.flow),
            _ => None,
        })
        .collect();
    assert_eq!(gotos, [closed]);
}
