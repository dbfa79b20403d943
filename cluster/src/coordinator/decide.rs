//! Who is master after a total outage, decided from what the nodes
//! recorded — never from clocks — and, while the nodes that are back
//! cannot tell, a wait that says why.

use super::Coordinator;
use crate::record::{Recorded, Seen};
use crate::{Node, Role, Topology};
use tracing::{info, warn};

impl Coordinator {
    /// While waiting after a total outage: decides again with the nodes
    /// that answer now.
    pub(super) async fn redecide(&self, topo: &Topology) {
        let seen = self.seen().await;
        match decide(&self.nodes, &seen) {
            Ok(next) if next.waiting.is_none() => {
                info!(master = %next.master.name, epoch = next.epoch, "the nodes that returned decide the master");
                self.publish(next);
            }
            Ok(next) => {
                if next.waiting != topo.waiting {
                    warn!(
                        reason = next.waiting.as_deref().unwrap_or(""),
                        "no master yet"
                    );
                    self.publish(next);
                }
            }
            Err(e) => warn!(error = %e, "cannot decide the topology"),
        }
    }
}

/// Decides the topology from what the nodes recorded (at start, and while
/// waiting after a total outage). Pure: no clocks, only epochs and states.
///
/// - Ferry never ran here (no records): by configured priority.
/// - Otherwise the node recorded master at the latest epoch `E` is master
///   if it answers and either it recorded state-priority 1 (no caught-up
///   replica could have taken over) or every other node answers. Nodes
///   recorded at an older epoch are fenced out (an old master, a replica
///   that missed a failover); nodes that do not answer are fenced out until
///   they return with a record that fits.
/// - If that master does not answer, or it had caught-up replicas and some
///   node is missing (one of them may have taken over later), Ferry waits:
///   the topology carries the reason.
pub fn decide(nodes: &[Node], seen: &[(Node, Seen)]) -> Result<Topology, crate::ClusterError> {
    let by_priority = Topology::by_priority(nodes)?;
    let records: Vec<&Recorded> = seen.iter().filter_map(|(_, s)| s.record()).collect();
    let Some(epoch) = records.iter().map(|r| r.epoch).max() else {
        return Ok(by_priority);
    };
    let seen_of = |name: &str| {
        seen.iter()
            .find(|(n, _)| n.name == name)
            .map_or(&Seen::Unreachable, |(_, s)| s)
    };
    let named = named_master(seen);
    let waiting = |why: String| {
        let mut t = by_priority.clone();
        t.epoch = epoch;
        t.waiting = Some(why);
        t
    };
    let Some(master) = named.and_then(|m| nodes.iter().find(|n| n.name == m).cloned()) else {
        return Ok(waiting(format!(
            "the nodes that answer do not tell which node was master at epoch {epoch}; \
             waiting for the others (or `ferry force-master NODE`: possible data loss)"
        )));
    };
    let own = match seen_of(&master.name) {
        Seen::Recorded(r) if r.epoch == epoch && r.state == Role::Master => r.clone(),
        _ => {
            return Ok(waiting(format!(
                "node {} was master last (epoch {epoch}) and does not answer: waiting for it \
                 (or `ferry force-master NODE`: possible data loss)",
                master.name
            )))
        }
    };
    let missing: Vec<&str> = seen
        .iter()
        .filter(|(n, s)| n.name != master.name && *s == Seen::Unreachable)
        .map(|(n, _)| n.name.as_str())
        .collect();
    if own.state_priority != 1 && !missing.is_empty() {
        return Ok(waiting(format!(
            "node {} was master last (epoch {epoch}) with caught-up replicas; waiting for {} \
             (one of them may have taken over later), or `ferry force-master NODE`: possible data loss",
            master.name,
            missing.join(", ")
        )));
    }
    let mut replicas = Vec::new();
    let mut fenced = Vec::new();
    for n in nodes.iter().filter(|n| n.name != master.name) {
        match seen_of(&n.name) {
            Seen::Unreachable => fenced.push((n.clone(), NOT_AT_START.to_string())),
            Seen::Recorded(r) if r.epoch < epoch => fenced.push((
                n.clone(),
                format!(
                    "recorded {} at epoch {} < {epoch}: needs a resync",
                    r.state, r.epoch
                ),
            )),
            _ => replicas.push(n.clone()),
        }
    }
    Ok(Topology {
        master,
        replicas,
        epoch,
        fenced,
        waiting: None,
        forced: false,
    })
}

