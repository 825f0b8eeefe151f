//! [`Handle`]: commands into a running loop from any thread, through a queue and the loop's
//! waker.

use crate::engine::App;
use mio::Waker;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

pub(super) type Command = Box<dyn FnOnce(&mut App<'_>) + Send>;

pub(super) enum Cmd {
    Run(Command),
    Shutdown,
}

pub(super) struct Shared {
    pub(super) waker: Waker,
    pub(super) queue: Mutex<Queue>,
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) cmds: VecDeque<Cmd>,
    /// The thread in [`Reactor::run`](super::Reactor::run), which must not wait for its own commands.
    pub(super) loop_thread: Option<std::thread::ThreadId>,
    /// The loop has stopped (`run` returned, or the reactor is gone): nothing queued now
    /// would ever run, so `push` refuses.
    pub(super) closed: bool,
}

/// Sends commands into a running loop from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl Handle {
    /// Runs `f` on the loop thread with the engine, at the next wake; the engine's clock
    /// is that wake's. Fails, and `f` is dropped without running, once the loop has
    /// stopped: a command accepted here is run, unless the reactor is dropped without
    /// [`Reactor::run`](super::Reactor::run).
    pub fn run(&self, f: impl FnOnce(&mut App<'_>) + Send + 'static) -> io::Result<()> {
        self.push(Cmd::Run(Box::new(f)))
    }

    /// Runs `f` on the loop thread, like [`run`](Self::run), and waits for what it returns.
    /// Fails if the loop has stopped (or stops before running it), and, at once, if called
    /// from the thread running [`Reactor::run`](super::Reactor::run) (a handler), which would wait for itself:
    /// a handler has the [`App`] already.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut App<'_>) -> T + Send + 'static,
    ) -> io::Result<T> {
        let on_loop = self
            .shared
            .queue
            .lock()
            .is_ok_and(|q| q.loop_thread == Some(std::thread::current().id()));
        if on_loop {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "Handle::call from the loop's own thread would wait for itself",
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.run(move |app| {
            let _ = tx.send(f(app));
        })?;
        rx.recv().map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the reactor's loop stopped before running the command",
            )
        })
    }

    /// Graceful shutdown: stop accepting, GOAWAY to every session, stop every client,
    /// close each connection once flushed (bounded by the linger time); then
    /// [`Reactor::run`](super::Reactor::run) returns. Fails if the loop has stopped already.
    pub fn shutdown(&self) -> io::Result<()> {
        self.push(Cmd::Shutdown)
    }

    fn push(&self, cmd: Cmd) -> io::Result<()> {
        let mut q = self
            .shared
            .queue
            .lock()
            .map_err(|_| io::Error::other("reactor command queue poisoned"))?;
        if q.closed {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the reactor's loop has stopped",
            ));
        }
        q.cmds.push_back(cmd);
        drop(q);
        self.shared.waker.wake()
    }
}
