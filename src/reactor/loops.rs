//! [`Loops`]: several reactors, one per thread, sharing nothing. Each sets itself up on its
//! own thread (a `Reactor` never crosses threads); with `ListenConfig::reuse_port` they
//! listen on one address and the kernel spreads connections over them; with a
//! [`crate::bus::Hub`] they hand each other messages.

use super::{Handle, Handler, Reactor};
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Running loops, one per thread.
pub struct Loops {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Loops {
    /// Starts `n` loops. `setup(i)` runs on loop `i`'s own thread and returns its reactor
    /// (listening, with its clients and links added) and its handler; the loop then runs
    /// until shut down. Fails, after stopping the loops already started, if any setup
    /// fails.
    pub fn spawn<H, F>(n: usize, setup: F) -> io::Result<Loops>
    where
        H: Handler + 'static,
        F: Fn(usize) -> io::Result<(Reactor, H)> + Send + Sync + 'static,
    {
        let setup = std::sync::Arc::new(setup);
        let mut loops = Loops {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let setup = std::sync::Arc::clone(&setup);
            let thread = std::thread::Builder::new()
                .name(format!("liveline-loop-{i}"))
                .spawn(move || {
                    let (mut reactor, mut handler) = match setup(i) {
                        Ok(ready) => ready,
                        Err(e) => {
                            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                            return Err(e);
                        }
                    };
                    let _ = tx.send(Ok(reactor.handle()));
                    reactor.run(&mut handler)
                })?;
            loops.threads.push(thread);
            let started = rx
                .recv()
                .map_err(|_| io::Error::other(format!("loop {i} ended during setup")))
                .and_then(|r| r);
            match started {
                Ok(handle) => loops.handles.push(handle),
                Err(e) => {
                    loops.shutdown();
                    let _ = loops.join();
                    return Err(e);
                }
            }
        }
        Ok(loops)
    }

    /// Each loop's handle, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Asks every loop to shut down gracefully (see [`Handle::shutdown`]).
    pub fn shutdown(&self) {
        for h in &self.handles {
            let _ = h.shutdown();
        }
    }

    /// Waits for every loop to end; the first error any returned.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a loop panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}
