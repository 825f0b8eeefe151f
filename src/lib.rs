//! liveline: an engine for long-lived TCP connections.
//!
//! One single-threaded reactor keeps many connections alive with application-level
//! heartbeats, detects dead peers by what it *reads* (never by what it manages to write),
//! and bounds every buffer a peer can make it hold. The protocol it speaks is described in
//! `docs/PROTOCOL.md`.
//!
//! Layers, bottom up:
//! - [`frame`]: the frames of wire protocol v1 and their body layouts;
//! - [`codec`]: the incremental, bounded decoder and the encoder;
//! - [`time`], [`wheel`], [`idle`]: ticks, the hashed timing wheel, idle tracking;
//! - [`reliable`], [`backoff`], [`rng`]: send windows and duplicate filters, reconnect
//!   pacing, random numbers;
//! - [`config`]: settings, checked when an engine is built;
//! - [`engine`]: the sans-IO engine (sessions, reliable messages, reconnecting clients);
//! - [`reactor`] and [`sim`]: the two drivers, real sockets and a simulated network.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backoff;
pub mod codec;
pub mod config;
pub mod engine;
pub mod frame;
mod growth;
pub mod idle;
pub mod reactor;
pub mod reliable;
pub mod rng;
pub mod sim;
pub mod time;
pub mod wheel;

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
