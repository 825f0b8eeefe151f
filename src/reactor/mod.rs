//! The mio driver: one `mio::Poll` loop that moves bytes between real sockets and the
//! [`Engine`], for listeners, accepted connections and outbound client connections alike.
//!
//! Per wake of the loop:
//!
//! 1. `epoll_wait` returns; the clock is read once.
//! 2. Commands from other threads ([`Handle`]) run; listeners accept until `WouldBlock`;
//!    readable sockets are read into one scratch buffer shared by every connection (a short
//!    read means the socket is drained, so no extra `read` to see `EAGAIN`, as epoll(7)
//!    suggests for edge-triggered mode); due timers run.
//! 3. Everything the engine wants written is written straight away, one `write` per
//!    connection per wake; what the kernel does not take waits for the writable edge.
//!
//! Sockets are registered once for both readable and writable edges, so interest never
//! changes (no `epoll_ctl` per message). Tokens are the engine's slot indices; the engine's
//! generation check drops what a reused slot's predecessor left behind.

use crate::config::Config;
use crate::engine::{App, ConnId, Engine, Event, Io, ServerEvent};
use hashbrown::HashMap;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod admission;
mod handle;
mod loops;

use admission::Bucket;
pub use handle::Handle;
use handle::{Cmd, Queue, Shared};
pub use loops::Loops;

const WAKER: Token = Token(0);
/// Tokens `1..=MAX_LISTENERS` are listeners; connection tokens start above them.
const MAX_LISTENERS: usize = 1024;
const CONN_BASE: usize = MAX_LISTENERS + 1;
/// Reads per socket per wake, so one fast sender cannot starve the others.
const READ_BUDGET: usize = 16;
/// Size of the scratch buffer every socket is read into.
const SCRATCH: usize = 64 * 1024;
/// How long accepting pauses after the process ran out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the loop calls with each application event.
pub trait Handler {
    /// One event, with the application's view of the engine to act on (send, close, set a
    /// timer, ...) at the loop's clock ([`App::now`]).
    fn on_event(&mut self, app: &mut App<'_>, event: Event);
}

impl<F: FnMut(&mut App<'_>, Event)> Handler for F {
    fn on_event(&mut self, app: &mut App<'_>, event: Event) {
        self(app, event)
    }
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// Pending-connection queue length (`listen(2)` backlog). Default 1024: a reconnect
    /// storm of thousands of clients must not overflow it (mio's own default is 128).
    pub backlog: i32,
    /// Connections one peer IP address may hold on this listener at once; more are closed
    /// as soon as they are accepted. Default `None`: no limit.
    pub max_per_ip: Option<u32>,
    /// Accept connections in raw mode (bytes in, bytes out; see
    /// [`Engine::handle_accept_raw`]). Default false: the liveline protocol.
    pub raw: bool,
    /// `SO_REUSEPORT`: several listeners (one per loop, or per process) share the address,
    /// and the kernel spreads new connections over them. Default false.
    pub reuse_port: bool,
    /// Connections accepted per second at most; the rest wait in the kernel's backlog
    /// (they are not refused), so a reconnect storm is taken in at a pace that leaves the
    /// loop time for the heartbeats of live sessions. Default `None`: as fast as they come.
    pub accept_rate: Option<u32>,
    /// Connections accepted on this listener that have not completed the handshake, at
    /// most; past it, accepting waits (again without refusing) until some complete or
    /// close. Default `None`: no cap. (Raw listeners have no handshake: not counted.)
    ///
    /// With TLS, a handshake in flight holds several kilobytes that an idle session does
    /// not; when tens of thousands handshake at once, the allocator keeps that memory after
    /// they finish (19,990 at once: 4.5 KB of RSS per session, against 1.6 KB with a cap of
    /// 1,024, `scripts/tls-hb-bench.sh`).
    pub max_handshakes: Option<usize>,
    /// TLS under the protocol, with these settings ([`crate::tls::server_config`] makes them
    /// from PEM files). Default `None`: plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            backlog: 1024,
            max_per_ip: None,
            raw: false,
            reuse_port: false,
            accept_rate: None,
            max_handshakes: None,
            tls: None,
        }
    }
}

/// What one epoll event reported, copied out of the events buffer.
#[derive(Clone, Copy)]
struct Ready {
    token: Token,
    readable: bool,
    writable: bool,
    /// The peer's FIN (or an error) came with it: read to the end, a short read is not
    /// proof that the socket is drained.
    hup: bool,
}