/// The node the answering nodes' records name master at their latest
/// epoch, if any (two nodes recorded master at the same epoch only when an
/// operator forced one while the other was away: the forced one wins).
/// Not a decision: [`decide`] also weighs the nodes that do not answer.
pub fn named_master(seen: &[(Node, Seen)]) -> Option<String> {
    let records: Vec<&Recorded> = seen.iter().filter_map(|(_, s)| s.record()).collect();
    let epoch = records.iter().map(|r| r.epoch).max()?;
    records
        .iter()
        .filter(|r| r.epoch == epoch && r.state == Role::Master)
        .max_by_key(|r| r.forced)
        .map(|r| r.node.clone())
        .or_else(|| {
            records
                .iter()
                .filter(|r| r.epoch == epoch)
                .map(|r| r.master.clone())
                .find(|m| !m.is_empty())
        })
}

/// The reason a node is fenced that did not answer when the topology was
/// decided; it is admitted when it returns with a record that fits.
pub const NOT_AT_START: &str = "did not answer when the topology was decided";

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_wire::Target;

    fn node(name: &str, priority: i32) -> Node {
        Node {
            name: name.into(),
            target: Target::from_dsn("postgresql://u@h/db").unwrap_or_else(|_| unreachable!()),
            priority,
        }
    }

    fn rec(node: &str, epoch: i64, state: &str, prio: i32, master: &str) -> Seen {
        Seen::Recorded(Recorded {
            node: node.into(),
            epoch,
            state: Role::parse(state).unwrap_or_else(|| unreachable!()),
            state_priority: prio,
            master: master.into(),
            forced: false,
        })
    }

    fn rec_of(s: Seen) -> Recorded {
        s.record().cloned().unwrap_or_else(|| unreachable!())
    }

    /// Two nodes: a was master (with b caught up), a crashed and b took
    /// over alone (epoch 2), then b crashed. Each restart order decides the
    /// same way.
    #[test]
    fn the_two_node_sequences_decide_by_epoch_and_state_priority() {
        let nodes = [node("a", 1), node("b", 2)];
        let a = rec("a", 1, "master", 2, "a");
        let b = rec("b", 2, "master", 1, "b");
        // a alone: it had a caught-up replica, which may have taken over.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), a.clone()),
                (nodes[1].clone(), Seen::Unreachable),
            ],
        )
        .unwrap();
        assert!(
            t.waiting
                .as_deref()
                .is_some_and(|w| w.contains("waiting for b")),
            "{t:?}"
        );
        // b alone: it was master last, with no caught-up replica.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), Seen::Unreachable),
                (nodes[1].clone(), b.clone()),
            ],
        )
        .unwrap();
        assert_eq!(
            (t.master.name.as_str(), t.epoch, t.waiting.is_none()),
            ("b", 2, true)
        );
        assert_eq!(t.fenced.len(), 1);
        // Both, in either order of arrival: b, and a fenced out.
        for seen in [
            [(nodes[0].clone(), a.clone()), (nodes[1].clone(), b.clone())],
            [(nodes[1].clone(), b.clone()), (nodes[0].clone(), a.clone())],
        ] {
            let t = decide(&nodes, &seen).unwrap();
            assert_eq!(t.master.name, "b");
            assert!(t.fenced[0].1.contains("epoch 1 < 2"), "{t:?}");
        }
        // The last master missing: wait, naming it.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), rec("a", 2, "replica", 3, "b")),
                (nodes[1].clone(), Seen::Unreachable),
            ],
        )
        .unwrap();
        assert!(
            t.waiting
                .as_deref()
                .is_some_and(|w| w.contains("node b was master last")),
            "{t:?}"
        );
        // An operator forced a while b was away (both at epoch 2): a.
        let forced = Seen::Recorded(Recorded {
            forced: true,
            ..rec_of(rec("a", 2, "master", 1, "a"))
        });
        let t = decide(
            &nodes,
            &[(nodes[0].clone(), forced), (nodes[1].clone(), b.clone())],
        )
        .unwrap();
        assert_eq!(t.master.name, "a");
        // Ferry never ran: by priority.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), Seen::Fresh),
                (nodes[1].clone(), Seen::Unreachable),
            ],
        )
        .unwrap();
        assert_eq!((t.master.name.as_str(), t.epoch), ("a", 1));
    }
}
