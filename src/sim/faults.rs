//! Faults a test injects: stalls, resets, half-closes, partitions, kills and restarts,
//! refused connects.

use super::{End, LinkId, NodeId, Role, Sim};
use crate::engine::ConnId;

impl Sim {
    /// Restarts a killed service node at its address, with what it kept across the crash
    /// (see [`Service::handle_killed`](super::Service::handle_killed)); nothing happens to a live one. Panics for an
    /// engine node: an engine's state dies with it (add a new node instead).
    #[track_caller]
    pub fn restart(&mut self, node: NodeId) {
        let n = &mut self.nodes[node.0];
        assert!(
            matches!(n.role, Role::Service(_)),
            "only a service node can be restarted"
        );
        n.alive = true;
    }

    /// The link silently stops carrying bytes both ways; neither end is told (half-open).
    pub fn stall(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(link.0) {
            l.stalled = true;
        }
    }

    /// Every link of the node stalls, and so do its future connections' handshakes: a
    /// machine that vanished from the network without closing anything.
    pub fn stall_node(&mut self, node: NodeId) {
        for l in self.links_of(node) {
            self.stall(l);
        }
        for other in 0..self.nodes.len() {
            if other != node.0 {
                self.partition(node, NodeId(other));
            }
        }
    }

    /// Both ends see the connection fail at once.
    pub fn reset(&mut self, link: LinkId) {
        let Some(l) = self.links.remove(link.0) else {
            return;
        };
        for end in l.ends {
            self.end_closed(end);
        }
    }

    /// The node closes its end of `conn` (FIN) without its engine knowing: the peer sees
    /// the end after the bytes already in flight; the node's engine sees its connection
    /// fail.
    pub fn fin(&mut self, node: NodeId, conn: ConnId) {
        if let Some((link, side)) = self.nodes[node.0].ends.remove(conn) {
            if self.links.contains(link.0) {
                self.schedule_fin(link.0, side);
            }
            self.nodes[node.0].touched().handle_closed(conn, self.now);
        }
    }

    /// No bytes and no new connections between `a` and `b` (both ways) until healed.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.partitions.push((a.0, b.0));
        let stalled: Vec<usize> = self
            .links
            .iter()
            .filter(|(_, l)| self.between(l, a.0, b.0))
            .map(|(i, _)| i)
            .collect();
        for i in stalled {
            if let Some(l) = self.links.get_mut(i) {
                l.stalled = true;
            }
        }
    }

    /// Removes every partition (stalled links stay stalled: TCP would have given up).
    pub fn heal(&mut self) {
        self.partitions.clear();
    }

    /// Kills the node like `kill -9`: its kernel resets every connection (peers see them
    /// fail), its listener is gone (connects are refused), and an engine never runs again
    /// (a service can be [restarted](Self::restart)).
    pub fn kill(&mut self, node: NodeId) {
        self.nodes[node.0].alive = false;
        // In link order, so that the same seed gives the same run.
        for l in self.links_of(node) {
            let Some(link) = self.links.remove(l.0) else {
                continue;
            };
            for end in link.ends {
                match end {
                    End::Engine { node: n, .. } | End::Service { node: n, .. } if n == node.0 => {}
                    other => self.end_closed(other),
                }
            }
        }
        self.nodes[node.0].ends.clear();
        let now = self.now;
        if let Role::Service(s) = &mut self.nodes[node.0].role {
            s.ends.clear();
            s.service.handle_killed(now);
        }
    }

    /// Makes a live node's listener refuse (or accept again).
    pub fn refuse(&mut self, node: NodeId, refusing: bool) {
        self.nodes[node.0].refusing = refusing;
    }
}