struct Sock {
    id: ConnId,
    stream: TcpStream,
    connecting: bool,
    /// The last write hit a full send buffer (`WouldBlock`): nothing is written until the
    /// writable edge, which that error guarantees. Otherwise that edge (reported with
    /// nearly every readable one) is ignored, and output waits for `drain`, which writes
    /// once per connection after the application has answered.
    blocked: bool,
    /// For accepted sockets: the peer's address, counted in the per-address limit.
    peer_ip: Option<IpAddr>,
    /// For an accepted socket in the handshake: its listener (see
    /// `ListenConfig::max_handshakes`).
    handshaking: Option<usize>,
    /// A link's socket (a broker's, say): read before the others on every wake, since a
    /// broker that finds its output to us piling up disconnects us (Redis: 32 MB for a
    /// pub/sub client by default).
    first: bool,
}

struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
    raw: bool,
    max_per_ip: Option<u32>,
    rate: Option<Bucket>,
    max_handshakes: Option<usize>,
    /// Its accepted connections still in the handshake.
    handshaking: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// The event loop. See the [module docs](self).
pub struct Reactor {
    poll: Poll,
    events: Events,
    engine: Engine,
    listeners: Vec<Option<Listener>>,
    /// By engine slot index.
    sockets: Vec<Option<Sock>>,
    scratch: Vec<u8>,
    shared: Arc<Shared>,
    /// Connections whose read budget ran out with data possibly left.
    again: Vec<(ConnId, bool)>,
    ready: Vec<Ready>,
    /// Sockets of links open (see `Sock::first`).
    links: usize,
    /// Source addresses for outbound connections (see `connect_from`).
    sources: Vec<IpAddr>,
    next_source: usize,
    accept_paused_until: Option<Instant>,
    /// In an episode of descriptor exhaustion (logged once per episode).
    out_of_fds: bool,
    /// Open accepted connections per peer address, for listeners with a per-address limit.
    per_ip: HashMap<IpAddr, u32>,
    stopping: bool,
    now: Instant,
}

impl Reactor {
    /// A loop with an engine using `cfg` ([`Engine::new`]: ids and jitter from the
    /// operating system's entropy). Fails with [`io::ErrorKind::InvalidInput`] if `cfg`
    /// cannot work ([`Config::validate`] says why).
    pub fn new(cfg: Config) -> io::Result<Reactor> {
        let now = Instant::now();
        Reactor::with_engine(Engine::new(cfg, now)?)
    }

