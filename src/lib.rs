//! liveline: an engine for long-lived TCP connections.
//!
//! One single-threaded reactor keeps many connections alive with application-level
//! heartbeats, detects dead peers by what it *reads* (never by what it manages to write),
//! and bounds every buffer a peer can make it hold. Its clients reconnect and fail over by
//! themselves, and acknowledged messages survive the move. The protocol it speaks is
//! described in `docs/PROTOCOL.md`.
//!
//! # Quick start: a server
//!
//! A server that echoes each reliable message back to its sender, by name, and says every
//! minute how many users are online. The handler is called on the loop's thread with each
//! [`Event`](engine::Event) and the application's view of the engine, [`App`](engine::App),
//! to act on.
//!
//! ```no_run
//! use liveline::config::Config;
//! use liveline::engine::{App, Event, ServerEvent};
//! use liveline::reactor::{ListenConfig, Reactor};
//! use std::time::Duration;
//!
//! fn main() -> std::io::Result<()> {
//!     // A Config that cannot work is refused here, with the setting named.
//!     let mut reactor = Reactor::new(Config::default())?;
//!     reactor.listen("127.0.0.1:9000".parse().unwrap(), ListenConfig::default())?;
//!     let minute = Duration::from_secs(60);
//!     reactor.engine().set_timer(minute, Some(minute), 0);
//!     let mut handler = |app: &mut App, event: Event| match event {
//!         Event::Server(ServerEvent::Opened { identity, .. }) => println!("{identity} is online"),
//!         Event::Server(ServerEvent::Message { identity, payload, .. }) => {
//!             // Acknowledged to the sender already; the echo is a reliable message too.
//!             if let Err(e) = app.send_to(identity.as_str(), payload) {
//!                 eprintln!("not echoed to {identity}: {e}");
//!             }
//!         }
//!         Event::Server(ServerEvent::Failed { identity, payload, cause, .. }) => {
//!             eprintln!("{} bytes for {identity} not delivered: {cause}", payload.len());
//!         }
//!         Event::Timer { .. } => println!("{} online", app.sessions().count()),
//!         Event::Server(ServerEvent::Closed { identity: Some(who), reason, .. }) => {
//!             println!("{who} left: {reason}");
//!         }
//!         _ => {}
//!     };
//!     reactor.run(&mut handler) // until a Handle (or the handler) shuts it down
//! }
//! ```
//!
//! # Quick start: a client
//!
//! A client that keeps itself connected to the first of two servers that answers, sends
//! one message, and stops once the server has acknowledged it.
//!
//! ```no_run
//! use liveline::config::Config;
//! use liveline::engine::{App, ClientConfig, ClientEvent, ClientState, Event};
//! use liveline::frame::Text;
//! use liveline::reactor::Reactor;
//! use liveline::Bytes;
//! use std::time::Instant;
//!
//! fn main() -> std::io::Result<()> {
//!     let mut reactor = Reactor::new(Config::default())?;
//!     let client = reactor.engine().add_client(
//!         ClientConfig {
//!             identity: Text::from("alice"),
//!             token: Bytes::new(),
//!             servers: vec!["127.0.0.1:9000".parse().unwrap(), "127.0.0.1:9001".parse().unwrap()],
//!             instance: None, // drawn from the OS's entropy
//!         },
//!         Instant::now(),
//!     )?; // an identity or server list that could never work is refused here
//!     // Sent as soon as a session is up, and again after every reconnect until acknowledged.
//!     reactor.engine().client_send_message(client, Bytes::from("hello")).unwrap();
//!     let mut handler = |app: &mut App, event: Event| match event {
//!         Event::Client(ClientEvent::State { state: ClientState::Active, server, .. }) => {
//!             println!("connected to {server:?}");
//!         }
//!         Event::Client(ClientEvent::Acked { .. }) => app.close_client(client), // delivered: done
//!         Event::Client(ClientEvent::Failed { payload, .. }) => eprintln!("not delivered: {payload:?}"),
//!         Event::Client(ClientEvent::State { state: ClientState::Closed, .. }) => app.shutdown(),
//!         _ => {}
//!     };
//!     reactor.run(&mut handler)
//! }
//! ```
//!
//! The modules, bottom up:
//! - [`frame`]: the frames of wire protocol v1 and their body layouts;
//! - [`codec`]: the incremental, bounded decoder and the encoder (usable on its own);
//! - [`config`] and [`backoff`]: settings, checked when an engine is built;
//! - [`engine`]: the sans-IO engine (sessions, reliable messages, reconnecting clients,
//!   links, timers), its events and typed handles;
//! - [`link`]: outbound connections of an application's own protocol, kept up by the
//!   engine; [`resp`] and [`redis`]: a RESP3 codec and a Redis client on a link, with which
//!   servers meet other servers (the `echo-im` example's cluster);
//! - [`reactor`]: the driver over real sockets (mio), and with the `sim` feature, `sim`:
//!   the driver over a simulated network on a virtual clock, for deterministic tests of
//!   an application's failover and timing.
//!
//! Underneath, not API: a hashed timing wheel, Netty-style idle tracking, send windows
//! and duplicate filters (public only with the `internals` feature, for benchmarks).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backoff;
pub mod bus;
pub mod codec;
pub mod config;
pub mod engine;
pub mod frame;
mod growth;
pub mod link;
pub mod reactor;
pub mod redis;
pub mod resp;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tls;

/// Declares building blocks that are not API: public (and hidden from the docs) only with
/// the `internals` feature, for this crate's benchmarks and tests.
macro_rules! internal {
    ($($module:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $module;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code)]
        mod $module;
    )*};
}

internal!(idle, reliable, rng, time, wheel);

/// The byte buffers payloads travel in, re-exported so that an application needs no
/// dependency of its own to build or read them.
pub use bytes::Bytes;

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
