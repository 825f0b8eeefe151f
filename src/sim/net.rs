//! The simulated network: connections as pairs of ends, bytes in flight with seeded
//! delays, what each node's engine or service asks of it, and the order things happen in.

use super::{
    micros_ceil, Action, End, Link, LinkId, Micros, Role, ServiceConn, ServiceOutput, Sim,
    SPARE_BYTES_MAX,
};
use crate::engine::{ConnId, Io};
use bytes::BytesMut;

impl Sim {
    pub(super) fn step(&mut self, t: Micros) {
        self.set_time(t);
        while self
            .queue
            .keys()
            .next()
            .is_some_and(|&at| at <= self.now_us)
        {
            if let Some((_, mut actions)) = self.queue.pop_first() {
                for action in actions.drain(..) {
                    self.apply(action);
                }
                self.buckets.push(actions);
            }
        }
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            if n.alive && n.timer.is_some_and(|t| t <= self.now) {
                n.touched().handle_timeout(self.now);
            }
        }
        self.pump();
    }

    /// Keeps a delivered write's buffer for the next one, within `SPARE_BYTES_MAX`.
    pub(super) fn recycle(&mut self, mut bytes: BytesMut) {
        if self.spare_bytes + bytes.capacity() <= SPARE_BYTES_MAX {
            self.spare_bytes += bytes.capacity();
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    pub(super) fn schedule(&mut self, at: Micros, action: Action) {
        let buckets = &mut self.buckets;
        self.queue
            .entry(at)
            .or_insert_with(|| buckets.pop().unwrap_or_default())
            .push(action);
    }

    /// A delay from the configured range, in whole microseconds: deliveries drawn in the
    /// same step then share arrival instants, and one step of the simulation handles them
    /// all (a burst of 100k pings costs hundreds of steps, not 100k).
    pub(super) fn delay(&mut self) -> Micros {
        let (lo, hi) = self.net.delay;
        let lo = micros_ceil(lo);
        let span = micros_ceil(hi).saturating_sub(lo);
        lo + self.rng.up_to(span)
    }

    pub(super) fn between(&self, l: &Link, a: usize, b: usize) -> bool {
        let nodes: Vec<usize> = l
            .ends
            .iter()
            .filter_map(|e| match e {
                End::Engine { node, .. } | End::Service { node, .. } => Some(*node),
                End::Raw { .. } => None,
            })
            .collect();
        nodes.contains(&a) && nodes.contains(&b)
    }

    pub(super) fn partitioned(&self, a: usize, b: usize) -> bool {
        self.partitions
            .iter()
            .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
    }

    /// Moves every engine's outputs into the network until nothing is left to move.
    /// Only engines that had an input since their last collection are visited: a step
    /// costs what happened in it, not a visit of every node. Returns when no engine has
    /// uncollected output (writes the window holds back stay in `blocked`).
    pub(super) fn pump(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].dirty || !self.nodes[i].alive {
                    continue;
                }
                if let Role::Service(_) = self.nodes[i].role {
                    self.pump_service(i);
                    continue;
                }
                // Writing (`handle_sent`) may queue more output: drain until nothing is left.
                loop {
                    let mut moved = false;
                    while let Some(io) = self.nodes[i].engine_mut().poll_io() {
                        moved = true;
                        self.on_io(i, io);
                    }
                    while let Some(conn) = self.nodes[i].engine_mut().poll_transmit() {
                        moved = true;
                        self.transmit(i, conn);
                    }
                    if !moved {
                        break;
                    }
                }
                let n = &mut self.nodes[i];
                n.dirty = false;
                let Role::Engine(engine) = &mut n.role else {
                    continue;
                };
                while let Some(e) = engine.poll_event() {
                    n.events.push(e);
                }
                n.timer = engine.poll_timeout();
            }
            let blocked = std::mem::take(&mut self.blocked);
            for (node, conn) in blocked {
                if self.nodes[node].alive {
                    self.transmit(node, conn);
                }
            }
            // What a node's output did to another node (an accept, say) or a blocked write
            // that went out (`handle_sent`) leaves that node dirty: go round again.
            if !self.nodes.iter().any(|n| n.dirty && n.alive) {
                break;
            }
        }
    }

    /// Moves a service's output into the network.
    pub(super) fn pump_service(&mut self, node: usize) {
        self.nodes[node].dirty = false;
        loop {
            let Role::Service(s) = &mut self.nodes[node].role else {
                return;
            };
            let Some(out) = s.service.poll_output() else {
                return;
            };
            match out {
                ServiceOutput::Send { conn, bytes } => {
                    if let Some((link, side)) = s.end(conn) {
                        if !bytes.is_empty() {
                            self.send_on(link.0, side, bytes);
                        }
                    }
                }
                ServiceOutput::Close { conn } => {
                    if let Some((link, side)) = s.remove(conn) {
                        if self.links.contains(link.0) {
                            self.schedule_fin(link.0, side);
                        }
                    }
                }
            }
        }
    }

    /// The node `to` accepts a connection: its end of the new link, or `None` if it cannot
    /// take one now.
    pub(super) fn accept(&mut self, to: usize) -> Option<End> {
        let now = self.now;
        let n = &mut self.nodes[to];
        if !n.alive || n.refusing {
            return None;
        }
        let end = match n.role {
            Role::Engine(_) => End::Engine {
                node: to,
                conn: n.touched().handle_accept(now).ok()?,
            },
            Role::Service(_) => {
                let s = n.service()?;
                let conn = ServiceConn(s.next_conn);
                s.next_conn += 1;
                s.service.handle_accept(conn, now);
                End::Service { node: to, conn }
            }
        };
        self.accepts.push((now, to));
        Some(end)
    }

    /// Records that a node's (engine or service) end `end` is side `side` of `link`.
    pub(super) fn bind(&mut self, end: End, link: LinkId, side: usize) {
        match end {
            End::Engine { node, conn } => self.nodes[node].ends.insert(conn, link, side),
            End::Service { node, conn } => {
                if let (Role::Service(s), Ok(i)) =
                    (&mut self.nodes[node].role, usize::try_from(conn.0))
                {
                    if s.ends.len() <= i {
                        s.ends.resize(i + 1, None);
                    }
                    s.ends[i] = Some((link, side));
                }
            }
            End::Raw { .. } => {}
        }
    }

    pub(super) fn on_io(&mut self, node: usize, io: Io) {
        match io {
            Io::Connect { conn, addr } => {
                let target = self
                    .nodes
                    .iter()
                    .position(|n| n.listen == Some(addr) && n.alive);
                let at = self.now_us + self.delay() + self.delay();
                match target {
                    Some(t) if self.partitioned(node, t) => {} // SYN lost: the engine times out
                    Some(t) if !self.nodes[t].refusing => self.schedule(
                        at,
                        Action::Connect {
                            from: node,
                            conn,
                            to: t,
                        },
                    ),
                    _ => self.schedule(at, Action::Refused { from: node, conn }),
                }
            }
            Io::Close { conn } => {
                if let Some((link, side)) = self.nodes[node].ends.remove(conn) {
                    if self.links.contains(link.0) {
                        self.schedule_fin(link.0, side);
                    }
                }
            }
        }
    }

    /// Moves as much of the connection's output into the link as its window allows.
    pub(super) fn transmit(&mut self, node: usize, conn: ConnId) {
        let Some((link, side)) = self.nodes[node].ends.get(conn) else {
            // Not connected (yet, or any more): the bytes have nowhere to go.
            return;
        };
        let Some(l) = self.links.get(link.0) else {
            return;
        };
        let room = self.net.window.saturating_sub(l.used[side]);
        let out = self.nodes[node].engine_mut().outbound(conn);
        let n = out.len().min(room);
        if n > 0 {
            let mut bytes = match self.spare.pop() {
                Some(b) => {
                    self.spare_bytes -= b.capacity();
                    b
                }
                None => BytesMut::with_capacity(n.max(64)),
            };
            bytes.extend_from_slice(&out[..n]);
            self.nodes[node].touched().handle_sent(conn, n, self.now);
            self.send_on(link.0, side, bytes);
        }
        if !self.nodes[node].engine_mut().outbound(conn).is_empty() {
            self.blocked.push((node, conn));
        }
    }

    pub(super) fn send_on(&mut self, link: usize, dir: usize, bytes: BytesMut) {
        let delay = self.delay();
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.stalled {
            // The bytes left the sender's kernel and vanish: the sender cannot tell.
            return;
        }
        l.used[dir] += bytes.len();
        let at = (self.now_us + delay).max(l.last_arrival[dir]);
        l.last_arrival[dir] = at;
        self.schedule(at, Action::Deliver { link, dir, bytes });
    }

    pub(super) fn schedule_fin(&mut self, link: usize, dir: usize) {
        let delay = self.delay();
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.stalled {
            return;
        }
        let at = (self.now_us + delay).max(l.last_arrival[dir]);
        l.last_arrival[dir] = at;
        self.schedule(at, Action::Fin { link, dir });
    }

    pub(super) fn apply(&mut self, action: Action) {
        match action {
            Action::Deliver { link, dir, bytes } => {
                let Some(l) = self.links.get_mut(link) else {
                    return;
                };
                if l.stalled {
                    return;
                }
                let to = l.ends[1 - dir];
                match to {
                    End::Engine { node, conn } => {
                        l.used[dir] -= bytes.len();
                        if self.nodes[node].alive {
                            self.nodes[node]
                                .touched()
                                .handle_read(conn, &bytes, self.now);
                        }
                    }
                    End::Service { node, conn } => {
                        l.used[dir] -= bytes.len();
                        let now = self.now;
                        let n = &mut self.nodes[node];
                        if n.alive {
                            if let Some(s) = n.service() {
                                s.service.handle_read(conn, &bytes, now);
                            }
                        }
                    }
                    End::Raw { raw } => {
                        self.raws[raw].unread.extend_from_slice(&bytes);
                        self.raw_read(raw);
                    }
                }
                self.recycle(bytes);
            }
            Action::Fin { link, dir } => {
                let Some(l) = self.links.remove(link) else {
                    return;
                };
                // TCP would deliver the FIN one way; both our ends treat it as the end.
                for (i, end) in l.ends.into_iter().enumerate() {
                    if i != dir {
                        self.end_closed(end);
                    } else if let End::Engine { node, conn } = end {
                        self.nodes[node].ends.remove(conn);
                    } else if let End::Service { node, conn } = end {
                        if let Role::Service(s) = &mut self.nodes[node].role {
                            s.remove(conn);
                        }
                    } else if let End::Raw { raw } = end {
                        self.raws[raw].link = None;
                        self.raws[raw].closed = true;
                    }
                }
            }
            Action::Connect { from, conn, to } => {
                if !self.nodes[from].alive {
                    return;
                }
                let Some(server) = self.accept(to) else {
                    return self.nodes[from].touched().handle_connect_failed(
                        conn,
                        "connection refused (simulated)",
                        self.now,
                    );
                };
                let link = self.links.insert(Link {
                    ends: [End::Engine { node: from, conn }, server],
                    used: [0, 0],
                    last_arrival: [self.now_us; 2],
                    stalled: false,
                });
                self.nodes[from].ends.insert(conn, LinkId(link), 0);
                self.bind(server, LinkId(link), 1);
                self.nodes[from].touched().handle_connected(conn, self.now);
            }
            Action::Refused { from, conn } => {
                if self.nodes[from].alive {
                    self.nodes[from].touched().handle_connect_failed(
                        conn,
                        "connection refused (simulated)",
                        self.now,
                    );
                }
            }
        }
    }

    pub(super) fn end_closed(&mut self, end: End) {
        match end {
            End::Engine { node, conn } => {
                self.nodes[node].ends.remove(conn);
                if self.nodes[node].alive {
                    self.nodes[node].touched().handle_closed(conn, self.now);
                }
            }
            End::Service { node, conn } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                let alive = n.alive;
                if let Some(s) = n.service() {
                    if s.remove(conn).is_some() && alive {
                        s.service.handle_closed(conn, now);
                    }
                }
            }
            End::Raw { raw } => {
                self.raws[raw].link = None;
                self.raws[raw].closed = true;
            }
        }
    }
}