    /// A loop around an engine built by the caller (for instance a deterministic one,
    /// [`Engine::with_seed`], in a test).
    pub fn with_engine(engine: Engine) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let now = Instant::now();
        Ok(Reactor {
            events: Events::with_capacity(1024),
            engine,
            listeners: Vec::new(),
            sockets: Vec::new(),
            scratch: vec![0; SCRATCH],
            shared: Arc::new(Shared {
                waker,
                queue: Mutex::new(Queue::default()),
            }),
            again: Vec::new(),
            ready: Vec::new(),
            links: 0,
            sources: Vec::new(),
            next_source: 0,
            accept_paused_until: None,
            out_of_fds: false,
            per_ip: HashMap::new(),
            stopping: false,
            now,
            poll,
        })
    }

    /// The engine, for setup (hooks, clients) before or between turns.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The loop's clock as of its last wake.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Binds a listener (with `SO_REUSEADDR` and the configured backlog) and returns the
    /// address it got (useful with port 0).
    pub fn listen(&mut self, addr: SocketAddr, cfg: ListenConfig) -> io::Result<SocketAddr> {
        use socket2::{Domain, Protocol, Socket, Type};
        if self.listeners.len() >= MAX_LISTENERS {
            return Err(io::Error::other("too many listeners"));
        }
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if cfg.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(cfg.backlog)?;
        let mut inner = TcpListener::from_std(socket.into());
        let addr = inner.local_addr()?;
        let token = Token(1 + self.listeners.len());
        self.poll
            .registry()
            .register(&mut inner, token, Interest::READABLE)?;
        self.listeners.push(Some(Listener {
            inner,
            addr,
            raw: cfg.raw,
            max_per_ip: cfg.max_per_ip,
            rate: cfg.accept_rate.map(|r| Bucket::new(r, self.now)),
            max_handshakes: cfg.max_handshakes,
            handshaking: 0,
            tls: cfg.tls.clone(),
        }));
        info!("listening on {addr}");
        Ok(addr)
    }

    /// Runs until a shutdown has completed: one asked for with [`Handle::shutdown`], or
    /// with [`Engine::shutdown`] from the handler. After that, [`Handle`] calls fail, and
    /// commands that arrived while the loop was stopping have been run.
    pub fn run(&mut self, handler: &mut impl Handler) -> io::Result<()> {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.loop_thread = Some(std::thread::current().id());
        }
        let result = self.run_loop(handler);
        self.close_handles();
        result
    }

    fn run_loop(&mut self, handler: &mut impl Handler) -> io::Result<()> {
        while !(self.stopping && self.engine.connections() == 0) {
            self.turn(handler, None)?;
        }
        Ok(())
    }

    /// Refuses further commands and runs those already accepted, so that none is dropped
    /// in silence.
    fn close_handles(&mut self) {
        let cmds = match self.shared.queue.lock() {
            Ok(mut q) => {
                q.closed = true;
                std::mem::take(&mut q.cmds)
            }
            Err(_) => return,
        };
        self.now = self.now.max(Instant::now());
        for cmd in cmds {
            match cmd {
                Cmd::Run(f) => f(&mut App::new(&mut self.engine, self.now)),
                Cmd::Shutdown => {}
            }
        }
    }

    /// Whether a shutdown was requested (through a [`Handle`] or the engine).
    pub fn is_stopping(&self) -> bool {
        self.stopping || self.engine.is_shutting_down()
    }

    /// One wake of the loop: waits for I/O, a command or a timer (at most `max_wait`),
    /// then handles everything that is ready.
    pub fn turn(
        &mut self,
        handler: &mut impl Handler,
        max_wait: Option<Duration>,
    ) -> io::Result<()> {
        // Commands given to the engine between turns (a new client, a send) have outputs
        // waiting, and the timeout must reflect them.
        self.drain(handler);
        let mut timeout = self
            .engine
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.now));
        if let Some(resume) = self.accept_paused_until {
            let wait = resume.saturating_duration_since(self.now);
            timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
        }
        if let Some(cap) = max_wait {
            timeout = Some(timeout.map_or(cap, |t| t.min(cap)));
        }
        if !self.again.is_empty() {
            timeout = Some(Duration::ZERO);
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // The one clock read of this wake; commands and handlers see it.
        let now = Instant::now();
        self.now = now;
        self.engine.advance_clock(now);

        self.ready.clear();
        for ev in self.events.iter() {
            let hup = ev.is_read_closed() || ev.is_error();
            self.ready.push(Ready {
                token: ev.token(),
                readable: ev.is_readable() || hup,
                writable: ev.is_writable() || ev.is_write_closed(),
                hup,
            });
        }
        if self.links > 0 {
            let sockets = &self.sockets;
            let first = |r: &Ready| {
                r.token.0 >= CONN_BASE
                    && sockets
                        .get(r.token.0 - CONN_BASE)
                        .is_some_and(|s| s.as_ref().is_some_and(|s| s.first))
            };
            // Stable: the others keep the order the kernel reported them in.
            self.ready.sort_by_key(|r| !first(r));
        }
        let mut wake = false;
        for i in 0..self.ready.len() {
            let r = self.ready[i];
            match r.token.0 {
                0 => wake = true,
                t if t < CONN_BASE => self.accept(t - 1),
                t => self.on_socket(t - CONN_BASE, r),
            }
        }
        if wake {
            self.run_commands();
        }
        let mut again = std::mem::take(&mut self.again);
        for (id, hup) in again.drain(..) {
            self.read(id, hup);
        }
        if self.again.is_empty() {
            // Keep the list's memory for the next wake.
            self.again = again;
        }
        if self.accept_paused_until.is_some_and(|resume| resume <= now) {
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
        self.engine.handle_timeout(now);
        self.drain(handler);
        if self.engine.is_shutting_down() && !self.stopping {
            // The handler (or a command) called `Engine::shutdown`: stop as if asked to.
            self.begin_shutdown();
        }
        Ok(())
    }

    fn run_commands(&mut self) {
        loop {
            let cmd = match self.shared.queue.lock() {
                Ok(mut q) => q.cmds.pop_front(),
                Err(_) => None,
            };
            match cmd {
                Some(Cmd::Run(f)) => f(&mut App::new(&mut self.engine, self.now)),
                Some(Cmd::Shutdown) => self.begin_shutdown(),
                None => break,
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.stopping {
            return;
        }
        info!("shutting down");
        self.stopping = true;
        for l in self.listeners.iter_mut() {
            if let Some(mut l) = l.take() {
                let _ = self.poll.registry().deregister(&mut l.inner);
                debug!("closed listener {}", l.addr);
            }
        }
        if !self.engine.is_shutting_down() {
            self.engine.shutdown(self.now);
        }
    }

    /// Moves the engine's outputs to the sockets and the handler until nothing is left.
    fn drain(&mut self, handler: &mut impl Handler) {
        loop {
            let mut busy = false;
            while let Some(io) = self.engine.poll_io() {
                busy = true;
                match io {
                    Io::Connect { conn, addr } => self.connect(conn, addr),
                    Io::Close { conn } => self.drop_socket(conn),
                }
            }
            // Events first: what the application answers joins what the engine queued
            // (a PONG, an ACK) in the same write.
            while let Some(mut event) = self.engine.poll_event() {
                busy = true;
                if let Event::Server(ServerEvent::Opened { conn, peer, .. }) = &mut event {
                    // Once per session: the engine never sees a socket, this loop does.
                    *peer = self.peer_of(*conn);
                    let listener = self
                        .sockets
                        .get_mut(conn.index())
                        .and_then(Option::as_mut)
                        .filter(|s| s.id == *conn)
                        .and_then(|s| s.handshaking.take());
                    if let Some(l) = listener {
                        self.handshake_ended(l);
                    }
                }
                handler.on_event(&mut App::new(&mut self.engine, self.now), event);
            }
            while let Some(conn) = self.engine.poll_transmit() {
                busy = true;
                self.write(conn);
            }
            if !busy {
                break;
            }
        }
    }

    /// Outbound connections leave from these local addresses, in turn (port chosen by the
    /// kernel): a host holds more connections to one server address than one source
    /// address has ephemeral ports (about 28,000 on Linux) by spreading them over several
    /// (on loopback: 127.0.0.2, 127.0.0.3, ...). Empty (the default): the kernel chooses.
    pub fn connect_from(&mut self, sources: Vec<IpAddr>) {
        self.sources = sources;
    }

    /// A non-blocking connect to `addr`, from the next source address if any.
    fn open(&mut self, addr: SocketAddr) -> io::Result<TcpStream> {
        if self.sources.is_empty() {
            return TcpStream::connect(addr);
        }
        use socket2::{Domain, Protocol, Socket, Type};
        let from = self.sources[self.next_source % self.sources.len()];
        self.next_source = self.next_source.wrapping_add(1);
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(socket.into()))
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        let result = self
            .open(addr)
            .and_then(|stream| self.add_socket(conn, stream, true, None));
        if let Err(e) = result {
            debug!("{conn}: connect to {addr}: {e}");
            self.engine
                .handle_connect_failed(conn, &e.to_string(), self.now);
            if is_fd_exhaustion(&e) {
                warn!("connect to {addr}: {e}");
            }
        }
    }

    fn add_socket(
        &mut self,
        id: ConnId,
        mut stream: TcpStream,
        connecting: bool,
        peer_ip: Option<IpAddr>,
    ) -> io::Result<()> {
        let index = id.index();
        if self.sockets.len() <= index {
            self.sockets.resize_with(index + 1, || None);
        }
        // A socket still in the slot belongs to a connection the engine has released;
        // its close is queued. Closing it now keeps the slot for the new one.
        self.remove_socket(index);
        self.poll.registry().register(
            &mut stream,
            Token(CONN_BASE + index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if let Some(ip) = peer_ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        let first = self.engine.is_link(id);
        let handshaking = None;
        self.links += usize::from(first);
        self.sockets[index] = Some(Sock {
            id,
            stream,
            connecting,
            blocked: false,
            peer_ip,
            first,
            handshaking,
        });
        Ok(())
    }

    fn drop_socket(&mut self, conn: ConnId) {
        if let Some(slot) = self.sockets.get_mut(conn.index()) {
            if slot.as_ref().is_some_and(|s| s.id == conn) {
                self.remove_socket(conn.index());
            }
        }
    }

    /// Closes the socket in slot `index`, if any (closing the descriptor also removes it
    /// from the epoll set), and gives back what it counted.
    fn remove_socket(&mut self, index: usize) {
        let Some(sock) = self.sockets.get_mut(index).and_then(Option::take) else {
            return;
        };
        self.links -= usize::from(sock.first);
        if let Some(l) = sock.handshaking {
            self.handshake_ended(l);
        }
        if let Some(ip) = sock.peer_ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
        drop(sock);
        self.fd_freed();
    }

    /// The socket of `id` failed or ended: it is closed, and the engine told.
    fn lost(&mut self, id: ConnId, loss: Loss) {
        self.remove_socket(id.index());
        match loss {
            Loss::ConnectFailed(e) => {
                self.engine
                    .handle_connect_failed(id, &e.to_string(), self.now)
            }
            Loss::Closed => self.engine.handle_closed(id, self.now),
        }
    }

    /// The peer address of `conn`'s socket, if it is still open.
    fn peer_of(&self, conn: ConnId) -> Option<SocketAddr> {
        let sock = self.sockets.get(conn.index())?.as_ref()?;
        (sock.id == conn)
            .then(|| sock.stream.peer_addr().ok())
            .flatten()
    }

    fn on_socket(&mut self, index: usize, ready: Ready) {
        let Ready {
            readable,
            writable,
            hup,
            ..
        } = ready;
        let Some(Some(sock)) = self.sockets.get_mut(index) else {
            return;
        };
        let id = sock.id;
        if sock.connecting {
            if !(readable || writable) {
                return;
            }
            match sock.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    debug!("{id}: connect failed: {e}");
                    return self.lost(id, Loss::ConnectFailed(e));
                }
            }
            match sock.stream.peer_addr() {
                Ok(_) => {
                    sock.connecting = false;
                    let _ = sock.stream.set_nodelay(true);
                    self.engine.handle_connected(id, self.now);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    debug!("{id}: connect failed: {e}");
                    return self.lost(id, Loss::ConnectFailed(e));
                }
            }
        }
        let blocked = writable && std::mem::take(&mut sock.blocked);
        if readable {
            self.read(id, hup);
        }
        if blocked {
            self.write(id);
        }
    }

    /// Reads until the socket is drained. A short read proves that (epoll(7)), unless the
    /// peer's FIN arrived in the same event (`hup`): then only the end of the stream (a read
    /// of 0) does, and edge-triggered epoll would not report that FIN again.
    fn read(&mut self, id: ConnId, hup: bool) {
        for _ in 0..READ_BUDGET {
            let Some(Some(sock)) = self.sockets.get_mut(id.index()) else {
                return;
            };
            if sock.id != id {
                return;
            }
            match sock.stream.read(&mut self.scratch) {
                Ok(0) => {
                    return self.lost(id, Loss::Closed);
                }
                Ok(n) => {
                    self.engine.handle_read(id, &self.scratch[..n], self.now);
                    if n < self.scratch.len() && !hup {
                        return; // a short read: the socket is drained
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{id}: read: {e}");
                    return self.lost(id, Loss::Closed);
                }
            }
        }
        self.again.push((id, hup));
    }

    fn write(&mut self, id: ConnId) {
        let Some(Some(sock)) = self.sockets.get_mut(id.index()) else {
            return;
        };
        // A blocked socket would only say `WouldBlock` again, a system call per frame
        // queued to a peer that does not read.
        if sock.id != id || sock.connecting || sock.blocked {
            return;
        }
        loop {
            let out = self.engine.outbound(id);
            if out.is_empty() {
                return;
            }
            let len = out.len();
            match sock.stream.write(out) {
                Ok(n) => {
                    self.engine.handle_sent(id, n, self.now);
                    if n == len {
                        return;
                    }
                    // Cut short: write the rest until the kernel says `WouldBlock`, the
                    // answer after which a writable edge is sure to come.
                }
                // The rest goes out on the writable edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sock.blocked = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{id}: write: {e}");
                    return self.lost(id, Loss::Closed);
                }
            }
        }
    }
}

impl Drop for Reactor {
    /// Handles that outlive the reactor fail instead of queueing commands nobody runs.
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
            q.cmds.clear();
        }
    }
}

/// How a socket was lost, for [`Reactor::lost`].
enum Loss {
    /// A connection attempt failed, with the operating system's error.
    ConnectFailed(io::Error),
    /// An established connection ended or failed.
    Closed,
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system wide).
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// `EINPROGRESS`: a non-blocking connect under way (Linux and the BSDs agree on 115/36;
/// std does not name it).
fn libc_einprogress() -> i32 {
    if cfg!(target_os = "linux") {
        115
    } else {
        36
    }
}
